#include "manifest.h"

#include <cstring>

#include "format.h"

namespace cryptex {

using namespace format;

namespace {

inline constexpr size_t kMaxRecords = kMaxManifestRecords;
inline constexpr size_t kMaxStringLen = kMaxManifestStringLen;

// A string field as Decode reads it; `field` names it in the error.
Status CheckString(const std::string& field, const std::string& s) {
  if (s.size() > kMaxStringLen) {
    return Status::InvalidArgument("manifest " + field + " is " + std::to_string(s.size()) +
                                   " bytes; the limit is " + std::to_string(kMaxStringLen));
  }
  if (s.find('\0') != std::string::npos) {
    return Status::InvalidArgument("manifest " + field + " contains a NUL byte");
  }
  return Status::Ok();
}

Status CheckList(const std::string& field, const std::vector<std::string>& list) {
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string what = field + "[" + std::to_string(i) + "]";
    if (list[i].empty()) return Status::InvalidArgument("manifest " + what + " is empty");
    CX_RETURN_IF_ERROR(CheckString(what, list[i]));
  }
  return Status::Ok();
}

class TlvWriter {
 public:
  void Bytes(uint16_t tag, uint16_t flags, const void* data, size_t len) {
    DiskTlv t;
    t.tag.set(tag);
    t.flags.set(flags);
    t.length.set(static_cast<uint32_t>(len));
    Append(&t, sizeof t);
    Append(data, len);
    out_.resize((out_.size() + 7) & ~size_t{7}, 0);
    ++count_;
  }
  void String(uint16_t tag, const std::string& s, uint16_t flags = 0) {
    if (!s.empty()) Bytes(tag, flags, s.data(), s.size());
  }
  void U64(uint16_t tag, uint64_t v, uint16_t flags = 0) {
    Le64 le;
    le.set(v);
    Bytes(tag, flags, &le, 8);
  }
  std::vector<uint8_t> Finish() {
    DiskManifestHeader h;
    std::memset(&h, 0, sizeof h);
    std::memcpy(h.magic, kManifestMagic, 8);
    h.record_count.set(count_);
    std::vector<uint8_t> r(sizeof h + out_.size());
    std::memcpy(r.data(), &h, sizeof h);
    if (!out_.empty()) std::memcpy(r.data() + sizeof h, out_.data(), out_.size());
    return r;
  }

 private:
  void Append(const void* p, size_t n) {
    const size_t at = out_.size();
    out_.resize(at + n);
    if (n) std::memcpy(out_.data() + at, p, n);
  }
  std::vector<uint8_t> out_;
  uint32_t count_ = 0;
};

}  // namespace

std::vector<uint8_t> Manifest::Encode() const {
  TlvWriter w;
  w.String(kTagName, name, kTlvCritical);
  w.String(kTagVersion, version);
  w.U64(kTagReleaseCounter, release_counter, kTlvCritical);
  w.U64(kTagCreatedAt, created_at);
  w.String(kTagDescription, description);
  w.String(kTagPatchId, patch_id, kTlvCritical);
  if (base_root_digest) w.Bytes(kTagBaseRootDigest, kTlvCritical, base_root_digest->data(), 32);
  for (const auto& r : requires_patches) w.String(kTagRequires, r, kTlvCritical);
  w.String(kTagSeverity, severity);
  for (const auto& c : cves) w.String(kTagCve, c);
  if (released_at) w.U64(kTagReleasedAt, released_at);
  w.String(kTagActivation, activation, kTlvCritical);
  return w.Finish();
}

Status Manifest::Validate() const {
  if (name.empty()) return Status::InvalidArgument("manifest name is empty");
  CX_RETURN_IF_ERROR(CheckString("name", name));
  CX_RETURN_IF_ERROR(CheckString("version", version));
  CX_RETURN_IF_ERROR(CheckString("description", description));
  CX_RETURN_IF_ERROR(CheckString("patch id", patch_id));
  CX_RETURN_IF_ERROR(CheckList("requires", requires_patches));
  CX_RETURN_IF_ERROR(CheckString("severity", severity));
  CX_RETURN_IF_ERROR(CheckList("cve", cves));
  CX_RETURN_IF_ERROR(CheckString("activation", activation));
  const std::vector<uint8_t> bytes = Encode();
  const uint32_t records = LoadLE32(bytes.data() + 8);
  if (records > kMaxRecords) {
    return Status::InvalidArgument("manifest has " + std::to_string(records) +
                                   " records; the limit is " + std::to_string(kMaxRecords));
  }
  if (bytes.size() > kMaxManifestBytes) {
    return Status::InvalidArgument("manifest encodes to " + std::to_string(bytes.size()) +
                                   " bytes; the limit is " + std::to_string(kMaxManifestBytes));
  }
  return Status::Ok();
}

Result<Manifest> Manifest::Decode(std::span<const uint8_t> bytes, const std::string& what) {
  auto bad = [&](size_t off, const std::string& m) {
    return Status::Corruption(what + " +" + std::to_string(off) + ": " + m);
  };
  DiskManifestHeader h;
  if (bytes.size() < sizeof h) return bad(0, "manifest too short");
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kManifestMagic, 8) != 0) return bad(0, "bad manifest magic");
  uint32_t count = h.record_count.get();
  if (count > kMaxRecords) return bad(8, "too many manifest records");
  Manifest m;
  size_t off = sizeof h;
  bool have_name = false;
  for (uint32_t i = 0; i < count; ++i) {
    DiskTlv t;
    if (bytes.size() - off < sizeof t) return bad(off, "record header past end of manifest");
    std::memcpy(&t, bytes.data() + off, sizeof t);
    const size_t len = t.length.get();
    const size_t voff = off + sizeof t;
    if (len > bytes.size() - voff) return bad(off, "record value past end of manifest");
    const uint8_t* v = bytes.data() + voff;
    auto str = [&](std::string* out) -> Status {
      if (len == 0 || len > kMaxStringLen) return bad(off, "bad string length");
      if (std::memchr(v, 0, len) != nullptr) return bad(off, "NUL in string");
      out->assign(reinterpret_cast<const char*>(v), len);
      return Status::Ok();
    };
    auto u64 = [&](uint64_t* out) -> Status {
      if (len != 8) return bad(off, "integer record of length " + std::to_string(len));
      *out = LoadLE64(v);
      return Status::Ok();
    };
    std::string s;
    switch (t.tag.get()) {
      case kTagName:
        CX_RETURN_IF_ERROR(str(&m.name));
        have_name = true;
        break;
      case kTagVersion:
        CX_RETURN_IF_ERROR(str(&m.version));
        break;
      case kTagDescription:
        CX_RETURN_IF_ERROR(str(&m.description));
        break;
      case kTagReleaseCounter:
        CX_RETURN_IF_ERROR(u64(&m.release_counter));
        break;
      case kTagCreatedAt:
        CX_RETURN_IF_ERROR(u64(&m.created_at));
        break;
      case kTagPatchId:
        CX_RETURN_IF_ERROR(str(&m.patch_id));
        break;
      case kTagBaseRootDigest: {
        if (len != 32) return bad(off, "base root digest must be 32 bytes");
        Digest d;
        std::memcpy(d.data(), v, 32);
        m.base_root_digest = d;
        break;
      }
      case kTagRequires:
        CX_RETURN_IF_ERROR(str(&s));
        m.requires_patches.push_back(s);
        break;
      case kTagSeverity:
        CX_RETURN_IF_ERROR(str(&m.severity));
        break;
      case kTagCve:
        CX_RETURN_IF_ERROR(str(&s));
        m.cves.push_back(s);
        break;
      case kTagReleasedAt:
        CX_RETURN_IF_ERROR(u64(&m.released_at));
        break;
      case kTagActivation:
        CX_RETURN_IF_ERROR(str(&m.activation));
        break;
      default:
        if (t.flags.get() & kTlvCritical) {
          return Status::Unsupported(what + " +" + std::to_string(off) +
                                     ": unknown critical manifest tag " +
                                     std::to_string(t.tag.get()));
        }
    }
    off = (voff + len + 7) & ~size_t{7};
    if (off > bytes.size()) off = bytes.size();
  }
  if (!have_name) return bad(0, "manifest has no name");
  return m;
}

}  // namespace cryptex
