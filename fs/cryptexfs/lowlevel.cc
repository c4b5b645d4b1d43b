#include "lowlevel.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "filesystem.h"

namespace cryptex::cxfs {
namespace {

// Inode generation: image inode numbers are never reused within a mount.
constexpr uint64_t kGeneration = 1;

Filesystem& Fs(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

// Runs `body`, which either sends the one reply for req and returns Ok, or
// sends nothing and returns the error for this wrapper to answer. Replies are
// the last thing a body does, so an exception means nothing was sent yet.
template <typename Body>
void Serve(fuse_req_t req, const ErrorSite& site, Body&& body, bool xattr = false) noexcept {
  int err = EIO;
  try {
    Fs(req).OnRequest();
    Status st = body(Fs(req));
    if (st.ok()) return;
    err = Fs(req).ErrnoForFailure(st, site, xattr);
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (...) {
    err = EIO;
  }
  fuse_reply_err(req, err);
}

fuse_entry_param EntryFor(const struct stat& st) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.ino = st.st_ino;
  e.generation = kGeneration;
  e.attr = st;
  e.attr_timeout = kCacheTimeoutSec;
  e.entry_timeout = kCacheTimeoutSec;
  return e;
}

bool IsDotOrDotDot(const std::string& name) { return name == "." || name == ".."; }

// Per-thread readdir reply buffer (the kernel asks for at most a few pages).
char* ThreadDirBuffer(size_t n) {
  thread_local std::unique_ptr<char[]> buf;
  thread_local size_t cap = 0;
  if (n > cap) {
    buf = std::make_unique_for_overwrite<char[]>(n);
    cap = n;
  }
  return buf.get();
}

// ---- session -----------------------------------------------------------------

void OpInit(void* userdata, fuse_conn_info* conn) {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);  // readlink once, then from the page cache
  want(FUSE_CAP_READDIRPLUS);
  // Always readdirplus: one round trip gives names and attributes, which an
  // immutable image can serve from its verified metadata cache.
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  // Nothing ever changes underneath: no mtime-based page cache invalidation.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // Replies come from memory through fuse_reply_buf (writev); splice would
  // only help replies from a file descriptor, so SPLICE_* stay off.
  conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // max_readahead: libfuse preset it to the kernel's offer, the largest the
  // kernel accepts. max_write (default 1 MiB here) also sets max_pages, the
  // largest read request: keep it.
  conn->max_background = 64;  // parallel readahead with the MT loop
  conn->congestion_threshold = 48;
  conn->time_gran = 1;  // nanosecond mtimes
  (void)userdata;
}

void OpDestroy(void* /*userdata*/) {}

// ---- inodes ------------------------------------------------------------------

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Serve(req, {"lookup", parent}, [&](Filesystem& fs) -> Status {
    Result<struct stat> r = fs.DoLookup(parent, name);
    if (!r.ok()) {
      if (r.status().code() != Code::kNotFound) return r.status();
      fuse_entry_param neg;
      std::memset(&neg, 0, sizeof(neg));
      neg.ino = 0;  // negative entry, cached like any other
      neg.entry_timeout = kCacheTimeoutSec;
      fuse_reply_entry(req, &neg);
      return Status::Ok();
    }
    fuse_entry_param e = EntryFor(*r);
    // Counted before the reply (a FORGET may follow it at once), taken
    // back if the kernel did not get it.
    fs.Remember(e.ino);
    if (fuse_reply_entry(req, &e) != 0) fs.Forget(e.ino, 1);
    return Status::Ok();
  });
}

// The kernel's lookup counts release retired generations (filesystem.h).
void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  try {
    Fs(req).Forget(ino, nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}
void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  try {
    for (size_t i = 0; i < count; ++i) Fs(req).Forget(forgets[i].ino, forgets[i].nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) {
  Serve(req, {"getattr", ino}, [&](Filesystem& fs) -> Status {
    CX_ASSIGN_OR_RETURN(struct stat st, fs.DoGetattr(ino));
    fuse_reply_attr(req, &st, kCacheTimeoutSec);
    return Status::Ok();
  });
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Serve(req, {"readlink", ino}, [&](Filesystem& fs) -> Status {
    CX_ASSIGN_OR_RETURN(std::string target, fs.DoReadlink(ino));
    fuse_reply_readlink(req, target.c_str());
    return Status::Ok();
  });
}

void OpAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  if (mask & W_OK) {
    fuse_reply_err(req, EROFS);
    return;
  }
  Serve(req, {"access", ino}, [&](Filesystem& fs) -> Status {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    Caller caller{ctx->uid, ctx->gid, {}};
    if (caller.uid != 0) {
      caller.groups.resize(64);
      int n = fuse_req_getgroups(req, static_cast<int>(caller.groups.size()), caller.groups.data());
      if (n > static_cast<int>(caller.groups.size())) {
        caller.groups.resize(static_cast<size_t>(n));
        n = fuse_req_getgroups(req, n, caller.groups.data());
      }
      caller.groups.resize(n > 0 ? std::min<size_t>(static_cast<size_t>(n), caller.groups.size())
                                 : 0);
    }
    CX_RETURN_IF_ERROR(fs.DoAccess(ino, mask, caller));
    fuse_reply_err(req, 0);
    return Status::Ok();
  });
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) {
  Serve(req, {"statfs", ino}, [&](Filesystem& fs) -> Status {
    CX_ASSIGN_OR_RETURN(struct statvfs sv, fs.DoStatfs());
    fuse_reply_statfs(req, &sv);
    return Status::Ok();
  });
}

// ---- files ---------------------------------------------------------------------

// Open is answered ENOSYS ("no_open", kernel >= 5.1): the kernel then stops
// sending OPEN/FLUSH/RELEASE for files and opens them with FOPEN_KEEP_CACHE,
// which saves two round trips per open(2). Nothing is lost: the mount is
// read-only (the VFS refuses write opens with EROFS before we would see
// them), there is no per-open state, and every read is verified anyway. A
// kernel that does not know no_open treats ENOSYS as a failed open, so
// `-o open_handles` keeps the classic behaviour.
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT)) != 0) {
    fuse_reply_err(req, EROFS);
    return;
  }
  Serve(req, {"open", ino}, [&](Filesystem& fs) -> Status {
    CX_RETURN_IF_ERROR(fs.DoOpen(ino));
    if (!fs.options().open_handles) {
      fuse_reply_err(req, ENOSYS);
      return Status::Ok();
    }
    fi->keep_cache = 1;  // immutable: page cache stays valid across opens
    fi->noflush = 1;
    fuse_reply_open(req, fi);
    return Status::Ok();
  });
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* /*fi*/) {
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  Serve(req, {"read", ino, static_cast<uint64_t>(off)}, [&](Filesystem& fs) -> Status {
    CX_ASSIGN_OR_RETURN(std::span<const uint8_t> data,
                        fs.DoRead(ino, static_cast<uint64_t>(off), size));
    fuse_reply_buf(req, reinterpret_cast<const char*>(data.data()), data.size());
    return Status::Ok();
  });
}

// ENOSYS makes the kernel stop sending FLUSH on every close(2) (no_flush):
// nothing is ever dirty.
void OpFlush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, ENOSYS);
}
void OpRelease(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, 0);
}
void OpFsync(fuse_req_t req, fuse_ino_t /*ino*/, int /*datasync*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, 0);  // nothing is ever dirty
}

// ---- directories ---------------------------------------------------------------

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Serve(req, {"opendir", ino}, [&](Filesystem& fs) -> Status {
    CX_RETURN_IF_ERROR(fs.DoOpendir(ino));
    if (!fs.options().open_handles) {
      // no_opendir: the kernel opens directories itself with FOPEN_CACHE_DIR
      // and FOPEN_KEEP_CACHE and sends no OPENDIR/RELEASEDIR (see OpOpen).
      fuse_reply_err(req, ENOSYS);
      return Status::Ok();
    }
    fi->cache_readdir = 1;  // the kernel may serve later readdirs itself
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
    return Status::Ok();
  });
}

void ReaddirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  Serve(req, {plus ? "readdirplus" : "readdir", ino}, [&](Filesystem& fs) -> Status {
    char* buf = ThreadDirBuffer(size);
    size_t used = 0;
    std::vector<uint64_t> remembered;  // readdirplus entries the kernel will count
    auto emit = [&](const std::string& name, const struct stat& st, uint64_t next, bool link) {
      size_t room = size - used;
      size_t need;
      if (plus) {
        fuse_entry_param e;
        if (IsDotOrDotDot(name) || !link) {
          // No lookup count for "." and "..": the kernel ignores their
          // attributes (passthrough_ll.c does the same). Nor for entries
          // listed but not linked (nodeid 0: the kernel makes no dentry).
          std::memset(&e, 0, sizeof(e));
          e.attr.st_ino = st.st_ino;
          e.attr.st_mode = st.st_mode;
        } else {
          e = EntryFor(st);
        }
        need = fuse_add_direntry_plus(req, buf + used, room, name.c_str(), &e,
                                      static_cast<off_t>(next));
      } else {
        need =
            fuse_add_direntry(req, buf + used, room, name.c_str(), &st, static_cast<off_t>(next));
      }
      if (need > room) return false;
      used += need;
      if (plus && link && !IsDotOrDotDot(name)) {
        fs.Remember(st.st_ino);
        remembered.push_back(st.st_ino);
      }
      return true;
    };
    Status st = fs.DoReaddir(ino, static_cast<uint64_t>(off), plus, emit);
    // Entries already packed are good; the next call starts at the failing
    // one and reports the error then.
    if (!st.ok() && used == 0) return st;
    if (fuse_reply_buf(req, buf, used) != 0) {
      for (uint64_t i : remembered) fs.Forget(i, 1);
    }
    return Status::Ok();
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* /*fi*/) {
  ReaddirCommon(req, ino, size, off, /*plus=*/false);
}
void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* /*fi*/) {
  ReaddirCommon(req, ino, size, off, /*plus=*/true);
}
void OpReleasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, 0);
}
void OpFsyncdir(fuse_req_t req, fuse_ino_t /*ino*/, int /*datasync*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, 0);
}

// ---- xattrs --------------------------------------------------------------------

// size == 0 asks for the length; a value longer than size is ERANGE.
void ReplyXattr(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Serve(
      req, {"getxattr", ino},
      [&](Filesystem& fs) -> Status {
        CX_ASSIGN_OR_RETURN(std::string value, fs.DoGetxattr(ino, name));
        ReplyXattr(req, value, size);
        return Status::Ok();
      },
      /*xattr=*/true);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Serve(req, {"listxattr", ino}, [&](Filesystem& fs) -> Status {
    CX_ASSIGN_OR_RETURN(std::string names, fs.DoListxattr(ino));
    ReplyXattr(req, names, size);
    return Status::Ok();
  });
}

// ---- write side: a sealed image is read-only -----------------------------------

void ReplyReadOnly(fuse_req_t req) { fuse_reply_err(req, EROFS); }

void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  ReplyReadOnly(req);
}
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { ReplyReadOnly(req); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { ReplyReadOnly(req); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { ReplyReadOnly(req); }
void OpRmdir(fuse_req_t req, fuse_ino_t, const char*) { ReplyReadOnly(req); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { ReplyReadOnly(req); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) {
  ReplyReadOnly(req);
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { ReplyReadOnly(req); }
void OpWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
  ReplyReadOnly(req);
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  ReplyReadOnly(req);
}
// ---- status ------------------------------------------------------------------

// The level ioctl's answer (status_channel.h LevelWire): EOPNOTSUPP on a
// mount of fixed images, EOVERFLOW if the level does not fit.
void ReplyLevel(fuse_req_t req, const Filesystem& fs, size_t out_bufsz) {
  if (!fs.reloadable()) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  const std::vector<Digest> roots = fs.ServedPatchRoots();
  LevelWire wire;
  if (out_bufsz < sizeof(wire) || roots.size() > kMaxLevelPatches) {
    fuse_reply_err(req, EOVERFLOW);
    return;
  }
  std::memset(&wire, 0, sizeof(wire));
  std::memcpy(wire.magic, kLevelMagic, sizeof(wire.magic));
  wire.version = kLevelVersion;
  wire.count = static_cast<uint32_t>(roots.size());
  wire.pending = fs.pending() ? 1 : 0;
  for (size_t i = 0; i < roots.size(); ++i) {
    std::memcpy(wire.roots[i], roots[i].data(), sizeof(wire.roots[i]));
  }
  fuse_reply_ioctl(req, 0, &wire, sizeof(wire));
}

// The status, reload and level ioctls (status_channel.h) on the root
// directory; every other ioctl, and these elsewhere, is ENOTTY. Reload is for
// root and the mount's owner only (EPERM), EOPNOTSUPP on a mount that cannot
// reload, EIO (logged) if the next level does not open; it answers
// kReloadPending when the change waits for the next mount (filesystem.h,
// "Activation classes").
void OpIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*,
             unsigned flags, const void*, size_t, size_t out_bufsz) noexcept {
  try {
    Filesystem& fs = Fs(req);
    fs.OnRequest();
    if ((cmd != kStatusIoctl && cmd != kReloadIoctl && cmd != kLevelIoctl) ||
        (flags & FUSE_IOCTL_COMPAT) || ino != fs.root()) {
      fuse_reply_err(req, ENOTTY);
      return;
    }
    if (cmd == kLevelIoctl) {
      ReplyLevel(req, fs, out_bufsz);
      return;
    }
    if (cmd == kReloadIoctl) {
      const fuse_ctx* ctx = fuse_req_ctx(req);
      if (ctx->uid != 0 && ctx->uid != getuid()) {
        fuse_reply_err(req, EPERM);
        return;
      }
      const Result<Filesystem::ReloadOutcome> r = fs.Reload();
      if (r.ok()) {
        fuse_reply_ioctl(
            req, *r == Filesystem::ReloadOutcome::kPending ? kReloadPending : kReloadServing,
            nullptr, 0);
      } else {
        fuse_reply_err(req, r.status().code() == Code::kUnsupported
                                ? EOPNOTSUPP
                                : fs.ErrnoForFailure(r.status(), ErrorSite("reload", ino)));
      }
      return;
    }
    StatusWire wire;
    if (out_bufsz < sizeof(wire) || !EncodeStatus(fs.CurrentStatus(), &wire).ok()) {
      fuse_reply_err(req, EOVERFLOW);
      return;
    }
    fuse_reply_ioctl(req, 0, &wire, sizeof(wire));
  } catch (...) {
    fuse_reply_err(req, ENOMEM);
  }
}

void OpSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  ReplyReadOnly(req);
}
void OpRemovexattr(fuse_req_t req, fuse_ino_t, const char*) { ReplyReadOnly(req); }
void OpFallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
  ReplyReadOnly(req);
}
void OpCopyFileRange(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t,
                     fuse_file_info*, size_t, int) {
  ReplyReadOnly(req);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OpInit;
  ops.destroy = OpDestroy;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.readlink = OpReadlink;
  ops.access = OpAccess;
  ops.statfs = OpStatfs;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;
  ops.releasedir = OpReleasedir;
  ops.fsyncdir = OpFsyncdir;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.setattr = OpSetattr;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.write = OpWrite;
  ops.create = OpCreate;
  ops.setxattr = OpSetxattr;
  ops.removexattr = OpRemovexattr;
  ops.fallocate = OpFallocate;
  ops.copy_file_range = OpCopyFileRange;
  ops.ioctl = OpIoctl;
  // Left out on purpose: getlk/setlk/flock (the kernel then keeps locks
  // locally), lseek (generic SEEK_DATA/SEEK_HOLE), poll, bmap.
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& LowLevelOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace cryptex::cxfs
