// Byte-level pieces of the delta format: varints, CRC-32C, streams.
#include <zstd.h>

#include <array>
#include <cstring>
#include <memory>
#include <optional>

#include "delta_internal.h"

namespace cryptex::delta {

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void PutU64(std::vector<uint8_t>* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void PutVarint(std::vector<uint8_t>* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

bool ByteCursor::U8(uint8_t* v) {
  if (remaining() < 1) return false;
  *v = b_[pos_++];
  return true;
}

bool ByteCursor::U32(uint64_t* v) {
  if (remaining() < 4) return false;
  uint64_t r = 0;
  for (int i = 0; i < 4; ++i) r |= uint64_t{b_[pos_ + i]} << (8 * i);
  pos_ += 4;
  *v = r;
  return true;
}

bool ByteCursor::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i) r |= uint64_t{b_[pos_ + i]} << (8 * i);
  pos_ += 8;
  *v = r;
  return true;
}

// LEB128, at most 10 bytes; the 10th may only hold the top bit, and a
// non-minimal encoding (a trailing zero group) is refused so that every value
// has one encoding.
bool ByteCursor::Varint(uint64_t* v) {
  uint64_t r = 0;
  for (size_t i = 0; i < 10; ++i) {
    if (pos_ + i >= b_.size()) return false;
    const uint8_t byte = b_[pos_ + i];
    if (i == 9 && byte > 1) return false;
    r |= uint64_t{byte & 0x7fu} << (7 * i);
    if ((byte & 0x80) == 0) {
      if (i > 0 && byte == 0) return false;
      pos_ += i + 1;
      *v = r;
      return true;
    }
  }
  return false;
}

bool ByteCursor::Bytes(size_t n, std::span<const uint8_t>* out) {
  if (remaining() < n) return false;
  *out = b_.subspan(pos_, n);
  pos_ += n;
  return true;
}

namespace {

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> kTable = MakeCrcTable();
  crc = ~crc;
  for (uint8_t b : bytes) crc = kTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

// zstd frames are stored without their 4-byte magic number (it would be the
// same in every stream); the decoder puts it back.
constexpr uint8_t kZstdMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};

std::vector<uint8_t> ZstdCompress(std::span<const uint8_t> raw, int level) {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
  const size_t n =
      ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), raw.data(), raw.size(), level);
  if (ZSTD_isError(n) || n < sizeof kZstdMagic ||
      std::memcmp(out.data(), kZstdMagic, sizeof kZstdMagic) != 0) {
    return {};
  }
  out.resize(n);
  out.erase(out.begin(), out.begin() + sizeof kZstdMagic);
  return out;
}

bool ZstdDecompress(std::span<const uint8_t> stored, uint64_t raw_size, std::vector<uint8_t>* raw) {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  std::vector<uint8_t> frame(std::begin(kZstdMagic), std::end(kZstdMagic));
  frame.insert(frame.end(), stored.begin(), stored.end());
  // A frame must declare exactly the size its container declares; the
  // output buffer is allocated from that (already bounded) size only.
  if (ZSTD_getFrameContentSize(frame.data(), frame.size()) != raw_size) return false;
  if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != frame.size()) return false;
  raw->resize(raw_size);
  const size_t n =
      ZSTD_decompressDCtx(dctx.get(), raw->data(), raw->size(), frame.data(), frame.size());
  return !ZSTD_isError(n) && n == raw_size;
}

// The declared content size of a stored frame, or nullopt.
std::optional<uint64_t> ZstdContentSize(std::span<const uint8_t> stored) {
  std::vector<uint8_t> frame(std::begin(kZstdMagic), std::end(kZstdMagic));
  frame.insert(frame.end(), stored.begin(), stored.end());
  const unsigned long long n = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (n == ZSTD_CONTENTSIZE_UNKNOWN || n == ZSTD_CONTENTSIZE_ERROR) return std::nullopt;
  return n;
}

void PutStream(std::vector<uint8_t>* out, std::span<const uint8_t> raw, int level) {
  std::vector<uint8_t> z = raw.empty() ? std::vector<uint8_t>{} : ZstdCompress(raw, level);
  const bool use_zstd = !z.empty() && z.size() < raw.size();
  PutVarint(out, raw.size());
  PutVarint(out, use_zstd ? z.size() : raw.size());
  out->push_back(use_zstd ? kStreamZstd : kStreamRaw);
  if (use_zstd) {
    out->insert(out->end(), z.begin(), z.end());
  } else {
    out->insert(out->end(), raw.begin(), raw.end());
  }
}

bool GetStream(ByteCursor* in, uint64_t max_raw, std::vector<uint8_t>* raw, std::string* why) {
  uint64_t raw_size = 0, stored_size = 0;
  uint8_t method = 0;
  std::span<const uint8_t> stored;
  if (!in->Varint(&raw_size) || !in->Varint(&stored_size) || !in->U8(&method)) {
    *why = "truncated stream header";
    return false;
  }
  if (raw_size > max_raw) {
    *why = "stream of " + std::to_string(raw_size) + " bytes exceeds its bound " +
           std::to_string(max_raw);
    return false;
  }
  if (!in->Bytes(stored_size, &stored)) {
    *why = "stream runs past the segment";
    return false;
  }
  if (method == kStreamRaw) {
    if (stored_size != raw_size) {
      *why = "raw stream sizes disagree";
      return false;
    }
    raw->assign(stored.begin(), stored.end());
    return true;
  }
  if (method != kStreamZstd) {
    *why = "unknown stream method " + std::to_string(method);
    return false;
  }
  if (!ZstdDecompress(stored, raw_size, raw)) {
    *why = "bad zstd stream";
    return false;
  }
  return true;
}

}  // namespace cryptex::delta
