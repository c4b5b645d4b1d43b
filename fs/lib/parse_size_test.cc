#include "parse_size.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace cryptex {
namespace {

TEST(ParseSizeTest, Plain) {
  uint64_t v = 0;
  ASSERT_TRUE(ParseSize("0", &v));
  EXPECT_EQ(v, 0u);
  ASSERT_TRUE(ParseSize("1048576", &v));
  EXPECT_EQ(v, 1048576u);
  ASSERT_TRUE(ParseSize("512B", &v));
  EXPECT_EQ(v, 512u);
}

TEST(ParseSizeTest, Suffixes) {
  uint64_t v = 0;
  ASSERT_TRUE(ParseSize("64K", &v));
  EXPECT_EQ(v, 64u << 10);
  ASSERT_TRUE(ParseSize("64k", &v));
  EXPECT_EQ(v, 64u << 10);
  ASSERT_TRUE(ParseSize("64M", &v));
  EXPECT_EQ(v, 64u << 20);
  ASSERT_TRUE(ParseSize("2G", &v));
  EXPECT_EQ(v, 2ull << 30);
  ASSERT_TRUE(ParseSize("3MiB", &v));
  EXPECT_EQ(v, 3u << 20);
  ASSERT_TRUE(ParseSize("3MB", &v));
  EXPECT_EQ(v, 3u << 20);
}

TEST(ParseSizeTest, Rejects) {
  uint64_t v = 7;
  for (const char* bad : {"", "M", "-1", "1.5M", "12X", "1MM", "1Mx", "0x10", " 1",
                          "99999999999999999999", "17179869184G"}) {
    EXPECT_FALSE(ParseSize(bad, &v)) << bad;
  }
  EXPECT_EQ(v, 7u);
}

// Counts users type (--threads, --release-counter, numbers in cryptex.conf):
// digits only, so "+5", " 5" and "5 " are refused, not read as 5.
TEST(ParseDecimalTest, DigitsOnly) {
  EXPECT_EQ(ParseDecimal("0"), 0u);
  EXPECT_EQ(ParseDecimal("007"), 7u);
  EXPECT_EQ(ParseDecimal("18446744073709551615"), UINT64_MAX);
  for (const char* bad : {"", "+5", "-5", " 5", "5 ", "5\n", "5k", "0x10", "1e3",
                          "18446744073709551616", "99999999999999999999999"}) {
    EXPECT_EQ(ParseDecimal(bad), std::nullopt) << bad;
  }
}

TEST(ParseDurationTest, UnitsAndRefusals) {
  EXPECT_EQ(ParseDurationMs("500ms"), 500u);
  EXPECT_EQ(ParseDurationMs("90"), 90'000u);
  EXPECT_EQ(ParseDurationMs("90s"), 90'000u);
  EXPECT_EQ(ParseDurationMs("30m"), 1'800'000u);
  EXPECT_EQ(ParseDurationMs("12h"), 43'200'000u);
  EXPECT_EQ(ParseDurationMs("7d"), 604'800'000u);
  EXPECT_EQ(ParseDurationMs("2w"), 1'209'600'000u);
  EXPECT_EQ(ParseDurationMs("999999999w"), 999'999'999ull * 604'800'000u);
  for (const char* bad :
       {"", "s", "+5s", "-5s", " 5s", "5s ", "5 s", "1.5h", "5S", "5sec", "1000000000s", "5x"}) {
    EXPECT_EQ(ParseDurationMs(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace cryptex
