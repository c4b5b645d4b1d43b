// The feed index: its JSON payload and its signed file (index.h).
#include "index.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <utility>

#include "format.h"
#include "transport.h"

namespace cryptex::feed {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kPayloadFormat = "cryptex-feed-index 1";
constexpr std::string_view kFileHeader = "cryptex-feed 1\n";
constexpr std::string_view kFileHeaderPrefix = "cryptex-feed ";
constexpr std::string_view kSigPrefix = "sig ed25519 ";
// The domain separator the signatures cover before the payload (its NUL
// included), so an index signature can never be taken for another message.
constexpr std::string_view kSignedPrefix{"cryptex-feed-index 1\0", 21};

std::string ShortId(const KeyId& id) { return HexEncode(id).substr(0, 16) + "..."; }

std::string SignedMessage(std::string_view payload) {
  std::string m(kSignedPrefix);
  m.append(payload);
  return m;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Lower-case hex of exactly `n` bytes into out (HexEncode's form only, so
// each value has one spelling).
bool DecodeHexExact(std::string_view hex, size_t n, uint8_t* out) {
  if (hex.size() != 2 * n) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  std::string bytes;
  if (!HexDecode(std::string(hex), &bytes)) return false;
  std::copy(bytes.begin(), bytes.end(), out);
  return true;
}

}  // namespace

bool IsFeedPath(std::string_view rel) { return CheckFeedPath(std::string(rel)).ok(); }

namespace {

// The string `v` (named `name` in errors): at most kMaxManifestStringLen
// bytes (index strings come from manifests), no control characters (they
// are printed), non-empty if `non_empty`.
Status Text(const Json& v, const std::string& name, bool non_empty, std::string* out) {
  if (!v.is_string()) return Status::Corruption(name + ": not a string");
  const auto& s = v.get_ref<const std::string&>();
  if (non_empty && s.empty()) return Status::Corruption(name + ": empty");
  if (s.size() > format::kMaxManifestStringLen) {
    return Status::Corruption(name + ": longer than " +
                              std::to_string(format::kMaxManifestStringLen) + " bytes");
  }
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return Status::Corruption(name + ": holds a control character");
  }
  *out = s;
  return Status::Ok();
}

// Reads the members of one JSON object of the payload, strictly: every
// member it asks for must be there with the right type, and Finish() refuses
// any member nobody asked for. Errors name the source and the field
// ("index.cxfeed: patches[2].sha256: ...").
class Fields {
 public:
  Fields(const Json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  Status String(const char* key, std::string* out, bool non_empty = true) {
    CX_ASSIGN_OR_RETURN(const Json* v, Member(key));
    return Text(*v, where_ + "." + key, non_empty, out);
  }

  Status OneOf(const char* key, std::string* out, std::initializer_list<const char*> allowed) {
    CX_RETURN_IF_ERROR(String(key, out, /*non_empty=*/false));
    for (const char* a : allowed) {
      if (*out == a) return Status::Ok();
    }
    return Bad(key, "unknown value \"" + *out + "\"");
  }

  Status Unsigned(const char* key, uint64_t* out) {
    CX_ASSIGN_OR_RETURN(const Json* v, Member(key));
    if (v->is_number_unsigned()) {
      *out = v->get<uint64_t>();
      return Status::Ok();
    }
    return Bad(key, v->is_number_integer() ? "negative" : "not an unsigned integer");
  }

  Status Signed(const char* key, int64_t* out) {
    CX_ASSIGN_OR_RETURN(const Json* v, Member(key));
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Bad(key, "out of range");
      *out = static_cast<int64_t>(u);
      return Status::Ok();
    }
    if (v->is_number_integer()) {
      *out = v->get<int64_t>();
      return Status::Ok();
    }
    return Bad(key, "not an integer");
  }

  Status Hex(const char* key, uint8_t* out, size_t n) {
    std::string s;
    CX_RETURN_IF_ERROR(String(key, &s));
    if (!DecodeHexExact(s, n, out)) {
      return Bad(key, "not " + std::to_string(2 * n) + " lower-case hex digits");
    }
    return Status::Ok();
  }

  Status Strings(const char* key, std::vector<std::string>* out) {
    CX_ASSIGN_OR_RETURN(const Json* v, Member(key));
    if (!v->is_array()) return Bad(key, "not an array");
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      std::string s;
      CX_RETURN_IF_ERROR(
          Text((*v)[i], where_ + "." + key + "[" + std::to_string(i) + "]", true, &s));
      out->push_back(std::move(s));
    }
    return Status::Ok();
  }

  // The array member `key`, for the caller to walk.
  Result<const Json*> Array(const char* key) {
    CX_ASSIGN_OR_RETURN(const Json* v, Member(key));
    if (!v->is_array()) return Bad(key, "not an array");
    return v;
  }

  // kCorruption unless every member of the object was asked for.
  Status Finish() const {
    for (const auto& [k, v] : obj_.items()) {
      if (!seen_.count(k)) return Status::Corruption(where_ + ": unknown member \"" + k + "\"");
    }
    return Status::Ok();
  }

  Status Bad(const std::string& key, const std::string& why) const {
    return Status::Corruption(where_ + "." + key + ": " + why);
  }

 private:
  Result<const Json*> Member(const char* key) {
    seen_.insert(key);
    auto it = obj_.find(key);
    if (it == obj_.end()) return Status::Corruption(where_ + ": missing member \"" + key + "\"");
    return &*it;
  }

  const Json& obj_;
  std::string where_;
  std::set<std::string> seen_;
};

std::string Item(const std::string& what, const char* array, size_t i) {
  return what + ": " + array + "[" + std::to_string(i) + "]";
}

Result<Fields> ObjectAt(const Json& arr, size_t i, const std::string& where) {
  if (!arr[i].is_object()) return Status::Corruption(where + ": not an object");
  return Fields(arr[i], where);
}

Status CheckFile(Fields& f, const std::string& file) {
  if (!IsFeedPath(file)) {
    return f.Bad("file", "\"" + file +
                             "\" is not a relative path of [A-Za-z0-9._-] components without "
                             "\".\" or \"..\"");
  }
  return Status::Ok();
}

Status DecodePatch(const Json& arr, size_t i, const std::string& what, FeedPatch* p) {
  const std::string where = Item(what, "patches", i);
  CX_ASSIGN_OR_RETURN(Fields f, ObjectAt(arr, i, where));
  CX_RETURN_IF_ERROR(f.String("id", &p->id));
  CX_RETURN_IF_ERROR(f.String("line", &p->line));
  CX_RETURN_IF_ERROR(f.String("version", &p->version, /*non_empty=*/false));
  CX_RETURN_IF_ERROR(f.String("file", &p->file));
  CX_RETURN_IF_ERROR(CheckFile(f, p->file));
  CX_RETURN_IF_ERROR(f.Unsigned("length", &p->length));
  if (p->length == 0) return f.Bad("length", "zero");
  CX_RETURN_IF_ERROR(f.Hex("sha256", p->sha256.data(), p->sha256.size()));
  CX_RETURN_IF_ERROR(f.Hex("root", p->root.data(), p->root.size()));
  CX_RETURN_IF_ERROR(f.Hex("base_root", p->base_root.data(), p->base_root.size()));
  CX_RETURN_IF_ERROR(f.Strings("requires", &p->requires_patches));
  CX_RETURN_IF_ERROR(f.Unsigned("release_counter", &p->release_counter));
  CX_RETURN_IF_ERROR(f.OneOf("severity", &p->severity, {"", "low", "medium", "high", "critical"}));
  CX_RETURN_IF_ERROR(f.Strings("cves", &p->cves));
  CX_RETURN_IF_ERROR(f.OneOf("activation", &p->activation, {"relaunch", "reboot"}));
  CX_RETURN_IF_ERROR(f.Signed("released_at", &p->released_at));
  return f.Finish();
}

Status DecodeBase(const Json& arr, size_t i, const std::string& what, FeedBase* b) {
  const std::string where = Item(what, "bases", i);
  CX_ASSIGN_OR_RETURN(Fields f, ObjectAt(arr, i, where));
  CX_RETURN_IF_ERROR(f.String("line", &b->line));
  CX_RETURN_IF_ERROR(f.String("version", &b->version, /*non_empty=*/false));
  CX_RETURN_IF_ERROR(f.String("file", &b->file));
  CX_RETURN_IF_ERROR(CheckFile(f, b->file));
  CX_RETURN_IF_ERROR(f.Unsigned("length", &b->length));
  if (b->length == 0) return f.Bad("length", "zero");
  CX_RETURN_IF_ERROR(f.Hex("sha256", b->sha256.data(), b->sha256.size()));
  CX_RETURN_IF_ERROR(f.Hex("root", b->root.data(), b->root.size()));
  CX_RETURN_IF_ERROR(f.Unsigned("release_counter", &b->release_counter));
  return f.Finish();
}

Status DecodeRevocation(const Json& arr, size_t i, const std::string& what, Revocation* r) {
  const std::string where = Item(what, "revoked", i);
  CX_ASSIGN_OR_RETURN(Fields f, ObjectAt(arr, i, where));
  CX_RETURN_IF_ERROR(f.String("line", &r->line, /*non_empty=*/false));
  CX_RETURN_IF_ERROR(f.String("id", &r->id));
  CX_RETURN_IF_ERROR(f.String("reason", &r->reason));
  CX_RETURN_IF_ERROR(f.Signed("at", &r->at));
  return f.Finish();
}

Status DecodeKey(const Json& arr, size_t i, const std::string& what, AnnouncedKey* k) {
  const std::string where = Item(what, "keys", i);
  CX_ASSIGN_OR_RETURN(Fields f, ObjectAt(arr, i, where));
  CX_RETURN_IF_ERROR(f.Hex("id", k->id.data(), k->id.size()));
  CX_RETURN_IF_ERROR(f.Hex("ed25519", k->raw.data(), k->raw.size()));
  if (Sha256::Hash(k->raw.data(), k->raw.size()) != k->id) {
    return f.Bad("id", "is not the SHA-256 of the key");
  }
  if (!PublicKey::FromRaw(k->raw).ok()) return f.Bad("ed25519", "not an Ed25519 public key");
  return f.Finish();
}

// Decodes each element of array `key` with `decode`, refusing two elements
// with the same `ident` (the second one is named).
template <typename T, typename Decode, typename Ident>
Status DecodeArray(Fields& top, const char* key, const std::string& what, std::vector<T>* out,
                   Decode decode, Ident ident) {
  CX_ASSIGN_OR_RETURN(const Json* arr, top.Array(key));
  std::set<decltype(ident(T{}))> seen;
  for (size_t i = 0; i < arr->size(); ++i) {
    T item;
    CX_RETURN_IF_ERROR(decode(*arr, i, what, &item));
    if (!seen.insert(ident(item)).second) {
      return Status::Corruption(Item(what, key, i) + ": a duplicate of an earlier entry");
    }
    out->push_back(std::move(item));
  }
  return Status::Ok();
}

// nlohmann keeps the last of two members with the same name; a signed
// document must have one reading, so a duplicate name is refused.
class DuplicateKeyCheck {
 public:
  bool operator()(int /*depth*/, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if (event == E::object_start) {
      names_.emplace_back();
    } else if (event == E::object_end) {
      if (!names_.empty()) names_.pop_back();
    } else if (event == E::key && !names_.empty()) {
      if (!names_.back().insert(parsed.get<std::string>()).second) {
        duplicate_ = parsed.get<std::string>();
        throw std::invalid_argument("duplicate member");
      }
    }
    return true;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> names_;  // of each open object
  std::string duplicate_;
};

Json EncodePatch(const FeedPatch& p) {
  return Json{{"id", p.id},
              {"line", p.line},
              {"version", p.version},
              {"file", p.file},
              {"length", p.length},
              {"sha256", HexEncode(p.sha256)},
              {"root", HexEncode(p.root)},
              {"base_root", HexEncode(p.base_root)},
              {"requires", p.requires_patches},
              {"release_counter", p.release_counter},
              {"severity", p.severity},
              {"cves", p.cves},
              {"activation", p.activation},
              {"released_at", p.released_at}};
}

Json EncodeBase(const FeedBase& b) {
  return Json{{"line", b.line},
              {"version", b.version},
              {"file", b.file},
              {"length", b.length},
              {"sha256", HexEncode(b.sha256)},
              {"root", HexEncode(b.root)},
              {"release_counter", b.release_counter}};
}

// One "sig ed25519 KEYID SIG" line of the file.
struct SigLine {
  KeyId id{};
  Ed25519Sig sig{};
};

// Splits `file` into its signature lines and payload; kCorruption naming
// `what` and the line when it is not the format of index.h.
Status SplitFile(std::string_view file, const std::string& what, std::vector<SigLine>* sigs,
                 std::string_view* payload) {
  if (file.size() > kMaxIndexBytes) {
    return Status::Corruption(what + ": " + std::to_string(file.size()) +
                              " bytes, more than the limit of " + std::to_string(kMaxIndexBytes));
  }
  if (file.substr(0, kFileHeader.size()) != kFileHeader) {
    // "cryptex-feed N" with another number N is a newer format, anything
    // else no index at all.
    std::string_view first = file.substr(0, std::min(file.find('\n'), size_t{64}));
    std::string_view number = first.substr(std::min(first.size(), kFileHeaderPrefix.size()));
    bool other_version = first.substr(0, kFileHeaderPrefix.size()) == kFileHeaderPrefix &&
                         !number.empty() &&
                         number.find_first_not_of("0123456789") == std::string_view::npos;
    if (other_version) {
      return Status::Unsupported(what + ": unsupported feed index format \"" + std::string(first) +
                                 "\" (this cryptex reads \"cryptex-feed 1\")");
    }
    return Status::Corruption(what + ": not a cryptex feed index (no \"cryptex-feed 1\" header)");
  }
  size_t pos = kFileHeader.size();
  for (size_t line = 2;; ++line) {
    size_t nl = file.find('\n', pos);
    if (nl == std::string_view::npos) {
      return Status::Corruption(what + ": line " + std::to_string(line) +
                                ": truncated (no blank line before the payload)");
    }
    std::string_view text = file.substr(pos, nl - pos);
    pos = nl + 1;
    if (text.empty()) break;
    SigLine s;
    const size_t id_at = kSigPrefix.size(), sig_at = id_at + 64 + 1;
    bool ok = text.size() == sig_at + 128 && text.substr(0, id_at) == kSigPrefix &&
              text[id_at + 64] == ' ' && DecodeHexExact(text.substr(id_at, 64), 32, s.id.data()) &&
              DecodeHexExact(text.substr(sig_at), 64, s.sig.data());
    if (!ok) {
      return Status::Corruption(what + ": line " + std::to_string(line) +
                                ": not \"sig ed25519 <64 hex key id> <128 hex signature>\"");
    }
    if (sigs->size() == kMaxIndexSignatures) {
      return Status::Corruption(what + ": more than " + std::to_string(kMaxIndexSignatures) +
                                " signatures");
    }
    sigs->push_back(s);
  }
  if (sigs->empty()) return Status::Corruption(what + ": no signature line");
  *payload = file.substr(pos);
  return Status::Ok();
}

}  // namespace

const FeedPatch* Index::FindPatch(const std::string& line, const std::string& id) const {
  for (const auto& p : patches) {
    if (p.line == line && p.id == id) return &p;
  }
  return nullptr;
}

const Revocation* Index::FindRevocation(const std::string& line, const std::string& id) const {
  for (const auto& r : revoked) {
    if (r.id == id && (r.line.empty() || r.line == line)) return &r;
  }
  return nullptr;
}

std::string EncodePayload(const Index& index) {
  Json patches = Json::array(), bases = Json::array(), revoked = Json::array(),
       keys = Json::array();
  for (const auto& p : index.patches) patches.push_back(EncodePatch(p));
  for (const auto& b : index.bases) bases.push_back(EncodeBase(b));
  for (const auto& r : index.revoked) {
    revoked.push_back(Json{{"line", r.line}, {"id", r.id}, {"reason", r.reason}, {"at", r.at}});
  }
  for (const auto& k : index.keys) {
    keys.push_back(Json{{"id", HexEncode(k.id)}, {"ed25519", HexEncode(k.raw)}});
  }
  Json j{{"format", kPayloadFormat},      {"version", index.version},
         {"published", index.published},  {"expires", index.expires},
         {"patches", std::move(patches)}, {"bases", std::move(bases)},
         {"revoked", std::move(revoked)}, {"keys", std::move(keys)}};
  return j.dump(1) + "\n";
}

Result<Index> DecodePayload(std::string_view payload, const std::string& what) {
  if (payload.size() > kMaxIndexBytes) {
    return Status::Corruption(what + ": payload of " + std::to_string(payload.size()) +
                              " bytes, more than the limit of " + std::to_string(kMaxIndexBytes));
  }
  DuplicateKeyCheck dup;
  Json j;
  try {
    j = Json::parse(payload, std::ref(dup));
  } catch (const std::exception& e) {
    if (!dup.duplicate().empty()) {
      return Status::Corruption(what + ": member \"" + dup.duplicate() + "\" given twice");
    }
    return Status::Corruption(what + ": payload is not JSON: " + e.what());
  }
  if (!j.is_object()) return Status::Corruption(what + ": payload is not a JSON object");
  Fields top(j, what);
  std::string format;
  CX_RETURN_IF_ERROR(top.String("format", &format));
  if (format != kPayloadFormat) {
    return Status::Unsupported(what + ": unsupported payload format \"" + format +
                               "\" (this cryptex reads \"" + kPayloadFormat + "\")");
  }
  Index index;
  CX_RETURN_IF_ERROR(top.Unsigned("version", &index.version));
  CX_RETURN_IF_ERROR(top.Signed("published", &index.published));
  CX_RETURN_IF_ERROR(top.Signed("expires", &index.expires));
  CX_RETURN_IF_ERROR(DecodeArray(top, "patches", what, &index.patches, DecodePatch,
                                 [](const FeedPatch& p) { return std::pair(p.line, p.id); }));
  CX_RETURN_IF_ERROR(DecodeArray(top, "bases", what, &index.bases, DecodeBase,
                                 [](const FeedBase& b) { return b.file; }));
  CX_RETURN_IF_ERROR(DecodeArray(top, "revoked", what, &index.revoked, DecodeRevocation,
                                 [](const Revocation& r) { return std::pair(r.line, r.id); }));
  CX_RETURN_IF_ERROR(DecodeArray(top, "keys", what, &index.keys, DecodeKey,
                                 [](const AnnouncedKey& k) { return k.id; }));
  CX_RETURN_IF_ERROR(top.Finish());
  return index;
}

Result<std::string> SignIndex(const Index& index, const std::vector<const PrivateKey*>& keys) {
  if (keys.empty()) return Status::InvalidArgument("feed index: no signing key given");
  std::string payload;
  try {
    payload = EncodePayload(index);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("feed index: cannot encode: ") + e.what());
  }
  const std::string message = SignedMessage(payload);
  std::string file(kFileHeader);
  std::set<KeyId> done;
  for (const PrivateKey* key : keys) {
    if (!done.insert(key->id()).second) continue;  // the same key twice signs once
    CX_ASSIGN_OR_RETURN(Ed25519Sig sig, key->Sign(Bytes(message)));
    file += std::string(kSigPrefix) + HexEncode(key->id()) + " " + HexEncode(sig) + "\n";
  }
  file += "\n";
  file += payload;
  if (file.size() > kMaxIndexBytes) {
    return Status::InvalidArgument("feed index: " + std::to_string(file.size()) +
                                   " bytes, more than the " + std::to_string(kMaxIndexBytes) +
                                   " a device accepts");
  }
  return file;
}

Result<VerifiedIndex> VerifyIndex(std::string_view file, const TrustStore& trusted,
                                  const std::vector<AnnouncedKey>& extra, const std::string& what) {
  std::vector<SigLine> sigs;
  std::string_view payload;
  CX_RETURN_IF_ERROR(SplitFile(file, what, &sigs, &payload));
  const std::string message = SignedMessage(payload);
  VerifiedIndex out;
  std::string unknown;
  for (const SigLine& s : sigs) {
    const PublicKey* key = trusted.Find(s.id);
    std::string origin = key != nullptr ? key->origin() : "";
    std::optional<PublicKey> announced;
    if (key == nullptr) {
      for (const auto& k : extra) {
        if (k.id != s.id) continue;
        auto pk = PublicKey::FromRaw(k.raw);
        if (pk.ok()) announced.emplace(std::move(pk).value());
        break;
      }
      if (announced) {
        key = &*announced;
        origin = "announced by an earlier index";
      }
    }
    if (key == nullptr) {
      unknown += (unknown.empty() ? "" : ", ") + ShortId(s.id);
      continue;
    }
    if (!key->Verify(Bytes(message), s.sig)) {
      return Status::Signature(what + ": bad signature by key " + ShortId(s.id) + " (" + origin +
                               "): index tampered with");
    }
    out.signed_by.push_back(s.id);
  }
  if (out.signed_by.empty()) {
    return Status::Signature(what + ": signed only by unknown key(s) " + unknown + " (not in " +
                             trusted.Describe() + " nor announced by an earlier index)");
  }
  CX_ASSIGN_OR_RETURN(out.index, DecodePayload(payload, what));
  out.payload = std::string(payload);
  return out;
}

Result<Index> ReadIndexUnverified(std::string_view file, const std::string& what) {
  std::vector<SigLine> sigs;
  std::string_view payload;
  CX_RETURN_IF_ERROR(SplitFile(file, what, &sigs, &payload));
  return DecodePayload(payload, what);
}

}  // namespace cryptex::feed
