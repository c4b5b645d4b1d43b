#include "sha256.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace cryptex {
namespace {

using test::RandomBytes;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Hex(const Digest& d) { return HexEncode(d); }

std::string HashHex(const std::string& s) { return Hex(Sha256::Hash(s.data(), s.size())); }

TEST(Sha256Test, KnownVectors) {  // FIPS 180-2 examples
  EXPECT_EQ(HashHex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HashHex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HashHex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;
  const std::string a1000(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(a1000.data(), a1000.size());
  EXPECT_EQ(Hex(h.Final()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, StreamingEqualsOneShotAndFinalResets) {
  const std::string data = RandomBytes(100000, 1);
  Sha256 h;
  for (size_t off = 0, step = 1; off < data.size(); off += step, step = step * 3 % 8191 + 1) {
    h.Update(data.data() + off, std::min(step, data.size() - off));
  }
  const Digest streamed = h.Final();
  EXPECT_EQ(streamed, Sha256::Hash(data.data(), data.size()));
  // Final() resets: the same object hashes the next message from scratch.
  h.Update("abc", 3);
  EXPECT_EQ(Hex(h.Final()), HashHex("abc"));
  EXPECT_EQ(Hex(h.Final()), HashHex(""));
  h.Update(nullptr, 0);
  EXPECT_EQ(Hex(h.Final()), HashHex(""));
}

TEST(Sha256Test, MatchesSha256sum) {
  TempDir dir;
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{55}, size_t{56}, size_t{64}, size_t{4096}, size_t{1000003}}) {
    const std::string data = RandomBytes(n, n + 7);
    const std::string path = dir.Join("f");
    WriteFile(path, data);
    const test::CommandResult r = RunCommand("sha256sum " + ShellQuote(path));
    ASSERT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out.substr(0, 64), HashHex(data)) << "size " << n;
  }
}

TEST(Sha256Test, HashIsThreadSafe) {
  const std::string data = RandomBytes(4096 * 64, 2);
  std::vector<Digest> expect;
  for (size_t i = 0; i < 64; ++i) expect.push_back(Sha256::Hash(data.data() + i * 4096, 4096));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (size_t i = 0; i < 64; ++i) {
          if (Sha256::Hash(data.data() + i * 4096, 4096) != expect[i]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(HexTest, RoundTrip) {
  const std::string bytes = RandomBytes(256, 3);
  const std::string hex = HexEncode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  std::string back;
  ASSERT_TRUE(HexDecode(hex, &back));
  EXPECT_EQ(back, bytes);
  EXPECT_EQ(HexEncode({}), "");
  ASSERT_TRUE(HexDecode("", &back));
  EXPECT_EQ(back, "");
}

TEST(HexTest, DecodeAcceptsUpperCaseRejectsGarbage) {
  std::string out = "unchanged";
  ASSERT_TRUE(HexDecode("00Ff7A", &out));
  EXPECT_EQ(out, std::string("\x00\xff\x7a", 3));
  out = "unchanged";
  EXPECT_FALSE(HexDecode("abc", &out));  // odd length
  EXPECT_FALSE(HexDecode("zz", &out));
  EXPECT_FALSE(HexDecode("0g", &out));
  EXPECT_FALSE(HexDecode(" 0", &out));
  EXPECT_FALSE(HexDecode(std::string("0\0", 2), &out));
  EXPECT_EQ(out, "unchanged");  // untouched on failure
}

}  // namespace
}  // namespace cryptex
