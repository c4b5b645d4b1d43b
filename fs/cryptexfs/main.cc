// cryptexfs IMAGE MOUNTPOINT [-o OPTIONS]: mounts a sealed cryptex image
// read-only, verifying every block it serves (README.md).
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <syslog.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "cpus.h"
#include "exit_codes.h"
#include "filesystem.h"
#include "format.h"
#include "image.h"
#include "keys.h"
#include "lowlevel.h"
#include "options.h"
#include "sd_notify.h"
#include "store.h"
#include "store_watch.h"

namespace cryptex::cxfs {
namespace {

static_assert(kDefaultCacheBytes % (1u << 20) == 0 && kDefaultReadaheadBytes % (1u << 20) == 0,
              "--help prints the defaults in MiB");

void PrintUsage(const char* prog) {
  std::printf(
      "usage: %s IMAGE MOUNTPOINT [options]\n"
      "       %s NAME MOUNTPOINT -o store=DIR[,level=base|ID] [options]\n"
      "\n"
      "Mounts the sealed cryptex image IMAGE read-only at MOUNTPOINT; every\n"
      "block served is verified against the image's signed Merkle tree.\n"
      "\n"
      "cryptexfs options:\n"
      "    -o trust=DIR           trusted public keys (*.pub), default %s\n"
      "    -o pubkey=FILE         trust exactly this public key instead\n"
      "    -o cache_size=BYTES    decompressed-frame cache, K/M/G suffixes (default %lluM)\n"
      "    -o readahead=BYTES     the mount's readahead, K/M suffixes (default %lluM; 0: "
      "kernel's)\n"
      "    -o patch=FILE          stack this patch over IMAGE (repeatable, bottom first)\n"
      "    -o store=DIR           IMAGE is a line of this store: serve its active level,\n"
      "                           following activations live\n"
      "    -o level=base|ID       with store=: pinned at that level\n"
      "    -o no_push             store nothing in the page cache ahead of reads\n"
      "    -o open_handles        answer OPEN (kernels without no_open support)\n"
      "\n"
      "Always implied: -o ro,default_permissions (the kernel enforces the owners\n"
      "and modes recorded in the image, for every user).\n"
      "\n",
      prog, prog, kDefaultTrustDir, static_cast<unsigned long long>(kDefaultCacheBytes >> 20),
      static_cast<unsigned long long>(kDefaultReadaheadBytes >> 20));
}

struct ArgsDeleter {
  void operator()(fuse_args* a) const { fuse_opt_free_args(a); }
};
struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};

// Prints "cryptexfs: IMAGE: message" and returns the exit code for `st`,
// the same as `cryptex` gives (exit_codes.h: 3 integrity or signature, 4
// unsupported, 5 not found, ...). The library names the file it failed on;
// `resolved` (the absolute path it was given) is dropped from the front of
// the message so the image is named once.
int Fail(const std::string& image, const Status& st, const std::string& resolved = "") {
  std::string message = st.message();
  if (!resolved.empty() && message.rfind(resolved + ": ", 0) == 0) {
    message.erase(0, resolved.size() + 2);
  }
  std::fprintf(stderr, "cryptexfs: %s: %s\n", image.c_str(), message.c_str());
  return cli::ExitCodeFor(st);
}

// Decompressed frames (one chunk, 4 KiB..1 MiB) are allocated and freed at
// the rate the kernel reads. Keep such blocks in the heap instead of a fresh
// mmap (page faults + zeroing) and munmap (TLB shootdown) each time, and do
// not hand freed heap back to the kernel at every free. Two arenas: frames
// are freed by whichever thread evicts them, and one arena per request
// thread kept ~40 MiB of freed frames stranded (peak RSS of a cold read of
// /usr/lib/x86_64-linux-gnu with the default cache: ~150 -> ~110 MiB, same
// speed).
void TuneAllocator() {
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_ARENA_MAX, 2);
}

// "MAJ:MIN" of the newest mount at `real` (the absolute, resolved
// mountpoint), "" if none. From /proc/self/mountinfo, not stat(2): the
// session loop may not be serving requests yet.
std::string MountDevice(const char* real) {
  std::ifstream info("/proc/self/mountinfo");
  std::string line, dev;
  while (std::getline(info, line)) {
    std::istringstream in(line);
    std::string id, parent, majmin, root, mnt;
    if (!(in >> id >> parent >> majmin >> root >> mnt)) continue;
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    std::string unescaped;
    for (size_t i = 0; i < mnt.size(); ++i) {
      if (mnt[i] == '\\' && i + 3 < mnt.size()) {
        unescaped += static_cast<char>(std::stoi(mnt.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += mnt[i];
      }
    }
    if (unescaped == std::string_view(real)) dev = majmin;  // the last match is the newest mount
  }
  return dev;
}

// Raises the mount's readahead through its backing device info
// (/sys/class/bdi/MAJ:MIN/read_ahead_kb): FUSE caps the INIT reply's
// max_readahead at the kernel's 128 KiB default. Best effort (needs root).
void SetReadahead(const std::string& dev, uint64_t bytes) {
  std::ofstream ra("/sys/class/bdi/" + dev + "/read_ahead_kb");
  ra << (bytes / 1024) << "\n";
}

// Ends every request still pending on the connection (fusectl "abort").
void AbortConnection(const std::string& dev) {
  const size_t colon = dev.find(':');
  if (colon == std::string::npos) return;
  std::ofstream abort("/sys/fs/fuse/connections/" + dev.substr(colon + 1) + "/abort");
  abort << "1\n";
}

// One line to stderr, or to syslog when daemonized.
void LogLine(bool syslog_it, const std::string& line) {
  if (syslog_it) {
    syslog(LOG_NOTICE, "%s", line.c_str());
  } else {
    std::fprintf(stderr, "cryptexfs: %s\n", line.c_str());
  }
}

// A mount of a store line follows every commit on its own (store_watch.h):
// each replacement of DIR/state reloads, obeying the activation classes
// (Filesystem::Reload). The CLI's reload ioctl stays: it returns once the
// mount serves the new level. Without inotify the mount still follows the
// CLI's requests (logged).
std::unique_ptr<StateWatcher> WatchStore(const std::string& dir, const std::string& name,
                                         Filesystem* fs, bool syslog_it) {
  auto on_change = [fs, name, syslog_it] {
    const Result<Filesystem::ReloadOutcome> r = fs->Reload();
    if (!r.ok()) {
      LogLine(syslog_it, name + ": the store changed but its level does not open (" +
                             r.status().ToString() + "); still serving the previous level");
    } else if (*r == Filesystem::ReloadOutcome::kPending) {
      LogLine(syslog_it, name + ": a committed change is pending until the next mount " +
                             "(a reboot-class patch differs from the level served)");
    }
  };
  Result<std::unique_ptr<StateWatcher>> w = StateWatcher::Start(dir, "state", std::move(on_change));
  if (!w.ok()) {
    LogLine(syslog_it, name + ": not watching the store (" + w.status().ToString() +
                           "); following `cryptex` reload requests only");
    return nullptr;
  }
  return std::move(*w);
}

int Run(int argc, char** argv) {
  TuneAllocator();
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  std::unique_ptr<fuse_args, ArgsDeleter> args_guard(&args);

  DriverConfig cfg;
  if (Status st = ParseDriverArgs(&args, &cfg); !st.ok()) {
    std::fprintf(stderr, "cryptexfs: %s\nTry '%s --help'.\n", st.message().c_str(), argv[0]);
    return cli::kExitUsage;
  }
  fuse_cmdline_opts opts{};
  if (fuse_parse_cmdline(&args, &opts) != 0) return 1;  // libfuse printed why
  std::unique_ptr<char, decltype(&std::free)> mountpoint(opts.mountpoint, &std::free);
  if (opts.show_help) {
    PrintUsage(argv[0]);
    fuse_cmdline_help();
    fuse_lowlevel_help();
    return 0;
  }
  if (opts.show_version) {
    std::printf("cryptexfs (format version %u)\n", format::kFormatVersion);
    fuse_lowlevel_version();
    return 0;
  }
  if (cfg.image.empty() || mountpoint == nullptr) {
    std::fprintf(stderr, "cryptexfs: missing %s\nusage: %s IMAGE MOUNTPOINT [-o OPTIONS]\n",
                 cfg.image.empty() ? "IMAGE" : "MOUNTPOINT", argv[0]);
    return cli::kExitUsage;
  }

  // Open and check the image before anything is mounted: a refused image
  // leaves no mount behind.
  Result<TrustStore> trust =
      cfg.pubkey.empty() ? TrustStore::LoadDir(cfg.trust_dir) : TrustStore::LoadFile(cfg.pubkey);
  // Without a trusted key the image cannot be authenticated: refused like a
  // badly signed one, as `cryptex` does.
  if (!trust.ok()) {
    return Fail(cfg.image, Status::Signature("trust store: " + trust.status().message()));
  }
  ImageOptions image_opts;
  image_opts.trust = &*trust;
  image_opts.frame_cache_bytes = static_cast<size_t>(cfg.cache_bytes);
  char resolved[PATH_MAX];
  // A store line (store=DIR): IMAGE is the line's name; the mount serves its
  // active level (or the pinned level=) and follows activations.
  std::shared_ptr<store::Store> line_store;
  if (!cfg.store_dir.empty()) {
    char dir[PATH_MAX];
    if (::realpath(cfg.store_dir.c_str(), dir) == nullptr) {
      return Fail(cfg.store_dir, Status::FromErrno(errno, "cannot open the store"));
    }
    Result<std::unique_ptr<store::Store>> st = store::Store::Open(dir, &*trust);
    if (!st.ok()) return Fail(cfg.store_dir, st.status());
    line_store = std::move(*st);
    const std::string base = line_store->BasePath(cfg.image);
    if (::realpath(base.c_str(), resolved) == nullptr) {
      return Fail(cfg.image, Status::NotFound(std::string(dir) + ": no line named " + cfg.image));
    }
  } else if (::realpath(cfg.image.c_str(), resolved) == nullptr) {
    return Fail(cfg.image, Status::FromErrno(errno, "cannot open"));
  }
  Result<std::unique_ptr<Image>> image = Image::Open(resolved, image_opts);
  if (!image.ok()) return Fail(cfg.image, image.status(), resolved);
  if ((*image)->superblock().kind != format::kKindBase) {
    return Fail(cfg.image,
                Status::Unsupported(std::string("is a ") + (*image)->superblock().kind_name() +
                                    " image; cryptexfs mounts base images"));
  }
  Result<std::unique_ptr<View>> view = [&]() -> Result<std::unique_ptr<View>> {
    if (line_store) {
      image->reset();
      return line_store->OpenLevel(cfg.image, cfg.level, image_opts);
    }
    if (cfg.patches.empty()) return OpenImageView(std::move(*image));
    // Patches stacked on the image, bottom first (paths resolved now:
    // fuse_daemonize() changes directory to "/").
    std::vector<std::string> patches;
    for (const std::string& p : cfg.patches) {
      char rp[PATH_MAX];
      if (::realpath(p.c_str(), rp) == nullptr)
        return Status::FromErrno(errno, p + ": cannot open");
      patches.emplace_back(rp);
    }
    image->reset();
    return OpenStack(resolved, patches, image_opts);
  }();
  if (!view.ok()) return Fail(cfg.image, view.status(), resolved);

  // Decoding threads: one per core, at most 8 (a read is cut into at most 8
  // pieces; each thread keeps a zstd context and a chunk-sized buffer).
  const unsigned decoders = std::clamp(UsableCpus(), 1u, 8u);
  // Learned after INIT (the mount exists then): the readahead and, at exit,
  // the connection to abort if the push thread is stuck.
  auto device = std::make_shared<std::string>();
  std::function<void()> after_init;
  {
    // Resolved now: fuse_daemonize() changes directory to "/".
    char mp[PATH_MAX];
    if (::realpath(mountpoint.get(), mp) != nullptr) {
      after_init = [mp = std::string(mp), bytes = cfg.readahead_bytes, device] {
        *device = MountDevice(mp.c_str());
        if (bytes > 0 && !device->empty()) SetReadahead(*device, bytes);
      };
    }
  }
  Filesystem fs(std::move(*view), {cfg.image, /*log_to_syslog=*/!opts.foreground,
                                   /*open_handles=*/cfg.open_handles,
                                   /*read_helpers=*/decoders,
                                   /*after_init=*/std::move(after_init)});
  if (Status st = AddImpliedOptions(&args, resolved); !st.ok()) return Fail(cfg.image, st);
  const fuse_lowlevel_ops& ops = LowLevelOps();
  std::unique_ptr<fuse_session, SessionDeleter> se(fuse_session_new(&args, &ops, sizeof(ops), &fs));
  if (se == nullptr) return 1;  // libfuse printed why (e.g. an unknown option)
  if (cfg.push) {
    fs.EnablePush([s = se.get()](uint64_t ino, uint64_t offset, std::span<const uint8_t> bytes) {
      fuse_bufvec bv = FUSE_BUFVEC_INIT(bytes.size());
      bv.buf[0].mem = const_cast<uint8_t*>(bytes.data());
      return fuse_lowlevel_notify_store(s, ino, static_cast<off_t>(offset), &bv,
                                        fuse_buf_copy_flags{});
    });
  }
  if (line_store && cfg.level.empty()) {
    // Live activation: `cryptex activate/revert` asks (reload ioctl); the
    // next level is the line's committed state, read afresh.
    fs.EnableReload([line_store, name = cfg.image,
                     image_opts] { return line_store->OpenLevel(name, "", image_opts); },
                    Filesystem::Notifier{[s = se.get()](uint64_t parent, const std::string& name) {
                                           // -ENOENT: the kernel holds no such entry; nothing to
                                           // drop.
                                           (void)fuse_lowlevel_notify_inval_entry(
                                               s, parent, name.c_str(), name.size());
                                         },
                                         [s = se.get()](uint64_t ino) {
                                           (void)fuse_lowlevel_notify_inval_inode(s, ino, 0, 0);
                                         }});
  }
  if (fuse_set_signal_handlers(se.get()) != 0) return 1;
  if (fuse_session_mount(se.get(), mountpoint.get()) != 0) {
    fuse_remove_signal_handlers(se.get());
    return 1;
  }
  if (!opts.foreground) openlog("cryptexfs", LOG_PID, LOG_DAEMON);
  fuse_daemonize(opts.foreground);
  // After fuse_daemonize (a thread does not survive its fork); stopped
  // before the session goes.
  std::unique_ptr<StateWatcher> watcher;
  if (fs.reloadable()) {
    watcher = WatchStore(line_store->dir(), cfg.image, &fs, !opts.foreground);
  }
  SdNotify("READY=1\nSTATUS=serving " + std::string(resolved) + " at " + mountpoint.get());

  int ret;
  if (opts.singlethread) {
    ret = fuse_session_loop(se.get());
  } else {
    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> loop(fuse_loop_cfg_create());
    fuse_loop_cfg_set_clone_fd(loop.get(), static_cast<unsigned>(opts.clone_fd));
    if (opts.max_idle_threads != UINT_MAX) {  // UINT_MAX: not given
      fuse_loop_cfg_set_idle_threads(loop.get(), opts.max_idle_threads);
    }
    fuse_loop_cfg_set_max_threads(loop.get(), opts.max_threads);
    ret = fuse_session_loop_mt(se.get(), loop.get());
  }
  const bool watcher_stopped = !watcher || watcher->Stop(std::chrono::seconds(2));
  if (!fs.StopPush(std::chrono::seconds(2)) || !watcher_stopped) {
    // Only after a signal ended the loop with a request still pending that
    // the push thread's store (a READ of its page) or the watcher's reload
    // (a LOOKUP in a directory whose entries it invalidates) waits for: end
    // that request, then they return.
    if (!device->empty()) AbortConnection(*device);
    fs.StopPush();
    if (watcher) watcher->Stop();
  }
  SdNotify("STOPPING=1");
  fuse_session_unmount(se.get());
  fuse_remove_signal_handlers(se.get());
  return ret == 0 ? 0 : 1;
}

}  // namespace
}  // namespace cryptex::cxfs

int main(int argc, char** argv) {
  try {
    return cryptex::cxfs::Run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "cryptexfs: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cryptexfs: %s\n", e.what());
  }
  return 1;
}
