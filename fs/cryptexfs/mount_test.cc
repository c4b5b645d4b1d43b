// Real-mount tests of cryptexfs: build an image from a temporary tree with the
// cryptex CLI, mount it with the driver, and compare what the kernel sees with
// the source tree (diff -r plus a metadata walk), then exercise the failure
// paths (EROFS, refused signatures, corrupted data, busy unmount) and the ways
// to start it (foreground + sd_notify, mount -t fuse.cryptexfs).
//
// Needs root (or a working fusermount3), /dev/fuse and build/cli/cryptex
// ($CRYPTEX_BUILD_DIR, set by ctest); skips otherwise, and FAILS instead of
// skipping when $CI is set (see SKIP_OR_FAIL_IN_CI). Every wait is bounded
// and every mount is detached in TearDown, so a failing test leaves nothing
// mounted; every driver started must then exit 0 with no sanitizer report in
// its log.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "image.h"
#include "keys.h"
#include "mount_harness.h"
#include "push.h"
#include "status_channel.h"
#include "surgery.h"

#ifndef CRYPTEXFS_BIN
#error "CRYPTEXFS_BIN must name the cryptexfs binary"
#endif

namespace cryptex::cxfs {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
// InCi(), SKIP_OR_FAIL_IN_CI and MountedType() come from the shared harness.
using test::MountedType;

// ---- sanitizer reports ---------------------------------------------------------

// The first line of `log` that a sanitizer (ASan, LSan, TSan, MSan, UBSan)
// writes when it finds something, or "".
std::string SanitizerReport(const std::string& log) {
  static const char* const kMarkers[] = {
      "AddressSanitizer",           "LeakSanitizer", "ThreadSanitizer", "MemorySanitizer",
      "UndefinedBehaviorSanitizer", "runtime error:"};
  for (const char* m : kMarkers) {
    const size_t at = log.find(m);
    if (at == std::string::npos) continue;
    const size_t begin = log.rfind('\n', at);
    const size_t start = begin == std::string::npos ? 0 : begin + 1;
    return log.substr(start, log.find('\n', at) - start);
  }
  return "";
}

// ---- processes -------------------------------------------------------------------

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved
};

std::ostream& operator<<(std::ostream& os, const RunResult& r) {
  return os << "exit " << r.exit_code << (r.timed_out ? " (timed out)" : "") << ", output:\n"
            << r.output;
}

[[noreturn]] void ExecChild(const std::vector<std::string>& argv,
                            const std::vector<std::string>& env) {
  // "NAME=VALUE" sets, a bare "NAME" unsets.
  for (const std::string& kv : env) {
    if (kv.find('=') == std::string::npos) {
      unsetenv(kv.c_str());
    } else {
      putenv(strdup(kv.c_str()));
    }
  }
  std::vector<char*> a;
  for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  execvp(a[0], a.data());
  dprintf(2, "exec %s: %s\n", a[0], strerror(errno));
  _exit(127);
}

// Waits up to `timeout` for pid; SIGKILLs it after that. Returns the wait status
// or -1 if it had to be killed.
int WaitBounded(pid_t pid, milliseconds timeout, bool* timed_out) {
  auto deadline = Clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (Clock::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      if (timed_out) *timed_out = true;
      return -1;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
}

// Runs argv (PATH lookup) with extra KEY=VALUE environment, capturing output.
RunResult RunCommand(const std::vector<std::string>& argv,
                     milliseconds timeout = milliseconds(60000),
                     const std::vector<std::string>& env = {}) {
  RunResult res;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    res.output = "pipe failed";
    return res;
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) dup2(devnull, 0);
    ExecChild(argv, env);
  }
  close(fds[1]);
  auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (true) {
    int left =
        static_cast<int>(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    int pr = poll(&p, 1, left);
    if (pr <= 0) break;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    res.output.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  auto rest = deadline - Clock::now();
  int status =
      WaitBounded(pid, std::max(milliseconds(100), std::chrono::duration_cast<milliseconds>(rest)),
                  &res.timed_out);
  if (status >= 0 && WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  // Our binaries may run instrumented: a report fails the test even when the
  // command's exit status is what the test expects.
  const std::string report = SanitizerReport(res.output);
  EXPECT_EQ(report, "") << argv[0] << ":\n" << res.output;
  return res;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data, mode_t mode = 0644) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    ASSERT_GT(n, 0) << path;
    done += static_cast<size_t>(n);
  }
  ASSERT_EQ(fchmod(fd, mode), 0);  // umask-proof (setuid bits too)
  close(fd);
}

// A cryptexfs started in the foreground, stdout/stderr to a log file.
class Driver {
 public:
  Driver(const std::vector<std::string>& argv, const std::string& log_path,
         const std::vector<std::string>& env = {})
      : log_path_(log_path) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (devnull >= 0) dup2(devnull, 0);
      ExecChild(argv, env);
    }
  }
  ~Driver() { Stop(); }
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const { return ReadFileOrEmpty(log_path_); }

  // True while running; records the exit status once it has exited.
  bool Alive() {
    if (exited_) return false;
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == 0) return true;
    exited_ = true;
    status_ = status;
    return false;
  }
  // Waits (bounded) for the process to exit by itself; returns its exit code
  // or -1.
  int WaitExit(milliseconds timeout) {
    if (!exited_) {
      status_ = WaitBounded(pid_, timeout, nullptr);
      exited_ = true;
    }
    return status_ >= 0 && WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }
  void Stop() {
    if (pid_ <= 0 || exited_) return;
    kill(pid_, SIGTERM);
    WaitExit(milliseconds(5000));
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = -1;
};

// ---- mounts ----------------------------------------------------------------------

bool IsMounted(const std::string& path) { return !MountedType(path).empty(); }

// Polls until `path` carries a cryptexfs mount, the driver exited, or timeout.
bool WaitForMount(const std::string& path, Driver* driver,
                  milliseconds timeout = milliseconds(15000)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (MountedType(path) == "fuse.cryptexfs") return true;
    if (driver != nullptr && !driver->Alive()) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

bool WaitForUnmount(const std::string& path, milliseconds timeout = milliseconds(10000)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (!IsMounted(path)) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

// ---- tree comparison -----------------------------------------------------------

std::map<std::string, std::string> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t n = llistxattr(path.c_str(), nullptr, 0);
  if (n <= 0) return out;
  std::string names(static_cast<size_t>(n), '\0');
  n = llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  names.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < names.size();) {
    std::string name(names.c_str() + i);
    i += name.size() + 1;
    if (name.rfind("security.selinux", 0) == 0) continue;
    ssize_t vn = lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    std::string value(vn > 0 ? static_cast<size_t>(vn) : 0, '\0');
    if (vn > 0) vn = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    value.resize(vn > 0 ? static_cast<size_t>(vn) : 0);
    out[name] = value;
  }
  return out;
}

std::set<std::string> ListDir(const std::string& path) {
  std::set<std::string> names;
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  closedir(d);
  return names;
}

// Compares the metadata walk of src and mnt, recursively. `rel` names the
// entry in failure messages.
void CompareTrees(const std::string& src, const std::string& mnt, const std::string& rel,
                  int* compared) {
  SCOPED_TRACE(rel.empty() ? "/" : rel);
  struct stat a, b;
  ASSERT_EQ(lstat(src.c_str(), &a), 0);
  ASSERT_EQ(lstat(mnt.c_str(), &b), 0) << strerror(errno);
  ++*compared;
  EXPECT_EQ(a.st_mode, b.st_mode);
  EXPECT_EQ(a.st_uid, b.st_uid);
  EXPECT_EQ(a.st_gid, b.st_gid);
  EXPECT_EQ(a.st_nlink, b.st_nlink);
  EXPECT_EQ(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
  EXPECT_EQ(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
  EXPECT_EQ(b.st_blksize, 4096);
  if (S_ISCHR(a.st_mode) || S_ISBLK(a.st_mode)) {
    EXPECT_EQ(a.st_rdev, b.st_rdev);
  }
  if (!S_ISDIR(a.st_mode)) {
    EXPECT_EQ(a.st_size, b.st_size);
  }
  EXPECT_EQ(Xattrs(src), Xattrs(mnt));
  if (S_ISLNK(a.st_mode)) {
    char ta[4096], tb[4096];
    ssize_t na = readlink(src.c_str(), ta, sizeof(ta));
    ssize_t nb = readlink(mnt.c_str(), tb, sizeof(tb));
    ASSERT_GE(na, 0);
    ASSERT_EQ(na, nb);
    EXPECT_EQ(std::string(ta, static_cast<size_t>(na)), std::string(tb, static_cast<size_t>(nb)));
  } else if (S_ISREG(a.st_mode)) {
    EXPECT_TRUE(ReadFileOrEmpty(src) == ReadFileOrEmpty(mnt)) << "content differs";
  } else if (S_ISDIR(a.st_mode)) {
    std::set<std::string> ea = ListDir(src), eb = ListDir(mnt);
    EXPECT_EQ(ea, eb);
    for (const std::string& n : ea) {
      if (eb.count(n) == 0) continue;
      CompareTrees(src + "/" + n, mnt + "/" + n, rel + "/" + n, compared);
    }
  }
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// ---- fixture -------------------------------------------------------------------

class MountTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0 && access("/usr/bin/fusermount3", X_OK) != 0) {
      skip_ = "needs root or fusermount3";
      return;
    }
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      skip_ = "/dev/fuse is not usable here";
      return;
    }
    const char* bd = std::getenv("CRYPTEX_BUILD_DIR");
    cli_ = std::string(bd ? bd : "") + "/cli/cryptex";
    if (bd == nullptr || access(cli_.c_str(), X_OK) != 0) {
      skip_ = "no cryptex CLI at " + cli_ + " (set CRYPTEX_BUILD_DIR)";
      return;
    }
    char tmpl[] = "/tmp/cryptexfs_mount_test.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      error_ = "mkdtemp failed";
      return;
    }
    work_ = tmpl;
    // Searchable (not readable) by everyone: the permission tests reach the
    // mountpoints as an unprivileged user. Keys inside stay 0600.
    chmod(work_.c_str(), 0711);
    src_ = work_ + "/src";
    trust_ = work_ + "/trust";
    image_ = work_ + "/app.cryptex";
    stdfs::create_directories(trust_);
    MakeSourceTree();
    if (!error_.empty()) return;

    RunResult k = RunCommand({cli_, "keygen", "-o", work_ + "/vendor.key"});
    if (k.exit_code != 0) {
      error_ = "cryptex keygen failed: " + k.output;
      return;
    }
    stdfs::copy_file(work_ + "/vendor.key.pub", trust_ + "/vendor.pub");
    RunResult b = RunCommand({cli_, "build", src_, "-o", image_, "--key", work_ + "/vendor.key",
                              "--name", "app", "--version", "1.0"},
                             milliseconds(120000));
    if (b.exit_code != 0) error_ = "cryptex build failed: " + b.output;
  }

  static void TearDownTestSuite() {
    if (work_.empty()) return;
    // Never delete through a live mount.
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.find(work_) != std::string::npos) return;
    }
    std::error_code ec;
    stdfs::remove_all(work_, ec);
  }

  // The tree every test mounts: all entry kinds the format must round-trip.
  static void MakeSourceTree() {
    auto must = [](bool ok, const std::string& what) {
      if (!ok && error_.empty()) error_ = what + ": " + strerror(errno);
    };
    const std::string& s = src_;
    must(mkdir(s.c_str(), 0755) == 0, "mkdir src");
    WriteFile(s + "/empty", "");
    WriteFile(s + "/hello.txt", "hello, sealed world\n");
    WriteFile(s + "/big.bin", RandomBytes(3 * 1024 * 1024 + 12345, 1));
    // Incompressible, so the builder stores it raw: the corruption test finds
    // its bytes in the image.
    WriteFile(s + "/victim.bin", RandomBytes(256 * 1024, 2));
    std::string text;
    for (int i = 0; i < 40000; ++i)
      text += "line " + std::to_string(i) + " of a compressible file\n";
    WriteFile(s + "/text.txt", text);
    WriteFile(s + "/setuid", "#!/bin/sh\n", 04755);
    WriteFile(s + "/private", "secret\n", 0600);
    must(chown((s + "/private").c_str(), 1234, 5678) == 0, "chown");
    // Sparse: 8 MiB with data only near the end.
    {
      int fd = open((s + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      must(fd >= 0, "sparse");
      must(pwrite(fd, "tail", 4, 8 * 1024 * 1024 - 4) == 4, "pwrite");
      close(fd);
    }
    must(mkdir((s + "/dir").c_str(), 0750) == 0, "mkdir dir");
    must(mkdir((s + "/dir/sub").c_str(), 0755) == 0, "mkdir sub");
    must(mkdir((s + "/dir/sub/deeper").c_str(), 0700) == 0, "mkdir deeper");
    WriteFile(s + "/dir/sub/deeper/leaf", "leaf\n");
    must(mkdir((s + "/sticky").c_str(), 01777) == 0, "mkdir sticky");
    must(chmod((s + "/sticky").c_str(), 01777) == 0, "chmod sticky");
    // Larger than a chunk (not packed), for the run-ahead test.
    must(mkdir((s + "/walk").c_str(), 0755) == 0, "mkdir walk");
    for (int i = 0; i < 6; ++i)
      WriteFile(s + "/walk/f" + std::to_string(i), RandomBytes(200 * 1024, 100 + i));
    must(mkdir((s + "/many").c_str(), 0755) == 0, "mkdir many");
    for (int i = 0; i < 1500; ++i) {
      WriteFile(s + "/many/entry_with_a_longish_name_" + std::to_string(i), std::to_string(i));
    }
    must(symlink("hello.txt", (s + "/link_rel").c_str()) == 0, "symlink");
    must(symlink("/etc/hostname", (s + "/link_abs").c_str()) == 0, "symlink");
    must(symlink("does/not/exist", (s + "/link_dangling").c_str()) == 0, "symlink");
    must(symlink(std::string(1000, 'x').c_str(), (s + "/link_long").c_str()) == 0, "symlink");
    must(symlink("../hello.txt", (s + "/dir/up").c_str()) == 0, "symlink");
    must(link((s + "/hello.txt").c_str(), (s + "/dir/hardlink").c_str()) == 0, "link");
    MakePermissionTree(must);
    must(mkfifo((s + "/fifo").c_str(), 0640) == 0, "mkfifo");
    must(mknod((s + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod c");
    must(mknod((s + "/blk").c_str(), S_IFBLK | 0660, makedev(7, 42)) == 0, "mknod b");
    WriteFile(s + "/sp ace & ünïcödé", "odd name\n");
    WriteFile(s + "/new\nline", "newline in name\n");
    must(setxattr((s + "/hello.txt").c_str(), "user.greeting", "hi", 2, 0) == 0, "setxattr");
    std::string bin("\x00\x01\xff\x7f", 4);
    must(setxattr((s + "/hello.txt").c_str(), "user.binary", bin.data(), bin.size(), 0) == 0,
         "setxattr");
    must(setxattr((s + "/dir").c_str(), "user.dir_attr", "", 0, 0) == 0, "setxattr");
    must(setxattr((s + "/dir").c_str(), "trusted.admin", "t", 1, 0) == 0, "setxattr");
    std::string large(4000, 'v');
    must(setxattr(s.c_str(), "user.root_attr", large.data(), large.size(), 0) == 0, "setxattr");
    // Nanosecond times, set last (creating entries touches directory mtimes).
    timespec ts[2] = {{1700000000, 123456789}, {1600000000, 987654321}};
    for (const char* p : {"/hello.txt", "/big.bin", "/dir/sub/deeper/leaf", "/fifo", "/null"}) {
      must(utimensat(AT_FDCWD, (s + p).c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0, "utimensat");
    }
    must(utimensat(AT_FDCWD, (s + "/link_rel").c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0,
         "utimensat link");
    timespec old[2] = {{100, 1}, {-100, 5}};  // before the epoch
    must(utimensat(AT_FDCWD, (s + "/dir/sub/deeper").c_str(), old, 0) == 0, "utimensat");
  }

  // src/perm: owners and modes the kernel must enforce on other users
  // (uid/gid kNobody), see KernelEnforcesImageModesForOtherUsers.
  template <typename Must>
  static void MakePermissionTree(const Must& must) {
    const std::string p = src_ + "/perm";
    must(mkdir(p.c_str(), 0755) == 0, "mkdir perm");
    WriteFile(p + "/root_0600", "root only\n", 0600);
    WriteFile(p + "/pub_0644", "public\n", 0644);
    WriteFile(p + "/group_0640", "group\n", 0640);
    must(chown((p + "/group_0640").c_str(), 0, kNobody) == 0, "chown group_0640");
    WriteFile(p + "/nobody_0600", "nobody's\n", 0600);
    must(chown((p + "/nobody_0600").c_str(), kNobody, kNobody) == 0, "chown nobody_0600");
    must(mkdir((p + "/root_0700").c_str(), 0700) == 0, "mkdir root_0700");
    WriteFile(p + "/root_0700/inner", "hidden\n", 0644);
    must(chmod((p + "/root_0700").c_str(), 0700) == 0, "chmod root_0700");
    must(mkdir((p + "/dir_0711").c_str(), 0711) == 0, "mkdir dir_0711");
    WriteFile(p + "/dir_0711/inner_0644", "through 0711\n", 0644);
    must(chmod((p + "/dir_0711").c_str(), 0711) == 0, "chmod dir_0711");
  }

  void SetUp() override {
    if (!skip_.empty()) SKIP_OR_FAIL_IN_CI(skip_);
    ASSERT_TRUE(error_.empty()) << error_;
  }

  void TearDown() override {
    // Detach first (the drivers then see the device close and exit), then
    // check how each driver ended: exit status 0 (a clean unmount) and no
    // sanitizer report in its log, shutdown path included.
    for (const std::string& m : mountpoints_) {
      if (IsMounted(m)) (void)RunCommand({"fusermount3", "-u", "-z", "-q", m}, milliseconds(10000));
    }
    for (const auto& d : drivers_) CheckDriverEnded(d.get());
    drivers_.clear();
  }

  // `d` exits by itself (bounded) with status 0 and logged no sanitizer report.
  static void CheckDriverEnded(Driver* d) {
    const int code = d->WaitExit(milliseconds(10000));
    const std::string log = d->log();
    EXPECT_EQ(code, 0) << "cryptexfs (pid " << d->pid() << ") did not exit cleanly; log:\n" << log;
    EXPECT_EQ(SanitizerReport(log), "") << "cryptexfs log:\n" << log;
  }

  std::string NewMountpoint() {
    std::string m = work_ + "/mnt" + std::to_string(mountpoints_.size()) + "_" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name();
    stdfs::create_directories(m);
    mountpoints_.push_back(m);
    return m;
  }

  // Starts `argv` (a cryptexfs in the foreground) with its output in a log
  // file; TearDown checks how it ended.
  Driver* StartDriver(const std::vector<std::string>& argv,
                      const std::vector<std::string>& env = {}) {
    drivers_.push_back(std::make_unique<Driver>(
        argv,
        work_ + "/log" + std::to_string(drivers_.size()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".txt",
        env));
    return drivers_.back().get();
  }

  // Starts `cryptexfs IMAGE MNT -f -o trust=... EXTRA` and waits for the mount.
  Driver* MountImage(const std::string& image, const std::string& mnt,
                     const std::vector<std::string>& extra = {},
                     const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {CRYPTEXFS_BIN, image, mnt, "-f", "-o", "trust=" + trust_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Driver* d = StartDriver(argv, env);
    bool ok = WaitForMount(mnt, d);
    EXPECT_TRUE(ok) << "mount did not appear; driver log:\n" << d->log();
    return ok ? d : nullptr;
  }

  // A fresh mount (with -o no_push unless `push`) on which MNT/PREFIXi for
  // i < count have been looked up: the kernel stores pushed bytes only into
  // inodes it has. "" on failure.
  std::string MountForPush(bool push, const std::string& prefix, int count) {
    const std::string mnt = NewMountpoint();
    std::vector<std::string> extra;
    if (!push) extra = {"-o", "no_push"};
    if (MountImage(image_, mnt, extra) == nullptr) return "";
    struct stat st;
    for (int i = 0; i < count; ++i) {
      const std::string f = mnt + prefix + std::to_string(i);
      if (stat(f.c_str(), &st) != 0) {
        ADD_FAILURE() << f << ": " << strerror(errno);
        return "";
      }
    }
    return mnt;
  }

  // The mount's status (status_channel.h), as `cryptex status` reads it.
  static MountStatus StatusOf(const std::string& mnt) {
    Result<MountStatus> s = QueryMountStatus(mnt);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : MountStatus{};
  }

  static constexpr uid_t kNobody = 65534;
  static inline std::string skip_, error_, work_, cli_, src_, trust_, image_;
  std::vector<std::string> mountpoints_;
  std::vector<std::unique_ptr<Driver>> drivers_;
};

// ---- tests -----------------------------------------------------------------------

TEST_F(MountTest, TreeMatchesSourceByDiffAndMetadataWalk) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt), nullptr);
  EXPECT_EQ(MountedType(mnt), "fuse.cryptexfs");

  // diff(1) always reports fifos as different and cannot open device nodes
  // on a nodev mount; the metadata walk below covers those.
  RunResult diff = RunCommand(
      {"diff", "-r", "--no-dereference", "-x", "fifo", "-x", "null", "-x", "blk", src_, mnt});
  EXPECT_EQ(diff.exit_code, 0) << diff;

  int compared = 0;
  CompareTrees(src_, mnt, "", &compared);
  EXPECT_GT(compared, 1500);
}

TEST_F(MountTest, HardLinksSymlinksAndInodes) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt), nullptr);
  struct stat a, b, root, dir, sub;
  ASSERT_EQ(stat((mnt + "/hello.txt").c_str(), &a), 0);
  ASSERT_EQ(stat((mnt + "/dir/hardlink").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);

  char target[64] = {};
  ASSERT_EQ(readlink((mnt + "/link_rel").c_str(), target, sizeof(target) - 1), 9);
  EXPECT_STREQ(target, "hello.txt");
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/link_rel"), "hello, sealed world\n");
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/dir/up"), "hello, sealed world\n");

  // "." and ".." as getdents(2) reports them.
  ASSERT_EQ(stat(mnt.c_str(), &root), 0);
  ASSERT_EQ(stat((mnt + "/dir").c_str(), &dir), 0);
  ASSERT_EQ(stat((mnt + "/dir/sub").c_str(), &sub), 0);
  auto dots = [](const std::string& path) {
    std::map<std::string, ino_t> m;
    DIR* d = opendir(path.c_str());
    while (dirent* e = d ? readdir(d) : nullptr) m[e->d_name] = e->d_ino;
    if (d) closedir(d);
    return std::make_pair(m["."], m[".."]);
  };
  EXPECT_EQ(dots(mnt), std::make_pair(root.st_ino, root.st_ino));
  EXPECT_EQ(dots(mnt + "/dir/sub"), std::make_pair(sub.st_ino, dir.st_ino));
}

TEST_F(MountTest, ReadsAtArbitraryOffsetsAndSizes) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt, {"-o", "cache_size=256K"}), nullptr);
  std::string want = ReadFileOrEmpty(src_ + "/big.bin");
  int fd = open((mnt + "/big.bin").c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) fd = open((mnt + "/big.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::mt19937 rng(7);
  std::vector<char> buf(4 << 20);
  for (int i = 0; i < 200; ++i) {
    size_t off = rng() % (want.size() + 100);
    size_t len = 1 + rng() % (i % 10 == 0 ? buf.size() : 300000);
    ssize_t n = pread(fd, buf.data(), len, static_cast<off_t>(off));
    ASSERT_GE(n, 0) << strerror(errno);
    size_t expect = off >= want.size() ? 0 : std::min(len, want.size() - off);
    ASSERT_EQ(static_cast<size_t>(n), expect) << "off " << off << " len " << len;
    ASSERT_EQ(std::memcmp(buf.data(), want.data() + std::min(off, want.size()), expect), 0)
        << "off " << off << " len " << len;
  }
  close(fd);
  std::string sparse = ReadFileOrEmpty(mnt + "/sparse");
  ASSERT_EQ(sparse.size(), 8u << 20);
  EXPECT_EQ(sparse.substr(sparse.size() - 4), "tail");
  EXPECT_EQ(sparse.find_first_not_of('\0'), sparse.size() - 4);
}

TEST_F(MountTest, ConcurrentReadersSeeSourceBytes) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt, {"-o", "cache_size=512K"}), nullptr);
  std::vector<std::string> files = {"/big.bin", "/text.txt", "/victim.bin", "/hello.txt"};
  std::map<std::string, std::string> want;
  for (const auto& f : files) want[f] = ReadFileOrEmpty(src_ + f);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 100; ++i) {
        const std::string& f = files[rng() % files.size()];
        const std::string& w = want[f];
        int fd = open((mnt + f).c_str(), O_RDONLY);
        if (fd < 0) {
          ++bad;
          continue;
        }
        size_t off = w.empty() ? 0 : rng() % w.size();
        std::string buf(70000, '\0');
        ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
        close(fd);
        size_t expect = std::min(buf.size(), w.size() - off);
        if (n != static_cast<ssize_t>(expect) || buf.compare(0, expect, w, off, expect) != 0) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(MountTest, WritesAreRefusedWithErofs) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt), nullptr);
  auto expect_erofs = [](int r, const char* what) {
    int err = errno;
    EXPECT_EQ(r, -1) << what;
    EXPECT_EQ(err, EROFS) << what << ": " << strerror(err);
  };
  std::string f = mnt + "/hello.txt";
  expect_erofs(open(f.c_str(), O_WRONLY), "open O_WRONLY");
  expect_erofs(open(f.c_str(), O_RDWR), "open O_RDWR");
  expect_erofs(open((mnt + "/new").c_str(), O_WRONLY | O_CREAT, 0644), "create");
  expect_erofs(mkdir((mnt + "/newdir").c_str(), 0755), "mkdir");
  expect_erofs(unlink(f.c_str()), "unlink");
  expect_erofs(rmdir((mnt + "/sticky").c_str()), "rmdir");
  expect_erofs(rename(f.c_str(), (mnt + "/renamed").c_str()), "rename");
  expect_erofs(symlink("x", (mnt + "/newlink").c_str()), "symlink");
  expect_erofs(link(f.c_str(), (mnt + "/newhard").c_str()), "link");
  expect_erofs(chmod(f.c_str(), 0600), "chmod");
  expect_erofs(chown(f.c_str(), 1, 1), "chown");
  expect_erofs(truncate(f.c_str(), 0), "truncate");
  expect_erofs(setxattr(f.c_str(), "user.x", "1", 1, 0), "setxattr");
  expect_erofs(removexattr(f.c_str(), "user.greeting"), "removexattr");
  expect_erofs(mknod((mnt + "/nod").c_str(), S_IFIFO | 0644, 0), "mknod");
  expect_erofs(access(f.c_str(), W_OK), "access W_OK");
  EXPECT_EQ(access(f.c_str(), R_OK), 0);
  // Unchanged afterwards.
  EXPECT_EQ(ReadFileOrEmpty(f), "hello, sealed world\n");

  struct statvfs sv;
  ASSERT_EQ(statvfs(mnt.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  EXPECT_EQ(sv.f_namemax, 255u);
  EXPECT_GT(sv.f_files, 1500u);
  EXPECT_EQ(sv.f_bfree, 0u);
  EXPECT_EQ(sv.f_blocks * sv.f_frsize, (stdfs::file_size(image_) + 4095) / 4096 * 4096);
}

TEST_F(MountTest, XattrProbeRangeAndVirtualCounters) {
  std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt), nullptr);
  std::string f = mnt + "/hello.txt";
  EXPECT_EQ(getxattr(f.c_str(), "user.greeting", nullptr, 0), 2);
  char small[1];
  EXPECT_EQ(getxattr(f.c_str(), "user.greeting", small, sizeof(small)), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(getxattr(f.c_str(), "user.absent", nullptr, 0), -1);
  EXPECT_EQ(errno, ENODATA);
  ssize_t list = listxattr(f.c_str(), nullptr, 0);
  EXPECT_EQ(list, static_cast<ssize_t>(sizeof("user.binary") + sizeof("user.greeting")));
  EXPECT_EQ(listxattr(f.c_str(), small, sizeof(small)), -1);
  EXPECT_EQ(errno, ERANGE);

  // The mounted root's xattrs are exactly the sealed root's (no virtual
  // names); the counters travel through the status ioctl.
  std::map<std::string, std::string> root = Xattrs(mnt);
  EXPECT_EQ(root, Xattrs(src_));
  EXPECT_EQ(root["user.root_attr"], std::string(4000, 'v'));
  EXPECT_EQ(getxattr(mnt.c_str(), "user.cryptex.verify_failures", nullptr, 0), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(StatusOf(mnt).verify_failures, 0u);
  EXPECT_EQ(StatusOf(mnt).image, stdfs::canonical(image_).string());
  ReadFileOrEmpty(mnt + "/big.bin");
  EXPECT_NE(StatusOf(mnt).blocks_verified, 0u);
}

// Pages of `path` in the page cache, without reading it (mmap + mincore).
size_t ResidentPages(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  size_t resident = 0;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    const size_t len = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
      std::vector<unsigned char> vec((len + 4095) / 4096);
      if (mincore(p, len, vec.data()) == 0)
        for (unsigned char v : vec) resident += v & 1;
      munmap(p, len);
    }
  }
  close(fd);
  return resident;
}

// A packed file of `prefix`+i (i < count) and the files push promises to
// store when it is read (push.h): every regular file packed in the same frame
// within Pusher::kScanInodes inodes of it, found with the image library. The
// file is chosen so that its read triggers only that: its inode is above
// kScanInodes (the first read to reach a file's end at an inode <=
// kScanInodes looks like a walk and also runs ahead), and it has frame-mates
// on both sides.
struct FrameMates {
  int file = -1;
  std::vector<int> mates;
};
FrameMates FindFrameMates(const std::string& image, const std::string& trust,
                          const std::string& prefix, int count) {
  Result<TrustStore> ts = TrustStore::LoadDir(trust);
  if (!ts.ok()) {
    ADD_FAILURE() << ts.status().ToString();
    return {};
  }
  ImageOptions opts;
  opts.trust = &*ts;
  Result<std::unique_ptr<Image>> img = Image::Open(image, opts);
  if (!img.ok()) {
    ADD_FAILURE() << img.status().ToString();
    return {};
  }
  std::vector<std::pair<uint64_t, uint64_t>> ino_frame(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    Result<InodeInfo> in = (*img)->Resolve(prefix + std::to_string(i));
    if (!in.ok()) {
      ADD_FAILURE() << in.status().ToString();
      return {};
    }
    Result<uint64_t> f = (*img)->SingleFrameOf(in->ino);
    ino_frame[static_cast<size_t>(i)] = {in->ino, f.ok() ? *f : Image::kNoFrame};
  }
  for (int first = 0; first < count; ++first) {
    const auto [ino0, frame0] = ino_frame[static_cast<size_t>(first)];
    if (frame0 == Image::kNoFrame || ino0 <= Pusher::kScanInodes) continue;
    FrameMates fm{first, {}};
    bool below = false, above = false;
    for (int i = 0; i < count; ++i) {
      const auto [ino, frame] = ino_frame[static_cast<size_t>(i)];
      if (i == first || frame != frame0) continue;
      if (ino + Pusher::kScanInodes < ino0 || ino > ino0 + Pusher::kScanInodes) continue;
      fm.mates.push_back(i);
      (ino < ino0 ? below : above) = true;
    }
    if (below && above) return fm;
  }
  ADD_FAILURE() << "no packed file of " << prefix << "* has frame-mates on both sides";
  return {};
}

// Reading one small packed file puts ALL its frame-mates in the page cache
// (FUSE_NOTIFY_STORE) with the right bytes, before anything reads them;
// -o no_push turns that off.
TEST_F(MountTest, PushStoresFrameMatesAheadOfTheirReads) {
  const std::string prefix = "/many/entry_with_a_longish_name_";
  const FrameMates fm = FindFrameMates(image_, trust_, prefix, 1500);
  ASSERT_GE(fm.mates.size(), 10u) << "too few frame-mates to test push";
  for (bool push : {true, false}) {
    SCOPED_TRACE(push ? "default" : "no_push");
    const std::string mnt = MountForPush(push, prefix, 1500);
    ASSERT_FALSE(mnt.empty());
    const std::string dir = mnt + prefix;
    for (int i : fm.mates) ASSERT_EQ(ResidentPages(dir + std::to_string(i)), 0u) << i;
    EXPECT_EQ(ReadFileOrEmpty(dir + std::to_string(fm.file)), std::to_string(fm.file));
    if (push) {
      uint64_t pushed = 0;
      for (int i = 0; i < 500 && pushed < fm.mates.size(); ++i) {
        std::this_thread::sleep_for(milliseconds(10));
        pushed = StatusOf(mnt).files_pushed;
      }
      EXPECT_EQ(pushed, fm.mates.size()) << "exactly the frame-mates are stored";
    } else {
      std::this_thread::sleep_for(milliseconds(200));
      EXPECT_EQ(StatusOf(mnt).files_pushed, 0u);
    }
    // Resident without a read (push) or not at all (no_push), and right.
    for (int i : fm.mates) {
      const std::string f = dir + std::to_string(i);
      EXPECT_EQ(ResidentPages(f), push ? 1u : 0u) << f;
    }
    for (int i : fm.mates) {
      const std::string f = dir + std::to_string(i);
      EXPECT_EQ(ReadFileOrEmpty(f), std::to_string(i)) << f;
    }
  }
}

// Two files of a directory read to their end in inode order: the next ones
// are in the page cache before anything reads them, with the right bytes.
TEST_F(MountTest, PushRunsAheadOfADirectoryWalk) {
  for (bool push : {true, false}) {
    SCOPED_TRACE(push ? "default" : "no_push");
    const std::string mnt = MountForPush(push, "/walk/f", 6);
    ASSERT_FALSE(mnt.empty());
    const std::string dir = mnt + "/walk/f";
    EXPECT_EQ(ResidentPages(dir + "2"), 0u);
    EXPECT_EQ(ReadFileOrEmpty(dir + "0"), ReadFileOrEmpty(src_ + "/walk/f0"));
    EXPECT_EQ(ReadFileOrEmpty(dir + "1"), ReadFileOrEmpty(src_ + "/walk/f1"));
    const size_t pages = (200 * 1024) / 4096;
    size_t resident = 0;
    for (int i = 0; i < 200 && resident < pages; ++i) {
      std::this_thread::sleep_for(milliseconds(push ? 10 : 1));
      resident = ResidentPages(dir + "2");
    }
    if (push) {
      EXPECT_EQ(resident, pages) << "f2 was not stored ahead of the walk";
      EXPECT_NE(StatusOf(mnt).files_pushed, 0u);
    } else {
      EXPECT_EQ(resident, 0u);
    }
    for (int i = 2; i < 6; ++i) {
      const std::string f = "/walk/f" + std::to_string(i);
      EXPECT_EQ(ReadFileOrEmpty(mnt + f), ReadFileOrEmpty(src_ + f)) << f;
    }
  }
}

TEST_F(MountTest, UntrustedOrBadSignatureIsRefusedWithoutMount) {
  // Signed by a key the trust store does not hold.
  RunResult k = RunCommand({cli_, "keygen", "-o", work_ + "/other.key"});
  ASSERT_EQ(k.exit_code, 0) << k;
  std::string other = work_ + "/other.cryptex";
  RunResult b = RunCommand({cli_, "build", src_ + "/dir", "-o", other, "--key",
                            work_ + "/other.key", "--name", "other", "--version", "1"});
  ASSERT_EQ(b.exit_code, 0) << b;
  std::string mnt = NewMountpoint();
  RunResult r =
      RunCommand({CRYPTEXFS_BIN, other, mnt, "-f", "-o", "trust=" + trust_}, milliseconds(20000));
  EXPECT_EQ(r.exit_code, 3) << r;  // integrity, as `cryptex` says
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.output.rfind("cryptexfs: " + other + ": ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(IsMounted(mnt));

  // Our image with one signature byte flipped.
  std::string flipped = work_ + "/flipped.cryptex";
  stdfs::copy_file(image_, flipped, stdfs::copy_options::overwrite_existing);
  {
    std::fstream io(flipped, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(-4096 + 512 + 48 + 10, std::ios::end);  // inside DiskSignature::sig
    char c;
    io.get(c);
    io.seekp(-4096 + 512 + 48 + 10, std::ios::end);
    io.put(static_cast<char>(c ^ 0x01));
  }
  r = RunCommand({CRYPTEXFS_BIN, flipped, mnt, "-f", "-o", "trust=" + trust_}, milliseconds(20000));
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_EQ(r.output.rfind("cryptexfs: " + flipped + ": ", 0), 0u) << r.output;
  EXPECT_FALSE(IsMounted(mnt));

  // Missing image, missing trust store.
  r = RunCommand({CRYPTEXFS_BIN, work_ + "/nope.cryptex", mnt, "-f", "-o", "trust=" + trust_});
  EXPECT_EQ(r.exit_code, 5) << r;  // not found
  EXPECT_NE(r.output.find("nope.cryptex"), std::string::npos) << r.output;
  r = RunCommand({CRYPTEXFS_BIN, image_, mnt, "-f", "-o", "trust=" + work_ + "/no_such_dir"});
  EXPECT_EQ(r.exit_code, 3) << r;  // no trusted key: refused like a bad signature
  r = RunCommand({CRYPTEXFS_BIN, image_, mnt, "-f", "-o", "trust=" + trust_ + ",cache_size=lots"});
  EXPECT_EQ(r.exit_code, 2) << r;  // usage
  EXPECT_FALSE(IsMounted(mnt));
}

TEST_F(MountTest, CorruptDataByteGivesEioOnThatFileOnly) {
  std::string bad = work_ + "/corrupt.cryptex";
  stdfs::copy_file(image_, bad, stdfs::copy_options::overwrite_existing);
  std::string img = ReadFileOrEmpty(bad);
  std::string victim = ReadFileOrEmpty(src_ + "/victim.bin");
  // A 4 KiB run from the middle of its second 128 KiB chunk, so the
  // corrupted tree block holds only victim.bin's bytes of that chunk.
  std::string needle = victim.substr(192 * 1024, 4096);
  size_t at = img.find(needle);
  ASSERT_NE(at, std::string::npos) << "victim.bin is not stored raw in the image";
  {
    std::fstream io(bad, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(at + 100));
    io.put(static_cast<char>(img[at + 100] ^ 0x40));
  }

  std::string mnt = NewMountpoint();
  Driver* d = MountImage(bad, mnt);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(StatusOf(mnt).verify_failures, 0u);

  int fd = open((mnt + "/victim.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string buf(victim.size(), '\0');
  size_t got = 0;
  int err = 0;
  while (got < buf.size()) {
    ssize_t n = read(fd, buf.data() + got, buf.size() - got);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  EXPECT_EQ(err, EIO) << "read " << got << " bytes";
  EXPECT_LE(got, 192u * 1024);
  // Whatever was returned before the error is correct.
  EXPECT_EQ(buf.compare(0, got, victim, 0, got), 0);
  // Other files are fine.
  EXPECT_TRUE(ReadFileOrEmpty(mnt + "/big.bin") == ReadFileOrEmpty(src_ + "/big.bin"));
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/hello.txt"), "hello, sealed world\n");
  // A later read of the bad region fails again (never served from a cache).
  fd = open((mnt + "/victim.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pread(fd, buf.data(), 4096, 192 * 1024), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);

  const std::string failures = std::to_string(StatusOf(mnt).verify_failures);
  EXPECT_NE(failures, "0");
  // `cryptex status` reports it and exits 3 (integrity failure).
  RunResult status = RunCommand({cli_, "status", mnt});
  EXPECT_EQ(status.exit_code, 3) << status;
  EXPECT_NE(status.output.find("verify failures:  " + failures), std::string::npos) << status;
  std::string log = d->log();
  EXPECT_NE(log.find("cryptexfs: " + bad + ": integrity failure: /victim.bin offset "),
            std::string::npos)
      << log;
}

TEST_F(MountTest, BusyUnmountIsRefusedClearly) {
  std::string mnt = NewMountpoint();
  Driver* d = MountImage(image_, mnt);
  ASSERT_NE(d, nullptr);
  int fd = open((mnt + "/hello.txt").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  RunResult u = RunCommand({"fusermount3", "-u", mnt}, milliseconds(10000));
  EXPECT_NE(u.exit_code, 0) << u;
  EXPECT_NE(u.output.find("busy"), std::string::npos) << u;
  EXPECT_TRUE(IsMounted(mnt));
  char c;
  EXPECT_EQ(read(fd, &c, 1), 1);
  close(fd);
  u = RunCommand({"fusermount3", "-u", mnt}, milliseconds(10000));
  EXPECT_EQ(u.exit_code, 0) << u;
  EXPECT_TRUE(WaitForUnmount(mnt));
  EXPECT_EQ(d->WaitExit(milliseconds(10000)), 0) << d->log();
}

TEST_F(MountTest, NotifiesReadinessOverNotifySocket) {
  std::string sock_path = work_ + "/notify.sock";
  unlink(sock_path.c_str());
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);

  std::string mnt = NewMountpoint();
  Driver* d = MountImage(image_, mnt, {}, {"NOTIFY_SOCKET=" + sock_path});
  ASSERT_NE(d, nullptr);
  pollfd p{s, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 10000), 1) << "no readiness datagram";
  char buf[512];
  ssize_t n = recv(s, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  std::string msg(buf, static_cast<size_t>(n));
  EXPECT_EQ(msg.rfind("READY=1", 0), 0u) << msg;
  EXPECT_TRUE(IsMounted(mnt));  // ready means mounted

  RunResult u = RunCommand({"fusermount3", "-u", mnt}, milliseconds(10000));
  EXPECT_EQ(u.exit_code, 0) << u;
  EXPECT_EQ(d->WaitExit(milliseconds(10000)), 0) << d->log();
  // STOPPING=1 was sent before the driver exited: it is queued by now.
  p.revents = 0;
  EXPECT_EQ(poll(&p, 1, 2000), 1) << "no STOPPING=1 datagram";
  n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), "STOPPING=1");
  close(s);
}

// ---- the harness -------------------------------------------------------------------

// A mount test that cannot run skips without CI, and fails the run (non-zero
// exit, the skip's reason) when CI is set: this binary runs itself with a
// build directory that holds no CLI.
TEST(MountHarnessTest, SkipIsAFailureUnderCi) {
  const std::string self = stdfs::read_symlink("/proc/self/exe").string();
  const std::vector<std::string> argv = {self,
                                         "--gtest_filter=MountTest.HardLinksSymlinksAndInodes"};
  for (const char* ci : {"CI=true", "CI=1", "CI=yes"}) {
    SCOPED_TRACE(ci);
    const RunResult r =
        RunCommand(argv, milliseconds(30000), {ci, "CRYPTEX_BUILD_DIR=/nonexistent"});
    EXPECT_NE(r.exit_code, 0) << r;
    EXPECT_NE(r.output.find("no cryptex CLI at /nonexistent/cli/cryptex"), std::string::npos) << r;
    EXPECT_NE(r.output.find("[  FAILED  ] MountTest.HardLinksSymlinksAndInodes"), std::string::npos)
        << r;
  }
  for (const char* ci : {"CI", "CI=", "CI=false", "CI=0"}) {
    SCOPED_TRACE(ci);
    const RunResult r =
        RunCommand(argv, milliseconds(30000), {ci, "CRYPTEX_BUILD_DIR=/nonexistent"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_NE(r.output.find("[  SKIPPED ] MountTest.HardLinksSymlinksAndInodes"), std::string::npos)
        << r;
  }
}

// ---- permissions (the kernel enforces the image's owners and modes) -----------

// What an unprivileged process (uid and gid 65534, no supplementary groups)
// got: errno 0 and the file's bytes / a directory's names, or the errno.
struct Probe {
  int err = -1;
  std::string data;
  bool operator==(const Probe&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Probe& p) {
  return os << "{errno " << p.err << " (" << strerror(p.err) << "), \"" << p.data << "\"}";
}

// Runs `op` in a child that dropped to uid/gid `id` and returns its Probe.
// `op` returns errno (0: success) and fills *data.
Probe AsUser(uid_t id, const std::function<int(std::string*)>& op) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0) {
      _exit(120);
    }
    std::string data;
    const int err = op(&data);
    std::string out(reinterpret_cast<const char*>(&err), sizeof(err));
    out += data;
    if (write(fds[1], out.data(), out.size()) != static_cast<ssize_t>(out.size())) _exit(121);
    _exit(0);
  }
  close(fds[1]);
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  bool timed_out = false;
  const int status = WaitBounded(pid, milliseconds(10000), &timed_out);
  Probe p;
  if (timed_out || status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      got.size() < sizeof(int)) {
    ADD_FAILURE() << "probe as uid " << id << " failed (status " << status << ")";
    return p;
  }
  std::memcpy(&p.err, got.data(), sizeof(int));
  p.data = got.substr(sizeof(int));
  return p;
}

constexpr uid_t kNobodyId = 65534;

// cat(1) as nobody.
Probe ReadAsNobody(const std::string& path) {
  return AsUser(kNobodyId, [&](std::string* data) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) data->append(buf, static_cast<size_t>(n));
    const int err = n < 0 ? errno : 0;
    close(fd);
    return err;
  });
}

// ls(1) as nobody: the sorted names, '/'-separated.
Probe ListAsNobody(const std::string& path) {
  return AsUser(kNobodyId, [&](std::string* data) {
    DIR* d = opendir(path.c_str());
    if (d == nullptr) return errno;
    std::set<std::string> names;
    errno = 0;
    while (dirent* e = readdir(d)) names.insert(e->d_name);
    const int err = errno;
    closedir(d);
    for (const std::string& n : names) *data += n + "/";
    return err;
  });
}

// access(2) and stat(2) as nobody.
Probe AccessAsNobody(const std::string& path, int mode) {
  return AsUser(kNobodyId,
                [&](std::string*) { return access(path.c_str(), mode) == 0 ? 0 : errno; });
}
Probe StatAsNobody(const std::string& path) {
  return AsUser(kNobodyId, [&](std::string*) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? 0 : errno;
  });
}

// The image's owners and modes hold for every other user, on a mount with
// allow_other (with or without an explicit default_permissions: the driver
// always implies it) and without it (then FUSE lets no other user in at all).
TEST_F(MountTest, KernelEnforcesImageModesForOtherUsers) {
  const Probe kDenied{EACCES, ""};
  for (const char* opts : {"allow_other", "default_permissions,allow_other", ""}) {
    SCOPED_TRACE(std::string("-o ") + opts);
    const std::string mnt = NewMountpoint();
    std::vector<std::string> extra;
    if (*opts != '\0') extra = {"-o", opts};
    ASSERT_NE(MountImage(image_, mnt, extra), nullptr);
    const std::string p = mnt + "/perm";
    // Root reads everything, as before.
    EXPECT_EQ(ReadFileOrEmpty(p + "/root_0600"), "root only\n");
    if (*opts == '\0') {
      // Without allow_other: nothing at all for another user.
      for (const std::string& f : {mnt, p + "/pub_0644", p + "/nobody_0600"}) {
        EXPECT_EQ(StatAsNobody(f), kDenied) << f;
        EXPECT_EQ(ReadAsNobody(f), kDenied) << f;
      }
      EXPECT_EQ(ListAsNobody(mnt), kDenied);
      continue;
    }
    EXPECT_EQ(ReadAsNobody(p + "/root_0600"), kDenied);
    EXPECT_EQ(AccessAsNobody(p + "/root_0600", R_OK), kDenied);  // agrees with open
    EXPECT_EQ(ReadAsNobody(mnt + "/private"), kDenied);          // 0600, uid 1234
    EXPECT_EQ(ListAsNobody(p + "/root_0700"), kDenied);
    EXPECT_EQ(ReadAsNobody(p + "/root_0700/inner"), kDenied);  // no search permission
    EXPECT_EQ(StatAsNobody(p + "/root_0700/inner"), kDenied);
    EXPECT_EQ(ListAsNobody(p + "/dir_0711"), kDenied);  // search but not read
    EXPECT_EQ(ReadAsNobody(p + "/dir_0711/inner_0644"), (Probe{0, "through 0711\n"}));
    EXPECT_EQ(ReadAsNobody(p + "/pub_0644"), (Probe{0, "public\n"}));
    EXPECT_EQ(ReadAsNobody(p + "/group_0640"), (Probe{0, "group\n"}));      // gid 65534
    EXPECT_EQ(ReadAsNobody(p + "/nobody_0600"), (Probe{0, "nobody's\n"}));  // owner
    EXPECT_EQ(ListAsNobody(p),
              (Probe{0, "./../dir_0711/group_0640/nobody_0600/pub_0644/root_0600/root_0700/"}));
  }
}

// ---- the image path: FIFOs, devices, block devices --------------------------------

// An image path that is a FIFO with no writer: every program that opens
// images refuses it at once, naming it, instead of waiting for a writer.
TEST_F(MountTest, FifoImageIsRefusedWithoutHanging) {
  const std::string fifo = work_ + "/fifo.cryptex";
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0) << strerror(errno);
  const std::string mnt = NewMountpoint();
  const std::string dest = work_ + "/fifo_extract";
  const std::vector<std::vector<std::string>> commands = {
      {CRYPTEXFS_BIN, fifo, mnt, "-f", "-o", "trust=" + trust_},
      {CRYPTEXFS_BIN, fifo, mnt, "-o", "trust=" + trust_},  // daemonizing
      {cli_, "mount", fifo, mnt, "-o", "trust=" + trust_},
      {cli_, "verify", fifo, "--trust", trust_},
      {cli_, "extract", fifo, dest, "--trust", trust_},
      {cli_, "inspect", fifo, "--trust", trust_},
      {cli_, "ls", fifo, "--trust", trust_},
      {cli_, "cat", fifo, "/hello.txt", "--trust", trust_},
  };
  for (const auto& argv : commands) {
    SCOPED_TRACE(argv[0] + " " + argv[1]);
    const RunResult r = RunCommand(argv, milliseconds(10000));
    EXPECT_FALSE(r.timed_out) << r;
    EXPECT_NE(r.exit_code, 0) << r;
    EXPECT_NE(r.output.find(fifo + ": not a regular file or block device"), std::string::npos) << r;
  }
  EXPECT_FALSE(IsMounted(mnt));
  EXPECT_FALSE(stdfs::exists(dest));
  // Character devices are refused the same way (and never become a tty).
  const RunResult r = RunCommand({cli_, "verify", "/dev/zero", "--trust", trust_});
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_NE(r.output.find("/dev/zero: not a regular file or block device"), std::string::npos) << r;
}

// An image written to a block device (here a read-only loop device) is
// verified and mounted like the file: its size comes from the device.
TEST_F(MountTest, BlockDeviceImageVerifiesAndMounts) {
  RunResult lo = RunCommand({"losetup", "--find", "--show", "--read-only", image_});
  if (lo.exit_code != 0) SKIP_OR_FAIL_IN_CI("no loop device: " + lo.output);
  const std::string dev = lo.output.substr(0, lo.output.find('\n'));
  struct Detach {
    std::string dev;
    ~Detach() { (void)RunCommand({"losetup", "--detach", dev}); }
  } detach{dev};
  const RunResult v = RunCommand({cli_, "verify", dev, "--trust", trust_});
  EXPECT_EQ(v.exit_code, 0) << v;
  const std::string mnt = NewMountpoint();
  Driver* d = MountImage(dev, mnt);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/dir/sub/deeper/leaf"), "leaf\n");
  EXPECT_TRUE(ReadFileOrEmpty(mnt + "/big.bin") == ReadFileOrEmpty(src_ + "/big.bin"));
  ASSERT_EQ(RunCommand({"fusermount3", "-u", mnt}).exit_code, 0);
  EXPECT_EQ(d->WaitExit(milliseconds(10000)), 0) << d->log();
}

// ---- cryptex mount / umount, options ------------------------------------------------

// `cryptex mount` returns once the mount serves (the driver daemonizes);
// `cryptex umount` detaches it; both fail clearly otherwise.
TEST_F(MountTest, CryptexMountAndUmount) {
  const std::string mnt = NewMountpoint();
  RunResult m = RunCommand({cli_, "mount", image_, mnt, "-o", "trust=" + trust_});
  ASSERT_EQ(m.exit_code, 0) << m;
  EXPECT_EQ(MountedType(mnt), "fuse.cryptexfs");
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/dir/sub/deeper/leaf"), "leaf\n");
  struct statvfs sv;
  ASSERT_EQ(statvfs(mnt.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  RunResult u = RunCommand({cli_, "umount", mnt});
  EXPECT_EQ(u.exit_code, 0) << u;
  EXPECT_TRUE(WaitForUnmount(mnt));

  u = RunCommand({cli_, "umount", mnt});  // nothing mounted there any more
  EXPECT_NE(u.exit_code, 0) << u;
  EXPECT_NE(u.output.find(mnt), std::string::npos) << u;
  EXPECT_EQ(RunCommand({cli_, "umount"}).exit_code, 2);
  EXPECT_EQ(RunCommand({cli_, "mount", image_}).exit_code, 2);

  // A refused image: the driver's one line, non-zero, no mount.
  m = RunCommand({cli_, "mount", image_, mnt, "-o", "trust=" + work_ + "/no_such_dir"});
  EXPECT_NE(m.exit_code, 0) << m;
  EXPECT_EQ(m.output.rfind("cryptexfs: " + image_ + ": ", 0), 0u) << m;
  EXPECT_FALSE(IsMounted(mnt));
}

// -o pubkey=FILE trusts exactly that key: the vendor's mounts, another is
// refused; it excludes trust=.
TEST_F(MountTest, PubkeyOptionTrustsExactlyThatKey) {
  const std::string mnt = NewMountpoint();
  Driver* d =
      StartDriver({CRYPTEXFS_BIN, image_, mnt, "-f", "-o", "pubkey=" + work_ + "/vendor.key.pub"});
  ASSERT_TRUE(WaitForMount(mnt, d)) << d->log();
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/hello.txt"), "hello, sealed world\n");
  ASSERT_EQ(RunCommand({"fusermount3", "-u", mnt}).exit_code, 0);
  EXPECT_EQ(d->WaitExit(milliseconds(10000)), 0) << d->log();

  const std::string other = work_ + "/pubkey_other.key";
  if (!stdfs::exists(other)) {
    ASSERT_EQ(RunCommand({cli_, "keygen", "-o", other}).exit_code, 0);
  }
  RunResult r = RunCommand({CRYPTEXFS_BIN, image_, mnt, "-f", "-o", "pubkey=" + other + ".pub"});
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_EQ(r.output.rfind("cryptexfs: " + image_ + ": ", 0), 0u) << r;
  EXPECT_FALSE(IsMounted(mnt));
  r = RunCommand({CRYPTEXFS_BIN, image_, mnt, "-f", "-o",
                  "trust=" + trust_ + ",pubkey=" + work_ + "/vendor.key.pub"});
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_NE(r.output.find("exclude each other"), std::string::npos) << r;
  EXPECT_FALSE(IsMounted(mnt));
}

// read_ahead_kb of the mount's backing device info, polled until it equals
// `want` (the driver sets it right after INIT) or 5 s passed.
std::string ReadaheadKb(const std::string& mnt, const std::string& want) {
  struct stat st;
  if (stat(mnt.c_str(), &st) != 0) return "<stat failed>";
  const std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                           std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  std::string got;
  for (int i = 0; i < 250; ++i) {
    got = ReadFileOrEmpty(path);
    if (got == want + "\n") break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return got;
}

// -o readahead=BYTES sets the mount's read_ahead_kb; the default is 1M, and
// 0 keeps the kernel's 128 KiB.
TEST_F(MountTest, ReadaheadOptionSetsTheMountsReadahead) {
  for (const auto& [opt, kb] :
       std::vector<std::pair<std::string, std::string>>{{"", "1024"},
                                                        {"readahead=256K", "256"},
                                                        {"readahead=4M", "4096"},
                                                        {"readahead=0", "128"}}) {
    SCOPED_TRACE(opt);
    const std::string mnt = NewMountpoint();
    std::vector<std::string> extra;
    if (!opt.empty()) extra = {"-o", opt};
    Driver* d = MountImage(image_, mnt, extra);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(ReadaheadKb(mnt, kb), kb + "\n");
    EXPECT_TRUE(ReadFileOrEmpty(mnt + "/big.bin") == ReadFileOrEmpty(src_ + "/big.bin"));
  }
  const RunResult r = RunCommand(
      {CRYPTEXFS_BIN, image_, NewMountpoint(), "-f", "-o", "trust=" + trust_ + ",readahead=65M"});
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_NE(r.output.find("bad readahead '65M'"), std::string::npos) << r;
}

// How many requests of FUSE opcode `op` (e.g. "OPEN") a -d log shows.
size_t CountOpcode(const std::string& log, const std::string& op) {
  const std::string needle = "opcode: " + op + " (";
  size_t n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

// Without -o open_handles the kernel opens files and directories itself
// after one OPEN/OPENDIR answered ENOSYS (no_open); with it, every open(2)
// is an OPEN the driver answers (with a handle), and reads still work.
TEST_F(MountTest, OpenHandlesOptionAnswersEveryOpen) {
  for (bool handles : {false, true}) {
    SCOPED_TRACE(handles ? "open_handles" : "default");
    const std::string mnt = NewMountpoint();
    std::vector<std::string> extra = {"-d"};
    if (handles) extra = {"-d", "-o", "open_handles"};
    Driver* d = MountImage(image_, mnt, extra);
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(ReadFileOrEmpty(mnt + "/hello.txt"), "hello, sealed world\n");
      EXPECT_EQ(ReadFileOrEmpty(mnt + "/dir/sub/deeper/leaf"), "leaf\n");
      EXPECT_EQ(ListDir(mnt + "/dir").size(), 3u);
    }
    const std::string log = d->log();
    if (handles) {
      EXPECT_GE(CountOpcode(log, "OPEN"), 10u) << log.substr(0, 4000);
      EXPECT_GE(CountOpcode(log, "OPENDIR"), 5u);
      EXPECT_GE(CountOpcode(log, "RELEASE"), 10u);
    } else {
      EXPECT_EQ(CountOpcode(log, "OPEN"), 1u) << log.substr(0, 4000);
      EXPECT_EQ(CountOpcode(log, "OPENDIR"), 1u);
      EXPECT_EQ(CountOpcode(log, "RELEASE"), 0u);
    }
  }
}

// ---- unsupported images, the default trust store, the systemd unit ------------------

// An image with an incompatible feature bit this build does not know, validly
// re-signed: refused as unsupported (exit 4) by the CLI and by `cryptex
// mount`, and by cryptexfs with its one line, never mounted.
TEST_F(MountTest, UnknownIncompatFeatureIsUnsupported) {
  stdfs::create_directories(work_ + "/incompat_key");
  Result<surgery::TestKey> key = surgery::MakeTestKey(work_ + "/incompat_key");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  Result<surgery::Bytes> bytes = surgery::ReadAll(image_);
  ASSERT_TRUE(bytes.ok());
  Result<surgery::Bytes> bad = surgery::ResignSuperblock(
      *bytes, key->key, [](SuperblockInfo* sb) { sb->incompat |= 1ull << 40; });
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  const std::string path = work_ + "/incompat.cryptex";
  ASSERT_TRUE(surgery::WriteAll(path, *bad).ok());
  const std::string trust = key->trust_dir;

  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {cli_, "verify", path, "--trust", trust},
           {cli_, "inspect", path, "--trust", trust},
           {cli_, "ls", path, "--trust", trust},
           {cli_, "extract", path, work_ + "/incompat_out", "--trust", trust}}) {
    SCOPED_TRACE(argv[1]);
    const RunResult r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 4) << r;
    EXPECT_NE(r.output.find("unknown incompatible feature bits"), std::string::npos) << r;
  }
  const std::string mnt = NewMountpoint();
  RunResult r = RunCommand({cli_, "mount", path, mnt, "-o", "trust=" + trust});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_EQ(r.output.rfind("cryptexfs: " + path + ": ", 0), 0u) << r;
  EXPECT_NE(r.output.find("unknown incompatible feature bits"), std::string::npos) << r;
  r = RunCommand({CRYPTEXFS_BIN, path, mnt, "-f", "-o", "trust=" + trust});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_FALSE(IsMounted(mnt));
}

// A shell script run as root in a private mount namespace in which /etc is
// an overlay (upper layer in the work directory) holding `key_pub` as
// /etc/cryptex/keys/vendor.pub: the default trust store, without changing
// the host's /etc. Mounts made in the namespace die with it.
RunResult RunWithDefaultTrust(const std::string& work, const std::string& key_pub,
                              const std::string& script, const std::vector<std::string>& env = {}) {
  static int n = 0;
  const std::string layer = work + "/etc_overlay" + std::to_string(n++);
  stdfs::create_directories(layer + "/upper");
  stdfs::create_directories(layer + "/work");
  const std::string setup = "set -e\nmount -t overlay overlay -o lowerdir=/etc,upperdir=" + layer +
                            "/upper,workdir=" + layer + "/work /etc\n" +
                            "mkdir -p /etc/cryptex/keys\ncp " + key_pub +
                            " /etc/cryptex/keys/vendor.pub\n";
  return RunCommand({"unshare", "--mount", "--propagation", "private", "sh", "-c", setup + script},
                    milliseconds(60000), env);
}

// Without trust= or --trust, the keys in /etc/cryptex/keys are trusted: the
// vendor's image verifies and mounts, another signer's is refused.
TEST_F(MountTest, DefaultTrustDirectoryIsEtcCryptexKeys) {
  if (access("/usr/bin/unshare", X_OK) != 0) SKIP_OR_FAIL_IN_CI("no unshare(1)");
  const std::string other_key = work_ + "/default_trust_other.key";
  const std::string other = work_ + "/default_trust_other.cryptex";
  if (!stdfs::exists(other)) {
    ASSERT_EQ(RunCommand({cli_, "keygen", "-o", other_key}).exit_code, 0);
    RunResult b = RunCommand({cli_, "build", src_ + "/dir", "-o", other, "--key", other_key,
                              "--name", "other", "--version", "1"});
    ASSERT_EQ(b.exit_code, 0) << b;
  }
  const std::string mnt = NewMountpoint();
  const std::string script =
      "trap 'fusermount3 -u -z -q " + mnt + " 2>/dev/null || true' EXIT\n" + cli_ + " verify -q " +
      image_ + "\necho verify=$?\n" + "set +e\n" + cli_ + " verify -q " + other +
      " 2>/dev/null\necho other=$?\nset -e\n" + CRYPTEXFS_BIN + " " + image_ + " " + mnt + "\n" +
      "cat " + mnt + "/dir/sub/deeper/leaf\nfusermount3 -u " + mnt + "\n" + "set +e\n" +
      CRYPTEXFS_BIN + " " + other + " " + mnt + " 2>/dev/null\necho refused=$?\n";
  const RunResult r = RunWithDefaultTrust(work_, work_ + "/vendor.key.pub", script);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.output, "verify=0\nother=3\nleaf\nrefused=3\n") << r;
  EXPECT_FALSE(IsMounted(mnt));
  EXPECT_FALSE(stdfs::exists("/etc/cryptex/keys/vendor.pub") &&
               ReadFileOrEmpty("/etc/cryptex/keys/vendor.pub") ==
                   ReadFileOrEmpty(work_ + "/vendor.key.pub"))
      << "the host's /etc was changed";
}

// One key=value line of a unit file ("ExecStart"), "" if absent; fails the
// test if it occurs twice.
std::string UnitLine(const std::string& unit, const std::string& key) {
  std::istringstream in(unit);
  std::string line, found;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) {
      found = line.substr(key.size() + 1);
      ++n;
    }
  }
  EXPECT_LE(n, 1) << key;
  return found;
}

// Replaces every `from` in `s` by `to`.
std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// One of the generated systemd units (from its .in template, with this
// build's install paths) as systemd would run it for instance "app": its
// ExecStartPre, ExecStart and ExecStop command lines exactly, with only the
// instance and the paths in `paths` (unit path -> the test's, in order)
// replaced, and the default trust store (the units name none). The mount
// appears at `mnt`, READY=1 (naming `serving`) arrives while it is mounted,
// `while_mounted` (shell, run while mounted) prints what is expected of it
// (`expected_output`), ExecStop unmounts, the driver exits 0 and sends
// STOPPING=1; with an untrusted key ExecStart exits 3, a status
// RestartPreventExitStatus lists. Returns ExecStart as substituted.
std::string ExpectUnitMountsAndNotifies(
    const std::string& work, const std::string& cli, const std::string& unit_file,
    const std::vector<std::pair<std::string, std::string>>& paths, const std::string& mnt,
    const std::string& serving, const std::string& while_mounted,
    const std::string& expected_output) {
  const std::string unit = ReadFileOrEmpty(unit_file);
  EXPECT_FALSE(unit.empty()) << unit_file;
  EXPECT_EQ(UnitLine(unit, "Type"), "notify");
  auto subst = [&](std::string cmd) {
    EXPECT_EQ(cmd.find_first_of("\"'\\$;"), std::string::npos) << "quoting not handled: " << cmd;
    cmd = ReplaceAll(cmd, "%i", "app");
    cmd = ReplaceAll(cmd, CRYPTEXFS_INSTALLED, CRYPTEXFS_BIN);
    for (const auto& [from, to] : paths) cmd = ReplaceAll(cmd, from, to);
    cmd = ReplaceAll(cmd, "/run/cryptex/app", mnt);
    EXPECT_EQ(cmd.find('%'), std::string::npos) << cmd;
    return cmd;
  };
  const std::string pre = subst(UnitLine(unit, "ExecStartPre"));
  const std::string start = subst(UnitLine(unit, "ExecStart"));
  const std::string stop = subst(UnitLine(unit, "ExecStop"));
  // What the unit starts on: the condition names the file the mount serves.
  EXPECT_EQ(subst(UnitLine(unit, "ConditionPathExists")), serving);
  EXPECT_TRUE(stdfs::exists(serving)) << serving;

  const std::string sock_path = work + "/unit_notify.sock";
  unlink(sock_path.c_str());
  const int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  EXPECT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size());
  EXPECT_EQ(bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);

  // ExecStart runs in the foreground (-f, as Type=notify wants); the script
  // stands in for systemd: waits for the mount, uses it, runs ExecStop.
  const std::string log = work + "/unit_driver.log";
  const std::string script =
      "trap 'fusermount3 -u -z -q " + mnt + " 2>/dev/null || true' EXIT\n" + pre + "\n" + start +
      " >" + log + " 2>&1 &\npid=$!\n" + "i=0\nwhile ! grep -q ' " + mnt +
      " .* - fuse.cryptexfs ' /proc/self/mountinfo; do\n"
      "  i=$((i+1)); [ $i -lt 500 ] || { echo no mount; exit 1; }; sleep 0.02\ndone\n" +
      while_mounted + "\n" + stop + "\nrc=0\nwait $pid || rc=$?\necho exit=$rc\n";
  const RunResult r =
      RunWithDefaultTrust(work, work + "/vendor.key.pub", script, {"NOTIFY_SOCKET=" + sock_path});
  const std::string driver_log = ReadFileOrEmpty(log);
  EXPECT_EQ(r.exit_code, 0) << r << "\ndriver log:\n" << driver_log;
  EXPECT_EQ(r.output, expected_output + "exit=0\n") << r << "\ndriver log:\n" << driver_log;
  EXPECT_EQ(SanitizerReport(driver_log), "") << driver_log;
  EXPECT_FALSE(IsMounted(mnt));

  std::vector<std::string> msgs;
  char buf[512];
  ssize_t n;
  while ((n = recv(s, buf, sizeof(buf), MSG_DONTWAIT)) > 0) msgs.emplace_back(buf, n);
  close(s);
  EXPECT_EQ(msgs.size(), 2u);
  if (msgs.size() == 2) {
    EXPECT_EQ(msgs[0].rfind("READY=1\nSTATUS=serving " + serving + " at " + mnt, 0), 0u) << msgs[0];
    EXPECT_EQ(msgs[1], "STOPPING=1");
  }

  // A refused image is not retried every RestartSec: the unit's ExecStart
  // on an untrusted image exits with a status Restart= skips.
  std::istringstream prevent(UnitLine(unit, "RestartPreventExitStatus"));
  std::set<int> no_restart;
  for (int code; prevent >> code;) no_restart.insert(code);
  const std::string other_key = work + "/unit_other.key";
  if (!stdfs::exists(other_key)) {
    EXPECT_EQ(RunCommand({cli, "keygen", "-o", other_key}).exit_code, 0);
  }
  const std::string untrusted = "set +e\n" + start + " >/dev/null 2>&1\necho $?\n";
  const RunResult u = RunWithDefaultTrust(work, other_key + ".pub", untrusted);
  EXPECT_EQ(u.exit_code, 0) << u;
  EXPECT_EQ(u.output, "3\n") << u;
  EXPECT_EQ(no_restart.count(std::atoi(u.output.c_str())), 1u)
      << "RestartPreventExitStatus=" << UnitLine(unit, "RestartPreventExitStatus");
  EXPECT_FALSE(IsMounted(mnt));
  return start;
}

// cryptex-mount@NAME mounts line NAME of the store /var/lib/cryptex (here a
// store made with `cryptex add`, at the layout docs/STORE.md gives): the
// line's base with its active patches, following `cryptex install
// --activate` live while mounted.
TEST_F(MountTest, SystemdUnitCommandLineMountsAndNotifies) {
  if (access("/usr/bin/unshare", X_OK) != 0) SKIP_OR_FAIL_IN_CI("no unshare(1)");
  const std::string mnt = work_ + "/run_cryptex_app";
  mountpoints_.push_back(mnt);
  const std::string store = work_ + "/var_lib_cryptex";
  stdfs::remove_all(store);
  RunResult r = RunCommand({cli_, "add", image_, "--store", store, "--trust", trust_});
  ASSERT_EQ(r.exit_code, 0) << r;
  // A patch changing hello.txt: the mount follows its activation.
  const std::string target = work_ + "/unit_target";
  const std::string patch = work_ + "/unit_p1.cxpatch";  // relaunch class: goes live
  if (!stdfs::exists(patch)) {
    stdfs::remove_all(target);
    ASSERT_EQ(RunCommand({"cp", "-a", src_, target}).exit_code, 0);
    WriteFile(target + "/hello.txt", "hello, patched world\n");
    r = RunCommand({cli_, "mkpatch", "--from", image_, "--to", target, "-o", patch, "--key",
                    work_ + "/vendor.key", "--id", "p1", "--class", "relaunch", "--release-counter",
                    "1", "--trust", trust_},
                   milliseconds(120000));
    ASSERT_EQ(r.exit_code, 0) << r;
  }
  const std::string start =
      ExpectUnitMountsAndNotifies(work_, cli_, CRYPTEX_UNIT_FILE, {{"/var/lib/cryptex", store}},
                                  mnt, store + "/lines/app/base.cryptex",
                                  "cat " + mnt + "/dir/sub/deeper/leaf " + mnt + "/hello.txt\n" +
                                      cli_ + " install --activate " + patch + " --store " + store +
                                      " >/dev/null\ncat " + mnt + "/hello.txt",
                                  "leaf\nhello, sealed world\nhello, patched world\n");
  EXPECT_EQ(start, std::string(CRYPTEXFS_BIN) + " app " + mnt + " -o store=" + store + " -f");
}

// cryptex-image@NAME mounts the plain image file
// /var/lib/cryptex/images/NAME.cryptex (no store), as before the store.
TEST_F(MountTest, SystemdImageUnitCommandLineMountsAndNotifies) {
  if (access("/usr/bin/unshare", X_OK) != 0) SKIP_OR_FAIL_IN_CI("no unshare(1)");
  const std::string mnt = work_ + "/run_cryptex_app_image";
  mountpoints_.push_back(mnt);
  const std::string start = ExpectUnitMountsAndNotifies(
      work_, cli_, CRYPTEX_IMAGE_UNIT_FILE, {{"/var/lib/cryptex/images/app.cryptex", image_}}, mnt,
      image_, "cat " + mnt + "/dir/sub/deeper/leaf", "leaf\n");
  EXPECT_EQ(start, std::string(CRYPTEXFS_BIN) + " " + image_ + " " + mnt + " -f");
}

// mount.fuse3 (what mount(8) runs for every fuse.TYPE) runs
// `cryptexfs SOURCE MOUNTPOINT -o OPTS` through /bin/sh, found in $PATH.
TEST_F(MountTest, MountFuse3HelperRunsCryptexfsFromPath) {
  std::string bin = work_ + "/bin";
  stdfs::create_directories(bin);
  std::error_code ec;
  stdfs::remove(bin + "/cryptexfs", ec);
  stdfs::create_symlink(CRYPTEXFS_BIN, bin + "/cryptexfs");
  const char* path = std::getenv("PATH");
  std::string env_path = "PATH=" + bin + ":" + (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");

  std::string mnt = NewMountpoint();
  // The options an fstab line leads to (mount.fuse3 itself drops nofail,
  // noauto, _netdev, ...; we drop the rest and force ro).
  RunResult m = RunCommand({"/usr/sbin/mount.fuse3", image_, mnt, "-t", "fuse.cryptexfs", "-o",
                            "rw,nofail,noauto,defaults,x-systemd.automount,trust=" + trust_},
                           milliseconds(30000), {env_path});
  ASSERT_EQ(m.exit_code, 0) << m;
  // The daemonized driver is serving before the helper returns.
  EXPECT_EQ(MountedType(mnt), "fuse.cryptexfs");
  EXPECT_EQ(ReadFileOrEmpty(mnt + "/dir/sub/deeper/leaf"), "leaf\n");
  struct statvfs sv;
  ASSERT_EQ(statvfs(mnt.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY) << "rw must not win";
  RunResult u = RunCommand({"umount", mnt}, milliseconds(10000));
  EXPECT_EQ(u.exit_code, 0) << u;
  EXPECT_TRUE(WaitForUnmount(mnt));

  // A refused image fails the helper with our one-line message, no mount.
  m = RunCommand({"/usr/sbin/mount.fuse3", image_, mnt, "-t", "fuse.cryptexfs", "-o",
                  "trust=" + work_ + "/no_such_dir"},
                 milliseconds(30000), {env_path});
  EXPECT_NE(m.exit_code, 0) << m;
  EXPECT_NE(m.output.find("cryptexfs: " + image_ + ": "), std::string::npos) << m;
  EXPECT_FALSE(IsMounted(mnt));
}

// The whole chain from mount(8). mount(8) resets PATH to the standard one
// (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), so the test
// runs in a private mount namespace where a directory holding cryptexfs is
// bind-mounted over /usr/local/bin: nothing outside the namespace changes,
// and the namespace (with its mount) dies with the script.
TEST_F(MountTest, MountDashTFuseCryptexfs) {
  if (access("/usr/bin/unshare", X_OK) != 0) SKIP_OR_FAIL_IN_CI("no unshare(1)");
  std::string bin = work_ + "/bin_mount8";
  stdfs::create_directories(bin);
  std::error_code ec;
  stdfs::remove(bin + "/cryptexfs", ec);
  stdfs::create_symlink(CRYPTEXFS_BIN, bin + "/cryptexfs");
  std::string mnt = NewMountpoint();
  std::string script =
      "set -e\n"
      "mount --bind " +
      bin +
      " /usr/local/bin\n"
      "trap 'fusermount3 -u -z -q " +
      mnt +
      " 2>/dev/null || true' EXIT\n"
      "mount -t fuse.cryptexfs -o ro,nofail,trust=" +
      trust_ + " " + image_ + " " + mnt +
      "\n"
      "grep -q ' " +
      mnt +
      " .* - fuse.cryptexfs ' /proc/self/mountinfo\n"
      "cat " +
      mnt +
      "/dir/sub/deeper/leaf\n"
      "umount " +
      mnt +
      "\n"
      "echo unmounted\n";
  RunResult r = RunCommand({"unshare", "--mount", "--propagation", "private", "sh", "-c", script},
                           milliseconds(30000));
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.output, "leaf\nunmounted\n") << r;
  EXPECT_FALSE(IsMounted(mnt));  // never visible outside the namespace
}

// ---- cryptex status: only the driver's answer counts ---------------------------
// (Self-contained: own trees and images; the fixture's key, trust and mounts.)

// `s` in POSIX sh single quotes.
std::string StatusQ(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct StatusRun {
  int exit_code = -1;
  std::string out, err;  // separately: stdout must be a JSON document alone
};

// Runs the cryptex CLI with `args` (each one word), stdout and stderr apart.
StatusRun RunCli(const std::string& cli, const std::string& dir,
                 const std::vector<std::string>& args) {
  std::string cmd = StatusQ(cli);
  // Appended piece by piece, not `cmd += " " + StatusQ(a)`: GCC 12 at -O3
  // reports a false -Wrestrict in that operator+ (GCC bug 105329).
  for (const std::string& a : args) cmd.append(" ").append(StatusQ(a));
  cmd.append(" >").append(StatusQ(dir + "/cli.out"));
  cmd.append(" 2>").append(StatusQ(dir + "/cli.err")).append(" </dev/null");
  StatusRun r;
  const int st = std::system(cmd.c_str());
  r.exit_code = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = ReadFileOrEmpty(dir + "/cli.out");
  r.err = ReadFileOrEmpty(dir + "/cli.err");
  return r;
}

// Parses `text` as one JSON document; a discarded value (and a test
// failure) if it is not valid JSON.
nlohmann::json ParseJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not valid JSON:\n" << text;
  return j;
}

// Sets the xattrs a forger would put in an image.
void SetLookalikeXattrs(const std::string& path) {
  const std::vector<std::pair<std::string, std::string>> attrs = {
      {"user.cryptex.verify_failures", "0"},
      {"user.cryptex.blocks_verified", "999"},
      {"user.cryptex.root_hash", std::string(64, 'a')},
      {"user.cryptex.image", "/fake/image.cryptex"},
      {"trusted.cryptex.image", "/fake/trusted.cryptex"}};
  for (const auto& [name, value] : attrs) {
    ASSERT_EQ(lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0), 0)
        << path << " " << name << ": " << strerror(errno);
  }
}

class StatusTest : public MountTest {
 protected:
  // Seals `src` with the fixture's key into `image`.
  void Seal(const std::string& src, const std::string& image) {
    RunResult b = RunCommand({cli_, "build", src, "-o", image, "--key", work_ + "/vendor.key",
                              "--name", "status", "--version", "1", "-q"},
                             milliseconds(120000));
    ASSERT_EQ(b.exit_code, 0) << b;
  }
  // The root hash `cryptex inspect --json` reads from the signed image.
  std::string RootHashOf(const std::string& image) {
    StatusRun r = RunCli(cli_, work_, {"inspect", "--json", image, "--trust", trust_});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = ParseJson(r.out);
    return j.is_object() ? j.value("root_hash", "") : "";
  }
  // A fresh directory under work_.
  std::string Dir(const std::string& name) {
    const std::string d = work_ + "/" + name;
    stdfs::remove_all(d);
    stdfs::create_directories(d);
    return d;
  }
};

// An image whose root and files carry user.cryptex.* (and trusted.cryptex.*)
// xattrs: status reports the driver's values, and the image's xattrs are
// served as ordinary xattrs, exactly as sealed.
TEST_F(StatusTest, LookalikeXattrsInTheImageAreDataNotStatus) {
  const std::string src = Dir("lookalike_src");
  WriteFile(src + "/f", "payload\n");
  SetLookalikeXattrs(src);
  SetLookalikeXattrs(src + "/f");
  const std::string image = work_ + "/lookalike.cryptex";
  Seal(src, image);
  const std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image, mnt), nullptr);

  StatusRun r = RunCli(cli_, work_, {"status", "--json", mnt});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_array() && j.size() == 1) << r.out;
  EXPECT_EQ(j[0]["mountpoint"], mnt);
  EXPECT_EQ(j[0]["image"], stdfs::canonical(image).string());
  EXPECT_EQ(j[0]["root_hash"], RootHashOf(image));
  EXPECT_EQ(j[0]["verify_failures"], 0);
  EXPECT_NE(j[0]["blocks_verified"], 999);
  // The text form agrees.
  r = RunCli(cli_, work_, {"status", mnt});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("image:            " + stdfs::canonical(image).string() + "\n"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("/fake"), std::string::npos) << r.out;

  // The image's xattrs, on the root and on the file, are the sealed ones.
  EXPECT_EQ(Xattrs(mnt), Xattrs(src));
  EXPECT_EQ(Xattrs(mnt + "/f"), Xattrs(src + "/f"));
  EXPECT_EQ(Xattrs(mnt)["user.cryptex.image"], "/fake/image.cryptex");
  EXPECT_EQ(Xattrs(mnt + "/f")["trusted.cryptex.image"], "/fake/trusted.cryptex");
}

// A plain directory carrying the lookalike xattrs, a directory inside a
// mount, a file and a missing path are not cryptexfs mounts: exit 5, one
// line on stderr, and with --json an empty (valid) list.
TEST_F(StatusTest, AnythingButACryptexfsMountPointIsRefused) {
  const std::string plain = Dir("plain_with_xattrs");
  SetLookalikeXattrs(plain);
  const std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image_, mnt), nullptr);
  for (const std::string& path :
       {plain, mnt + "/dir", mnt + "/hello.txt", work_ + "/no_such_dir", std::string("/")}) {
    SCOPED_TRACE(path);
    StatusRun r = RunCli(cli_, work_, {"status", path});
    EXPECT_EQ(r.exit_code, 5) << r.out << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
    r = RunCli(cli_, work_, {"status", "--json", path});
    EXPECT_EQ(r.exit_code, 5) << r.err;
    nlohmann::json j = ParseJson(r.out);
    EXPECT_TRUE(j.is_array() && j.empty()) << r.out;
  }
  StatusRun r = RunCli(cli_, work_, {"status", plain});
  EXPECT_NE(r.err.find("not a cryptexfs mount"), std::string::npos) << r.err;
  // Another FUSE file system (squashfuse) over the same lookalike root.
  if (access("/usr/bin/squashfuse", X_OK) == 0 && access("/usr/bin/mksquashfs", X_OK) == 0) {
    const std::string sq = work_ + "/plain.squashfs";
    ASSERT_EQ(RunCommand({"mksquashfs", plain, sq, "-noappend", "-quiet", "-xattrs"}).exit_code, 0);
    const std::string other = NewMountpoint();
    ASSERT_EQ(RunCommand({"squashfuse", sq, other}).exit_code, 0);
    EXPECT_FALSE(MountedType(other).empty());
    r = RunCli(cli_, work_, {"status", other});
    EXPECT_EQ(r.exit_code, 5) << r.out << r.err;
    EXPECT_NE(r.err.find("not a cryptexfs mount (file system type fuse"), std::string::npos)
        << r.err;
  }
  // A good mount next to a bad path: its object is listed, the exit is 5.
  r = RunCli(cli_, work_, {"status", "--json", mnt, plain});
  EXPECT_EQ(r.exit_code, 5);
  nlohmann::json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_array() && j.size() == 1) << r.out;
  EXPECT_EQ(j[0]["mountpoint"], mnt);
}

// A corrupt mount whose image claims user.cryptex.verify_failures=0 reports
// the driver's real, non-zero count and exits 3.
TEST_F(StatusTest, CorruptMountReportsTheDriversFailureCount) {
  const std::string src = Dir("corrupt_src");
  const std::string victim = RandomBytes(256 * 1024, 7);  // stored raw
  WriteFile(src + "/victim.bin", victim);
  SetLookalikeXattrs(src);
  const std::string image = work_ + "/status_corrupt.cryptex";
  Seal(src, image);
  {
    const std::string img = ReadFileOrEmpty(image);
    const size_t at = img.find(victim.substr(192 * 1024, 4096));
    ASSERT_NE(at, std::string::npos);
    std::fstream io(image, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(at + 100));
    io.put(static_cast<char>(img[at + 100] ^ 0x40));
  }
  const std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image, mnt), nullptr);
  EXPECT_TRUE(ReadFileOrEmpty(mnt + "/victim.bin") != victim);  // stops at EIO
  const int fd = open((mnt + "/victim.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[4096];
  EXPECT_EQ(pread(fd, buf, sizeof buf, 192 * 1024), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);

  StatusRun r = RunCli(cli_, work_, {"status", "--json", mnt});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  nlohmann::json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_array() && j.size() == 1) << r.out;
  ASSERT_TRUE(j[0]["verify_failures"].is_number_unsigned()) << r.out;
  const uint64_t failures = j[0]["verify_failures"].get<uint64_t>();
  EXPECT_GE(failures, 1u);
  r = RunCli(cli_, work_, {"status", mnt});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.out.find("verify failures:  " + std::to_string(failures) + "   <--"),
            std::string::npos)
      << r.out;
}

// An image path with quotes, backslashes, a newline, and longer than 511
// bytes; a mount point named through such a path: valid JSON that reads
// back to the exact strings, and the text form carries the path.
TEST_F(StatusTest, JsonCarriesAnyImagePathExactly) {
  std::string dir = work_ + "/q'uo\"te\\back\nnl";
  for (int i = 0; i < 3; ++i) dir += "/" + std::string(200, static_cast<char>('a' + i));
  stdfs::create_directories(dir);
  const std::string image = dir + "/app \"copy\".cryptex";
  ASSERT_GT(image.size(), 600u);
  stdfs::copy_file(image_, image, stdfs::copy_options::overwrite_existing);
  const std::string mnt = NewMountpoint();
  ASSERT_NE(MountImage(image, mnt), nullptr);
  const std::string via = work_ + "/link \"to\" 'mnt'\\\n";
  stdfs::remove(via);
  stdfs::create_directory_symlink(mnt, via);

  StatusRun r = RunCli(cli_, work_, {"status", "--json", mnt, via});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_array() && j.size() == 2) << r.out;
  EXPECT_EQ(j[0]["image"].get<std::string>(), stdfs::canonical(image).string());
  EXPECT_EQ(j[1]["image"].get<std::string>(), stdfs::canonical(image).string());
  EXPECT_EQ(j[1]["mountpoint"].get<std::string>(), via);
  r = RunCli(cli_, work_, {"status", mnt});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("image:            " + stdfs::canonical(image).string() + "\n"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace cryptex::cxfs
