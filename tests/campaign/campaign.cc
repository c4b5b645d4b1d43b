// cryptex_campaign: single-byte corruption campaign against the reader.
//
//   cryptex_campaign --image IMG --source DIR --trust DIR [options]
//   cryptex_campaign --generate [options]     (builds a small image to attack)
//
// --generate writes the adversarial base tree (gen.h) plus --generate-files N
// (default 400) small files into a temporary directory and builds it.
// Options: --seed N (default 1), --flips N (default 200), --timeout-ms N
// (per iteration, default 10000), --only I (rerun iteration I alone, verbose),
// --mount-with PATH_TO_CRYPTEXFS (also read every iteration through a real
// mount of the corrupted image), --no-verify (skip VerifyAll), --keep DIR
// (keep each image that produced wrong data / a crash / a hang).
//
// Iteration i copies the image, flips one byte (position and XOR mask drawn
// from a generator seeded with (seed, i), so any iteration is reproducible
// alone with --only i) in a region chosen round-robin over: header block,
// each non-empty region, the hash tree, the signed superblock, the signature
// block and the rest of the last block. A forked child then opens the copy
// with the library, reads every entry of the source tree through it and
// compares (contents, symlink targets, directory listings, mode, owner,
// mtime, size, xattrs), and runs VerifyAll. Per entry the outcome is
// "correct", "failed cleanly" (an error Status), or WRONG (the read
// succeeded with data that differs from the source). A child killed by a
// signal is a crash, one still running at the timeout is a hang. With
// --mount-with, cryptexfs counts as refusing an image only when it exits the
// way the driver documents (status 1 after its one error line, before
// mounting) for an image the library refuses too; any other end (a signal,
// another status, a sanitizer report, a non-zero status after unmount) is a
// crash.
//
// Prints a table per region; exits 1 if wrong > 0, crashes > 0, hangs > 0,
// or VerifyAll missed a flip (every flipped byte is covered by the tree or
// the signature, or must be zero); 2 on setup errors (including an unmodified
// image that does not read back correctly); 77 (skipped) for --mount-with
// without /dev/fuse.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exit_codes.h"
#include "format.h"
#include "gen.h"
#include "image.h"
#include "surgery.h"

namespace cryptex::campaign {
namespace {

using surgery::Bytes;

// ---- the oracle: the source tree -------------------------------------------

struct SrcEntry {
  std::string rel;  // "" for the root, else "a/b"
  struct stat st;
  std::string content;                        // regular files
  std::string target;                         // symlinks
  std::vector<std::string> children;          // directories, sorted
  std::map<std::string, std::string> xattrs;  // as the kernel lists them
};

std::map<std::string, std::string> SourceXattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  std::vector<char> names(65536);
  const ssize_t n = llistxattr(path.c_str(), names.data(), names.size());
  for (ssize_t off = 0; n > 0 && off < n;) {
    std::string name(names.data() + off);
    off += static_cast<ssize_t>(name.size()) + 1;
    std::vector<char> v(65536);
    const ssize_t vn = lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    if (vn >= 0) out[name] = std::string(v.data(), static_cast<size_t>(vn));
  }
  return out;
}

bool ReadSource(const std::string& root, const std::string& rel, std::vector<SrcEntry>* out) {
  const std::string path = rel.empty() ? root : root + "/" + rel;
  SrcEntry e;
  e.rel = rel;
  if (lstat(path.c_str(), &e.st) != 0) {
    std::perror(path.c_str());
    return false;
  }
  e.xattrs = SourceXattrs(path);
  if (S_ISREG(e.st.st_mode)) {
    auto bytes = surgery::ReadAll(path);
    if (!bytes.ok()) return false;
    e.content.assign(bytes->begin(), bytes->end());
  } else if (S_ISLNK(e.st.st_mode)) {
    std::vector<char> buf(8192);
    const ssize_t n = readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return false;
    e.target.assign(buf.data(), static_cast<size_t>(n));
  } else if (S_ISDIR(e.st.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (d == nullptr) return false;
    while (dirent* de = readdir(d)) {
      const std::string n = de->d_name;
      if (n != "." && n != "..") e.children.push_back(n);
    }
    closedir(d);
    std::sort(e.children.begin(), e.children.end());
  }
  const std::vector<std::string> kids = e.children;
  out->push_back(std::move(e));
  for (const auto& k : kids) {
    if (!ReadSource(root, rel.empty() ? k : rel + "/" + k, out)) return false;
  }
  return true;
}

// ---- outcomes ----------------------------------------------------------------

enum Outcome { kCorrect = 0, kClean = 1, kWrong = 2 };

struct ChildReport {
  uint64_t correct = 0, clean = 0, wrong = 0;
  uint32_t open_refused = 0;
  uint32_t verify_detected = 0;  // VerifyAll failed (or open refused)
  uint32_t verify_ran = 0;
  char first_wrong[512] = {0};

  void Count(Outcome o) {
    if (o == kCorrect) ++correct;
    if (o == kClean) ++clean;
    if (o == kWrong) ++wrong;
  }
};

void NoteWrong(ChildReport* r, const std::string& what) {
  if (r->first_wrong[0] == 0)
    std::snprintf(r->first_wrong, sizeof r->first_wrong, "%s", what.c_str());
}

// Checks one source entry against the image. Worst outcome of its operations.
Outcome CheckEntry(const Image& img, const SrcEntry& e, ChildReport* r, bool verbose) {
  auto clean = [&](const Status& st) {
    if (verbose) std::printf("    /%s: %s\n", e.rel.c_str(), st.ToString().c_str());
    return kClean;
  };
  auto wrong = [&](const std::string& what) {
    NoteWrong(r, "/" + e.rel + ": " + what);
    if (verbose) std::printf("    WRONG /%s: %s\n", e.rel.c_str(), what.c_str());
    return kWrong;
  };
  auto in = img.Resolve(e.rel);
  if (!in.ok()) {
    if (in.status().code() == Code::kNotFound) return wrong("not found: " + in.status().ToString());
    return clean(in.status());
  }
  if (in->mode != e.st.st_mode) return wrong("mode");
  if (in->uid != e.st.st_uid || in->gid != e.st.st_gid) return wrong("owner");
  if (in->mtime_sec != e.st.st_mtim.tv_sec ||
      in->mtime_nsec != static_cast<uint32_t>(e.st.st_mtim.tv_nsec)) {
    return wrong("mtime");
  }
  if ((S_ISREG(e.st.st_mode) || S_ISLNK(e.st.st_mode)) &&
      in->size != static_cast<uint64_t>(e.st.st_size)) {
    return wrong("size");
  }
  if ((S_ISCHR(e.st.st_mode) || S_ISBLK(e.st.st_mode)) && in->rdev != e.st.st_rdev) {
    return wrong("rdev");
  }
  Outcome worst = kCorrect;
  if (S_ISREG(e.st.st_mode)) {
    std::string got;
    std::vector<uint8_t> buf(1u << 16);
    for (uint64_t off = 0; off < in->size;) {
      auto n = img.Read(in->ino, off, buf);
      if (!n.ok()) return clean(n.status());
      if (*n == 0) return wrong("short read");
      got.append(reinterpret_cast<const char*>(buf.data()), *n);
      off += *n;
    }
    if (got != e.content) return wrong("content differs");
  } else if (S_ISLNK(e.st.st_mode)) {
    auto t = img.ReadLink(in->ino);
    if (!t.ok()) return clean(t.status());
    if (*t != e.target) return wrong("symlink target differs");
  } else if (S_ISDIR(e.st.st_mode)) {
    std::vector<std::string> names;
    Status st = img.ReadDir(in->ino, 0, [&](const DirEntry& d, uint64_t) {
      names.push_back(d.name);
      return names.size() < 1000000;
    });
    if (!st.ok()) return clean(st);
    if (names != e.children) return wrong("directory listing differs");
  }
  auto xs = img.ListXattrs(in->ino);
  if (!xs.ok()) {
    worst = std::max(worst, clean(xs.status()));
  } else {
    std::map<std::string, std::string> got;
    for (const auto& x : *xs) got[x.name] = x.value;
    if (got != e.xattrs) return wrong("xattrs differ");
  }
  return worst;
}

void RunLibraryChild(const std::string& image, const TrustStore& trust,
                     const std::vector<SrcEntry>& src, bool verify, bool verbose, ChildReport* r) {
  ImageOptions opts;
  opts.trust = &trust;
  opts.frame_cache_bytes = 256u << 10;
  opts.block_cache_bytes = 256u << 10;
  auto img = Image::Open(image, opts);
  if (!img.ok()) {
    if (verbose) std::printf("    open: %s\n", img.status().ToString().c_str());
    r->open_refused = 1;
    r->verify_detected = 1;
    r->clean = src.size();
    return;
  }
  for (const auto& e : src) {
    r->Count(CheckEntry(**img, e, r, verbose));
  }
  if (verify) {
    r->verify_ran = 1;
    Status st = (*img)->VerifyAll();
    if (verbose) std::printf("    verify: %s\n", st.ok() ? "ok" : st.ToString().c_str());
    r->verify_detected = st.ok() ? 0 : 1;
  }
}

// ---- the same through a mount -------------------------------------------------

Outcome CheckMounted(const std::string& mnt, const SrcEntry& e, ChildReport* r, bool verbose) {
  const std::string p = e.rel.empty() ? mnt : mnt + "/" + e.rel;
  auto clean = [&](const char* op) {
    if (verbose) std::printf("    /%s: %s: %s\n", e.rel.c_str(), op, std::strerror(errno));
    return kClean;
  };
  auto wrong = [&](const std::string& what) {
    NoteWrong(r, "mount /" + e.rel + ": " + what);
    if (verbose) std::printf("    WRONG /%s: %s\n", e.rel.c_str(), what.c_str());
    return kWrong;
  };
  struct stat st;
  if (lstat(p.c_str(), &st) != 0) return errno == ENOENT ? wrong("ENOENT") : clean("lstat");
  if (st.st_mode != e.st.st_mode && !e.rel.empty()) return wrong("mode");
  if (S_ISREG(e.st.st_mode)) {
    if (st.st_size != e.st.st_size) return wrong("size");
    const int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return clean("open");
    std::string got;
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0) {
        close(fd);
        return clean("read");
      }
      if (n == 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    if (got != e.content) return wrong("content differs");
  } else if (S_ISLNK(e.st.st_mode)) {
    std::vector<char> buf(8192);
    const ssize_t n = readlink(p.c_str(), buf.data(), buf.size());
    if (n < 0) return clean("readlink");
    if (std::string(buf.data(), static_cast<size_t>(n)) != e.target) return wrong("target");
  } else if (S_ISDIR(e.st.st_mode)) {
    DIR* d = opendir(p.c_str());
    if (d == nullptr) return clean("opendir");
    std::vector<std::string> names;
    errno = 0;
    while (dirent* de = readdir(d)) {
      const std::string n = de->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    const int err = errno;
    closedir(d);
    if (err != 0) {
      errno = err;
      return clean("readdir");
    }
    std::sort(names.begin(), names.end());
    if (names != e.children) return wrong("listing differs");
  }
  std::vector<char> names(65536);
  const ssize_t n = llistxattr(p.c_str(), names.data(), names.size());
  if (n < 0) return clean("listxattr");
  std::map<std::string, std::string> got;
  for (ssize_t off = 0; off < n;) {
    std::string name(names.data() + off);
    off += static_cast<ssize_t>(name.size()) + 1;
    std::vector<char> v(65536);
    const ssize_t vn = lgetxattr(p.c_str(), name.c_str(), v.data(), v.size());
    if (vn < 0) return clean("getxattr");
    got[name] = std::string(v.data(), static_cast<size_t>(vn));
  }
  if (got != e.xattrs) return wrong("xattrs differ");
  return kCorrect;
}

// ---- process plumbing -----------------------------------------------------------

enum class ChildEnd { kOk, kCrash, kHang };

// Runs fn in a forked child that writes a ChildReport into a pipe.
ChildEnd RunInChild(const std::function<void(ChildReport*)>& fn, int timeout_ms, ChildReport* out,
                    std::string* crash_info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    std::perror("pipe");
    std::exit(2);
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    ChildReport r;
    fn(&r);
    std::fflush(nullptr);
    const ssize_t w = write(fds[1], &r, sizeof r);
    _exit(w == static_cast<ssize_t>(sizeof r) ? 0 : 3);
  }
  close(fds[1]);
  size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool hung = false;
  while (got < sizeof *out) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      hung = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int pr = poll(&p, 1, static_cast<int>(left));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    const ssize_t n = read(fds[0], reinterpret_cast<char*>(out) + got, sizeof *out - got);
    if (n <= 0) break;  // EOF: the child died before reporting
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  if (hung) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (hung) return ChildEnd::kHang;
  if (WIFSIGNALED(status)) {
    *crash_info = std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return ChildEnd::kCrash;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof *out) {
    *crash_info = "exited with status " + std::to_string(WEXITSTATUS(status)) + " before reporting";
    return ChildEnd::kCrash;
  }
  return ChildEnd::kOk;
}

bool IsMounted(const std::string& mnt) {
  struct stat a, b;
  if (stat(mnt.c_str(), &a) != 0) return false;
  if (stat((mnt + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

struct MountRun {
  ChildEnd reader = ChildEnd::kOk;
  bool refused = false;       // cryptexfs refused the image without mounting
  bool daemon_crash = false;  // cryptexfs died (signal, unexpected exit status, sanitizer report)
  bool daemon_hang = false;   // cryptexfs did not exit after unmount
  std::string info;
  ChildReport report;
};

// The line of a sanitizer's (or the C++ runtime's) report in a daemon's
// stderr, "" if there is none.
std::string ReportLine(const std::string& err) {
  static const char* const kReports[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                         "runtime error:", "WARNING: ThreadSanitizer",
                                         "terminate called"};
  for (const char* r : kReports) {
    const size_t at = err.find(r);
    if (at == std::string::npos) continue;
    const size_t bol = err.rfind('\n', at);
    const size_t b = bol == std::string::npos ? 0 : bol + 1;
    return err.substr(b, err.find('\n', at) - b);
  }
  return "";
}

// What a daemon said, for a crash report: the report line, else its first line.
std::string DaemonSays(const std::string& err) {
  const std::string report = ReportLine(err);
  return report.empty() ? err.substr(0, err.find('\n')) : report;
}

// How cryptexfs ended before mounting anything. A refusal is the driver's
// documented way out (main.cc, fs/cryptexfs/README.md): exit status 3
// (integrity) or 4 (unsupported format) after one "cryptexfs: IMAGE: reason"
// line, no sanitizer report, and only for an
// image the library refuses too (`library_refused`, when known; cryptexfs
// opens with the same Image::Open). Anything else -- a signal, another exit
// status, a silent exit, a sanitizer report, refusing an image the library
// opens -- is a crash.
void JudgeExitBeforeMount(int status, const std::string& image, const std::string& err,
                          std::optional<bool> library_refused, MountRun* m) {
  if (WIFSIGNALED(status)) {
    m->daemon_crash = true;
    m->info = std::string("cryptexfs killed by signal ") + strsignal(WTERMSIG(status)) +
              " before mounting: " + DaemonSays(err);
    return;
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::string why;
  if (!ReportLine(err).empty()) {
    why = "exited with status " + std::to_string(code) + " after a sanitizer report";
  } else if (code != cli::kExitIntegrity && code != cli::kExitUnsupported) {
    why = "exited with status " + std::to_string(code) + " without mounting";
  } else if (err.rfind("cryptexfs: " + image + ": ", 0) != 0 &&
             err.find("\ncryptexfs: " + image + ": ") == std::string::npos) {
    why = "exited with status " + std::to_string(code) + " without its error line";
  } else if (library_refused.has_value() && !*library_refused) {
    why = "refused an image the library opens";
  }
  if (why.empty()) {
    m->refused = true;
    return;
  }
  m->daemon_crash = true;
  m->info = "cryptexfs " + why + ": " + DaemonSays(err);
}

MountRun ReadThroughMount(const std::string& cryptexfs, const std::string& image,
                          const std::string& trust_dir, const std::string& mnt,
                          const std::vector<SrcEntry>& src, int timeout_ms, bool verbose,
                          std::optional<bool> library_refused) {
  MountRun m;
  const std::string err_path = mnt + ".stderr";
  std::fflush(nullptr);
  const pid_t daemon = fork();
  if (daemon == 0) {
    const int devnull = open("/dev/null", O_RDWR);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (devnull >= 0) dup2(devnull, 1);
    if (err >= 0) dup2(err, 2);
    const std::string trust = "trust=" + trust_dir;
    execl(cryptexfs.c_str(), cryptexfs.c_str(), image.c_str(), mnt.c_str(), "-f", "-o",
          trust.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto daemon_stderr = [&] {
    auto bytes = surgery::ReadAll(err_path);
    std::string s = bytes.ok() ? std::string(bytes->begin(), bytes->end()) : std::string();
    if (verbose && !s.empty()) std::printf("    cryptexfs stderr: %s", s.c_str());
    return s;
  };
  int status = 0;
  bool exited = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!IsMounted(mnt)) {
    const pid_t w = waitpid(daemon, &status, WNOHANG);
    if (w == daemon) {
      exited = true;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (exited) {
    JudgeExitBeforeMount(status, image, daemon_stderr(), library_refused, &m);
    if (m.refused) {
      m.report.open_refused = 1;
      m.report.clean = src.size();
    }
    return m;
  }
  if (!IsMounted(mnt)) {
    kill(daemon, SIGKILL);
    waitpid(daemon, &status, 0);
    m.daemon_hang = true;
    m.info = "cryptexfs neither mounted nor exited";
    return m;
  }
  std::string crash;
  m.reader = RunInChild(
      [&](ChildReport* r) {
        for (const auto& e : src) {
          r->Count(CheckMounted(mnt, e, r, verbose));
        }
      },
      timeout_ms, &m.report, &crash);
  if (m.reader == ChildEnd::kHang) {
    // Unstick any request still pending in a hung daemon.
    struct stat st;
    if (stat(mnt.c_str(), &st) == 0) {
      const std::string abort_path =
          "/sys/fs/fuse/connections/" + std::to_string(minor(st.st_dev)) + "/abort";
      if (FILE* f = std::fopen(abort_path.c_str(), "w")) {
        std::fputs("1", f);
        std::fclose(f);
      }
    }
  }
  if (m.reader == ChildEnd::kCrash) m.info = "reader " + crash;
  const std::string umount = "fusermount3 -u -z '" + mnt + "' 2>/dev/null";
  if (std::system(umount.c_str()) != 0) {
    const std::string umount2 = "umount -l '" + mnt + "' 2>/dev/null";
    // Best effort, but said when it fails. (A (void) cast does not silence
    // warn_unused_result, which -D_FORTIFY_SOURCE puts on system().)
    if (std::system(umount2.c_str()) != 0) {
      std::fprintf(stderr, "campaign: could not unmount %s\n", mnt.c_str());
    }
  }
  const auto stop = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const pid_t w = waitpid(daemon, &status, WNOHANG);
    if (w == daemon) break;
    if (std::chrono::steady_clock::now() > stop) {
      kill(daemon, SIGKILL);
      waitpid(daemon, &status, 0);
      m.daemon_hang = true;
      m.info = "cryptexfs did not exit after unmount";
      return m;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // After a clean unmount the driver exits 0 (fs/cryptexfs/README.md).
  const std::string err = daemon_stderr();
  if (WIFSIGNALED(status)) {
    m.daemon_crash = true;
    m.info = std::string("cryptexfs killed by signal ") + strsignal(WTERMSIG(status)) + ": " +
             DaemonSays(err);
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    m.daemon_crash = true;
    m.info = "cryptexfs exited with status " +
             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
             " after unmount: " + DaemonSays(err);
  } else if (!ReportLine(err).empty()) {
    m.daemon_crash = true;
    m.info = "cryptexfs sanitizer report: " + DaemonSays(err);
  }
  return m;
}

// ---- the campaign ---------------------------------------------------------------

struct Span {
  std::string name;
  uint64_t begin = 0, length = 0;
};

std::vector<Span> Spans(const SuperblockInfo& sb) {
  using namespace format;
  std::vector<Span> s;
  s.push_back({"header", 0, kBlockSize});
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    if (sb.regions[r].length > 0)
      s.push_back({RegionName(r), sb.regions[r].offset, sb.regions[r].length});
  }
  if (sb.hash_blocks > 0) s.push_back({"hash-tree", sb.hash_offset, sb.hash_blocks * kBlockSize});
  const uint64_t last = sb.image_size - kBlockSize;
  s.push_back({"superblock", last, sizeof(DiskSuperblock)});
  s.push_back({"signature", last + kSignatureOffsetInBlock, sizeof(DiskSignature)});
  const uint64_t tail = kSignatureOffsetInBlock + sizeof(DiskSignature);
  s.push_back({"last-block-tail", last + tail, kBlockSize - tail});
  return s;
}

struct Row {
  uint64_t flips = 0, open_refused = 0, correct = 0, clean = 0, wrong = 0, crashes = 0, hangs = 0,
           verify_missed = 0;
  void Add(const Row& o) {
    flips += o.flips;
    open_refused += o.open_refused;
    correct += o.correct;
    clean += o.clean;
    wrong += o.wrong;
    crashes += o.crashes;
    hangs += o.hangs;
    verify_missed += o.verify_missed;
  }
};

void PrintTable(const char* title, const std::vector<Span>& spans, const std::vector<Row>& rows) {
  std::printf("\n%s\n", title);
  std::printf("%-16s %7s %8s %9s %11s %6s %8s %6s %8s\n", "region", "flips", "refused", "correct",
              "clean-fail", "WRONG", "crashes", "hangs", "v-missed");
  Row total;
  for (size_t i = 0; i < spans.size(); ++i) {
    const Row& r = rows[i];
    total.Add(r);
    std::printf("%-16s %7llu %8llu %9llu %11llu %6llu %8llu %6llu %8llu\n", spans[i].name.c_str(),
                (unsigned long long)r.flips, (unsigned long long)r.open_refused,
                (unsigned long long)r.correct, (unsigned long long)r.clean,
                (unsigned long long)r.wrong, (unsigned long long)r.crashes,
                (unsigned long long)r.hangs, (unsigned long long)r.verify_missed);
  }
  std::printf("%-16s %7llu %8llu %9llu %11llu %6llu %8llu %6llu %8llu\n", "TOTAL",
              (unsigned long long)total.flips, (unsigned long long)total.open_refused,
              (unsigned long long)total.correct, (unsigned long long)total.clean,
              (unsigned long long)total.wrong, (unsigned long long)total.crashes,
              (unsigned long long)total.hangs, (unsigned long long)total.verify_missed);
}

bool Bad(const std::vector<Row>& rows) {
  for (const auto& r : rows)
    if (r.wrong || r.crashes || r.hangs || r.verify_missed) return true;
  return false;
}

int Usage() {
  std::fprintf(stderr,
               "usage: cryptex_campaign (--image IMG --source DIR --trust DIR |\n"
               "                        --generate [--generate-files N])\n"
               "       [--seed N] [--flips N] [--timeout-ms N] [--only I] [--no-verify]\n"
               "       [--mount-with PATH_TO_CRYPTEXFS] [--keep DIR]\n");
  return 2;
}

int Main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--generate" || a == "--no-verify") {
      opt[a] = "1";
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      opt[a] = argv[++i];
    } else {
      return Usage();
    }
  }
  auto num = [&](const char* k, uint64_t def) {
    return opt.count(k) ? std::strtoull(opt[k].c_str(), nullptr, 10) : def;
  };
  const uint64_t seed = num("--seed", 1), flips = num("--flips", 200);
  const int timeout_ms = static_cast<int>(num("--timeout-ms", 10000));
  const bool verify = !opt.count("--no-verify");
  const std::optional<uint64_t> only =
      opt.count("--only") ? std::optional<uint64_t>(num("--only", 0)) : std::nullopt;

  char tmpl[] = "/tmp/cryptex-campaign-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 2;
  }
  const std::string work = tmpl;
  std::string image = opt["--image"], source = opt["--source"], trust_dir = opt["--trust"];
  if (opt.count("--generate")) {
    // The adversarial base tree plus a directory of many small files, so
    // that the metadata spans many blocks and a flip hits some entries only.
    const std::string gsrc = work + "/gen-src";
    Status st = adversarial::MakeSourceTree(gsrc, seed);
    const uint64_t many = num("--generate-files", 400);
    if (st.ok() && many > 0) {
      st = mkdir((gsrc + "/many").c_str(), 0755) == 0 ? Status::Ok()
                                                      : Status::FromErrno(errno, "mkdir");
    }
    std::mt19937_64 gen_rng(seed);
    for (uint64_t f = 0; st.ok() && f < many; ++f) {
      const std::string p = gsrc + "/many/file-" + std::to_string(f);
      std::string content(static_cast<size_t>(gen_rng() % 9000), '\0');
      for (auto& c : content) c = static_cast<char>('a' + gen_rng() % (f % 2 ? 26 : 3));
      st = surgery::WriteAll(
          p, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(content.data()),
                                      content.size()));
      if (st.ok() && f % 7 == 0) (void)setxattr(p.c_str(), "user.n", p.data(), p.size(), 0);
    }
    if (!st.ok()) {
      std::fprintf(stderr, "generate: %s\n", st.ToString().c_str());
      return 2;
    }
    auto base = adversarial::BuildBase(work + "/gen", 12, gsrc);
    if (!base.ok()) {
      std::fprintf(stderr, "generate: %s\n", base.status().ToString().c_str());
      return 2;
    }
    image = base->image;
    source = base->source;
    trust_dir = base->key.trust_dir;
  }
  if (image.empty() || source.empty() || trust_dir.empty()) return Usage();
  auto trust = TrustStore::LoadDir(trust_dir);
  if (!trust.ok()) {
    std::fprintf(stderr, "%s\n", trust.status().ToString().c_str());
    return 2;
  }
  auto original = surgery::ReadAll(image);
  if (!original.ok()) {
    std::fprintf(stderr, "%s\n", original.status().ToString().c_str());
    return 2;
  }
  auto sb = surgery::Peek(*original);
  if (!sb.ok()) {
    std::fprintf(stderr, "%s\n", sb.status().ToString().c_str());
    return 2;
  }
  std::vector<SrcEntry> src;
  if (!ReadSource(source, "", &src)) return 2;

  // Sanity: the unmodified image must read back entirely correct.
  {
    ChildReport r;
    RunLibraryChild(image, *trust, src, verify, false, &r);
    if (r.open_refused || r.clean || r.wrong || (verify && r.verify_detected)) {
      std::fprintf(stderr,
                   "the unmodified image does not match the source (%llu clean failures, %llu "
                   "wrong: %s)\n",
                   (unsigned long long)r.clean, (unsigned long long)r.wrong, r.first_wrong);
      return 2;
    }
  }

  const std::string mount_with = opt["--mount-with"];
  const std::string mnt = work + "/mnt";
  if (!mount_with.empty()) {
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      std::printf("SKIPPED: --mount-with needs /dev/fuse\n");
      return 77;
    }
    if (mkdir(mnt.c_str(), 0755) != 0) {
      std::perror("mkdir mnt");
      return 2;
    }
    // Sanity: the unmodified image must mount and read back entirely correct.
    MountRun m = ReadThroughMount(mount_with, image, trust_dir, mnt, src, timeout_ms, false,
                                  /*library_refused=*/false);
    if (m.refused || m.daemon_crash || m.daemon_hang || m.reader != ChildEnd::kOk ||
        m.report.clean || m.report.wrong) {
      std::fprintf(stderr,
                   "the unmodified image does not read back correctly through %s (%s; %llu "
                   "clean failures, %llu wrong: %s)\n",
                   mount_with.c_str(), m.refused ? "mount refused" : m.info.c_str(),
                   (unsigned long long)m.report.clean, (unsigned long long)m.report.wrong,
                   m.report.first_wrong);
      return 2;
    }
  }
  const std::vector<Span> spans = Spans(*sb);
  std::vector<Row> lib_rows(spans.size()), mnt_rows(spans.size());
  std::printf("campaign: %s (%llu bytes), %zu entries, seed %llu, %llu flips%s\n", image.c_str(),
              (unsigned long long)original->size(), src.size(), (unsigned long long)seed,
              (unsigned long long)flips, mount_with.empty() ? "" : ", also through cryptexfs");
  const std::string copy = work + "/flipped.cryptex";
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = only.value_or(0); i < (only ? *only + 1 : flips); ++i) {
    const size_t si = i % spans.size();
    const Span& s = spans[si];
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + i);
    const uint64_t pos = s.begin + rng() % s.length;
    const uint8_t mask = static_cast<uint8_t>(1 + rng() % 255);
    Bytes bytes = *original;
    bytes[pos] ^= mask;
    if (Status st = surgery::WriteAll(copy, bytes); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 2;
    }
    if (only) {
      std::printf("iteration %llu: region %s, offset %llu, xor 0x%02x\n", (unsigned long long)i,
                  s.name.c_str(), (unsigned long long)pos, mask);
    }
    auto keep = [&](const std::string& why) {
      std::printf("iteration %llu (region %s, offset %llu, xor 0x%02x): %s\n",
                  (unsigned long long)i, s.name.c_str(), (unsigned long long)pos, mask,
                  why.c_str());
      if (opt.count("--keep")) {
        const std::string k = opt["--keep"] + "/iter-" + std::to_string(i) + ".cryptex";
        (void)surgery::WriteAll(k, bytes);
      }
    };

    Row& row = lib_rows[si];
    ++row.flips;
    ChildReport r;
    std::string crash;
    const ChildEnd end = RunInChild(
        [&](ChildReport* rep) {
          RunLibraryChild(copy, *trust, src, verify, only.has_value(), rep);
        },
        timeout_ms, &r, &crash);
    if (end == ChildEnd::kHang) {
      ++row.hangs;
      keep("HANG (library)");
    } else if (end == ChildEnd::kCrash) {
      ++row.crashes;
      keep("CRASH (library): " + crash);
    } else {
      row.open_refused += r.open_refused;
      row.correct += r.correct;
      row.clean += r.clean;
      row.wrong += r.wrong;
      if (r.wrong) keep(std::string("WRONG DATA (library): ") + r.first_wrong);
      if (verify && !r.verify_detected) {
        ++row.verify_missed;
        keep("VerifyAll missed the flip");
      }
    }

    if (!mount_with.empty()) {
      Row& mrow = mnt_rows[si];
      ++mrow.flips;
      const std::optional<bool> library_refused =
          end == ChildEnd::kOk ? std::optional<bool>(r.open_refused != 0) : std::nullopt;
      MountRun m = ReadThroughMount(mount_with, copy, trust_dir, mnt, src, timeout_ms,
                                    only.has_value(), library_refused);
      if (m.daemon_crash || m.reader == ChildEnd::kCrash) {
        ++mrow.crashes;
        keep("CRASH (mount): " + m.info);
      } else if (m.daemon_hang || m.reader == ChildEnd::kHang) {
        ++mrow.hangs;
        keep("HANG (mount): " + m.info);
      } else {
        mrow.open_refused += m.report.open_refused;
        mrow.correct += m.report.correct;
        mrow.clean += m.report.clean;
        mrow.wrong += m.report.wrong;
        if (m.report.wrong) keep(std::string("WRONG DATA (mount): ") + m.report.first_wrong);
      }
    }
    if (!only && (i + 1) % 500 == 0) {
      std::printf("  ... %llu flips\n", (unsigned long long)(i + 1));
      std::fflush(stdout);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  PrintTable("library (Image::Open + every entry + VerifyAll)", spans, lib_rows);
  if (!mount_with.empty())
    PrintTable("cryptexfs mount (lstat/read/readlink/readdir/xattrs)", spans, mnt_rows);
  std::printf("\n%.1f s\n", secs);
  const std::string rm = "rm -rf '" + work + "'";
  if (!mount_with.empty()) rmdir(mnt.c_str());
  if (std::system(rm.c_str()) != 0)
    std::fprintf(stderr, "campaign: could not remove %s\n", work.c_str());
  const bool bad = Bad(lib_rows) || Bad(mnt_rows);
  std::printf("%s\n", bad ? "FAILED: wrong data, crashes, hangs or missed flips" : "PASSED");
  return bad ? 1 : 0;
}

}  // namespace
}  // namespace cryptex::campaign

int main(int argc, char** argv) { return cryptex::campaign::Main(argc, argv); }
