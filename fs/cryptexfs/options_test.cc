#include "options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cryptex::cxfs {
namespace {

// Runs ParseDriverArgs over argv; returns what is left for libfuse.
std::vector<std::string> Parse(std::vector<const char*> argv, DriverConfig* cfg, Status* st) {
  std::vector<char*> a;
  for (const char* s : argv) a.push_back(const_cast<char*>(s));
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(a.size()), a.data());
  *st = ParseDriverArgs(&args, cfg);
  std::vector<std::string> rest;
  for (int i = 0; i < args.argc; ++i) rest.emplace_back(args.argv[i]);
  fuse_opt_free_args(&args);
  return rest;
}

TEST(ParseDriverArgsTest, TakesImageAndDriverOptions) {
  DriverConfig cfg;
  Status st;
  auto rest =
      Parse({"cryptexfs", "/img/app.cryptex", "/mnt/app", "-o",
             "ro,nofail,trust=/etc/keys,cache_size=16M,allow_other,x-systemd.automount", "-f"},
            &cfg, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(cfg.image, "/img/app.cryptex");
  EXPECT_EQ(cfg.trust_dir, "/etc/keys");
  EXPECT_EQ(cfg.cache_bytes, 16u << 20);
  EXPECT_TRUE(cfg.pubkey.empty());
  // Mountpoint, the standard FUSE option and -f stay; ours are gone.
  std::vector<std::string> want = {"cryptexfs", "-o", "allow_other", "/mnt/app", "-f"};
  EXPECT_EQ(rest, want);
}

TEST(ParseDriverArgsTest, Defaults) {
  DriverConfig cfg;
  Status st;
  Parse({"cryptexfs", "a.cryptex", "/mnt"}, &cfg, &st);
  ASSERT_TRUE(st.ok());
  // The values README.md and --help promise, as literals (not the constants
  // they are set from, which would make this test unable to fail).
  EXPECT_EQ(cfg.trust_dir, "/etc/cryptex/keys");
  EXPECT_EQ(cfg.cache_bytes, 64u << 20);
  EXPECT_EQ(cfg.readahead_bytes, 1u << 20);
  EXPECT_TRUE(cfg.pubkey.empty());
  EXPECT_TRUE(cfg.push);
  EXPECT_FALSE(cfg.open_handles);
}

TEST(ParseDriverArgsTest, SwitchesAreTakenOut) {
  DriverConfig cfg;
  Status st;
  auto rest = Parse({"cryptexfs", "a.cryptex", "/mnt", "-o", "no_push,open_handles,allow_other"},
                    &cfg, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(cfg.push);
  EXPECT_TRUE(cfg.open_handles);
  std::vector<std::string> want = {"cryptexfs", "-o", "allow_other", "/mnt"};
  EXPECT_EQ(rest, want);
}

TEST(ParseDriverArgsTest, Pubkey) {
  DriverConfig cfg;
  Status st;
  Parse({"cryptexfs", "a.cryptex", "/mnt", "-o", "pubkey=/k/v.pub"}, &cfg, &st);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(cfg.pubkey, "/k/v.pub");
}

TEST(ParseDriverArgsTest, Errors) {
  DriverConfig cfg;
  Status st;
  Parse({"cryptexfs", "a", "/mnt", "-o", "cache_size=lots"}, &cfg, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("cache_size"), std::string::npos);

  cfg = DriverConfig();
  Parse({"cryptexfs", "a", "/mnt", "extra"}, &cfg, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);

  cfg = DriverConfig();
  Parse({"cryptexfs", "a", "/mnt", "-o", "trust=/d,pubkey=/k.pub"}, &cfg, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ(st.message(), CheckTrustSource(true, true).message());  // the CLI's wording
}

TEST(ParseDriverArgsTest, StoreLevelAndPatches) {
  DriverConfig cfg;
  Status st;
  auto rest = Parse({"cryptexfs", "org.example.app", "/mnt", "-o",
                     "store=/var/lib/cryptex,level=base,allow_other"},
                    &cfg, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(cfg.image, "org.example.app");
  EXPECT_EQ(cfg.store_dir, "/var/lib/cryptex");
  EXPECT_EQ(cfg.level, "base");
  std::vector<std::string> want = {"cryptexfs", "-o", "allow_other", "/mnt"};
  EXPECT_EQ(rest, want);

  DriverConfig p;
  Parse({"cryptexfs", "a.cryptex", "/mnt", "-o", "patch=/p/1.cxpatch,patch=/p/2.cxpatch"}, &p, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(p.patches, (std::vector<std::string>{"/p/1.cxpatch", "/p/2.cxpatch"}));
}

TEST(ParseDriverArgsTest, StoreOptionConflictsAreRefused) {
  Status st;
  DriverConfig a;
  Parse({"cryptexfs", "a", "/mnt", "-o", "level=base"}, &a, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("store="), std::string::npos) << st.message();
  DriverConfig b;
  Parse({"cryptexfs", "a", "/mnt", "-o", "store=/s,patch=/p"}, &b, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  DriverConfig c;
  Parse({"cryptexfs", "a", "/mnt", "-o", "store="}, &c, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  DriverConfig d;
  Parse({"cryptexfs", "a", "/mnt", "-o", "patch="}, &d, &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
}

TEST(AddImpliedOptionsTest, EscapesFsname) {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ASSERT_EQ(fuse_opt_add_arg(&args, "cryptexfs"), 0);
  ASSERT_TRUE(AddImpliedOptions(&args, "/x/a,b.cryptex").ok());
  ASSERT_EQ(args.argc, 3);
  EXPECT_STREQ(args.argv[1], "-o");
  EXPECT_STREQ(args.argv[2], "ro,default_permissions,subtype=cryptexfs,fsname=/x/a\\,b.cryptex");
  fuse_opt_free_args(&args);
}

// The kernel enforces the image's owners and modes on every mount: the
// implied options come after the user's, and no user option (there is no
// "no_default_permissions") is dropped in its favour or undoes it.
TEST(AddImpliedOptionsTest, DefaultPermissionsAlwaysOn) {
  for (std::vector<const char*> argv :
       {std::vector<const char*>{"cryptexfs", "a.cryptex", "/mnt"},
        std::vector<const char*>{"cryptexfs", "a.cryptex", "/mnt", "-o", "allow_other"},
        std::vector<const char*>{"cryptexfs", "a.cryptex", "/mnt", "-o",
                                 "default_permissions,allow_other"}}) {
    DriverConfig cfg;
    Status st;
    std::vector<char*> a;
    for (const char* s : argv) a.push_back(const_cast<char*>(s));
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(a.size()), a.data());
    ASSERT_TRUE(ParseDriverArgs(&args, &cfg).ok());
    ASSERT_TRUE(AddImpliedOptions(&args, "/i").ok());
    ASSERT_GE(args.argc, 2);
    EXPECT_STREQ(args.argv[args.argc - 2], "-o");
    EXPECT_EQ(std::string(args.argv[args.argc - 1]).rfind("ro,default_permissions,", 0), 0u)
        << args.argv[args.argc - 1];
    fuse_opt_free_args(&args);
  }
}

}  // namespace
}  // namespace cryptex::cxfs
