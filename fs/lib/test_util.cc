#include "test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "builder.h"

namespace cryptex::test {

namespace {

std::string DefaultTempParent() {
  const char* base = std::getenv("TMPDIR");
  return base != nullptr && *base != '\0' ? base : "/tmp";
}

}  // namespace

TempDir::TempDir() : TempDir(DefaultTempParent()) {}

TempDir::TempDir(const std::string& parent) {
  std::string tmpl = parent + "/cryptex-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    return;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  const char* keep = std::getenv("CRYPTEX_KEEP_TEMP");
  if (keep != nullptr && std::string(keep) == "1") return;
  namespace fs = std::filesystem;
  std::error_code ec;
  // Tests may leave read-only directories behind; make them removable.
  for (auto it = fs::recursive_directory_iterator(path_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
  }
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

std::string TempDir::Join(std::string_view name) const { return path_ + "/" + std::string(name); }

CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  std::fflush(nullptr);  // keep the test's own output ordered
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    ADD_FAILURE() << "popen(" << cmd << "): " << std::strerror(errno);
    return r;
  }
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) r.out.append(buf, n);
  const int status = pclose(p);
  if (status == -1) {
    ADD_FAILURE() << "pclose(" << cmd << "): " << std::strerror(errno);
  } else if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.exit_code = 128 + WTERMSIG(status);
  }
  return r;
}

CommandResult RunCommandCapture(const std::string& cmd) {
  char tmpl[] = "/tmp/cryptex-stderr-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp: " << std::strerror(errno);
    return {};
  }
  close(fd);
  CommandResult r = RunCommand("(" + cmd + ") 2>" + ShellQuote(tmpl));
  r.err = ReadFile(tmpl);
  unlink(tmpl);
  return r;
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) ADD_FAILURE() << "cannot write " << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    ADD_FAILURE() << "cannot open " << path;
    return "";
  }
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) ADD_FAILURE() << "cannot read " << path;
  return s;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, n - i);
  }
  return s;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    ADD_FAILURE() << "lstat " << path << ": " << std::strerror(errno);
    return 0;
  }
  return static_cast<uint64_t>(st.st_size);
}

SuperblockInfo ImageSuperblock(const std::string& path) {
  const std::string bytes = ReadFile(path);
  const size_t tail = std::min<size_t>(bytes.size(), format::kBlockSize);
  auto sb = DecodeSuperblock(
      std::span(reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size() - tail, tail),
      bytes.size(), path);
  if (!sb.ok()) {
    ADD_FAILURE() << sb.status().ToString();
    return {};
  }
  return *sb;
}

void FlipByte(const std::string& path, uint64_t offset, uint8_t mask) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open " << path << ": " << std::strerror(errno);
    return;
  }
  uint8_t b = 0;
  if (pread(fd, &b, 1, static_cast<off_t>(offset)) != 1) {
    ADD_FAILURE() << path << ": no byte at offset " << offset;
  } else {
    b ^= mask;
    if (pwrite(fd, &b, 1, static_cast<off_t>(offset)) != 1) {
      ADD_FAILURE() << path << ": cannot write offset " << offset;
    }
  }
  close(fd);
}

std::vector<std::string> ListDirNames(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(e.path().filename().string());
  }
  if (ec) ADD_FAILURE() << "list " << dir << ": " << ec.message();
  std::sort(names.begin(), names.end());
  return names;
}

std::string TmpfsDir() {
  constexpr long kTmpfsMagic = 0x01021994;
  struct statfs fs;
  if (statfs("/dev/shm", &fs) == 0 && fs.f_type == kTmpfsMagic && access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  ADD_FAILURE() << "/dev/shm is not a writable tmpfs; tests that need every xattr namespace, "
                   "64 KiB xattr values and cheap holes will fail";
  return DefaultTempParent();
}

XattrList GetXattrs(const std::string& path) {
  XattrList out;
  ssize_t n = llistxattr(path.c_str(), nullptr, 0);
  if (n < 0) {
    if (errno != ENOTSUP) ADD_FAILURE() << "llistxattr " << path << ": " << std::strerror(errno);
    return out;
  }
  std::string names(static_cast<size_t>(n), '\0');
  n = llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) {
    ADD_FAILURE() << "llistxattr " << path << ": " << std::strerror(errno);
    return out;
  }
  names.resize(static_cast<size_t>(n));
  for (size_t pos = 0; pos < names.size();) {
    const std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    ssize_t vn = lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (vn < 0) {
      ADD_FAILURE() << "lgetxattr " << path << " " << name << ": " << std::strerror(errno);
      continue;
    }
    std::string value(static_cast<size_t>(vn), '\0');
    vn = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (vn < 0) {
      ADD_FAILURE() << "lgetxattr " << path << " " << name << ": " << std::strerror(errno);
      continue;
    }
    value.resize(static_cast<size_t>(vn));
    out.emplace_back(name, std::move(value));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- MakeEveryKindTree --------------------------------------------------------

namespace {

#define CX_CHECK_SYS(call, what)                                                               \
  do {                                                                                         \
    if ((call) != 0) ADD_FAILURE() << (what) << ": " << #call << ": " << std::strerror(errno); \
  } while (0)

void MakeFile(const std::string& path, const std::string& bytes) { WriteFile(path, bytes); }

void SetXattr(const std::string& path, const std::string& name, const std::string& value) {
  CX_CHECK_SYS(lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0),
               path + " " + name);
}

// Sets mtimes (and atimes) of every entry under and including `dir`,
// children before their directory, with odd nanoseconds.
void SetAllTimes(const std::string& dir) {
  uint64_t counter = 0;
  std::function<void(const std::string&)> walk = [&](const std::string& path) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
      for (const std::string& name : ListDirNames(path)) walk(path + "/" + name);
    }
    ++counter;
    struct timespec ts[2];
    ts[0].tv_sec = 1500000000 + static_cast<time_t>(counter) * 7919;
    ts[0].tv_nsec = static_cast<long>((counter * 123456789 + 1) % 1000000000);
    ts[1] = ts[0];
    if (counter % 13 == 5) ts[1].tv_nsec = 999999999;
    CX_CHECK_SYS(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), path);
  };
  walk(dir);
}

}  // namespace

void MakeEveryKindTree(const std::string& dir) {
  auto p = [&](const std::string& rel) { return dir + "/" + rel; };
  auto mkdir_p = [&](const std::string& rel, mode_t mode = 0755) {
    CX_CHECK_SYS(mkdir(p(rel).c_str(), mode), p(rel));
  };

  // Regular files: sizes around the default 128 KiB chunk and 4 KiB blocks.
  MakeFile(p("empty"), "");
  mkdir_p("sizes");
  const uint64_t kChunk = 128 * 1024;
  const uint64_t sizes[] = {1, 4095, 4096, 4097, kChunk - 1, kChunk, kChunk + 1, 3 * kChunk + 17};
  for (uint64_t n : sizes) MakeFile(p("sizes/f" + std::to_string(n)), RandomBytes(n, n));
  std::string text;
  for (int i = 0; text.size() < 300000; ++i) {
    text += "line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog\n";
  }
  MakeFile(p("text.txt"), text);
  // Identical content under several names (deduplicated in the image).
  const std::string big = RandomBytes(512 * 1024 + 3, 77);
  MakeFile(p("dup1"), big);
  MakeFile(p("dup2"), big);
  MakeFile(p("small_dup1"), "same small content\n");
  MakeFile(p("small_dup2"), "same small content\n");
  // Sparse: data, an 8 MiB hole, data; unaligned on both sides.
  {
    const int fd = open(p("sparse").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const std::string head = RandomBytes(100000, 5), tail = RandomBytes(70000, 6);
    if (fd < 0 || pwrite(fd, head.data(), head.size(), 0) != static_cast<ssize_t>(head.size()) ||
        pwrite(fd, tail.data(), tail.size(), 9 * 1024 * 1024 + 12345) !=
            static_cast<ssize_t>(tail.size()) ||
        ftruncate(fd, 9 * 1024 * 1024 + 12345 + 70000 + 5000) != 0) {
      ADD_FAILURE() << "cannot make " << p("sparse") << ": " << std::strerror(errno);
    }
    if (fd >= 0) close(fd);
  }

  // Directories.
  mkdir_p("emptydir");
  mkdir_p("a");
  mkdir_p("a/b");
  mkdir_p("a/b/c");
  MakeFile(p("a/b/c/deep"), "deep file\n");
  mkdir_p("locked", 0755);
  MakeFile(p("locked/inside"), "behind a 0000 directory\n");
  mkdir_p("many");
  for (int i = 0; i < 300; ++i) MakeFile(p("many/entry" + std::to_string(i * 7919 % 1000)), "");

  // Symlinks.
  CX_CHECK_SYS(symlink("sizes/f4096", p("link_rel").c_str()), "link_rel");
  CX_CHECK_SYS(symlink("/etc/passwd", p("link_abs").c_str()), "link_abs");
  CX_CHECK_SYS(symlink("does/not/exist", p("dangling").c_str()), "dangling");
  CX_CHECK_SYS(symlink("a/b", p("link_dir").c_str()), "link_dir");
  std::string long_target;
  while (long_target.size() < 4095) long_target += "../";
  CX_CHECK_SYS(symlink(long_target.c_str(), p("long_link").c_str()), "long_link");
  CX_CHECK_SYS(symlink("odd\ntarget \xff\x01", p("odd_target").c_str()), "odd_target");

  // Hard links: 3 names across directories; a hard-linked symlink.
  mkdir_p("hardlinks");
  mkdir_p("elsewhere");
  MakeFile(p("hardlinks/one"), RandomBytes(200000, 9));
  CX_CHECK_SYS(link(p("hardlinks/one").c_str(), p("hardlinks/two").c_str()), "two");
  CX_CHECK_SYS(link(p("hardlinks/one").c_str(), p("elsewhere/three").c_str()), "three");
  SetXattr(p("hardlinks/one"), "user.linked", "shared by all names");
  CX_CHECK_SYS(symlink("one", p("hardlinks/sl1").c_str()), "sl1");
  CX_CHECK_SYS(
      linkat(AT_FDCWD, p("hardlinks/sl1").c_str(), AT_FDCWD, p("hardlinks/sl2").c_str(), 0), "sl2");

  // Special files.
  CX_CHECK_SYS(mkfifo(p("fifo").c_str(), 0640), "fifo");
  CX_CHECK_SYS(mknod(p("cdev").c_str(), S_IFCHR | 0620, makedev(1, 3)), "cdev");
  CX_CHECK_SYS(mknod(p("bdev").c_str(), S_IFBLK | 0660, makedev(259, 70000)), "bdev");
  {
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    const std::string sp = p("sock");
    if (s < 0 || sp.size() >= sizeof addr.sun_path) {
      ADD_FAILURE() << "cannot make a socket at " << sp;
    } else {
      std::memcpy(addr.sun_path, sp.c_str(), sp.size() + 1);
      CX_CHECK_SYS(bind(s, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr), sp);
    }
    if (s >= 0) close(s);
  }

  // Owners (before modes: chown clears setuid/setgid).
  MakeFile(p("owned"), "owned by 1234:5678\n");
  CX_CHECK_SYS(lchown(p("owned").c_str(), 1234, 5678), "owned");
  CX_CHECK_SYS(lchown(p("a/b").c_str(), 1234, 5678), "a/b");
  CX_CHECK_SYS(lchown(p("dangling").c_str(), 1234, 5678), "dangling");
  CX_CHECK_SYS(lchown(p("fifo").c_str(), 1234, 5678), "fifo");
  MakeFile(p("big_ids"), "ids above 16 bits\n");
  CX_CHECK_SYS(lchown(p("big_ids").c_str(), 100000, 4000000000u), "big_ids");

  // Modes.
  const std::pair<const char*, mode_t> modes[] = {{"setuid", 04755},      {"setgid", 02711},
                                                  {"sticky_file", 01644}, {"mode0000", 0},
                                                  {"allbits", 07777},     {"setuid_owned", 04750}};
  for (const auto& [name, mode] : modes) {
    MakeFile(p(name), std::string("mode test ") + name + "\n");
  }
  CX_CHECK_SYS(lchown(p("setuid_owned").c_str(), 1234, 5678), "setuid_owned");
  for (const auto& [name, mode] : modes) CX_CHECK_SYS(chmod(p(name).c_str(), mode), name);
  mkdir_p("sticky_dir");
  CX_CHECK_SYS(chmod(p("sticky_dir").c_str(), 01777), "sticky_dir");
  mkdir_p("setgid_dir");
  CX_CHECK_SYS(chmod(p("setgid_dir").c_str(), 02755), "setgid_dir");
  CX_CHECK_SYS(chmod(p("locked").c_str(), 0), "locked");

  // Extended attributes.
  MakeFile(p("xattrs"), "file with xattrs\n");
  SetXattr(p("xattrs"), "user.plain", "value");
  SetXattr(p("xattrs"), "user.empty", "");
  SetXattr(p("xattrs"), "user.binary", std::string("\0\x01\xff\n bytes", 10));
  SetXattr(p("xattrs"), "trusted.secret", "trusted value");
  // vfs_cap_data revision 2, effective, permitted = cap_net_bind_service,
  // exactly what `setcap cap_net_bind_service=ep` writes.
  const std::string cap(
      "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
      "\x00\x00\x00\x00",
      20);
  SetXattr(p("xattrs"), "security.capability", cap);
  MakeFile(p("bigxattr"), "file with a 60 KB xattr\n");
  SetXattr(p("bigxattr"), "user.big", RandomBytes(60 * 1024, 60));
  MakeFile(p("manyxattrs"), "");
  for (int i = 0; i < 50; ++i) {
    SetXattr(p("manyxattrs"), "user.k" + std::to_string(i), std::string(i, 'v'));
  }
  SetXattr(p("a/b"), "user.on_dir", "directory xattr");
  SetXattr(p("link_rel"), "trusted.on_symlink", "symlink xattr");
  SetXattr(p("setuid"), "security.capability", cap);

  // Names: any bytes but '/' and NUL.
  mkdir_p("names");
  const std::string names[] = {
      "with space",
      "new\nline",
      std::string("\xff\xfe raw bytes"),
      "ünïcödé ✓",
      std::string(255, 'N'),
      [] {
        std::string s;
        for (int i = 0; i < 127; ++i) s += "é";
        return s + "x";  // 255 bytes of UTF-8
      }(),
      "-starts-with-dash",
      ".hidden",
      "...",
      "tab\there",
      "quote'\"\\back",
      "\x01\x02\x1f control",
      "*?[glob]",
  };
  for (const std::string& n : names) MakeFile(p("names/" + n), "name: " + n);
  mkdir_p("names/dir with\nnewline");
  MakeFile(p("names/dir with\nnewline/x"), "x");

  // The root itself.
  SetXattr(dir, "user.root", "root xattr");
  CX_CHECK_SYS(chown(dir.c_str(), 4321, 8765), dir);
  CX_CHECK_SYS(chmod(dir.c_str(), 0751), dir);

  // Times last: creating entries changes directory mtimes.
  SetAllTimes(dir);
  struct timespec old[2] = {{-1234567, 890}, {-1234567, 890}};
  CX_CHECK_SYS(utimensat(AT_FDCWD, p("sizes/f1").c_str(), old, AT_SYMLINK_NOFOLLOW), "f1");
}

#undef CX_CHECK_SYS

// ---- CompareTrees ---------------------------------------------------------------

namespace {

struct Entry {
  struct stat st;
  std::string target;  // symlinks
  XattrList xattrs;
  std::string link_leader;  // non-directories: first path (walk order) of its inode
  uint64_t links_in_tree = 0;
};

// Relative path ("" for the root) -> entry; walk order is sorted bytewise.
std::map<std::string, Entry> Snapshot(const std::string& root) {
  std::map<std::string, Entry> out;
  std::map<std::pair<dev_t, ino_t>, std::string> leaders;
  std::map<std::pair<dev_t, ino_t>, uint64_t> counts;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    const std::string path = rel.empty() ? root : root + "/" + rel;
    Entry e;
    if (lstat(path.c_str(), &e.st) != 0) {
      ADD_FAILURE() << "lstat " << path << ": " << std::strerror(errno);
      return;
    }
    if (S_ISLNK(e.st.st_mode)) {
      std::string buf(8192, '\0');
      const ssize_t n = readlink(path.c_str(), buf.data(), buf.size());
      if (n >= 0) e.target.assign(buf.data(), static_cast<size_t>(n));
    }
    e.xattrs = GetXattrs(path);
    if (!S_ISDIR(e.st.st_mode)) {
      const auto key = std::make_pair(e.st.st_dev, e.st.st_ino);
      e.link_leader = leaders.try_emplace(key, rel).first->second;
      ++counts[key];
    }
    out[rel] = e;
    if (S_ISDIR(e.st.st_mode)) {
      for (const std::string& name : ListDirNames(path))
        walk(rel.empty() ? name : rel + "/" + name);
    }
  };
  walk("");
  for (auto& [rel, e] : out) {
    if (!S_ISDIR(e.st.st_mode)) e.links_in_tree = counts[{e.st.st_dev, e.st.st_ino}];
  }
  return out;
}

std::string Printable(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o;
}

bool SameContent(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount()) return false;
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(fa.gcount())) != 0) return false;
    if (fa.gcount() == 0 || !fa || !fb) return fa.eof() && fb.eof();
  }
}

}  // namespace

std::vector<std::string> CompareTrees(const std::string& a, const std::string& b, bool content) {
  std::vector<std::string> diffs;
  auto diff = [&](const std::string& rel, const std::string& what) {
    if (diffs.size() < 50) diffs.push_back("/" + Printable(rel) + ": " + what);
  };
  const auto ta = Snapshot(a), tb = Snapshot(b);
  for (const auto& [rel_key, ea] : ta) {
    const std::string& rel = rel_key;  // a plain reference: lambdas below capture it (clang 14)
    auto it = tb.find(rel);
    if (it == tb.end()) {
      diff(rel, "only in " + a);
      continue;
    }
    const Entry& eb = it->second;
    auto cmp = [&](const char* field, auto va, auto vb) {
      if (va != vb) {
        diff(rel, std::string(field) + " " + std::to_string(va) + " != " + std::to_string(vb));
      }
    };
    cmp("st_mode", ea.st.st_mode, eb.st.st_mode);
    cmp("uid", ea.st.st_uid, eb.st.st_uid);
    cmp("gid", ea.st.st_gid, eb.st.st_gid);
    cmp("mtime_sec", ea.st.st_mtim.tv_sec, eb.st.st_mtim.tv_sec);
    cmp("mtime_nsec", ea.st.st_mtim.tv_nsec, eb.st.st_mtim.tv_nsec);
    if (S_ISCHR(ea.st.st_mode) || S_ISBLK(ea.st.st_mode)) cmp("rdev", ea.st.st_rdev, eb.st.st_rdev);
    if (S_ISDIR(ea.st.st_mode)) {
      cmp("directory nlink", ea.st.st_nlink, eb.st.st_nlink);
    } else {
      cmp("size", ea.st.st_size, eb.st.st_size);
      cmp("links in tree", ea.links_in_tree, eb.links_in_tree);
      if (ea.link_leader != eb.link_leader) {
        diff(rel,
             "hard-linked to /" + Printable(ea.link_leader) + " vs /" + Printable(eb.link_leader));
      }
    }
    if (ea.target != eb.target) {
      diff(rel, "symlink target '" + Printable(ea.target) + "' != '" + Printable(eb.target) + "'");
    }
    if (ea.xattrs != eb.xattrs) {
      std::string names;
      for (const auto& x : ea.xattrs)
        names += " " + x.first + "(" + std::to_string(x.second.size()) + ")";
      names += " vs";
      for (const auto& x : eb.xattrs)
        names += " " + x.first + "(" + std::to_string(x.second.size()) + ")";
      diff(rel, "xattrs differ:" + names);
    }
    if (content && S_ISREG(ea.st.st_mode) && S_ISREG(eb.st.st_mode) &&
        ea.st.st_size == eb.st.st_size && ea.link_leader == rel &&
        !SameContent(rel.empty() ? a : a + "/" + rel, rel.empty() ? b : b + "/" + rel)) {
      diff(rel, "content differs");
    }
  }
  for (const auto& [rel, eb] : tb) {
    if (!ta.count(rel)) diff(rel, "only in " + b);
  }
  return diffs;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string CryptexBin() {
  const char* dir = std::getenv("CRYPTEX_BUILD_DIR");
#ifdef CRYPTEX_DEFAULT_BUILD_DIR
  if (dir == nullptr || *dir == '\0') dir = CRYPTEX_DEFAULT_BUILD_DIR;
#endif
  return std::string(dir != nullptr ? dir : ".") + "/cli/cryptex";
}

CommandResult RunCryptex(const std::string& args) {
  return RunCommandCapture(ShellQuote(CryptexBin()) + " " + args);
}

int MakeDeepChain(const std::string& root, int depth, const std::string& comp) {
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (int i = 0; i < depth && fd >= 0; ++i) {
    const int next = mkdirat(fd, comp.c_str(), 0755) == 0
                         ? openat(fd, comp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                         : -1;
    close(fd);
    fd = next;
  }
  if (fd < 0) return -1;
  const int f = openat(fd, "leaf", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  const bool ok = f >= 0 && write(f, "deep", 4) == 4;
  if (f >= 0) close(f);
  if (!ok) {
    close(fd);
    return -1;
  }
  return fd;
}

Result<std::unique_ptr<TrustStore>> SealForTest(const std::string& src, const std::string& out,
                                                uint32_t chunk_log2, const std::string& name,
                                                bool compact) {
  CX_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
  CX_RETURN_IF_ERROR(key.SavePair(out + ".key"));
  CX_ASSIGN_OR_RETURN(SourceTree tree, ScanDirectory(src));
  BuildOptions opts;
  opts.output_path = out;
  opts.key = &key;
  opts.manifest.name = name;
  opts.chunk_log2 = chunk_log2;
  opts.compact = compact;
  CX_RETURN_IF_ERROR(WriteImage(tree, opts).status());
  CX_ASSIGN_OR_RETURN(TrustStore trust, TrustStore::LoadFile(out + ".key.pub"));
  return std::make_unique<TrustStore>(std::move(trust));
}

}  // namespace cryptex::test
