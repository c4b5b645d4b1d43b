// The current reader must keep reading images of every released format
// version (tests/reference/vN). Never regenerate those images.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "fsverity.h"
#include "image.h"
#include "keys.h"
#include "test_util.h"
#include "view.h"

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

// A compact-layout patch (docs/FORMAT.md section 13) on that image, made
// once with mkpatch (tests/reference/v1/README.md): it still opens, verifies
// and stacks to the recorded tree.
TEST(FormatCompat, ReadsVersion1CompactPatchOnTheReferenceImage) {
  // Two signers: the base's key and the patch's, in one trust directory.
  test::TempDir keys;
  for (const char* k : {"key.pub", "patch-key.pub"}) {
    test::WriteFile(keys.Join(k), test::ReadFile((RefDir() / k).string()));
  }
  auto trust = TrustStore::LoadDir(keys.path());
  ASSERT_TRUE(trust.ok()) << trust.status().ToString();
  ImageOptions opts;
  opts.trust = &*trust;
  const std::string base = (RefDir() / "greeter-v1.cryptex").string();
  const std::string patch = (RefDir() / "greeter-v1-p1.cxpatch").string();
  auto img = Image::Open(patch, opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  const SuperblockInfo& sb = (*img)->superblock();
  EXPECT_TRUE(sb.compact());
  EXPECT_EQ(sb.kind, format::kKindPatch);
  EXPECT_EQ(sb.image_size, 4736u);
  EXPECT_EQ((*img)->manifest().patch_id, "greeter-1.0.1-p1");
  EXPECT_EQ((*img)->manifest().severity, "high");
  EXPECT_EQ((*img)->manifest().cves, std::vector<std::string>{"CVE-2026-0001"});
  EXPECT_EQ((*img)->manifest().release_counter, 2u);
  ASSERT_TRUE((*img)->VerifyAll().ok());

  auto view = OpenStack(base, {patch}, opts);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  ASSERT_TRUE((*view)->VerifyAll().ok());
  auto read = [&](const std::string& path) {
    auto in = (*view)->Resolve(path);
    EXPECT_TRUE(in.ok()) << path << ": " << in.status().ToString();
    if (!in.ok()) return std::string();
    std::string buf(in->size, '\0');
    auto n = (*view)->Read(in->ino, 0,
                           std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
    EXPECT_TRUE(n.ok() && *n == buf.size()) << path;
    return buf;
  };
  EXPECT_EQ(read("/etc/greet.conf"), "name=cryptex\ngreeting=patched\n");
  EXPECT_EQ(read("/share/doc/greeter/RELEASE"), "1.0.1\n");
  const std::string lib = read("/lib/libgreet.so.1");  // shipped as a delta
  EXPECT_EQ(lib.size(), 300040u);
  EXPECT_EQ(HexEncode(FsVerityDigest(lib.data(), lib.size())),
            "fa78747a9206aad391f7306e528d2b07abba12127d4de1ac9ec2ca63c6bde41a");
  EXPECT_EQ((*view)->Resolve("/share/doc/greeter/VERSION").status().code(), Code::kNotFound);
  auto greet = (*view)->Resolve("/bin/greet");
  ASSERT_TRUE(greet.ok());
  EXPECT_EQ(greet->mode & 07777, 0750u);
}

}  // namespace
}  // namespace cryptex
