// The https transport (libcurl): any static web server, CDN or object store.
//
// Contract beyond transport.h:
// - https only, for the request and for every redirect (at most
//   kMaxRedirects); TLS peer and host name verification are always on.
// - Time limits are enforced here, to the millisecond, by driving the
//   transfer through a multi handle: the connect limit by libcurl
//   (CURLOPT_CONNECTTIMEOUT_MS, TLS handshake included), the idle limit by
//   this loop (time since the last byte of header or body once the request
//   is on its way), the total limit by libcurl (CURLOPT_TIMEOUT_MS).
// - Requests of one transport are serialised (one easy handle, one
//   connection cache); the transport is safe to share between threads.
//   options.progress runs with that lock held: it must not call the
//   transport.
// - The standard proxy variables (https_proxy, no_proxy) apply, as libcurl
//   reads them.
// - Every error names the full URL and the cause (libcurl's text, the HTTP
//   status, or the limit).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string_view>

#include "curl_api.h"
#include "transport.h"
#include "transport_internal.h"

namespace cryptex::feed {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr long kMaxRedirects = 5;
// The longest the loop sleeps between checks of the idle limit.
constexpr milliseconds kMaxPollWait{100};

// The loaded library: OpenHttpsTransport loaded it before any transport
// existed, and everything else here runs on a transport.
const CurlApi& Curl() { return *LoadCurl().value(); }

bool HasControlChar(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

struct CurlEasyDeleter {
  void operator()(CURL* c) const { Curl().easy_cleanup(c); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* m) const { Curl().multi_cleanup(m); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { Curl().slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// One request in flight: what the callbacks see and record.
struct Exchange {
  std::string url;
  // Receives the body of the final answer, with its HTTP status; a non-ok
  // Status stops the transfer and becomes its result.
  std::function<Status(long status, const char* data, size_t n)> sink;
  // Filled from the final answer's headers.
  std::string etag, last_modified, content_range;
  Status abort;  // why a callback stopped the transfer
  Clock::time_point last_byte;
  std::atomic<uint64_t>* body_bytes = nullptr;  // the transport's counter
  CURL* easy = nullptr;
};

size_t OnHeader(char* data, size_t size, size_t n, void* arg) {
  auto* x = static_cast<Exchange*>(arg);
  size_t len = size * n;
  x->last_byte = Clock::now();
  std::string_view line(data, len);
  if (line.substr(0, 5) == "HTTP/") {  // a new answer (after a redirect or a 100)
    x->etag.clear();
    x->last_modified.clear();
    x->content_range.clear();
    return len;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  std::string_view name = Trim(line.substr(0, colon));
  std::string_view value = Trim(line.substr(colon + 1));
  if (HasControlChar(value)) return len;  // never echoed back into a request
  if (IEquals(name, "ETag")) x->etag = value;
  if (IEquals(name, "Last-Modified")) x->last_modified = value;
  if (IEquals(name, "Content-Range")) x->content_range = value;
  return len;
}

size_t OnBody(char* data, size_t size, size_t n, void* arg) {
  auto* x = static_cast<Exchange*>(arg);
  size_t len = size * n;
  x->last_byte = Clock::now();
  *x->body_bytes += len;
  if (!x->abort.ok()) return CURL_WRITEFUNC_ERROR;
  long status = 0;
  Curl().easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  x->abort = x->sink(status, data, len);
  return x->abort.ok() ? len : CURL_WRITEFUNC_ERROR;
}

std::string Millis(milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

class HttpsTransport final : public Transport {
 public:
  HttpsTransport(std::string base, TransportOptions options, CURL* easy, CURLM* multi)
      : base_(std::move(base)), opts_(std::move(options)), easy_(easy), multi_(multi) {}

  const std::string& base() const override { return base_; }
  Result<SmallFetch> FetchSmall(const std::string& rel, const Validators& cond,
                                uint64_t max_bytes) override;
  Status FetchFile(const std::string& rel, const std::string& partial, uint64_t length) override;
  TransportStats stats() const override {
    TransportStats s;
    s.requests = requests_;
    s.body_bytes = body_bytes_;
    s.not_modified = not_modified_;
    return s;
  }

 private:
  // Resets the handle and sets everything every request shares.
  Status Prepare(Exchange& x, curl_slist* headers, curl_off_t max_file_size);
  // Runs the prepared request to its end or a limit. `too_large` is the
  // error for an answer whose Content-Length exceeds the maximum.
  Status Perform(Exchange& x, const Status& too_large);
  long ResponseCode() const;

  const std::string base_;  // ends in '/'
  const TransportOptions opts_;
  std::mutex mu_;  // serialises requests: the handles below are not shareable
  std::unique_ptr<CURL, CurlEasyDeleter> easy_;                          // GUARDED_BY(mu_)
  std::unique_ptr<CURLM, CurlMultiDeleter> multi_;                       // GUARDED_BY(mu_)
  char errbuf_[CURL_ERROR_SIZE] = {};                                    // GUARDED_BY(mu_)
  std::atomic<uint64_t> requests_{0}, body_bytes_{0}, not_modified_{0};  // stats()
};

Status HttpsTransport::Prepare(Exchange& x, curl_slist* headers, curl_off_t max_file_size) {
  CURL* e = easy_.get();
  Curl().easy_reset(e);  // keeps the connection and TLS session caches
  errbuf_[0] = '\0';
  x.easy = e;
  x.body_bytes = &body_bytes_;
  bool ok = true;
  auto set = [&ok](CURLcode c) { ok = ok && c == CURLE_OK; };
  set(Curl().easy_setopt(e, CURLOPT_URL, x.url.c_str()));
  set(Curl().easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https"));
  set(Curl().easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https"));
  set(Curl().easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L));
  set(Curl().easy_setopt(e, CURLOPT_MAXREDIRS, kMaxRedirects));
  set(Curl().easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L));
  set(Curl().easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L));
  // A CA file alone means only that CA, and a CA directory alone only that
  // directory: the build's default of the other is dropped.
  if (!opts_.ca_file.empty()) {
    set(Curl().easy_setopt(e, CURLOPT_CAINFO, opts_.ca_file.c_str()));
    if (opts_.ca_path.empty()) set(Curl().easy_setopt(e, CURLOPT_CAPATH, nullptr));
  }
  if (!opts_.ca_path.empty()) {
    set(Curl().easy_setopt(e, CURLOPT_CAPATH, opts_.ca_path.c_str()));
    if (opts_.ca_file.empty()) set(Curl().easy_setopt(e, CURLOPT_CAINFO, nullptr));
  }
  if (!opts_.client_cert.empty()) {
    set(Curl().easy_setopt(e, CURLOPT_SSLCERT, opts_.client_cert.c_str()));
  }
  if (!opts_.client_key.empty())
    set(Curl().easy_setopt(e, CURLOPT_SSLKEY, opts_.client_key.c_str()));
  set(Curl().easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  set(Curl().easy_setopt(e, CURLOPT_FAILONERROR, 1L));
  set(Curl().easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         static_cast<long>(std::max<int64_t>(1, opts_.connect_timeout.count()))));
  if (opts_.total_timeout.count() > 0) {
    set(Curl().easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.total_timeout.count())));
  }
  set(Curl().easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, max_file_size));
  set(Curl().easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf_));
  set(Curl().easy_setopt(e, CURLOPT_HEADERFUNCTION, OnHeader));
  set(Curl().easy_setopt(e, CURLOPT_HEADERDATA, &x));
  set(Curl().easy_setopt(e, CURLOPT_WRITEFUNCTION, OnBody));
  set(Curl().easy_setopt(e, CURLOPT_WRITEDATA, &x));
  set(Curl().easy_setopt(e, CURLOPT_USERAGENT, "cryptex-feed/1"));
  if (headers != nullptr) set(Curl().easy_setopt(e, CURLOPT_HTTPHEADER, headers));
  if (!ok) return Status::Internal(x.url + ": libcurl refused an option (" + errbuf_ + ")");
  return Status::Ok();
}

long HttpsTransport::ResponseCode() const {
  long status = 0;
  Curl().easy_getinfo(easy_.get(), CURLINFO_RESPONSE_CODE, &status);
  return status;
}

Status HttpsTransport::Perform(Exchange& x, const Status& too_large) {
  CURL* e = easy_.get();
  CURLM* m = multi_.get();
  ++requests_;
  if (Curl().multi_add_handle(m, e) != CURLM_OK)
    return Status::Internal(x.url + ": curl_multi_add_handle");
  const Clock::time_point start = Clock::now();
  x.last_byte = start;
  bool connected = false;  // the request is on its way: the idle limit applies
  bool idle_expired = false;
  CURLcode result = CURLE_OK;
  for (bool done = false; !done;) {
    int running = 0;
    CURLMcode mc = Curl().multi_perform(m, &running);
    if (mc != CURLM_OK) {
      Curl().multi_remove_handle(m, e);
      return Status::Internal(x.url + ": " + Curl().multi_strerror(mc));
    }
    int queued = 0;
    while (CURLMsg* msg = Curl().multi_info_read(m, &queued)) {
      if (msg->msg == CURLMSG_DONE) {
        result = msg->data.result;
        done = true;
      }
    }
    if (done) break;
    Clock::time_point now = Clock::now();
    if (!connected) {
      // Set once the connection (TLS included) is up, new or reused.
      curl_off_t pre_us = 0;
      Curl().easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre_us);
      if (pre_us > 0) {
        connected = true;
        x.last_byte = std::max(x.last_byte, start + std::chrono::microseconds(pre_us));
      } else if (now - start >= opts_.connect_timeout) {
        // libcurl's connect limit fires now; should PRETRANSFER_TIME have
        // read 0 µs for a reused connection, the idle clock starts here.
        connected = true;
        x.last_byte = std::max(x.last_byte, now);
      }
    }
    milliseconds wait = kMaxPollWait;
    if (connected) {
      auto left = std::chrono::duration_cast<milliseconds>(x.last_byte + opts_.idle_timeout - now);
      if (left.count() <= 0) {
        idle_expired = true;
        break;
      }
      wait = std::min(wait, left);
    }
    mc = Curl().multi_poll(m, nullptr, 0, static_cast<int>(std::max<int64_t>(1, wait.count())),
                           nullptr);
    if (mc != CURLM_OK) {
      Curl().multi_remove_handle(m, e);
      return Status::Internal(x.url + ": " + Curl().multi_strerror(mc));
    }
  }
  Curl().multi_remove_handle(m, e);  // an unfinished transfer's connection is closed
  if (idle_expired) {
    return Status::IOError(x.url + ": no data for " + Millis(opts_.idle_timeout) +
                           " (idle timeout)");
  }
  if (!x.abort.ok()) return x.abort;
  if (result == CURLE_OK) return Status::Ok();
  // An error answer is reported as such whatever else libcurl noticed
  // first (e.g. an error page longer than the maximum).
  if (long status = ResponseCode(); status >= 400) {
    std::string m2 = x.url + ": HTTP " + std::to_string(status);
    return status == 404 || status == 410 ? Status::NotFound(m2) : Status::IOError(m2);
  }
  std::string cause = Curl().easy_strerror(result);
  if (errbuf_[0] != '\0') cause += std::string(" (") + errbuf_ + ")";
  switch (result) {
    case CURLE_FILESIZE_EXCEEDED:
      return too_large;
    case CURLE_OPERATION_TIMEDOUT: {
      // Which limit: whether the connection was up (not our `connected`,
      // which also turns true when the connect limit is reached).
      curl_off_t pre_us = 0;
      Curl().easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre_us);
      bool connect_limit = pre_us == 0 && (opts_.total_timeout.count() == 0 ||
                                           opts_.connect_timeout <= opts_.total_timeout);
      return Status::IOError(x.url + ": " +
                             (connect_limit ? "connect timeout of " + Millis(opts_.connect_timeout)
                                            : "total timeout of " + Millis(opts_.total_timeout)) +
                             ": " + cause);
    }
    default:
      return Status::IOError(x.url + ": " + cause);
  }
}

Status UnexpectedStatus(const std::string& url, long status) {
  return Status::IOError(url + ": unexpected HTTP status " + std::to_string(status));
}

Result<SmallFetch> HttpsTransport::FetchSmall(const std::string& rel, const Validators& cond,
                                              uint64_t max_bytes) {
  CX_RETURN_IF_ERROR(CheckFeedPath(rel));
  Exchange x;
  x.url = base_ + rel;
  if (HasControlChar(cond.etag) || HasControlChar(cond.last_modified)) {
    return Status::InvalidArgument(x.url + ": a validator holds a control character");
  }
  curl_slist* raw = nullptr;
  if (!cond.etag.empty()) raw = Curl().slist_append(raw, ("If-None-Match: " + cond.etag).c_str());
  if (!cond.last_modified.empty()) {
    raw = Curl().slist_append(raw, ("If-Modified-Since: " + cond.last_modified).c_str());
  }
  SlistPtr headers(raw);
  std::string body;
  x.sink = [&](long status, const char* data, size_t n) -> Status {
    if (status != 200) return UnexpectedStatus(x.url, status);
    if (n > max_bytes - body.size()) return internal::TooLarge(x.url, max_bytes);
    body.append(data, n);
    return Status::Ok();
  };
  std::lock_guard<std::mutex> lock(mu_);
  CX_RETURN_IF_ERROR(Prepare(x, headers.get(), static_cast<curl_off_t>(max_bytes)));
  CX_RETURN_IF_ERROR(Perform(x, internal::TooLarge(x.url, max_bytes)));
  SmallFetch out;
  long status = ResponseCode();
  if (status == 304) {
    if (cond.etag.empty() && cond.last_modified.empty()) return UnexpectedStatus(x.url, status);
    ++not_modified_;
    out.not_modified = true;
    out.validators = cond;
    if (!x.etag.empty()) out.validators.etag = x.etag;
    if (!x.last_modified.empty()) out.validators.last_modified = x.last_modified;
    return out;
  }
  if (status != 200) return UnexpectedStatus(x.url, status);
  out.body = std::move(body);
  out.validators.etag = x.etag;
  out.validators.last_modified = x.last_modified;
  return out;
}

// The first byte of a "bytes FIRST-LAST/TOTAL" Content-Range, or -1.
int64_t ContentRangeStart(std::string_view cr) {
  if (cr.substr(0, 6) != "bytes ") return -1;
  cr.remove_prefix(6);
  int64_t v = 0;
  size_t i = 0;
  for (; i < cr.size() && cr[i] >= '0' && cr[i] <= '9'; ++i) {
    if (v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (cr[i] - '0');
  }
  return i > 0 && i < cr.size() && cr[i] == '-' ? v : -1;
}

Status HttpsTransport::FetchFile(const std::string& rel, const std::string& partial,
                                 uint64_t length) {
  CX_RETURN_IF_ERROR(CheckFeedPath(rel));
  Exchange x;
  x.url = base_ + rel;
  CX_ASSIGN_OR_RETURN(internal::PartialFile out,
                      internal::PartialFile::Open(partial, length, x.url));
  if (out.complete()) return out.Sync();  // nothing left to ask for
  const uint64_t prefix = out.size();
  uint64_t skip = 0;  // bytes of a 200 answer still to drop (already held)
  bool first = true;
  x.sink = [&](long status, const char* data, size_t n) -> Status {
    if (first) {
      first = false;
      if (status == 206) {
        int64_t at = ContentRangeStart(x.content_range);
        if (prefix == 0 || at != static_cast<int64_t>(prefix)) {
          return Status::IOError(x.url + ": answered range \"" + x.content_range +
                                 "\" to a request for bytes " + std::to_string(prefix) + "-");
        }
      } else if (status == 200) {
        skip = prefix;  // the server ignored the Range header
      } else {
        return UnexpectedStatus(x.url, status);
      }
    }
    size_t drop = static_cast<size_t>(std::min<uint64_t>(skip, n));
    skip -= drop;
    CX_RETURN_IF_ERROR(out.Append(data + drop, n - drop));
    if (opts_.progress) opts_.progress(out.size(), length);
    return Status::Ok();
  };
  std::string range = std::to_string(prefix) + "-";
  std::lock_guard<std::mutex> lock(mu_);
  CX_RETURN_IF_ERROR(Prepare(x, nullptr, static_cast<curl_off_t>(length)));
  if (prefix > 0 && Curl().easy_setopt(easy_.get(), CURLOPT_RANGE, range.c_str()) != CURLE_OK) {
    return Status::Internal(x.url + ": libcurl refused CURLOPT_RANGE");
  }
  Status st = Perform(
      x, Status::Corruption(x.url + ": more than the signed " + std::to_string(length) + " bytes"));
  Status synced = out.Sync();
  if (!st.ok()) {
    // A transfer that broke off (closed early, idle, timed out) keeps what
    // it got: the next attempt resumes from there.
    if (st.code() == Code::kIOError && x.abort.ok() && out.size() > prefix && !out.complete()) {
      return Status::IOError(st.message() + " (truncated at " + std::to_string(out.size()) +
                             " of " + std::to_string(length) +
                             " bytes; kept for the next attempt)");
    }
    return st;
  }
  CX_RETURN_IF_ERROR(synced);
  if (!out.complete()) return out.Truncated("");
  return Status::Ok();
}

// kInvalidArgument unless `path` (the option `what`) names a readable file
// or directory.
Status CheckReadable(const std::string& path, const char* what) {
  if (path.empty() || ::access(path.c_str(), R_OK) == 0) return Status::Ok();
  return Status::InvalidArgument(std::string(what) + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Result<std::unique_ptr<Transport>> OpenHttpsTransport(const std::string& base_url,
                                                      const TransportOptions& options) {
  auto bad = [&base_url](const std::string& why) {
    return Status::InvalidArgument("feed URL \"" + base_url + "\": " + why);
  };
  if (base_url.rfind("https://", 0) != 0) return bad("not an https:// URL");
  if (base_url.size() == 8 || base_url[8] == '/') return bad("no host");
  if (base_url.find_first_of("?#") != std::string::npos || HasControlChar(base_url)) {
    return bad("a feed URL has no query, fragment or control character");
  }
  CX_RETURN_IF_ERROR(LoadCurl().status());
  {
    CURLU* u = Curl().url();
    if (u == nullptr) return Status::Internal("curl_url: out of memory");
    CURLUcode rc = Curl().url_set(u, CURLUPART_URL, base_url.c_str(), 0);
    char* host = nullptr;
    if (rc == CURLUE_OK) rc = Curl().url_get(u, CURLUPART_HOST, &host, 0);
    bool has_host = host != nullptr && host[0] != '\0';
    Curl().free(host);
    Curl().url_cleanup(u);
    if (rc != CURLUE_OK) return bad(Curl().url_strerror(rc));
    if (!has_host) return bad("no host");
  }
  CX_RETURN_IF_ERROR(CheckReadable(options.ca_file, "ca_file"));
  CX_RETURN_IF_ERROR(CheckReadable(options.ca_path, "ca_path"));
  CX_RETURN_IF_ERROR(CheckReadable(options.client_cert, "client_cert"));
  CX_RETURN_IF_ERROR(CheckReadable(options.client_key, "client_key"));
  if (!options.client_key.empty() && options.client_cert.empty()) {
    return Status::InvalidArgument("client_key " + options.client_key + " without a client_cert");
  }
  std::unique_ptr<CURL, CurlEasyDeleter> easy(Curl().easy_init());
  std::unique_ptr<CURLM, CurlMultiDeleter> multi(Curl().multi_init());
  if (!easy || !multi) return Status::Internal("libcurl: out of memory");
  std::string base = base_url;
  if (base.back() != '/') base += '/';
  return std::unique_ptr<Transport>(
      std::make_unique<HttpsTransport>(base, options, easy.release(), multi.release()));
}

}  // namespace cryptex::feed
