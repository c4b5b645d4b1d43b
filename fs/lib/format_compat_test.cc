// The current reader must keep reading images of every released format
// version (tests/reference/vN). Never regenerate those images.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "image.h"
#include "keys.h"

namespace cryptex {
namespace {

// From the source directory CMake names, not from __FILE__: packagers'
// -ffile-prefix-map (Debian's default flags) rewrites __FILE__ to a
// relative path.
std::filesystem::path RefDir() {
  return std::filesystem::path(CRYPTEX_SOURCE_DIR) / "tests/reference/v1";
}

TEST(FormatCompat, ReadsVersion1ReferenceImage) {
  auto trust = TrustStore::LoadFile((RefDir() / "key.pub").string());
  ASSERT_TRUE(trust.ok()) << trust.status().ToString();
  ImageOptions opts;
  opts.trust = &*trust;
  auto img = Image::Open((RefDir() / "greeter-v1.cryptex").string(), opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_EQ((*img)->superblock().format_version, 1u);
  EXPECT_EQ((*img)->manifest().name, "org.example.greeter");
  EXPECT_EQ((*img)->manifest().version, "1.0.0");
  EXPECT_EQ((*img)->manifest().release_counter, 1u);
  EXPECT_EQ((*img)->manifest().created_at, 1767225600u);
  ASSERT_TRUE((*img)->VerifyAll().ok());

  // Known content, recorded when the image was made.
  auto lib = (*img)->Resolve("/lib/libgreet.so.1");
  ASSERT_TRUE(lib.ok()) << lib.status().ToString();
  EXPECT_EQ(lib->size, 300040u);
  EXPECT_EQ(HexEncode(lib->digest),
            "b7cadcd517ac720349b28e1663151c68435db219f2bc6a5c6a8c3e63e45a2211");
  auto link = (*img)->Resolve("/lib/libgreet.so");
  ASSERT_TRUE(link.ok());
  auto target = (*img)->ReadLink(link->ino);
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "libgreet.so.1");
  auto conf = (*img)->Resolve("/etc/greet.conf");
  ASSERT_TRUE(conf.ok());
  std::string buf(64, '\0');
  auto n = (*img)->Read(conf->ino, 0,
                        std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(buf.substr(0, *n), "name=cryptex\n");
}

}  // namespace
}  // namespace cryptex
