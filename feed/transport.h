// How the feed client reaches a feed (docs/FEED.md, "Transports"): a local
// directory (a path, or a file:// URL) or an https:// base URL served by any
// static web server. A transport only moves bytes within limits; it trusts
// nothing and checks nothing but lengths: the index's signature and each
// patch's signed length and SHA-256 are the client's business (client.h).
//
// Every path handed to a transport is relative to the feed's root and must
// pass CheckFeedPath (no "..", no leading '/', only [A-Za-z0-9._-/]).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "status.h"

namespace cryptex::feed {

struct TransportOptions {
  // TLS (https only). Verification of the peer and of the host name is
  // always on; these only say whom to trust and who we are.
  std::string ca_file;      // PEM bundle of trusted CAs ("" = the system's)
  std::string ca_path;      // hashed CA directory ("" = the system's)
  std::string client_cert;  // PEM client certificate ("" = none)
  std::string client_key;   // its PEM key
  // Time limits. A connection not made within connect_timeout, or a
  // transfer that receives no byte for idle_timeout, fails with kIOError
  // naming the URL and the limit. total_timeout (0 = none) bounds a whole
  // request.
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds total_timeout{0};
  // Called as a download progresses (bytes so far, bytes expected); the
  // CLI draws a progress bar on a TTY from it. May be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Validators of a fetched document, for a conditional request next time.
struct Validators {
  std::string etag;
  std::string last_modified;
};

struct SmallFetch {
  bool not_modified = false;  // the server answered 304 to the validators given
  std::string body;           // empty when not_modified
  Validators validators;      // what the server sent (a local feed: its own token)
};

// What a transport did so far (benchmarks and tests: an idle poll costs one
// request and no body).
struct TransportStats {
  uint64_t requests = 0;      // requests sent (files opened, for local feeds)
  uint64_t body_bytes = 0;    // payload bytes received
  uint64_t not_modified = 0;  // 304 answers
};

class Transport {
 public:
  virtual ~Transport() = default;
  // The feed's base URL or directory, for messages.
  virtual const std::string& base() const = 0;

  // Fetches `rel` whole into memory. More than `max_bytes` is refused
  // (kCorruption "URL: more than N bytes") without reading further. With
  // non-empty validators the request is conditional (If-None-Match /
  // If-Modified-Since); a local feed compares its own (size, mtime) token.
  // A missing file is kNotFound naming the URL.
  virtual Result<SmallFetch> FetchSmall(const std::string& rel, const Validators& cond,
                                        uint64_t max_bytes) = 0;

  // Downloads `rel` into the file `partial`, which may already hold a
  // prefix from an interrupted download: only the rest is requested (a
  // Range request; a server that ignores it is handled by skipping the
  // prefix). Stops at exactly `length` bytes: a body longer than that is
  // refused as soon as byte length+1 arrives (kCorruption "more than the
  // signed N bytes"), a shorter one is kIOError "truncated at N of M bytes"
  // with the prefix kept in `partial` for the next attempt. The file is
  // fsynced before an ok return. `partial` is created 0600 if missing,
  // never followed if a symbolic link; one already `length` bytes long is
  // returned as it is (no request), one longer is emptied and fetched anew.
  virtual Status FetchFile(const std::string& rel, const std::string& partial, uint64_t length) = 0;

  virtual TransportStats stats() const = 0;
};

// kInvalidArgument naming `rel` unless it is a relative path of
// [A-Za-z0-9._-] components joined by '/', none of them "." or "..".
Status CheckFeedPath(const std::string& rel);

// The transport for `url`: "https://HOST[:PORT]/PATH" (libcurl), or a local
// directory given as "file:///ABS/DIR" or a plain path. Anything else
// (http://, ftp://, a relative file URL) is kInvalidArgument naming it.
Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url,
                                                 const TransportOptions& options);

// The two implementations (OpenTransport picks one).
Result<std::unique_ptr<Transport>> OpenLocalTransport(const std::string& dir,
                                                      const TransportOptions& options);
Result<std::unique_ptr<Transport>> OpenHttpsTransport(const std::string& base_url,
                                                      const TransportOptions& options);

}  // namespace cryptex::feed
