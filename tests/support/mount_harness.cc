#include "mount_harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef CRYPTEXFS_BIN
#error "CRYPTEXFS_BIN must name the cryptexfs binary"
#endif

namespace cryptex::test {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

bool InCi() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  const std::string v = ci;
  return !v.empty() && v != "false" && v != "0";
}

std::string MountedType(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, dev, root, mnt;
    ls >> id >> parent >> dev >> root >> mnt;
    if (mnt != path) continue;
    const size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::string type;
    std::istringstream(line.substr(sep + 3)) >> type;
    found = type;
  }
  return found;
}

bool WaitForCryptexfs(const std::string& mnt) {
  for (int i = 0; i < 500 && MountedType(mnt) != kCryptexfsType; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  return MountedType(mnt) == kCryptexfsType;
}

Driver::Driver(const std::vector<std::string>& argv, std::string mnt, std::string log)
    : mnt_(std::move(mnt)), log_(std::move(log)) {
  pid_ = fork();
  if (pid_ == 0) {
    const int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> a;
    for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
}

std::string Driver::log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Driver::Alive() {
  if (status_) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) status_ = st;
  return !status_;
}

bool Driver::WaitForMount(milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && Alive()) {
    if (MountedType(mnt_) == kCryptexfsType) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

int Driver::Stop() {
  if (pid_ <= 0) return -1;
  if (!status_) {
    UnmountLazily(mnt_);
    const auto deadline = Clock::now() + milliseconds(30000);
    while (Alive() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(10));
    if (Alive()) {
      (void)RunCommand("for t in /proc/" + std::to_string(pid_) +
                       "/task/*; do echo \"$t $(cat $t/comm) $(cat $t/wchan)\"; "
                       "cat $t/stack; done >> " +
                       ShellQuote(log_) + " 2>&1");
      kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
      status_ = -1;
    }
  }
  return *status_ >= 0 && WIFEXITED(*status_) ? WEXITSTATUS(*status_) : -1;
}

bool MountStoreLine(const std::string& line, const std::string& mnt, const std::string& store,
                    const std::string& trust) {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    ADD_FAILURE() << "/dev/fuse is not usable";
    return false;
  }
  mkdir(mnt.c_str(), 0755);
  const CommandResult r =
      RunCommandCapture(std::string(CRYPTEXFS_BIN) + " " + line + " " + ShellQuote(mnt) + " -o " +
                        ShellQuote("store=" + store + ",trust=" + trust));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  if (r.exit_code != 0) return false;
  return WaitForCryptexfs(mnt);
}

void UnmountLazily(const std::string& mnt) {
  (void)RunCommand("fusermount3 -u -z -q " + ShellQuote(mnt) + " 2>/dev/null");
}

std::map<std::string, std::string> FilesUnder(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().string()] = ReadFile(e.path().string());
  }
  return out;
}

std::string NeedsRootAndCryptex(const std::string& root_why) {
  if (geteuid() != 0) return "needs root (" + root_why + ")";
  if (access(CryptexBin().c_str(), X_OK) != 0) return "no cryptex CLI at " + CryptexBin();
  return "";
}

void MustSucceed(const CommandResult& r, const std::string& what, std::string* error) {
  if (r.exit_code != 0 && error->empty()) *error = what + " failed: " + r.out + r.err;
}

void MakeVendorKey(const std::string& key, const std::string& trust_dir, std::string* error) {
  MustSucceed(RunCryptex("keygen -o " + ShellQuote(key)), "keygen", error);
  MustSucceed(
      RunCommand("cp " + ShellQuote(key + ".pub") + " " + ShellQuote(trust_dir + "/vendor.pub")),
      "cp key", error);
}

void BuildImage(const std::string& src, const std::string& out, const std::string& key,
                const std::string& name, const std::string& version, std::string* error) {
  MustSucceed(RunCryptex("build " + ShellQuote(src) + " -o " + ShellQuote(out) + " --key " +
                         ShellQuote(key) + " --name " + name + " --version " + version),
              "build " + out, error);
}

void MakeHelloTrees(const std::string& v0, const std::string& v1, const std::string& v2,
                    std::string* error) {
  for (const std::string& v : {v0, v1, v2}) mkdir(v.c_str(), 0755);
  WriteFile(v0 + "/hello.txt", "hello base\n");
  WriteFile(v0 + "/keep.txt", "unchanged\n");
  MustSucceed(RunCommand("cp -a " + ShellQuote(v0 + "/.") + " " + ShellQuote(v1)), "cp v1", error);
  WriteFile(v1 + "/hello.txt", "hello p1\n");
  MustSucceed(RunCommand("cp -a " + ShellQuote(v1 + "/.") + " " + ShellQuote(v2)), "cp v2", error);
  WriteFile(v2 + "/hello.txt", "hello p2\n");
}

std::string BuildDir() {
  const std::string bin = CryptexBin();
  return bin.substr(0, bin.rfind("/cli/"));
}

void InstallPlugin(const std::string& so, const std::string& dir, std::string* error) {
  MustSucceed(RunCommand("install -m 0644 " + ShellQuote(so) + " " + ShellQuote(dir + "/")),
              "install " + so, error);
}

std::string StoreSuite::SetUpStoreSuite(const std::string& root_why, const std::string& line) {
  skip_ = NeedsRootAndCryptex(root_why);
  if (!skip_.empty()) return "";
  line_ = line;
  work_ = new TempDir(TmpfsDir());
  chmod(work_->path().c_str(), 0755);
  trust_ = work_->Join("trust");
  mkdir(trust_.c_str(), 0755);
  const std::string key = work_->Join("vendor.key");
  MakeVendorKey(key, trust_, &error_);
  MakeHelloTrees(V(0), V(1), V(2), &error_);
  base_ = work_->Join("base.cryptex");
  BuildImage(V(0), base_, key, line, "1.0", &error_);
  return key;
}

void StoreSuite::TearDownStoreSuite() {
  delete work_;
  work_ = nullptr;
}

void StoreSuite::SetUpStoreTest() {
  if (!skip_.empty()) SKIP_OR_FAIL_IN_CI(skip_);
  ASSERT_EQ(error_, "");
  const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  dir_ = work_->Join(name);
  ASSERT_EQ(mkdir(dir_.c_str(), 0755), 0) << dir_;
  store_ = dir_ + "/store";
  conf_ = dir_ + "/cryptex.conf";
  const CommandResult r = RunCryptex("add " + ShellQuote(base_) + " --store " + ShellQuote(store_) +
                                     " --trust " + ShellQuote(trust_));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

void StoreSuite::TearDown() {
  for (const std::string& m : mounts_) UnmountLazily(m);
}

std::string StoreSuite::V(int n) {
  std::string name = "v";  // an append: GCC 12 -O3 warns (-Wrestrict) on "v" + std::string
  name += std::to_string(n);
  return work_->Join(name);
}

bool StoreSuite::Mount(const std::string& mnt) {
  mounts_.push_back(mnt);  // detached in TearDown, whatever happens here
  return MountStoreLine(line_, mnt, store_, trust_);
}

}  // namespace cryptex::test
