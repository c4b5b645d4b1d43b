// The status channel of a cryptexfs mount: what it serves and its integrity
// counters, asked with an ioctl on the mount point.
//
// Nothing in an image can answer or shadow it (unlike an extended attribute,
// which an image may carry under any name), and `QueryMountStatus` first
// proves that the directory is the root of a cryptexfs mount (statfs type,
// the mount table's file system type and source), so a plain directory or
// another file system is never mistaken for one. `cryptex status` and the
// tests use this; the driver answers in lowlevel.cc.
//
// This header has no FUSE dependency: the CLI includes it.
#pragma once

#include <linux/ioctl.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace cryptex::cxfs {

// The FUSE subtype of every cryptexfs mount: /proc/self/mountinfo and
// /proc/mounts show the file system type "fuse.cryptexfs".
inline constexpr const char* kSubtype = "cryptexfs";
inline constexpr const char* kMountType = "fuse.cryptexfs";

// What a mount reports.
struct MountStatus {
  std::string image;                    // absolute path of the mounted image
  std::array<uint8_t, 32> root_hash{};  // the image's signed root hash
  uint64_t verify_failures = 0;         // requests answered EIO for an integrity failure
  uint64_t blocks_verified = 0;         // blocks hashed against the tree
  uint64_t cache_hits = 0;              // decompressed-frame cache
  uint64_t cache_misses = 0;
  uint64_t files_pushed = 0;  // files stored into the page cache ahead of reads
};

// The ioctl's reply, fixed size (a FUSE ioctl's size is encoded in its
// number). Native byte order: asker and driver run on the same machine.
struct StatusWire {
  char magic[8];  // kStatusMagic
  uint32_t version;
  uint32_t image_len;  // bytes of `image` in use (no NUL)
  uint64_t verify_failures;
  uint64_t blocks_verified;
  uint64_t cache_hits;
  uint64_t cache_misses;
  uint64_t files_pushed;
  uint8_t root_hash[32];
  char image[4096];  // PATH_MAX: the driver opened the image by this path
};
static_assert(sizeof(StatusWire) == 4184);

inline constexpr char kStatusMagic[8] = {'C', 'X', 'F', 'S', 'S', 'T', 'A', 'T'};
inline constexpr uint32_t kStatusVersion = 1;
// ioctl(mountpoint_fd, kStatusIoctl, StatusWire*): answered on the root only.
inline constexpr unsigned int kStatusIoctl = _IOR(0xCE, 0x01, StatusWire);

// ioctl(mountpoint_fd, kReloadIoctl): the driver opens the line's committed
// level and serves it if the change is live (every patch that differs from
// the level it serves is of class relaunch); returns once new opens see it.
// Its return value is kReloadServing (the mount serves the committed level)
// or kReloadPending (a reboot-class patch differs: the mount keeps its level,
// the change waits for the next mount).
inline constexpr unsigned int kReloadIoctl = _IO(0xCE, 0x02);
inline constexpr int kReloadServing = 0;
inline constexpr int kReloadPending = 1;

// What a mount of a store line serves: its patch layers' signed root hashes,
// bottom first, and whether a committed change is pending (the last reload
// kept the served level). Fixed size; a mount serving more patches answers
// EOVERFLOW.
inline constexpr uint32_t kMaxLevelPatches = 120;
struct LevelWire {
  char magic[8];  // kLevelMagic
  uint32_t version;
  uint32_t count;    // entries of roots in use
  uint32_t pending;  // 1: a committed change is pending
  uint32_t reserved;
  uint8_t roots[kMaxLevelPatches][32];
};
static_assert(sizeof(LevelWire) == 3864);
inline constexpr char kLevelMagic[8] = {'C', 'X', 'F', 'S', 'L', 'E', 'V', 'L'};
inline constexpr uint32_t kLevelVersion = 1;
// ioctl(mountpoint_fd, kLevelIoctl, LevelWire*): answered on the root only.
inline constexpr unsigned int kLevelIoctl = _IOR(0xCE, 0x03, LevelWire);

struct MountLevel {
  std::vector<std::array<uint8_t, 32>> patch_roots;  // bottom first; empty: the base
  bool pending = false;
};

// Fills *wire. kInvalidArgument if the image path does not fit.
Status EncodeStatus(const MountStatus& status, StatusWire* wire);
// kCorruption naming `what` if the reply is malformed.
Result<MountStatus> DecodeStatus(const StatusWire& wire, const std::string& what);

// The status of the cryptexfs mount whose mount point is `mountpoint`.
// kNotFound ("... is not a cryptexfs mount ...") for anything else: a
// missing path, a plain directory, a directory inside a mount, another file
// system, a FUSE mount of another type. kCorruption if the driver's answer
// is malformed or names another image than the mount table's source.
Result<MountStatus> QueryMountStatus(const std::string& mountpoint);

// What a reload did (kReloadIoctl's return value).
enum class ReloadAnswer {
  kServing,  // the mount serves the committed level
  kPending,  // it keeps its level: the change waits for the next mount
};

// Asks the cryptexfs mount at `mountpoint` (checked as QueryMountStatus
// does) to serve its line's committed level; *answer (if given) says whether
// it does or the change is pending. kUnsupported if it serves fixed images,
// kPermission if the caller may not, kIOError otherwise.
Status ReloadMount(const std::string& mountpoint, ReloadAnswer* answer = nullptr);

// The level the mount of a store line at `mountpoint` (checked as
// QueryMountStatus does) serves. kUnsupported if it serves fixed images or
// its driver does not answer.
Result<MountLevel> QueryMountLevel(const std::string& mountpoint);

// Mount points of every cryptexfs mount in /proc/self/mountinfo.
std::vector<std::string> CryptexfsMounts();

// One /proc/self/mountinfo field with its \ooo escapes decoded.
std::string UnescapeMountField(std::string_view field);

}  // namespace cryptex::cxfs
