#include "merkle.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex {
namespace {

using test::RandomBytes;
using test::ReadFile;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

constexpr uint64_t kB = 4096;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

struct Built {
  Status status;
  std::vector<uint8_t> area;
  Digest root{};
};

Built Build(const std::string& data, const std::string& salt, int threads) {
  Built b;
  const uint64_t n = data.size() / kB;
  b.status = BuildMerkleTree(
      n, Bytes(salt),
      [&](uint64_t i, uint8_t* buf) {
        std::memcpy(buf, data.data() + i * kB, kB);
        return Status::Ok();
      },
      threads, &b.area, &b.root);
  return b;
}

std::string VerityArgs(uint64_t n, const std::string& salt) {
  return " --no-superblock --format=1 --hash=sha256 --data-block-size=4096"
         " --hash-block-size=4096 --data-blocks=" +
         std::to_string(n) +
         " --salt=" + (salt.empty() ? std::string("-") : HexEncode(Bytes(salt)));
}

// `veritysetup verify` of `file` holding n data blocks followed (at
// n * 4096) by a hash area. Returns its exit code.
int VerityVerify(const std::string& file, uint64_t n, const std::string& salt, const Digest& root) {
  return RunCommand("veritysetup verify" + VerityArgs(n, salt) +
                    " --hash-offset=" + std::to_string(n * kB) + " " + ShellQuote(file) + " " +
                    ShellQuote(file) + " " + HexEncode(root) + " >/dev/null 2>&1")
      .exit_code;
}

void AppendFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

TEST(TreeGeometryTest, Shapes) {
  struct Case {
    uint64_t blocks;
    std::vector<uint64_t> counts;  // level 0 first
  };
  const Case cases[] = {
      {1, {}},
      {2, {1}},
      {127, {1}},
      {128, {1}},
      {129, {2, 1}},
      {128 * 128, {128, 1}},
      {128 * 128 + 1, {129, 2, 1}},
      {128ull * 128 * 128, {16384, 128, 1}},
      {1ull << 40, {1ull << 33, 1ull << 26, 1ull << 19, 1ull << 12, 32, 1}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.blocks);
    const TreeGeometry g = TreeGeometry::For(c.blocks);
    EXPECT_EQ(g.data_blocks, c.blocks);
    ASSERT_EQ(g.levels.size(), c.counts.size());
    uint64_t total = 0;
    for (size_t i = 0; i < c.counts.size(); ++i) {
      EXPECT_EQ(g.levels[i].count, c.counts[i]) << "level " << i;
      total += c.counts[i];
    }
    EXPECT_EQ(g.total_hash_blocks, total);
    // Top level first, levels contiguous.
    uint64_t pos = 0;
    for (size_t i = g.levels.size(); i-- > 0;) {
      EXPECT_EQ(g.levels[i].start, pos) << "level " << i;
      pos += g.levels[i].count;
    }
  }
}

TEST(MerkleTest, SaltedBlockHashPrependsSalt) {
  const std::string salt = RandomBytes(32, 1);
  const std::string block = RandomBytes(kB, 2);
  const std::string joined = salt + block;
  EXPECT_EQ(SaltedBlockHash(Bytes(salt), reinterpret_cast<const uint8_t*>(block.data())),
            Sha256::Hash(joined.data(), joined.size()));
  EXPECT_EQ(SaltedBlockHash({}, reinterpret_cast<const uint8_t*>(block.data())),
            Sha256::Hash(block.data(), block.size()));
}

// The oracle: for each edge-case size, veritysetup's own tree must be byte
// for byte ours, and `veritysetup verify` must accept ours.
class MerkleOracleTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(MerkleOracleTest, MatchesVeritysetup) {
  const uint64_t n = GetParam();
  TempDir dir;
  const std::string data = RandomBytes(n * kB, n);
  for (const std::string& salt : {RandomBytes(32, n + 1), std::string()}) {
    SCOPED_TRACE("salt size " + std::to_string(salt.size()));
    const std::string file = dir.Join("image");
    const std::string ref_hash = dir.Join("ref_hash");
    WriteFile(file, data);
    WriteFile(ref_hash, "");

    const test::CommandResult fmt = RunCommand("veritysetup format" + VerityArgs(n, salt) + " " +
                                               ShellQuote(file) + " " + ShellQuote(ref_hash));
    ASSERT_EQ(fmt.exit_code, 0) << fmt.out;
    const size_t at = fmt.out.find("Root hash:");
    ASSERT_NE(at, std::string::npos) << fmt.out;
    const size_t hex_at = fmt.out.find_first_of("0123456789abcdef", at + 10);
    const std::string ref_root = fmt.out.substr(hex_at, 64);

    const std::string ref_area = ReadFile(ref_hash);
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      const Built b = Build(data, salt, threads);
      ASSERT_TRUE(b.status.ok()) << b.status.ToString();
      EXPECT_EQ(HexEncode(b.root), ref_root);
      EXPECT_EQ(b.area.size(), TreeGeometry::For(n).total_hash_blocks * kB);
      EXPECT_TRUE(std::string(b.area.begin(), b.area.end()) == ref_area)
          << "hash area differs from veritysetup's (" << b.area.size() << " vs " << ref_area.size()
          << " bytes)";
    }

    // Independent of the byte comparison: veritysetup verifies our tree
    // stored right after the data, as in an image.
    const Built b = Build(data, salt, 2);
    AppendFile(file, b.area);
    EXPECT_EQ(VerityVerify(file, n, salt, b.root), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(EdgeSizes, MerkleOracleTest,
                         ::testing::Values(1, 2, 3, 127, 128, 129, 128 * 128, 128 * 128 + 1),
                         [](const ::testing::TestParamInfo<uint64_t>& p) {
                           return "blocks_" + std::to_string(p.param);
                         });

// The harness above must be able to fail: a corrupted tree or a wrong root
// is rejected by veritysetup.
TEST(MerkleTest, VeritysetupRejectsCorruption) {
  const uint64_t n = 300;  // two levels: 3 + 1 hash blocks
  TempDir dir;
  const std::string salt = RandomBytes(32, 9);
  const std::string data = RandomBytes(n * kB, 10);
  const Built b = Build(data, salt, 2);
  ASSERT_TRUE(b.status.ok());
  const std::string file = dir.Join("image");

  WriteFile(file, data);
  AppendFile(file, b.area);
  ASSERT_EQ(VerityVerify(file, n, salt, b.root), 0);

  Digest wrong_root = b.root;
  wrong_root[31] ^= 1;
  EXPECT_NE(VerityVerify(file, n, salt, wrong_root), 0);

  std::string other_salt = salt;
  other_salt[0] ^= 1;
  EXPECT_NE(VerityVerify(file, n, other_salt, b.root), 0);

  for (uint64_t hash_block = 0; hash_block < b.area.size() / kB; ++hash_block) {
    std::vector<uint8_t> bad = b.area;
    bad[hash_block * kB + 5] ^= 0x40;
    WriteFile(file, data);
    AppendFile(file, bad);
    EXPECT_NE(VerityVerify(file, n, salt, b.root), 0) << "hash block " << hash_block;
  }
  std::string bad_data = data;
  bad_data[(n - 1) * kB] ^= 1;
  WriteFile(file, bad_data);
  AppendFile(file, b.area);
  EXPECT_NE(VerityVerify(file, n, salt, b.root), 0);
}

TEST(MerkleTest, ThreadCountDoesNotChangeTheTree) {
  const uint64_t n = 5000;
  const std::string salt = RandomBytes(32, 11);
  const std::string data = RandomBytes(n * kB, 12);
  const Built one = Build(data, salt, 1);
  ASSERT_TRUE(one.status.ok());
  for (int threads : {0, 2, 4, 7, 64}) {
    const Built b = Build(data, salt, threads);
    ASSERT_TRUE(b.status.ok());
    EXPECT_EQ(b.root, one.root) << threads;
    EXPECT_TRUE(b.area == one.area) << threads;
  }
}

TEST(MerkleTest, PropagatesReadErrors) {
  const uint64_t n = 4000;
  for (int threads : {1, 2}) {
    for (uint64_t bad : {uint64_t{0}, uint64_t{1999}, uint64_t{2000}, n - 1}) {
      std::vector<uint8_t> area;
      Digest root{};
      const Status st = BuildMerkleTree(
          n, {},
          [&](uint64_t i, uint8_t* buf) {
            if (i == bad) return Status::IOError("block " + std::to_string(i));
            std::memset(buf, static_cast<int>(i), kB);
            return Status::Ok();
          },
          threads, &area, &root);
      EXPECT_EQ(st.code(), Code::kIOError);
      EXPECT_EQ(st.message(), "block " + std::to_string(bad));
    }
  }
  std::vector<uint8_t> area;
  Digest root{};
  const Status st = BuildMerkleTree(
      1, {}, [](uint64_t, uint8_t*) { return Status::Corruption("one"); }, 1, &area, &root);
  EXPECT_EQ(st.code(), Code::kCorruption);
}

TEST(MerkleTest, RejectsBadArguments) {
  std::vector<uint8_t> area;
  Digest root{};
  auto never = [](uint64_t, uint8_t*) { return Status::Internal("must not be called"); };
  EXPECT_EQ(BuildMerkleTree(0, {}, never, 1, &area, &root).code(), Code::kInvalidArgument);
  const std::string big_salt(257, 'x');
  EXPECT_EQ(BuildMerkleTree(2, Bytes(big_salt), never, 1, &area, &root).code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace cryptex
