// `cryptex mkpatch` and `cryptex inspect PATCH` as users run them: a patch
// made from a base image to a directory or an image, what inspect shows of
// it (text and --json), every refusal with its exit code and nothing
// written, and reproducible bytes with --epoch. Needs a tmpfs at /dev/shm.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using test::CommandResult;
using test::Contains;
using test::ReadFile;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Q(const std::string& s) { return ShellQuote(s); }

bool Exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

class MkpatchCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir(test::TmpfsDir());
    key_ = work_->Join("k");
    ASSERT_EQ(RunCryptex("keygen -o " + Q(key_)).exit_code, 0);
    trust_ = work_->Join("trust");
    ASSERT_EQ(mkdir(trust_.c_str(), 0755), 0);
    WriteFile(trust_ + "/k.pub", ReadFile(key_ + ".pub"));
    // base: bin/tool (300 KB), etc/conf, lib/old, data/a..c; new: bin/tool
    // with a few bytes changed, etc/conf with a new mode, lib/old moved to
    // lib/new, data/ emptied and refilled, and a new file.
    base_ = work_->Join("base");
    new_ = work_->Join("new");
    for (const std::string& root : {base_, new_}) {
      for (const char* d : {"", "/bin", "/etc", "/lib", "/data"}) {
        ASSERT_EQ(mkdir((root + d).c_str(), 0755), 0);
      }
    }
    std::string tool = test::RandomBytes(300000, 1);
    WriteFile(base_ + "/bin/tool", tool);
    tool.replace(1000, 4, "EDIT");
    WriteFile(new_ + "/bin/tool", tool);
    WriteFile(base_ + "/etc/conf", "setting=1\n");
    WriteFile(new_ + "/etc/conf", "setting=1\n");
    ASSERT_EQ(chmod((new_ + "/etc/conf").c_str(), 0600), 0);
    const std::string lib = test::RandomBytes(20000, 2);
    WriteFile(base_ + "/lib/old", lib);
    WriteFile(new_ + "/lib/new", lib);
    WriteFile(base_ + "/lib/keep", "kept");  // lib/ is merged, not copied whole
    WriteFile(new_ + "/lib/keep", "kept");
    for (const char* n : {"a", "b", "c"}) WriteFile(base_ + "/data/" + n, n);
    WriteFile(new_ + "/data/z", "refilled");
    WriteFile(new_ + "/added", "new file");
    FixTimes(base_);
    FixTimes(new_);
    base_img_ = work_->Join("base.cryptex");
    const CommandResult b = RunCryptex("build " + Q(base_) + " -o " + Q(base_img_) + " --key " +
                                       Q(key_) + " --name app --version 1.0 --epoch 1 -q");
    ASSERT_EQ(b.exit_code, 0) << b.err;
  }
  static void TearDownTestSuite() { delete work_; }

  static void FixTimes(const std::string& root) {
    ASSERT_EQ(test::RunCommand("find " + Q(root) + " -exec touch -h -d @1000 {} +").exit_code, 0);
  }

  // mkpatch from the base to `to`, writing `out`, with `extra` arguments.
  static CommandResult Mkpatch(const std::string& to, const std::string& out,
                               const std::string& extra = "") {
    return RunCryptex("mkpatch --from " + Q(base_img_) + " --to " + Q(to) + " -o " + Q(out) +
                      " --key " + Q(key_) + " --trust " + Q(trust_) +
                      " --id fix-1 --severity high --cve CVE-2026-12345 --cve CVE-2025-0001"
                      " --class relaunch --release-counter 7 --released-at 1700000000"
                      " --epoch 1234 " +
                      extra);
  }
  static CommandResult Inspect(const std::string& img, const std::string& extra = "") {
    return RunCryptex("inspect " + Q(img) + " --trust " + Q(trust_) + " " + extra);
  }

  static TempDir* work_;
  static std::string key_, trust_, base_, new_, base_img_;
};
TempDir* MkpatchCliTest::work_ = nullptr;
std::string MkpatchCliTest::key_, MkpatchCliTest::trust_, MkpatchCliTest::base_,
    MkpatchCliTest::new_, MkpatchCliTest::base_img_;

TEST_F(MkpatchCliTest, MakesAPatchAndInspectShowsHowEachEntryShips) {
  TempDir out;
  const std::string p = out.Join("p.cxpatch");
  const CommandResult r = Mkpatch(new_, p);
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_TRUE(Contains(r.out, "patch fix-1 -> ")) << r.out;
  EXPECT_TRUE(Contains(r.out, "1 delta")) << r.out;
  EXPECT_TRUE(Contains(r.out, "2 lower content")) << r.out;  // etc/conf, lib/new

  const CommandResult text = Inspect(p);
  ASSERT_EQ(text.exit_code, kExitOk) << text.err;
  for (const char* want :
       {"kind:            patch", "patch id:        fix-1", "severity:        high",
        "fixes:           CVE-2026-12345", "fixes:           CVE-2025-0001",
        "activation:      relaunch", "release counter: 7", "released:        2023-11-14T22:13:20Z",
        "/bin/tool: delta against /bin/tool: ", "/etc/conf: lower content /etc/conf",
        "/lib/new: lower content /lib/old", "/lib/old: whiteout", "/data: opaque dir",
        "/data/z: data: 8 bytes", "/added: data: 8 bytes"}) {
    EXPECT_TRUE(Contains(text.out, want)) << "missing \"" << want << "\" in\n" << text.out;
  }
  EXPECT_FALSE(Contains(text.out, "/data/a")) << text.out;

  const CommandResult base_json = Inspect(base_img_, "--json");
  ASSERT_EQ(base_json.exit_code, kExitOk);
  const auto bj = nlohmann::json::parse(base_json.out);
  const CommandResult json = Inspect(p, "--json");
  ASSERT_EQ(json.exit_code, kExitOk) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["kind"], "patch");
  EXPECT_EQ(j["patch_id"], "fix-1");
  EXPECT_EQ(j["name"], "app");  // from the base
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_EQ(j["base_root_digest"], bj["root_hash"]);
  EXPECT_EQ(j["requires"], nlohmann::json::array());
  EXPECT_EQ(j["severity"], "high");
  EXPECT_EQ(j["cves"], (nlohmann::json{"CVE-2026-12345", "CVE-2025-0001"}));
  EXPECT_EQ(j["activation"], "relaunch");
  EXPECT_EQ(j["release_counter"], 7);
  EXPECT_EQ(j["released_at"], 1700000000);
  EXPECT_EQ(j["created_at"], 1234);
  std::map<std::string, nlohmann::json> by_path;
  for (const auto& e : j["patch_entries"]) by_path[e["path"]] = e;
  ASSERT_EQ(by_path.size(), 7u) << j["patch_entries"].dump();
  EXPECT_EQ(by_path["/bin/tool"]["how"], "delta");
  EXPECT_EQ(by_path["/bin/tool"]["source"], "/bin/tool");
  EXPECT_EQ(by_path["/bin/tool"]["size"], 300000);
  EXPECT_LT(by_path["/bin/tool"]["stored_bytes"].get<uint64_t>(), 4096u);
  EXPECT_EQ(by_path["/lib/new"]["how"], "lower_content");
  EXPECT_EQ(by_path["/lib/new"]["source"], "/lib/old");
  EXPECT_EQ(by_path["/lib/new"]["stored_bytes"], 0);
  EXPECT_EQ(by_path["/lib/old"]["how"], "whiteout");
  EXPECT_EQ(by_path["/data"]["how"], "opaque_dir");
  EXPECT_EQ(by_path["/data/z"]["how"], "data");
  // The digest of each file is the target's (fsverity digest of the file).
  EXPECT_EQ(by_path["/added"]["digest"].get<std::string>().size(), 64u);
  EXPECT_EQ(Inspect(p, "--json").out, json.out);
}

// Same inputs and --epoch: the same bytes; an image target gives the same
// patch as the directory it was sealed from.
TEST_F(MkpatchCliTest, ReproducibleWithEpochFromADirectoryOrAnImage) {
  TempDir out;
  ASSERT_EQ(Mkpatch(new_, out.Join("1")).exit_code, kExitOk);
  ASSERT_EQ(Mkpatch(new_, out.Join("2")).exit_code, kExitOk);
  EXPECT_TRUE(ReadFile(out.Join("1")) == ReadFile(out.Join("2")));
  const std::string new_img = out.Join("new.cryptex");
  ASSERT_EQ(RunCryptex("build " + Q(new_) + " -o " + Q(new_img) + " --key " + Q(key_) +
                       " --name app --version 2.0 --epoch 1 -q")
                .exit_code,
            0);
  const CommandResult r = Mkpatch(new_img, out.Join("3"));
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_TRUE(ReadFile(out.Join("1")) == ReadFile(out.Join("3")));
}

struct Refusal {
  const char* what;
  std::string extra;  // added to a good command line (later options win)
  int exit_code;
  const char* message;
};

// Bad arguments are refused up front (before the base is opened: a missing
// base does not hide them), with nothing written.
TEST_F(MkpatchCliTest, BadArgumentsAreRefusedBeforeAnyWork) {
  TempDir out;
  const std::string p = out.Join("p");
  const std::vector<Refusal> cases = {
      {"cve", "--cve CVE-26-1", kExitUsage, "CVE-26-1"},
      {"cve short number", "--cve CVE-2026-123", kExitUsage, "CVE-2026-123"},
      {"cve lower case", "--cve cve-2026-12345", kExitUsage, "cve-2026-12345"},
      {"severity", "--severity urgent", kExitUsage, "--severity"},
      {"class", "--class restart", kExitUsage, "--class"},
      {"id with slash", "--id a/b", kExitUsage, "--id"},
      {"id with space", "--id 'a b'", kExitUsage, "--id"},
      {"empty id", "--id ''", kExitUsage, "--id"},
      {"release counter", "--release-counter -1", kExitUsage, "--release-counter"},
      {"released at", "--released-at soon", kExitUsage, "--released-at"},
      {"epoch", "--epoch x", kExitUsage, "--epoch"},
      {"trust and pubkey", "--pubkey " + Q(key_ + ".pub"), kExitUsage, ""},
      {"unknown option", "--frobnicate", kExitUsage, "--frobnicate"},
  };
  for (const Refusal& c : cases) {
    SCOPED_TRACE(c.what);
    const CommandResult r =
        RunCryptex("mkpatch --from " + Q(out.Join("no-base")) + " --to " + Q(new_) + " -o " + Q(p) +
                   " --key " + Q(key_) + " --trust " + Q(trust_) + " --id ok " + c.extra);
    EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << r.err;
    EXPECT_FALSE(Exists(p));
  }
  // Missing required options.
  for (const char* opt : {"--from", "--to", "-o", "--key", "--id"}) {
    SCOPED_TRACE(opt);
    std::string cmd = "mkpatch";
    if (std::string(opt) != "--from") cmd += " --from " + Q(base_img_);
    if (std::string(opt) != "--to") cmd += " --to " + Q(new_);
    if (std::string(opt) != "-o") cmd += " -o " + Q(p);
    if (std::string(opt) != "--key") cmd += " --key " + Q(key_);
    if (std::string(opt) != "--id") cmd += " --id x";
    const CommandResult r = RunCryptex(cmd + " --trust " + Q(trust_));
    EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
    EXPECT_TRUE(Contains(r.err, std::string("missing ") + opt)) << r.err;
    EXPECT_FALSE(Exists(p));
  }
}

TEST_F(MkpatchCliTest, RefusalsWriteNothing) {
  TempDir out;
  // Output exists: exit 6, the file untouched.
  const std::string existing = out.Join("existing");
  WriteFile(existing, "precious");
  CommandResult r = Mkpatch(new_, existing);
  EXPECT_EQ(r.exit_code, kExitExists) << r.err;
  EXPECT_TRUE(Contains(r.err, existing)) << r.err;
  EXPECT_EQ(ReadFile(existing), "precious");

  const std::string p = out.Join("p");
  // Missing key file: exit 5 naming it.
  r = RunCryptex("mkpatch --from " + Q(base_img_) + " --to " + Q(new_) + " -o " + Q(p) + " --key " +
                 Q(out.Join("no-key")) + " --trust " + Q(trust_) + " --id x");
  EXPECT_EQ(r.exit_code, kExitNotFound) << r.err;
  EXPECT_TRUE(Contains(r.err, "no-key")) << r.err;
  // A public key given as the signing key: exit 2.
  r = RunCryptex("mkpatch --from " + Q(base_img_) + " --to " + Q(new_) + " -o " + Q(p) + " --key " +
                 Q(key_ + ".pub") + " --trust " + Q(trust_) + " --id x");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  // A base signed by a key the trust directory does not hold: exit 3.
  const std::string other = out.Join("other");
  ASSERT_EQ(mkdir(other.c_str(), 0755), 0);
  ASSERT_EQ(RunCryptex("keygen -o " + Q(other + "/o")).exit_code, 0);
  ASSERT_EQ(unlink((other + "/o").c_str()), 0);
  r = RunCryptex("mkpatch --from " + Q(base_img_) + " --to " + Q(new_) + " -o " + Q(p) + " --key " +
                 Q(key_) + " --trust " + Q(other) + " --id x");
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  EXPECT_TRUE(Contains(r.err, base_img_)) << r.err;
  // A target identical to the lower state: nothing to patch.
  r = Mkpatch(base_, p);
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_TRUE(Contains(r.err, "nothing to patch")) << r.err;
  // A target that does not exist.
  r = Mkpatch(out.Join("nowhere"), p);
  EXPECT_EQ(r.exit_code, kExitNotFound) << r.err;
  // --on: a patch made for another base does not bind to this one.
  const std::string p1 = out.Join("p1");
  ASSERT_EQ(Mkpatch(new_, p1).exit_code, kExitOk);
  const std::string base2 = out.Join("base2.cryptex");
  ASSERT_EQ(RunCryptex("build " + Q(new_) + " -o " + Q(base2) + " --key " + Q(key_) +
                       " --name app --version 2 -q")
                .exit_code,
            0);
  r = RunCryptex("mkpatch --from " + Q(base2) + " --on " + Q(p1) + " --to " + Q(base_) + " -o " +
                 Q(p) + " --key " + Q(key_) + " --trust " + Q(trust_) + " --id fix-2");
  EXPECT_NE(r.exit_code, kExitOk) << r.err;
  EXPECT_FALSE(Exists(p));
  // Nothing but the files this test made.
  EXPECT_EQ(test::ListDirNames(out.path()),
            (std::vector<std::string>{"base2.cryptex", "existing", "other", "p1"}));
}

}  // namespace
}  // namespace cryptex
