#include "trees.h"

#include <cstring>

namespace cryptex::store {
namespace {

constexpr char kMagic[8] = {'C', 'X', 'T', 'R', 'E', 'E', 'S', '1'};

void Put(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

std::vector<uint8_t> EncodeTrees(const TreeMap& trees) {
  std::vector<uint8_t> out(kMagic, kMagic + sizeof kMagic);
  Put(out, trees.size(), 4);
  for (const auto& [ino, bytes] : trees) {
    Put(out, ino, 8);
    Put(out, bytes.size(), 8);
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  return out;
}

Result<TreeMap> DecodeTrees(const std::string& bytes, const std::string& what) {
  size_t pos = 0;
  auto get = [&](int n, uint64_t* v) {
    if (bytes.size() - pos < size_t(n)) return false;
    *v = 0;
    for (int i = 0; i < n; ++i) *v |= uint64_t(uint8_t(bytes[pos + i])) << (8 * i);
    pos += n;
    return true;
  };
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return Status::Corruption(what + ": not a tree file (bad magic)");
  }
  pos = sizeof kMagic;
  uint64_t count = 0;
  if (!get(4, &count)) return Status::Corruption(what + ": truncated at offset 8");
  TreeMap out;
  for (uint64_t i = 0; i < count; ++i) {
    const size_t at = pos;
    uint64_t ino = 0, len = 0;
    if (!get(8, &ino) || !get(8, &len) || bytes.size() - pos < len) {
      return Status::Corruption(what + ": entry " + std::to_string(i) + " truncated at offset " +
                                std::to_string(at));
    }
    if (!out.emplace(ino, std::vector<uint8_t>(bytes.begin() + pos, bytes.begin() + pos + len))
             .second) {
      return Status::Corruption(what + ": inode " + std::to_string(ino) + " twice (offset " +
                                std::to_string(at) + ")");
    }
    pos += len;
  }
  if (pos != bytes.size()) {
    return Status::Corruption(what + ": " + std::to_string(bytes.size() - pos) +
                              " trailing bytes at offset " + std::to_string(pos));
  }
  return out;
}

}  // namespace cryptex::store
