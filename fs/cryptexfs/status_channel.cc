#include "status_channel.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace cryptex::cxfs {

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct MountEntry {
  std::string root;    // of the mount within its file system
  std::string fstype;  // "fuse.cryptexfs"
  std::string source;  // the image path for cryptexfs
};

// The /proc/self/mountinfo line of mount `id`.
Result<MountEntry> FindMount(uint64_t id) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::FromErrno(errno, "/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> f;
    for (std::string w; words >> w;) f.push_back(w);
    if (f.size() < 10 || f[0] != std::to_string(id)) continue;
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (sep + 2 >= f.size()) return Status::Corruption("/proc/self/mountinfo: bad line: " + line);
    return MountEntry{UnescapeMountField(f[3]), UnescapeMountField(f[sep + 1]),
                      UnescapeMountField(f[sep + 2])};
  }
  return Status::NotFound("mount " + std::to_string(id) + " is not in /proc/self/mountinfo");
}

Status NotAMount(const std::string& path, const std::string& why) {
  return Status::NotFound(path + ": not a cryptexfs mount (" + why + ")");
}

}  // namespace

std::string UnescapeMountField(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' &&
        field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

Status EncodeStatus(const MountStatus& s, StatusWire* w) {
  std::memset(w, 0, sizeof(*w));
  if (s.image.size() > sizeof(w->image)) {
    return Status::InvalidArgument("image path of " + std::to_string(s.image.size()) +
                                   " bytes does not fit the status reply");
  }
  std::memcpy(w->magic, kStatusMagic, sizeof(w->magic));
  w->version = kStatusVersion;
  w->image_len = static_cast<uint32_t>(s.image.size());
  w->verify_failures = s.verify_failures;
  w->blocks_verified = s.blocks_verified;
  w->cache_hits = s.cache_hits;
  w->cache_misses = s.cache_misses;
  w->files_pushed = s.files_pushed;
  std::memcpy(w->root_hash, s.root_hash.data(), sizeof(w->root_hash));
  std::memcpy(w->image, s.image.data(), s.image.size());
  return Status::Ok();
}

Result<MountStatus> DecodeStatus(const StatusWire& w, const std::string& what) {
  if (std::memcmp(w.magic, kStatusMagic, sizeof(w.magic)) != 0) {
    return Status::Corruption(what + ": status reply has a bad magic");
  }
  if (w.version != kStatusVersion) {
    return Status::Unsupported(what + ": status reply version " + std::to_string(w.version));
  }
  if (w.image_len > sizeof(w.image)) {
    return Status::Corruption(what + ": status reply image length " + std::to_string(w.image_len) +
                              " is out of range");
  }
  MountStatus s;
  s.image.assign(w.image, w.image_len);
  std::memcpy(s.root_hash.data(), w.root_hash, sizeof(w.root_hash));
  s.verify_failures = w.verify_failures;
  s.blocks_verified = w.blocks_verified;
  s.cache_hits = w.cache_hits;
  s.cache_misses = w.cache_misses;
  s.files_pushed = w.files_pushed;
  return s;
}

Result<MountStatus> QueryMountStatus(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOTDIR) return NotAMount(path, "not a directory");
    return Status::FromErrno(errno, path);
  }
  struct statfs sfs;
  if (::fstatfs(fd.get(), &sfs) != 0) return Status::FromErrno(errno, path + ": statfs");
  if (static_cast<unsigned long>(sfs.f_type) != FUSE_SUPER_MAGIC) {
    return NotAMount(path, "not a FUSE file system");
  }
  struct statx stx;
  if (::statx(fd.get(), "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0) {
    return Status::FromErrno(errno, path + ": statx");
  }
  if ((stx.stx_mask & STATX_MNT_ID) == 0 ||
      (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) == 0) {
    return Status::Unsupported(path + ": the kernel does not report mount ids (needs Linux 5.8)");
  }
  if ((stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) == 0) {
    return NotAMount(path, "a directory inside a mount, not its mount point");
  }
  CX_ASSIGN_OR_RETURN(MountEntry m, FindMount(stx.stx_mnt_id));
  if (m.fstype != kMountType) return NotAMount(path, "file system type " + m.fstype);
  if (m.root != "/") return NotAMount(path, "a bind mount of " + m.root);
  StatusWire wire;
  if (::ioctl(fd.get(), kStatusIoctl, &wire) != 0) {
    if (errno == ENOTTY || errno == ENOSYS || errno == EINVAL) {
      return Status::Unsupported(path + ": its cryptexfs does not answer status requests");
    }
    return Status::FromErrno(errno, path + ": status request");
  }
  CX_ASSIGN_OR_RETURN(MountStatus s, DecodeStatus(wire, path));
  if (s.image != m.source) {
    return Status::Corruption(path + ": the driver reports image " + s.image +
                              " but the mount table's source is " + m.source);
  }
  return s;
}

Status ReloadMount(const std::string& mountpoint, ReloadAnswer* answer) {
  CX_RETURN_IF_ERROR(QueryMountStatus(mountpoint).status());
  Fd fd(::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, mountpoint);
  const int r = ::ioctl(fd.get(), kReloadIoctl);
  if (r == kReloadServing || r == kReloadPending) {
    if (answer != nullptr) {
      *answer = r == kReloadPending ? ReloadAnswer::kPending : ReloadAnswer::kServing;
    }
    return Status::Ok();
  }
  if (r > 0) {
    return Status::Corruption(mountpoint + ": reload answered " + std::to_string(r));
  }
  switch (errno) {
    case EOPNOTSUPP:
      return Status::Unsupported(mountpoint + ": serves fixed images (not a store line)");
    case EPERM:
    case EACCES:
      return Status::Permission(mountpoint + ": only root or the mount's owner may reload it");
    case ENOTTY:
    case ENOSYS:
      return Status::Unsupported(mountpoint + ": its cryptexfs cannot reload");
    default:
      return Status::FromErrno(errno, mountpoint + ": reload (the driver logged why)");
  }
}

Result<MountLevel> QueryMountLevel(const std::string& mountpoint) {
  CX_RETURN_IF_ERROR(QueryMountStatus(mountpoint).status());
  Fd fd(::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, mountpoint);
  LevelWire w;
  if (::ioctl(fd.get(), kLevelIoctl, &w) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOTTY || errno == ENOSYS || errno == EINVAL) {
      return Status::Unsupported(mountpoint + ": serves fixed images (not a store line)");
    }
    return Status::FromErrno(errno, mountpoint + ": level request");
  }
  if (std::memcmp(w.magic, kLevelMagic, sizeof(w.magic)) != 0 || w.version != kLevelVersion ||
      w.count > kMaxLevelPatches || w.pending > 1) {
    return Status::Corruption(mountpoint + ": malformed level reply");
  }
  MountLevel level;
  level.pending = w.pending == 1;
  for (uint32_t i = 0; i < w.count; ++i) {
    std::array<uint8_t, 32> root;
    std::memcpy(root.data(), w.roots[i], root.size());
    level.patch_roots.push_back(root);
  }
  return level;
}

std::vector<std::string> CryptexfsMounts() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> f;
    for (std::string w; words >> w;) f.push_back(w);
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (f.size() < 5 || sep + 1 >= f.size() || f[sep + 1] != kMountType) continue;
    out.push_back(UnescapeMountField(f[4]));
  }
  return out;
}

}  // namespace cryptex::cxfs
