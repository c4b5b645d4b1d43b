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

}  // namespace
}  // namespace cryptex
