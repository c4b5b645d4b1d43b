// The device side of a feed (client.h): TUF-style checks of the index, and
// downloads bounded by the signed length and checked against the signed hash.
#include "client.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>

#include "durable.h"
#include "iso_time.h"

namespace cryptex::feed {
namespace {

using Json = nlohmann::ordered_json;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Hex(const Digest& d) { return HexEncode(d); }

bool DigestFromHex(const std::string& hex, Digest* out) {
  std::string raw;
  if (hex.size() != 64 || !HexDecode(hex, &raw) || raw.size() != out->size()) return false;
  std::copy(raw.begin(), raw.end(), out->begin());
  return true;
}

std::string IndexUrl(const Transport& t) { return FeedUrlOf(t.base(), kIndexFile); }

// mkdir `dir` with `mode` if missing; an existing non-directory is an error.
Status MakeDir(const std::string& dir, mode_t mode) {
  if (mkdir(dir.c_str(), mode) == 0) return store::SyncDir(dir.substr(0, dir.rfind('/')));
  if (errno != EEXIST) return Status::FromErrno(errno, dir + ": mkdir");
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotDirectory(dir + ": not a directory");
  }
  return Status::Ok();
}

Json StateToJson(const ClientState& s) {
  Json j;
  j["url"] = s.url;
  j["newest_version"] = s.newest_version;
  j["newest_sha256"] = s.newest_sha256;
  j["published"] = s.published;
  j["expires"] = s.expires;
  j["last_fetch"] = s.last_fetch;
  j["last_accepted"] = s.last_accepted;
  j["etag"] = s.validators.etag;
  j["last_modified"] = s.validators.last_modified;
  Json keys = Json::array();
  for (const AnnouncedKey& k : s.keys) {
    keys.push_back({{"id", Hex(k.id)}, {"raw", HexEncode(k.raw)}});
  }
  j["keys"] = keys;
  Json rev = Json::array();
  for (const Revocation& r : s.revoked) {
    rev.push_back({{"line", r.line}, {"id", r.id}, {"reason", r.reason}, {"at", r.at}});
  }
  j["revoked"] = rev;
  Json refs = Json::array();
  for (const Refusal& r : s.refusals) {
    refs.push_back({{"at", r.at}, {"what", r.what}, {"reason", r.reason}});
  }
  j["refusals"] = refs;
  return j;
}

Result<ClientState> StateFromJson(const std::string& bytes, const std::string& what) {
  const Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  const auto bad = [&](const std::string& why) {
    return Status::Corruption(what + ": not a feed client state (" + why +
                              "); delete it to start over (the next index is then trusted at "
                              "any version)");
  };
  if (!j.is_object()) return bad("not a JSON object");
  ClientState s;
  try {
    s.url = j.at("url").get<std::string>();
    s.newest_version = j.at("newest_version").get<uint64_t>();
    s.newest_sha256 = j.at("newest_sha256").get<std::string>();
    s.published = j.at("published").get<int64_t>();
    s.expires = j.at("expires").get<int64_t>();
    s.last_fetch = j.at("last_fetch").get<int64_t>();
    s.last_accepted = j.at("last_accepted").get<int64_t>();
    s.validators.etag = j.at("etag").get<std::string>();
    s.validators.last_modified = j.at("last_modified").get<std::string>();
    for (const Json& k : j.at("keys")) {
      AnnouncedKey a;
      Digest raw{};
      if (!DigestFromHex(k.at("id").get<std::string>(), &a.id) ||
          !DigestFromHex(k.at("raw").get<std::string>(), &raw)) {
        return bad("a key is not 64 hex digits");
      }
      std::copy(raw.begin(), raw.end(), a.raw.begin());
      s.keys.push_back(a);
    }
    for (const Json& r : j.at("revoked")) {
      s.revoked.push_back(Revocation{r.at("line").get<std::string>(), r.at("id").get<std::string>(),
                                     r.at("reason").get<std::string>(), r.at("at").get<int64_t>()});
    }
    for (const Json& r : j.at("refusals")) {
      s.refusals.push_back(Refusal{r.at("at").get<int64_t>(), r.at("what").get<std::string>(),
                                   r.at("reason").get<std::string>()});
    }
  } catch (const Json::exception& e) {
    return bad(e.what());
  }
  return s;
}

// The index keys: a directory of *.pub or one .pub file.
Result<TrustStore> LoadFeedTrust(const std::string& path) {
  if (path.empty()) {
    return Status::InvalidArgument("feed_trust: missing (the keys that sign the feed's index)");
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path + ": feed trust");
  return S_ISDIR(st.st_mode) ? TrustStore::LoadDir(path) : TrustStore::LoadFile(path);
}

// "the index expired" (freeze) unless `idx` is current at `now`.
Status CheckCurrent(const Index& idx, int64_t now, const std::string& source) {
  if (now < idx.expires) return Status::Ok();
  return Status::Corruption(source + ": index version " + std::to_string(idx.version) +
                            " expired at " + IsoTime(idx.expires) + " (now " + IsoTime(now) +
                            "): freeze");
}

}  // namespace

Result<ClientState> ReadClientState(const std::string& state_dir) {
  const std::string path = state_dir + "/" + kStateFile;
  auto bytes = store::ReadWholeFile(path);
  if (!bytes.ok()) {
    if (bytes.status().code() == Code::kNotFound) return ClientState{};
    return bytes.status();
  }
  return StateFromJson(*bytes, path);
}

struct FeedClient::Impl {
  FeedSettings settings;
  TrustStore trust;
  std::unique_ptr<Transport> transport;
  ClientState state;
  std::optional<VerifiedIndex> index;  // accepted by the last Refresh

  std::string StatePath() const { return settings.state_dir + "/" + kStateFile; }
  std::string KeptIndexPath() const { return settings.state_dir + "/" + kIndexFile; }
  std::string CacheDir() const { return settings.state_dir + "/cache"; }

  Status Save() const {
    return store::ReplaceFile(StatePath(), Bytes(StateToJson(state).dump(1) + "\n"), 0600);
  }

  // Records `r` (bounded: the oldest go first) and persists the state.
  Status Record(Refusal r) {
    state.refusals.push_back(std::move(r));
    if (state.refusals.size() > kMaxRefusals) {
      state.refusals.erase(state.refusals.begin(),
                           state.refusals.end() - static_cast<long>(kMaxRefusals));
    }
    return Save();
  }

  // Records the refusal of the index and returns `why`; the kept index is
  // not used after it.
  Status RefuseIndex(int64_t now, const Status& why) {
    index.reset();
    const Status saved = Record(Refusal{now, "index", why.message()});
    if (!saved.ok()) return saved.Prefixed("recording a refusal (" + why.ToString() + ")");
    return why;
  }

  // Accepts a verified, current `v` fetched now with `validators`.
  Status Accept(VerifiedIndex v, const std::string& file, const Validators& validators,
                bool fetched, int64_t now) {
    const std::string sha = Hex(Sha256::Hash(v.payload.data(), v.payload.size()));
    if (fetched) CX_RETURN_IF_ERROR(store::ReplaceFile(KeptIndexPath(), Bytes(file), 0600));
    state.url = settings.url;
    state.newest_version = v.index.version;
    state.newest_sha256 = sha;
    state.published = v.index.published;
    state.expires = v.index.expires;
    state.last_accepted = now;
    if (fetched) state.validators = validators;
    AddAnnouncedKeys(v.index.keys);
    state.revoked = v.index.revoked;
    CX_RETURN_IF_ERROR(Save());
    PruneCache(v.index);
    index = std::move(v);
    return Status::Ok();
  }

  // Keys announced by a verified index stay trusted (docs/FEED.md, "Keys
  // and rotation": a later index signed by the new key alone need not
  // announce it again); at most kMaxAnnouncedKeys, the oldest dropped first.
  void AddAnnouncedKeys(const std::vector<AnnouncedKey>& keys) {
    for (const AnnouncedKey& k : keys) {
      const bool known = std::any_of(state.keys.begin(), state.keys.end(),
                                     [&](const AnnouncedKey& x) { return x.id == k.id; });
      if (!known) state.keys.push_back(k);
    }
    if (state.keys.size() > kMaxAnnouncedKeys) {
      state.keys.erase(state.keys.begin(), state.keys.end() - static_cast<long>(kMaxAnnouncedKeys));
    }
  }

  // Downloads of patches the index no longer lists are deleted.
  void PruneCache(const Index& idx) const {
    for (const std::string& name : store::ListDir(CacheDir())) {
      const std::string hex = name.substr(0, name.find('.'));
      const bool listed = std::any_of(idx.patches.begin(), idx.patches.end(),
                                      [&](const FeedPatch& p) { return Hex(p.sha256) == hex; });
      if (!listed) unlink((CacheDir() + "/" + name).c_str());
    }
  }

  Result<const Index*> Refresh(int64_t now);
  Result<std::string> Download(const FeedPatch& p);
};

Result<const Index*> FeedClient::Impl::Refresh(int64_t now) {
  index.reset();
  state.last_fetch = now;
  const std::string what = IndexUrl(*transport);
  // A conditional request only while the kept index is the newest accepted
  // from this feed.
  auto kept = store::ReadWholeFile(KeptIndexPath());
  Validators cond;
  if (kept.ok() && state.url == settings.url && state.newest_version != 0) {
    cond = state.validators;
  }
  auto fetched = transport->FetchSmall(kIndexFile, cond, kMaxIndexBytes);
  if (!fetched.ok()) return RefuseIndex(now, fetched.status());
  const bool not_modified = fetched->not_modified;
  if (not_modified && !kept.ok()) {
    return RefuseIndex(now, Status::Corruption(what + ": not modified, but " + KeptIndexPath() +
                                               " is gone: " + kept.status().message()));
  }
  const std::string& file = not_modified ? *kept : fetched->body;
  const std::string source = not_modified ? KeptIndexPath() + " (server: not modified)" : what;
  auto v = VerifyIndex(file, trust, state.keys, source);
  if (!v.ok()) return RefuseIndex(now, v.status());
  const Index& idx = v->index;
  if (idx.version < state.newest_version) {
    return RefuseIndex(
        now, Status::Corruption(source + ": index version " + std::to_string(idx.version) +
                                " is older than version " + std::to_string(state.newest_version) +
                                " seen before (rollback)"));
  }
  const std::string sha = Hex(Sha256::Hash(v->payload.data(), v->payload.size()));
  if (idx.version == state.newest_version && sha != state.newest_sha256) {
    return RefuseIndex(
        now, Status::Corruption(source + ": index version " + std::to_string(idx.version) +
                                " differs from the version " + std::to_string(idx.version) +
                                " seen before (a version is never reused)"));
  }
  if (Status current = CheckCurrent(idx, now, source); !current.ok()) {
    return RefuseIndex(now, std::move(current));
  }
  CX_RETURN_IF_ERROR(Accept(std::move(*v), file, fetched->validators, !not_modified, now));
  return &index->index;
}

Result<std::string> FeedClient::Impl::Download(const FeedPatch& p) {
  CX_RETURN_IF_ERROR(CheckFeedPath(p.file));
  CX_RETURN_IF_ERROR(MakeDir(CacheDir(), 0700));
  const std::string hex = Hex(p.sha256);
  const std::string done = CacheDir() + "/" + hex + ".cxpatch";
  const std::string part = CacheDir() + "/" + hex + ".part";
  const std::string url = FeedUrlOf(transport->base(), p.file);
  // A finished download is checked again: the cache is only a cache.
  if (auto d = store::DigestOfFile(done); d.ok()) {
    if (d->size == p.length && d->sha256 == p.sha256) return done;
    unlink(done.c_str());
  }
  struct stat st;
  if (lstat(part.c_str(), &st) == 0 &&
      (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > p.length)) {
    unlink(part.c_str());
  }
  if (Status f = transport->FetchFile(p.file, part, p.length); !f.ok()) {
    // More than the signed length, or bytes the transport refused: nothing of
    // it is kept. A short read (kIOError) keeps its prefix to resume.
    if (f.code() != Code::kIOError) unlink(part.c_str());
    return f;
  }
  CX_ASSIGN_OR_RETURN(store::FileDigest got, store::DigestOfFile(part));
  if (got.size != p.length || got.sha256 != p.sha256) {
    unlink(part.c_str());
    return Status::Corruption(url + ": " + std::to_string(got.size) + " bytes with SHA-256 " +
                              Hex(got.sha256) + ", the index signs " + std::to_string(p.length) +
                              " bytes with SHA-256 " + hex + " (hash differs; download deleted)");
  }
  if (rename(part.c_str(), done.c_str()) != 0) {
    return Status::FromErrno(errno, part + ": rename to " + done);
  }
  CX_RETURN_IF_ERROR(store::SyncDir(CacheDir()));
  return done;
}

Result<Index> ReadKeptIndex(const FeedSettings& settings, int64_t now) {
  CX_ASSIGN_OR_RETURN(ClientState state, ReadClientState(settings.state_dir));
  const std::string path = settings.state_dir + "/" + kIndexFile;
  if (state.newest_version == 0) return Status::NotFound(path + ": no index accepted yet");
  CX_ASSIGN_OR_RETURN(TrustStore trust, LoadFeedTrust(settings.trust));
  CX_ASSIGN_OR_RETURN(std::string file, store::ReadWholeFile(path));
  CX_ASSIGN_OR_RETURN(VerifiedIndex v, VerifyIndex(file, trust, state.keys, path));
  if (v.index.version != state.newest_version ||
      Hex(Sha256::Hash(v.payload.data(), v.payload.size())) != state.newest_sha256) {
    return Status::Corruption(path + ": not the newest index accepted (version " +
                              std::to_string(state.newest_version) + ")");
  }
  CX_RETURN_IF_ERROR(CheckCurrent(v.index, now, path));
  return std::move(v.index);
}

FeedClient::FeedClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FeedClient::~FeedClient() = default;
FeedClient::FeedClient(FeedClient&&) noexcept = default;
FeedClient& FeedClient::operator=(FeedClient&&) noexcept = default;

Result<FeedClient> FeedClient::Open(const FeedSettings& settings) {
  auto impl = std::make_unique<Impl>();
  impl->settings = settings;
  CX_ASSIGN_OR_RETURN(impl->trust, LoadFeedTrust(settings.trust));
  if (settings.state_dir.empty() || settings.state_dir[0] != '/') {
    return Status::InvalidArgument("feed_state: '" + settings.state_dir +
                                   "' is not an absolute path");
  }
  CX_RETURN_IF_ERROR(MakeDir(settings.state_dir, 0700));
  CX_ASSIGN_OR_RETURN(impl->state, ReadClientState(settings.state_dir));
  CX_ASSIGN_OR_RETURN(impl->transport, OpenTransport(settings.url, settings.transport));
  return FeedClient(std::move(impl));
}

Result<const Index*> FeedClient::Refresh(int64_t now) { return impl_->Refresh(now); }

Result<std::string> FeedClient::Download(const FeedPatch& p, int64_t now) {
  auto r = impl_->Download(p);
  if (!r.ok()) {
    const Status saved = impl_->Record(Refusal{now, p.id, r.status().message()});
    if (!saved.ok()) return saved.Prefixed("recording a refusal (" + r.status().ToString() + ")");
  }
  return r;
}

Status FeedClient::RecordRefusal(const Refusal& r) { return impl_->Record(r); }

std::vector<Refusal> FeedClient::refusals() const { return impl_->state.refusals; }
uint64_t FeedClient::newest_version() const { return impl_->state.newest_version; }
TransportStats FeedClient::stats() const { return impl_->transport->stats(); }
std::vector<Revocation> FeedClient::revocations() const { return impl_->state.revoked; }

}  // namespace cryptex::feed
