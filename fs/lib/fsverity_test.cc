#include "fsverity.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex {
namespace {

using test::RandomBytes;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

constexpr uint64_t kB = 4096;

const uint8_t* U8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// What `fsverity digest FILE` prints: "sha256:HEX FILE".
std::string OracleDigest(const std::string& path) {
  const test::CommandResult r = RunCommand("fsverity digest " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const std::string prefix = "sha256:";
  EXPECT_EQ(r.out.compare(0, prefix.size(), prefix), 0) << r.out;
  if (r.out.size() < prefix.size() + 64) return "(no digest: '" + r.out + "')";
  EXPECT_EQ(r.out.substr(prefix.size() + 64), " " + path + "\n");
  return r.out.substr(prefix.size(), 64);
}

// Feeds `data` in chunks of varying odd sizes.
Digest Streamed(const std::string& data, size_t first_step) {
  FsVerityHasher h;
  for (size_t off = 0, step = first_step; off < data.size();
       off += step, step = step * 7 % 20011 + 1) {
    h.Update(data.data() + off, std::min(step, data.size() - off));
  }
  return h.Final();
}

// Alternates Update() and AddLeafHashes(LeafHashes(...)) over 4 KiB-aligned
// pieces, the last piece possibly partial, as a parallel builder would.
Digest ViaLeafHashes(const std::string& data, size_t piece_blocks) {
  FsVerityHasher h;
  const size_t piece = piece_blocks * kB;
  bool use_leaves = true;
  for (size_t off = 0; off < data.size(); off += piece, use_leaves = !use_leaves) {
    const size_t len = std::min(piece, data.size() - off);
    if (use_leaves) {
      const std::vector<Digest> leaves = LeafHashes(U8(data) + off, len);
      h.AddLeafHashes(leaves, len);
    } else {
      h.Update(data.data() + off, len);
    }
  }
  return h.Final();
}

class FsVerityOracleTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(FsVerityOracleTest, MatchesFsverityDigest) {
  const uint64_t size = GetParam();
  TempDir dir;
  const std::string data = RandomBytes(size, size * 31 + 1);
  const std::string path = dir.Join("file");
  WriteFile(path, data);
  const std::string expect = OracleDigest(path);

  EXPECT_EQ(HexEncode(FsVerityDigest(data.data(), data.size())), expect) << "one-shot";
  EXPECT_EQ(HexEncode(Streamed(data, 1)), expect) << "streamed from 1 byte";
  EXPECT_EQ(HexEncode(Streamed(data, 4095)), expect) << "streamed from 4095 bytes";
  for (size_t piece_blocks : {1, 3, 128, 300}) {
    EXPECT_EQ(HexEncode(ViaLeafHashes(data, piece_blocks)), expect)
        << "leaf hashes, pieces of " << piece_blocks << " blocks";
  }
}

INSTANTIATE_TEST_SUITE_P(EdgeSizes, FsVerityOracleTest,
                         ::testing::Values(0, 1, 4095, 4096, 4097, 2 * 4096, 128 * 4096,
                                           128 * 4096 + 1, 129 * 4096, 128 * 128 * 4096,
                                           129 * 128 * 4096 + 5, 10 * 1000 * 1000),
                         [](const ::testing::TestParamInfo<uint64_t>& p) {
                           return "bytes_" + std::to_string(p.param);
                         });

TEST(FsVerityTest, ZeroFileMatchesOracle) {  // sparse-like content
  TempDir dir;
  const std::string data(3 * 1000 * 1000, '\0');
  const std::string path = dir.Join("zeros");
  WriteFile(path, data);
  EXPECT_EQ(HexEncode(FsVerityDigest(data.data(), data.size())), OracleDigest(path));
}

TEST(FsVerityTest, DigestDependsOnContentAndLength) {
  const std::string a = RandomBytes(10000, 5);
  std::string b = a;
  b[9999] ^= 1;
  EXPECT_NE(FsVerityDigest(a.data(), a.size()), FsVerityDigest(b.data(), b.size()));
  // Zero padding is not content: the length is in the descriptor.
  const std::string one(1, '\0');
  const std::string block(kB, '\0');
  EXPECT_NE(FsVerityDigest(one.data(), one.size()), FsVerityDigest(block.data(), block.size()));
  EXPECT_NE(FsVerityDigest(nullptr, 0), FsVerityDigest(one.data(), one.size()));
}

TEST(FsVerityTest, FinalResetsForReuse) {
  const std::string a = RandomBytes(3 * kB + 17, 6);
  const std::string b = RandomBytes(200 * kB, 7);
  FsVerityHasher h;
  h.Update(a.data(), a.size());
  EXPECT_EQ(h.Final(), FsVerityDigest(a.data(), a.size()));
  h.Update(b.data(), b.size());
  EXPECT_EQ(h.Final(), FsVerityDigest(b.data(), b.size()));
  EXPECT_EQ(h.Final(), FsVerityDigest(nullptr, 0));
  const std::vector<Digest> leaves = LeafHashes(U8(a), a.size());
  h.AddLeafHashes(leaves, a.size());
  EXPECT_EQ(h.Final(), FsVerityDigest(a.data(), a.size()));
}

TEST(FsVerityTest, LeafHashesPadLastBlock) {
  const std::string data = RandomBytes(2 * kB + 5, 8);
  const std::vector<Digest> leaves = LeafHashes(U8(data), data.size());
  ASSERT_EQ(leaves.size(), 3u);
  EXPECT_EQ(leaves[1], Sha256::Hash(data.data() + kB, kB));
  std::string last = data.substr(2 * kB);
  last.resize(kB, '\0');
  EXPECT_EQ(leaves[2], Sha256::Hash(last.data(), last.size()));
  EXPECT_TRUE(LeafHashes(nullptr, 0).empty());
}

TEST(FsVerityDeathTest, MisalignedAddLeafHashesAborts) {
  const std::string data = RandomBytes(kB, 9);
  const std::vector<Digest> leaves = LeafHashes(U8(data), data.size());
  EXPECT_DEATH(
      {
        FsVerityHasher h;
        h.Update("x", 1);
        h.AddLeafHashes(leaves, data.size());
      },
      "not a multiple of 4096");
  EXPECT_DEATH(
      {
        FsVerityHasher h;
        h.AddLeafHashes(leaves, 3 * kB);
      },
      "leaf count");
}

}  // namespace
}  // namespace cryptex
