// The FUSE-independent half of cryptexfs: every operation as a DoX() that
// returns a Result/Status, over a cryptex::View: a base image, or a base
// with patches stacked on it (view.h). lowlevel.cc turns
// each into exactly one fuse_reply_*.
//
// Thread safety: all methods may be called concurrently (the FUSE
// multi-threaded loop); shared state is noted per member.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "image.h"
#include "parallel.h"
#include "push.h"
#include "status.h"
#include "status_channel.h"
#include "view.h"

namespace cryptex::cxfs {

// Live activation. The mount serves one *generation* (a View) at a time and
// Reload() swaps in the next one. Inode numbers the kernel sees are
// NodeId(slot, ino): a slot names one layer image for the life of the mount
// (slot 0 is the base; a patch gets a slot by its signed root hash), so
//  * a node keeps its inode number in every generation holding its layer
//    (unchanged files keep their numbers and page cache across activations);
//  * a changed file is a new inode (its patch's slot);
//  * an inode of a layer no longer active is still served, by the newest
//    retired generation that holds it: a patch binds to exactly one lower
//    state (FORMAT.md section 12), so (layer, ino) means the same bytes in
//    every generation. Descriptors opened before an activation keep reading
//    the old bytes until closed. A retired generation is dropped once the
//    kernel has forgotten (FORGET) every inode only it can serve.

// The image is immutable: the kernel may cache entries and attributes for a
// day (and negative lookups too).
inline constexpr double kCacheTimeoutSec = 86400.0;

// Largest read served in one request. The kernel asks for at most
// max_pages * 4 KiB (libfuse 3.14 negotiates 256 pages = 1 MiB).
inline constexpr size_t kMaxReadBytes = 4u << 20;

// Who asks (fuse_req_ctx + fuse_req_getgroups), for access(2).
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// Where an error happened, for the integrity-failure log line.
struct ErrorSite {
  ErrorSite(const char* op_name, uint64_t inode) : op(op_name), ino(inode) {}
  ErrorSite(const char* op_name, uint64_t inode, uint64_t file_offset)
      : op(op_name), ino(inode), offset(file_offset) {}

  const char* op;
  uint64_t ino;
  std::optional<uint64_t> offset;  // file offset (reads)
};

class Filesystem final {
 public:
  struct Options {
    std::string display_name;    // IMAGE as the user named it (log lines)
    bool log_to_syslog = false;  // else stderr
    bool open_handles = false;   // reply to OPEN (else ENOSYS: kernel no_open mode)
    unsigned read_helpers = 1;   // threads decoding the chunks of large reads
    // Runs once, before the first request after INIT is served (the kernel
    // has applied the INIT reply by then). Used to tune the mount's bdi.
    std::function<void()> after_init;
  };

  // Opens the next generation's view (e.g. a store line's active level).
  using Reopen = std::function<Result<std::unique_ptr<View>>()>;
  // Kernel cache invalidation (fuse_lowlevel_notify_inval_entry / _inode).
  struct Notifier {
    std::function<void(uint64_t parent, const std::string& name)> inval_entry;
    std::function<void(uint64_t ino)> inval_inode;
  };

  // REQUIRES: view != nullptr.
  Filesystem(std::unique_ptr<View> view, Options options);
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  // The base image (layer 0): geometry, statfs, push, the status' identity.
  // The same in every generation.
  const Image& base() const { return *base_; }
  uint64_t root() const { return kRootIno; }
  static constexpr uint64_t kRootIno = 1;

  // Makes Reload() possible: `reopen` gives the next view, `notify` reaches
  // the kernel. Call before serving.
  void EnableReload(Reopen reopen, Notifier notify);
  bool reloadable() const { return static_cast<bool>(reopen_); }
  // What Reload() did.
  enum class ReloadOutcome {
    kUnchanged,  // the next level is the one served
    kMoved,      // the next level is served now
    kPending,    // a reboot-class patch differs: the served level stays
  };
  // Opens the next view and, if the change is live (see "Activation
  // classes" above), swaps it in, then invalidates the kernel's entries and
  // attributes of exactly the paths the layers that came or went carry;
  // returns once new lookups see the new level. kInvalidArgument if the new
  // view has another base. Serialised: one reload at a time.
  Result<ReloadOutcome> Reload();
  // Whether the last Reload() left a change pending (false before any).
  bool pending() const { return pending_.load(); }
  // The signed root hashes of the patch layers served now, bottom first
  // (empty: the base alone).
  std::vector<Digest> ServedPatchRoots() const;
  // Whether a mount serving `from` may move to `to` live: every patch layer
  // in one and not the other is of class relaunch (manifest activation
  // "relaunch", or "" which defaults to it; "reboot" and any other value are
  // not live). Both share the base.
  static bool ChangeIsLive(const std::vector<const Image*>& from,
                           const std::vector<const Image*>& to);
  // Lookup accounting (the kernel's nlookup): Remember after every entry
  // reply that creates a reference, Forget on FORGET.
  void Remember(uint64_t ino);
  void Forget(uint64_t ino, uint64_t nlookup);
  // Generations kept (the current one included); for tests and status.
  size_t generations() const;
  uint64_t reloads() const { return reloads_.load(); }
  const Options& options() const { return options_; }
  // Called by the FUSE edge on every request; runs options().after_init once.
  void OnRequest() {
    if (options_.after_init) std::call_once(after_init_once_, options_.after_init);
  }

  // kNotFound if `name` is not in `parent` (a negative entry). "." and ".."
  // resolve to the directory and its parent.
  Result<struct stat> DoLookup(uint64_t parent, std::string_view name);
  Result<struct stat> DoGetattr(uint64_t ino);
  Result<std::string> DoReadlink(uint64_t ino);
  // Checks that ino can be opened for reading (kIsDirectory for a directory).
  // Write access is refused by the caller (EROFS) before this is reached.
  Status DoOpen(uint64_t ino);
  // Reads up to min(size, kMaxReadBytes) bytes at offset; short only at EOF.
  // The span points into a buffer owned by the calling thread and is valid
  // until that thread's next DoRead. No allocation once the buffer has grown.
  Result<std::span<const uint8_t>> DoRead(uint64_t ino, uint64_t offset, size_t size);
  Status DoOpendir(uint64_t ino);

  // Push (push.h): reads feed a background thread that stores frame-mates
  // and the next files of a directory walk through `store`. Call before
  // serving; StopPush() before the session behind `store` is destroyed.
  void EnablePush(Pusher::StoreFn store);
  bool StopPush(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());
  uint64_t files_pushed() const { return pusher_ ? pusher_->pushed() : 0; }

  // Emits directory entries from stream position `offset`: 0 is ".", 1 is
  // "..", 2 + i is the image's entry i. emit(name, attr, next_offset) returns
  // false when the reply buffer is full. With plus, attr is complete (and
  // directories' parents are recorded); otherwise only st_ino and the type
  // bits of st_mode are set. "." and ".." always carry only those. On error,
  // entries already emitted stay valid.
  // `link` is false for entries of a listing that continues at a level no
  // longer current: the kernel must list them but not make them inodes.
  using DirEmitter = std::function<bool(const std::string& name, const struct stat& attr,
                                        uint64_t next, bool link)>;
  Status DoReaddir(uint64_t ino, uint64_t offset, bool plus, const DirEmitter& emit);

  Result<struct statvfs> DoStatfs();
  // The image's xattrs, exactly (no virtual names: status travels by ioctl).
  // kNotFound if absent (ENODATA at the edge).
  Result<std::string> DoGetxattr(uint64_t ino, std::string_view name);
  // Names, each followed by NUL (listxattr(2) format).
  Result<std::string> DoListxattr(uint64_t ino);
  // mask: F_OK or a combination of R_OK and X_OK (W_OK is EROFS at the edge).
  Status DoAccess(uint64_t ino, int mask, const Caller& caller);

  // Error path of every request: counts and logs an integrity failure
  // ("cryptexfs: IMAGE: integrity failure: PATH offset N: message") or an
  // I/O error, and returns the errno to send (errno_map.h).
  int ErrnoForFailure(const Status& status, const ErrorSite& site, bool xattr = false);

  // Requests answered EIO because of kCorruption since the mount.
  uint64_t integrity_failures() const { return integrity_failures_.load(); }
  // What the status ioctl reports (status_channel.h): the image, its root
  // hash and the counters, from the driver's own state only.
  MountStatus CurrentStatus() const;

  // Parent directory of directory `ino` (root for root). Recorded on lookup
  // and readdirplus; otherwise found by walking the tree once.
  Result<uint64_t> ParentOf(uint64_t ino);

  // "/a/b" for ino (a shortest path found by a bounded walk), or "ino N".
  std::string DescribeInode(uint64_t ino);

 private:
  static void FillStat(const InodeInfo& in, struct stat* st);
  void RecordParent(uint64_t dir, uint64_t parent);
  void Log(const std::string& line);
  std::string WithoutImagePath(const std::string& message) const;

  struct Generation {
    uint32_t seq = 0;    // 1..kListingSeqs, in turn: names it in listing cookies
    uint64_t epoch = 0;  // 1 for the mount's first generation, +1 per reload
    std::shared_ptr<const View> view;
    std::vector<uint32_t> slot_of_layer;                   // layer index -> slot
    std::unordered_map<uint32_t, uint32_t> layer_of_slot;  // slot -> layer index
  };
  // A request's inode in a generation that serves it.
  struct Target {
    std::shared_ptr<const Generation> gen;
    uint64_t node = 0;  // the view's node id
  };
  Result<Target> Find(uint64_t ino) const;
  // The generation a directory listing that began in generation `seq`
  // continues in (its cookies name it; see DoReaddir), and ino's node there.
  // If that generation is gone, the current one when directory `ino` has
  // not changed since (see dir_changed_), else kIOError.
  Result<Target> FindForListing(uint64_t ino, uint32_t seq);
  std::shared_ptr<const Generation> Current() const;
  static uint64_t ToIno(const Generation& g, uint64_t node) {
    return NodeId(g.slot_of_layer[NodeLayer(node)], NodeIno(node));
  }
  // A generation for `view`, assigning slots to new layers (not yet its
  // seq and epoch: see Install). REQUIRES gen_mu_.
  std::shared_ptr<Generation> MakeGeneration(std::shared_ptr<const View> view);
  // What changed between two generations: the (directory inode, name)
  // entries and the directory inodes, as the kernel knows them in either
  // generation, that the kernel must drop from its caches. See Reload.
  struct Changes {
    std::set<std::pair<uint64_t, std::string>> entries;
    std::set<uint64_t> dirs;
  };
  static Changes ChangesBetween(const Generation& before, const Generation& after);
  // Makes `g` current (the previous one retired): gives it its seq and
  // epoch and records `changed_dirs` in dir_changed_. REQUIRES gen_mu_.
  void Install(std::shared_ptr<Generation> g, const std::set<uint64_t>& changed_dirs);
  // Drops retired generations no remembered inode needs. REQUIRES gen_mu_.
  void PruneRetired();

  std::shared_ptr<const View> anchor_;  // the first view: owns base_
  const Image* base_ = nullptr;
  Digest base_root_{};
  mutable std::shared_mutex gen_mu_;
  std::shared_ptr<const Generation> current_;               // GUARDED_BY(gen_mu_)
  std::vector<std::shared_ptr<const Generation>> retired_;  // newest last; GUARDED_BY(gen_mu_)
  std::map<Digest, uint32_t> slot_by_root_;                 // GUARDED_BY(gen_mu_)
  uint32_t last_seq_ = 0;                                   // GUARDED_BY(gen_mu_)
  uint64_t epoch_ = 0;                                      // GUARDED_BY(gen_mu_)
  // The epoch of the generation that last had each seq, and for each
  // directory inode a reload changed, the epoch of that reload (entries
  // older than any seq's epoch are dropped). The kernel keeps the cookies of
  // a directory's cached listing until that directory is invalidated, so a
  // cookie may name a generation long gone: the listing continues in the
  // current generation if its directory has not changed since.
  std::unordered_map<uint32_t, uint64_t> seq_epoch_;    // GUARDED_BY(gen_mu_)
  std::unordered_map<uint64_t, uint64_t> dir_changed_;  // GUARDED_BY(gen_mu_)
  // Generations with a listing that may continue (a reply that did not
  // reach the end of its directory), by seq: each stays alive until
  // kListingIdle after such a reply, then a pruning thread drops it. See
  // DoReaddir.
  struct Listed {
    std::shared_ptr<const Generation> gen;
    std::chrono::steady_clock::time_point touched;
  };
  void NoteListing(const std::shared_ptr<const Generation>& gen);
  void PruneListingsLoop();
  std::mutex listings_mu_;
  std::condition_variable listings_cv_;
  std::map<uint32_t, Listed> listings_;               // GUARDED_BY(listings_mu_)
  bool listings_stop_ = false;                        // GUARDED_BY(listings_mu_)
  std::thread listings_pruner_;                       // started by the first NoteListing
  std::unordered_map<uint32_t, uint64_t> slot_refs_;  // lookups per patch slot; GUARDED_BY(gen_mu_)
  std::mutex reload_mu_;                              // one Reload at a time
  Reopen reopen_;
  Notifier notify_;
  std::atomic<uint64_t> reloads_{0};
  std::atomic<bool> pending_{false};
  const Options options_;
  ParallelPool pool_;  // decodes the chunks of one large read in parallel
  std::unique_ptr<Pusher> pusher_;
  std::once_flag after_init_once_;
  std::atomic<uint64_t> integrity_failures_{0};

  std::shared_mutex parents_mu_;
  // Directory inode -> parent directory inode. GUARDED_BY(parents_mu_).
  // At most one entry per directory of the image.
  std::unordered_map<uint64_t, uint64_t> parents_;

  std::shared_mutex paths_mu_;
  // Inode -> path, for log lines of inodes that failed. GUARDED_BY(paths_mu_);
  // bounded by kMaxCachedPaths.
  std::unordered_map<uint64_t, std::string> paths_;
};

}  // namespace cryptex::cxfs
