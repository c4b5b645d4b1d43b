// MakePatch: compare a target tree with a lower state and seal the
// difference as a patch image (see patch_builder.h).
#include "patch_builder.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cpus.h"
#include "delta_internal.h"
#include "format.h"
#include "fsverity.h"
#include "output_file.h"

namespace cryptex {

using namespace format;

Result<LowerIdentity> LowerIdentityOf(const View& lower) {
  const std::vector<const Image*> layers = lower.layers();
  if (layers.empty()) return Status::InvalidArgument("lower state has no base image");
  LowerIdentity id;
  id.base_root = layers[0]->superblock().root_hash;
  id.base_name = layers[0]->manifest().name;
  id.base_version = layers[0]->manifest().version;
  for (size_t i = 1; i < layers.size(); ++i) id.patch_ids.push_back(layers[i]->manifest().patch_id);
  return id;
}

Result<PatchTarget> ScanPatchTarget(const std::string& dir) {
  PatchTarget t;
  CX_ASSIGN_OR_RETURN(t.tree, ScanDirectory(dir));
  return t;
}

Result<PatchTarget> PatchTargetFromView(const View& view) {
  PatchTarget t;
  auto& nodes = t.tree.nodes;
  CX_ASSIGN_OR_RETURN(InodeInfo root, view.GetAttr(view.root()));
  std::unordered_map<uint64_t, uint32_t> first_of;  // non-directory node -> first tree index
  auto fill = [&](SourceNode& n, const InodeInfo& in, uint64_t node) -> Status {
    n.mode = in.mode;
    n.uid = in.uid;
    n.gid = in.gid;
    n.size = in.size;
    n.mtime_sec = in.mtime_sec;
    n.mtime_nsec = in.mtime_nsec;
    if (S_ISCHR(in.mode) || S_ISBLK(in.mode)) n.rdev = in.rdev;
    if (in.is_symlink()) {
      CX_ASSIGN_OR_RETURN(n.symlink_target, view.ReadLink(node));
    }
    CX_ASSIGN_OR_RETURN(std::vector<Xattr> xs, view.ListXattrs(node));
    for (auto& x : xs) n.xattrs.emplace_back(std::move(x.name), std::move(x.value));
    std::sort(n.xattrs.begin(), n.xattrs.end());
    return Status::Ok();
  };
  nodes.emplace_back();
  CX_RETURN_IF_ERROR(fill(nodes[0], root, view.root()));
  t.view_nodes.push_back(view.root());
  t.digests.emplace_back();
  // Breadth first: a directory's children are appended together, after it.
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (!S_ISDIR(nodes[i].mode)) continue;
    std::vector<DirEntry> entries;
    CX_RETURN_IF_ERROR(view.ReadDir(t.view_nodes[i], 0, [&](const DirEntry& e, uint64_t) {
      entries.push_back(e);
      return true;
    }));
    for (const DirEntry& e : entries) {
      if (nodes.size() >= 0xFFFFFFF0u) return Status::BadSource("target image: too many entries");
      const auto idx = static_cast<uint32_t>(nodes.size());
      CX_ASSIGN_OR_RETURN(InodeInfo in, view.GetAttr(e.ino));
      SourceNode n;
      n.name = e.name;
      n.parent = i;
      Digest digest{};
      auto [it, inserted] =
          in.is_dir() ? std::pair{first_of.end(), true} : first_of.try_emplace(e.ino, idx);
      if (!inserted) {
        n.hardlink_of = it->second;
        n.mode = in.mode;
      } else {
        CX_RETURN_IF_ERROR(fill(n, in, e.ino));
        if (in.is_reg()) {
          digest = in.digest;
          t.tree.total_file_bytes += in.size;
          ++t.tree.regular_files;
        }
      }
      nodes[i].children.push_back(idx);
      nodes.push_back(std::move(n));
      t.view_nodes.push_back(e.ino);
      t.digests.push_back(digest);
    }
  }
  t.view = &view;
  return t;
}

namespace {

// A tree with what the comparison needs: relative paths, hard-link groups
// and content digests.
struct Flat {
  const SourceTree* tree = nullptr;
  std::vector<std::string> rel;       // '/'-joined path from the root ("" for it)
  std::vector<uint32_t> primary;      // the node carrying the attributes of i's inode
  std::vector<uint32_t> group_count;  // per primary: names of its inode
  // Per primary with several names: the sorted relative paths of all of them.
  std::unordered_map<uint32_t, std::vector<std::string>> group_paths;
  std::vector<Digest> digest;   // per primary regular file
  std::vector<uint64_t> below;  // per directory: nodes in its subtree (itself included)
  std::vector<char> has_links;  // per node: a multi-name inode in its subtree

  const SourceNode& attrs(uint32_t i) const { return tree->nodes[primary[i]]; }
  const SourceNode& node(uint32_t i) const { return tree->nodes[i]; }
};

Flat Flatten(const SourceTree& tree, std::vector<Digest> digests) {
  Flat f;
  f.tree = &tree;
  const size_t n = tree.nodes.size();
  f.rel.resize(n);
  f.primary.resize(n);
  f.group_count.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const SourceNode& s = tree.nodes[i];
    if (i > 0) f.rel[i] = s.parent == 0 ? s.name : f.rel[s.parent] + "/" + s.name;
    f.primary[i] =
        s.hardlink_of >= 0 ? static_cast<uint32_t>(s.hardlink_of) : static_cast<uint32_t>(i);
    ++f.group_count[f.primary[i]];
  }
  for (size_t i = 0; i < n; ++i) {
    if (f.group_count[f.primary[i]] > 1) f.group_paths[f.primary[i]].push_back(f.rel[i]);
  }
  for (auto& [p, paths] : f.group_paths) std::sort(paths.begin(), paths.end());
  f.digest = std::move(digests);
  f.digest.resize(n);
  f.below.assign(n, 1);
  f.has_links.assign(n, 0);
  for (size_t i = n; i-- > 1;) {  // children after parents: fold bottom up
    const SourceNode& s = tree.nodes[i];
    if (f.group_count[f.primary[i]] > 1) f.has_links[i] = 1;
    f.below[s.parent] += f.below[i];
    f.has_links[s.parent] |= f.has_links[i];
  }
  return f;
}

bool SameGroup(const Flat& t, uint32_t ti, const Flat& l, uint32_t li) {
  const bool tmulti = t.group_count[t.primary[ti]] > 1, lmulti = l.group_count[l.primary[li]] > 1;
  if (!tmulti && !lmulti) return true;  // both {this path}
  if (tmulti != lmulti) return false;
  return t.group_paths.at(t.primary[ti]) == l.group_paths.at(l.primary[li]);
}

// Attributes a directory carries: type, permissions, owner, time, xattrs.
bool SameAttrs(const SourceNode& a, const SourceNode& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime_sec == b.mtime_sec &&
         a.mtime_nsec == b.mtime_nsec && a.xattrs == b.xattrs;
}

// The content of a non-directory: the same type assumed.
bool SameContent(const Flat& t, uint32_t ti, const Flat& l, uint32_t li) {
  const SourceNode& a = t.attrs(ti);
  const SourceNode& b = l.attrs(li);
  if ((a.mode & S_IFMT) != (b.mode & S_IFMT)) return false;
  if (S_ISREG(a.mode))
    return a.size == b.size && t.digest[t.primary[ti]] == l.digest[l.primary[li]];
  if (S_ISLNK(a.mode)) return a.symlink_target == b.symlink_target;
  if (S_ISCHR(a.mode) || S_ISBLK(a.mode)) return a.rdev == b.rdev;
  return true;
}

// A non-directory target node unchanged from the lower node at its path.
bool SameLeaf(const Flat& t, uint32_t ti, const Flat& l, uint32_t li) {
  return SameAttrs(t.attrs(ti), l.attrs(li)) && SameContent(t, ti, l, li) &&
         SameGroup(t, ti, l, li);
}

// One node of the patch tree being planned.
struct PlanNode {
  std::string name;
  int64_t target = -1;  // target node; -1 for a whiteout
  bool opaque = false;
  std::vector<uint32_t> children;  // plan indices, in name order
};

// Plans the patch tree: which target nodes it carries, where whiteouts go,
// which directories are opaque.
class Planner {
 public:
  Planner(const Flat& t, const Flat& l) : t_(t), l_(l) {}

  // Plan index 0 is the root. Empty (no node but the root, root attributes
  // unchanged) when the trees are equal: *changed false.
  std::vector<PlanNode> Plan(bool* changed) {
    plan_.clear();
    plan_.push_back(PlanNode{"", 0, false, {}});
    const bool below = DiffDir(0, 0, 0).differs;
    *changed = below || !SameAttrs(t_.attrs(0), l_.attrs(0));
    return std::move(plan_);
  }

 private:
  uint32_t Add(std::string name, int64_t target) {
    plan_.push_back(PlanNode{std::move(name), target, false, {}});
    return static_cast<uint32_t>(plan_.size() - 1);
  }

  // Adds plan node `child` to `parent`'s entries. (A function, so that the
  // child is made, reallocating plan_, before plan_[parent] is looked up.)
  void Append(uint32_t parent, uint32_t child) { plan_[parent].children.push_back(child); }

  // Plan node for target node `ti` and everything below it.
  uint32_t AddFull(uint32_t ti, bool opaque) {
    const uint32_t p = Add(t_.node(ti).name, ti);
    plan_[p].opaque = opaque;
    if (S_ISDIR(t_.node(ti).mode)) {
      for (uint32_t c : t_.node(ti).children) {
        Append(p, AddFull(c, false));
      }
    }
    return p;
  }

  struct DirDiff {
    bool differs = false;  // anything below differs (or the directory became opaque)
    uint64_t nodes = 0;    // plan nodes below it
  };

  // Fills plan node `p` (target dir `ti`, lower dir `li`) with what differs
  // below it.
  DirDiff DiffDir(uint32_t p, uint32_t ti, uint32_t li) {
    const auto& tc = t_.node(ti).children;
    const auto& lc = l_.node(li).children;
    uint64_t removed = 0;  // lower names gone
    uint64_t merged = 0;   // plan nodes below p when merged
    size_t a = 0, b = 0;
    while (a < tc.size() || b < lc.size()) {
      const int cmp = a == tc.size()   ? 1
                      : b == lc.size() ? -1
                                       : t_.node(tc[a]).name.compare(l_.node(lc[b]).name);
      if (cmp > 0) {  // only in the lower state
        Append(p, Add(l_.node(lc[b]).name, -1));
        ++removed;
        ++merged;
        ++b;
        continue;
      }
      if (cmp < 0) {  // new
        Append(p, AddFull(tc[a], false));
        merged += t_.below[tc[a]];
        ++a;
        continue;
      }
      const uint32_t tn = tc[a++], ln = lc[b++];
      const bool tdir = S_ISDIR(t_.node(tn).mode), ldir = S_ISDIR(l_.node(ln).mode);
      if (tdir && ldir) {
        const uint32_t cp = Add(t_.node(tn).name, tn);
        const DirDiff below = DiffDir(cp, tn, ln);
        if (below.differs || !SameAttrs(t_.attrs(tn), l_.attrs(ln))) {
          Append(p, cp);
          merged += 1 + below.nodes;
        }
      } else if (tdir) {  // a directory replaces a non-directory: nothing to merge
        Append(p, AddFull(tn, true));
        merged += t_.below[tn];
      } else if (ldir || !SameLeaf(t_, tn, l_, ln)) {
        Append(p, Add(t_.node(tn).name, tn));
        ++merged;
      }
    }
    // Replacing the directory whole costs a node per target node below it;
    // merging, the nodes planned above (whiteouts included). Only worth it
    // when names were removed. A hard link below could not be copied (the
    // copy would be a new inode), and the root stays merged.
    const uint64_t whole = t_.below[ti] - 1;
    if (ti != 0 && removed > 0 && whole < merged && !t_.has_links[ti]) {
      plan_[p].children.clear();
      plan_[p].opaque = true;
      for (uint32_t c : tc) Append(p, AddFull(c, false));
      return {true, whole};
    }
    return {merged > 0, merged};
  }

  const Flat& t_;
  const Flat& l_;
  std::vector<PlanNode> plan_;
};

// A private copy of one file's bytes. A file of kScratchInMemoryBelow bytes
// or more is copied to an unnamed scratch file beside the patch being
// written (OutputFile, never committed: nothing is left behind), mapped
// read-only once written. Its pages are file pages: Release() drops them
// from the process and what is read again comes back from the page cache,
// so a large file need not stay resident while a delta is made from it. A
// smaller one is kept in memory (the files decided at once are bounded by
// their bytes, PatchAssembler::kPoolInputBytes), which spares a file
// creation, a write and page faults per file. Either way the bytes never
// change once complete (the file has no name, or, where the file system
// lacks O_TMPFILE, a temporary one beside the output), so they are exactly
// the bytes that were hashed on the way in, whatever happens to the file
// they were copied from.
class Scratch {
 public:
  static constexpr uint64_t kScratchInMemoryBelow = 2u << 20;

  // `beside`: the patch's output path; `what` names the copied file in
  // errors; `size`: the bytes that will be appended.
  static Result<std::unique_ptr<Scratch>> Create(const std::string& beside, std::string what,
                                                 uint64_t size) {
    auto s = std::unique_ptr<Scratch>(new Scratch(std::move(what)));
    if (size < kScratchInMemoryBelow) {
      s->memory_.reserve(static_cast<size_t>(size));
      return s;
    }
    auto f = OutputFile::Create(beside, 0600);
    if (!f.ok()) {
      return Status(f.status().code(), s->what_ + ": no scratch copy: " + f.status().message());
    }
    s->file_ = std::move(*f);
    return s;
  }
  ~Scratch() {
    if (map_) munmap(map_, size_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  Status Append(const void* p, size_t n) {
    if (done_) return Status::Internal(what_ + ": scratch copy appended to after mapping");
    if (!file_) {
      const auto* b = static_cast<const uint8_t*>(p);
      memory_.insert(memory_.end(), b, b + n);
      return Status::Ok();
    }
    Status st = file_->Append(p, n);
    if (!st.ok()) return Status(st.code(), what_ + ": scratch copy: " + st.message());
    return Status::Ok();
  }
  // Completes the copy (a file copy is mapped); Append() may not be called
  // after.
  Status Map() {
    done_ = true;
    if (!file_) return Status::Ok();
    size_ = file_->size();
    if (size_ == 0) return Status::Ok();
    void* m = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file_->fd(), 0);
    if (m == MAP_FAILED) return Status::FromErrno(errno, what_ + ": cannot map its scratch copy");
    map_ = m;
    return Status::Ok();
  }
  std::span<const uint8_t> bytes() const {
    if (!file_) return memory_;
    return {static_cast<const uint8_t*>(map_), size_};
  }
  // Drops the mapped pages from the process (never the bytes); nothing for
  // a copy in memory.
  void Release() const {
    if (map_) madvise(map_, size_, MADV_DONTNEED);
  }

 private:
  explicit Scratch(std::string what) : what_(std::move(what)) {}
  std::string what_;
  std::vector<uint8_t> memory_;  // the copy, when not in a file
  std::unique_ptr<OutputFile> file_;
  bool done_ = false;
  void* map_ = nullptr;
  size_t size_ = 0;
};

// Opens regular file `idx` of a directory target in directory `dfd` and
// checks that it is still a regular file of the size the scan saw (else
// kIOError naming it). The caller owns the fd.
Result<int> OpenTargetFile(const SourceTree& tree, uint32_t idx, int dfd) {
  const SourceNode& n = tree.nodes[idx];
  // O_NONBLOCK: a file replaced by a fifo since the scan must not hang.
  const int fd = openat(dfd, n.name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, tree.PathOf(idx) + ": cannot open");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return Status::FromErrno(e, tree.PathOf(idx));
  }
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != n.size) {
    close(fd);
    return Status::IOError(tree.PathOf(idx) + ": changed since the scan");
  }
  return fd;
}

// Reads target file `idx` from `fd` to its end through `buf`: its fs-verity
// digest, and its bytes appended to `copy` if set. kIOError if it is not
// the size the scan saw.
Result<Digest> HashTargetFile(const SourceTree& tree, uint32_t idx, int fd,
                              std::vector<uint8_t>& buf, Scratch* copy) {
  const uint64_t size = tree.nodes[idx].size;
  FsVerityHasher hasher;
  uint64_t total = 0;
  for (;;) {
    const ssize_t r = read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, tree.PathOf(idx) + ": read");
    if (r == 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(r));
    if (copy) CX_RETURN_IF_ERROR(copy->Append(buf.data(), static_cast<size_t>(r)));
    total += static_cast<uint64_t>(r);
  }
  if (total != size) {
    return Status::IOError(tree.PathOf(idx) + ": changed while it was read (" +
                           std::to_string(total) + " bytes, the scan saw " + std::to_string(size) +
                           ")");
  }
  return hasher.Final();
}

// The threads a patch is made with: PatchOptions::threads, 0 for every CPU
// it may use.
unsigned ThreadsOf(const PatchOptions& opts) {
  return opts.threads > 0 ? static_cast<unsigned>(opts.threads) : UsableCpus();
}

struct FdCloser {
  int fd;
  ~FdCloser() { close(fd); }
};

// Reads the regular files i of a directory target with want[i] (primary
// nodes), one at a time, and calls fn(i, digest, bytes): their fs-verity
// digest and a mapped scratch copy (beside `beside`, the output path) of
// exactly the bytes hashed. A file that is not the size the scan saw, or
// not a regular file any more, fails with kIOError naming it.
using TargetFileFn = std::function<Status(uint32_t, const Digest&, std::unique_ptr<const Scratch>)>;
Status ReadDirTarget(const SourceTree& tree, const std::vector<char>& want,
                     const std::string& beside, const TargetFileFn& fn) {
  uint64_t resolved = 0;
  std::vector<uint8_t> buf(1 << 20);
  return WalkSourceDirs(
      tree,
      [&](uint32_t dir, int dfd) -> Status {
        for (uint32_t idx : tree.nodes[dir].children) {
          if (!want[idx]) continue;
          CX_ASSIGN_OR_RETURN(const int fd, OpenTargetFile(tree, idx, dfd));
          const FdCloser closer{fd};
          CX_ASSIGN_OR_RETURN(std::unique_ptr<Scratch> copy,
                              Scratch::Create(beside, tree.PathOf(idx), tree.nodes[idx].size));
          CX_ASSIGN_OR_RETURN(const Digest d, HashTargetFile(tree, idx, fd, buf, copy.get()));
          CX_RETURN_IF_ERROR(copy->Map());
          CX_RETURN_IF_ERROR(fn(idx, d, std::move(copy)));
        }
        return Status::Ok();
      },
      &resolved);
}

// The fs-verity digest of every regular file i of a directory target with
// want[i], into (*digests)[i], hashed on `threads` threads: what decides
// which files changed, so every file of the tree is read. Files are opened
// here, in tree order (a directory's fd lives only while it is walked), up
// to kBatch at a time, and the batch is read and hashed in parallel. Errors
// are ReadDirTarget's; the first in tree order wins.
Status DigestDirTarget(const SourceTree& tree, const std::vector<char>& want, unsigned threads,
                       std::vector<Digest>* digests) {
  constexpr size_t kBatch = 64;
  uint64_t resolved = 0;
  std::vector<std::vector<uint8_t>> bufs(std::max(threads, 1u));
  std::vector<std::pair<uint32_t, int>> batch;  // node, fd
  std::vector<Status> errors;
  auto run = [&]() -> Status {
    errors.assign(batch.size(), Status::Ok());
    delta::ParallelFor(
        batch.size(), static_cast<unsigned>(bufs.size()), [&](unsigned w, uint64_t i) {
          auto& buf = bufs[w];
          if (buf.empty()) buf.resize(1 << 20);
          auto d = HashTargetFile(tree, batch[i].first, batch[i].second, buf, nullptr);
          if (d.ok()) {
            (*digests)[batch[i].first] = *d;
          } else {
            errors[i] = d.status();
          }
        });
    for (const auto& [idx, fd] : batch) close(fd);
    batch.clear();
    for (Status& st : errors) CX_RETURN_IF_ERROR(st);
    return Status::Ok();
  };
  Status st = WalkSourceDirs(
      tree,
      [&](uint32_t dir, int dfd) -> Status {
        for (uint32_t idx : tree.nodes[dir].children) {
          if (!want[idx]) continue;
          auto fd = OpenTargetFile(tree, idx, dfd);
          if (!fd.ok()) {
            Status ran = run();  // the files before it fail first
            return ran.ok() ? fd.status() : ran;
          }
          batch.emplace_back(idx, *fd);
          if (batch.size() == kBatch) CX_RETURN_IF_ERROR(run());
        }
        return Status::Ok();
      },
      &resolved);
  // Closes what is open, whatever happened; the files still open come
  // before whatever stopped the walk.
  Status last = run();
  return last.ok() ? st : last;
}

// A mapped scratch copy (beside `beside`) of regular file `node` of `view`,
// `size` bytes, and, when `hasher` is set, its bytes hashed on the way.
Result<std::unique_ptr<const Scratch>> CopyViewFile(const View& view, uint64_t node, uint64_t size,
                                                    const std::string& what,
                                                    const std::string& beside,
                                                    FsVerityHasher* hasher) {
  CX_ASSIGN_OR_RETURN(std::unique_ptr<Scratch> copy, Scratch::Create(beside, what, size));
  std::vector<uint8_t> buf(std::min<uint64_t>(size, 1 << 20));
  for (uint64_t off = 0; off < size;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    CX_ASSIGN_OR_RETURN(size_t n, view.Read(node, off, std::span<uint8_t>(buf.data(), want)));
    if (n == 0) return Status::Corruption(what + ": shorter than its size");
    if (hasher) hasher->Update(buf.data(), n);
    CX_RETURN_IF_ERROR(copy->Append(buf.data(), n));
    off += n;
  }
  CX_RETURN_IF_ERROR(copy->Map());
  return std::unique_ptr<const Scratch>(std::move(copy));
}

// Whether the builder would store more than `limit` bytes for `data` as a
// file's data: each chunk of 2^chunk_log2 bytes compressed on its own with
// zstd at `level`, kept as is when that is not smaller (builder.cc).
// Stops as soon as the sum passes `limit`, so a file whose delta is small
// costs little; `release` is called every kDeltaReleaseEvery bytes read.
// The first chunk is tried at zstd's fastest level first: when even that
// stores over kFastMargin times `limit`, `level` would store more than
// `limit` too (level 9 gains some tens of percent on level 1, not a factor
// of 4), and the slow compression is skipped. That is the usual case, a
// delta of a few hundred bytes against a file of tens of KiB: a 128 KiB
// chunk costs about 0.2 ms at level 1 against 2-3 ms at level 9. Its first
// kFastPrefix bytes are tried before it: a 4 KiB prefix that stores over
// kFastMargin times `limit` is enough (a chunk stores more than its prefix),
// and for libc6's 275 files that was the case 259 times (13 needed the
// chunk, 3 the slow level).
bool DataStoresMoreThan(std::span<const uint8_t> data, int level, uint32_t chunk_log2,
                        uint64_t limit, const std::function<void()>& release) {
  if (data.size() <= limit) return false;
  constexpr uint64_t kFastMargin = 4;
  struct CCtxDeleter {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  const size_t chunk = size_t{1} << chunk_log2;
  std::vector<uint8_t> out(ZSTD_compressBound(chunk));
  if (cctx && level > 1 && limit <= UINT64_MAX / kFastMargin) {
    constexpr size_t kFastPrefix = 4096;
    const size_t whole = std::min(chunk, data.size());
    for (const size_t n : {std::min(kFastPrefix, whole), whole}) {
      const size_t r = ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), data.data(), n, 1);
      if (!ZSTD_isError(r) && std::min(r, n) > kFastMargin * limit) return true;
      if (n == whole) break;
    }
  }
  uint64_t stored = 0, since_release = 0;
  for (size_t off = 0; off < data.size(); off += chunk) {
    const size_t n = std::min(chunk, data.size() - off);
    const size_t r =
        cctx ? ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), data.data() + off, n, level)
             : n;
    stored += ZSTD_isError(r) ? n : std::min(r, n);
    if (stored > limit) return true;
    since_release += n;
    if (release && since_release >= kDeltaReleaseEvery) {
      since_release = 0;
      release();
    }
  }
  return false;
}

// Runs jobs on up to `workers` threads. Each job has a cost (e.g. the bytes
// it works on); Submit blocks while 4 jobs per thread are submitted and not
// yet finished, or while those would cost more than `max_cost` with it (a
// job alone may cost more). With no thread (workers 0, or none could be
// started) Submit runs the job itself. The destructor waits for every job
// submitted.
class JobPool {
 public:
  JobPool(unsigned workers, uint64_t max_cost) : max_cost_(max_cost) {
    for (unsigned i = 0; i < workers; ++i) {
      try {
        threads_.emplace_back([this] { Work(); });
      } catch (const std::system_error&) {
        break;  // fewer threads
      }
    }
  }
  ~JobPool() {
    {
      std::unique_lock lock(mu_);
      idle_.wait(lock, [&] { return pending_ == 0; });
      stop_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
  }
  JobPool(const JobPool&) = delete;
  JobPool& operator=(const JobPool&) = delete;

  void Submit(uint64_t cost, std::function<void()> job) {
    if (threads_.empty()) return job();
    {
      std::unique_lock lock(mu_);
      idle_.wait(lock, [&] {
        return pending_ == 0 ||
               (pending_ < 4 * threads_.size() && pending_cost_ + cost <= max_cost_);
      });
      ++pending_;
      pending_cost_ += cost;
      queue_.push_back({cost, std::move(job)});
    }
    work_.notify_one();
  }
  // Returns when every job submitted has finished.
  void Wait() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void Work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job.run();
      {
        std::lock_guard lock(mu_);
        --pending_;
        pending_cost_ -= job.cost;
      }
      idle_.notify_all();
    }
  }

  struct Job {
    uint64_t cost = 0;
    std::function<void()> run;
  };
  const uint64_t max_cost_;
  std::mutex mu_;
  std::condition_variable work_;  // a job queued, or stop
  std::condition_variable idle_;  // a job finished
  std::deque<Job> queue_;
  size_t pending_ = 0;  // queued or running
  uint64_t pending_cost_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The patch being assembled: the plan laid out as a SourceTree.
class PatchAssembler {
 public:
  // `lower_nodes`: the view node of each node of `l`.
  PatchAssembler(const Flat& t, const Flat& l, const std::vector<uint64_t>& lower_nodes,
                 const PatchTarget& target, const View& lower, const PatchOptions& opts,
                 PatchStats* stats)
      : t_(t),
        l_(l),
        lower_nodes_(lower_nodes),
        target_(target),
        lower_(lower),
        opts_(opts),
        stats_(stats) {
    for (size_t i = 0; i < l_.rel.size(); ++i) {
      const SourceNode& n = l_.node(static_cast<uint32_t>(i));
      lower_by_path_.emplace(l_.rel[i], static_cast<uint32_t>(i));
      if (!S_ISREG(n.mode)) continue;
      const uint32_t p = l_.primary[i];
      lower_by_digest_.try_emplace(l_.digest[p], static_cast<uint32_t>(i));
      lower_by_name_.try_emplace(n.name, static_cast<uint32_t>(i));
    }
  }

  Result<SourceTree> Assemble(const std::vector<PlanNode>& plan) {
    CX_RETURN_IF_ERROR(Lay(plan));
    CX_RETURN_IF_ERROR(CheckGroups());
    CX_RETURN_IF_ERROR(Count());
    CX_RETURN_IF_ERROR(Ship());
    std::sort(stats_->files.begin(), stats_->files.end(),
              [](const ShippedFile& a, const ShippedFile& b) { return a.path < b.path; });
    return std::move(out_);
  }

 private:
  // Breadth first, as the builder expects (parents before children, a
  // directory's children together).
  Status Lay(const std::vector<PlanNode>& plan) {
    std::vector<uint32_t> plan_of;                  // patch node -> plan node
    std::unordered_map<uint32_t, uint32_t> placed;  // target primary -> patch node
    out_.nodes.clear();
    // Files shipped as data are read from a directory target by the builder;
    // an image target's are held in memory (SourceNode::content).
    out_.root_path = target_.view ? "" : t_.tree->root_path;
    out_.nodes.emplace_back();
    plan_of.push_back(0);
    target_of_.push_back(0);
    for (uint32_t i = 0; i < out_.nodes.size(); ++i) {
      const PlanNode& pn = plan[plan_of[i]];
      if (pn.target >= 0) {
        const auto ti = static_cast<uint32_t>(pn.target);
        SourceNode& n = out_.nodes[i];
        const SourceNode& a = t_.attrs(ti);
        n.mode = a.mode;
        n.uid = a.uid;
        n.gid = a.gid;
        n.size = a.size;
        n.mtime_sec = a.mtime_sec;
        n.mtime_nsec = a.mtime_nsec;
        n.rdev = a.rdev;
        n.symlink_target = a.symlink_target;
        n.xattrs = a.xattrs;
        // For the builder's checks when it reads a directory target again.
        n.dev = a.dev;
        n.ino = a.ino;
        n.ctime_sec = a.ctime_sec;
        n.ctime_nsec = a.ctime_nsec;
        if (pn.opaque) n.flags |= kInodeOpaque;
        if (!S_ISDIR(a.mode)) {
          auto [it, inserted] = placed.try_emplace(t_.primary[ti], i);
          if (!inserted) n.hardlink_of = it->second;
        }
      } else {
        SourceNode& n = out_.nodes[i];
        n.mode = S_IFCHR;
        n.flags = kInodeWhiteout;
      }
      for (uint32_t c : pn.children) {
        const auto idx = static_cast<uint32_t>(out_.nodes.size());
        out_.nodes[i].children.push_back(idx);
        SourceNode child;
        child.name = plan[c].name;
        child.parent = i;
        out_.nodes.push_back(std::move(child));
        plan_of.push_back(c);
        target_of_.push_back(plan[c].target);
      }
    }
    return Status::Ok();
  }

  // Every name of an inode the patch carries must be in the patch: a name
  // left in the lower state would keep the old inode.
  Status CheckGroups() const {
    std::unordered_map<uint32_t, uint32_t> names;  // target primary -> names in the patch
    for (size_t i = 1; i < out_.nodes.size(); ++i) {
      if (target_of_[i] < 0 || S_ISDIR(out_.nodes[i].mode)) continue;
      ++names[t_.primary[static_cast<uint32_t>(target_of_[i])]];
    }
    for (const auto& [p, count] : names) {
      if (count != t_.group_count[p]) {
        return Status::Internal(t_.rel[p] + ": " + std::to_string(count) + " of " +
                                std::to_string(t_.group_count[p]) +
                                " hard-link names planned into the patch");
      }
    }
    return Status::Ok();
  }

  const uint32_t* LowerAt(const std::string& rel) const {
    auto it = lower_by_path_.find(rel);
    return it == lower_by_path_.end() ? nullptr : &it->second;
  }

  Status Count() {
    for (size_t i = 0; i < out_.nodes.size(); ++i) {  // the root too: its attributes
      if (target_of_[i] < 0) {
        ++stats_->removed;
        continue;
      }
      if (out_.nodes[i].flags & kInodeOpaque) ++stats_->opaque_dirs;
      const auto ti = static_cast<uint32_t>(target_of_[i]);
      const uint32_t* li = LowerAt(t_.rel[ti]);
      if (!li) {
        ++stats_->added;
        continue;
      }
      const bool tdir = S_ISDIR(t_.node(ti).mode), ldir = S_ISDIR(l_.node(*li).mode);
      if (tdir && ldir) {
        if (!SameAttrs(t_.attrs(ti), l_.attrs(*li))) {
          ++stats_->changed;
          ++stats_->metadata_only;
        }
      } else if (tdir || ldir) {
        ++stats_->changed;
      } else if (!SameLeaf(t_, ti, l_, *li)) {
        ++stats_->changed;
        if (SameContent(t_, ti, l_, *li)) ++stats_->metadata_only;
      }
    }
    return Status::Ok();
  }

  // Decides how each regular file is shipped. Files are read one at a time;
  // what a directory target ships as data the builder reads again from the
  // directory, so memory holds one file (and its lower file) at a time, plus
  // the deltas kept.
  Status Ship() {
    std::vector<char> need(t_.rel.size(), 0);  // target primaries: read to decide
    for (size_t i = 1; i < out_.nodes.size(); ++i) {
      SourceNode& n = out_.nodes[i];
      if (target_of_[i] < 0 || !S_ISREG(n.mode) || n.hardlink_of >= 0) continue;
      const auto ti = static_cast<uint32_t>(target_of_[i]);
      const Digest& d = t_.digest[t_.primary[ti]];
      n.content_digest = d;
      node_of_[t_.primary[ti]] = static_cast<uint32_t>(i);
      if (n.size > 0) {
        const uint32_t* same = LowerAt(t_.rel[ti]);
        uint32_t src = UINT32_MAX;
        if (same && S_ISREG(l_.node(*same).mode) && l_.digest[l_.primary[*same]] == d) {
          src = *same;
        } else if (auto it = lower_by_digest_.find(d); it != lower_by_digest_.end()) {
          src = it->second;
        }
        if (src != UINT32_MAX && l_.rel[src].size() <= kMaxSourcePathLen) {
          n.flags |= kInodeLowerContent;
          n.source_path = l_.rel[src];
          stats_->files.push_back({t_.rel[ti], Shipped::kLowerContent, n.source_path, n.size, 0});
          continue;
        }
      }
      if (target_.view || DeltaBase(ti) != UINT32_MAX) {
        need[t_.primary[ti]] = 1;
      } else {
        ShipData(n, ti, nullptr);  // read by the builder from the directory
      }
    }
    // Files are read here, one at a time and in order; small files' deltas
    // are made on the pool, one file per thread, large files' here with
    // every thread on their segments. Each file's outcome depends on its
    // bytes alone, so the patch does not depend on the threads.
    const unsigned threads = ThreadsOf(opts_);
    JobPool pool(threads > 1 ? threads : 0, kPoolInputBytes);
    Status read;
    if (target_.view) {
      for (uint32_t p = 0; p < need.size() && read.ok(); ++p) {
        if (!need[p]) continue;
        read = [&]() -> Status {
          FsVerityHasher hasher;
          CX_ASSIGN_OR_RETURN(auto copy,
                              CopyViewFile(*target_.view, target_.view_nodes[p], t_.node(p).size,
                                           "target /" + t_.rel[p], opts_.output_path, &hasher));
          if (hasher.Final() != t_.digest[p]) {
            return Status::Corruption("target /" + t_.rel[p] +
                                      ": content does not match its digest");
          }
          return ShipOne(p, std::move(copy), &pool);
        }();
      }
    } else {
      read = ReadDirTarget(
          *t_.tree, need, opts_.output_path,
          [&](uint32_t p, const Digest& d, std::unique_ptr<const Scratch> copy) {
            if (d != t_.digest[p]) {
              return Status::IOError(t_.tree->PathOf(p) + ": changed while the patch was built");
            }
            return ShipOne(p, std::move(copy), &pool);
          });
    }
    if (!read.ok()) Failed(files_read_, read);
    pool.Wait();
    // The first failure in file order: every file before it was tried.
    return first_error_ ? first_error_->second : Status::Ok();
  }

  // The lower file a delta for target node `ti` is made against: the lower
  // regular file at the same path, else one with the same name; UINT32_MAX
  // for none (or deltas off, or an empty file).
  uint32_t DeltaBase(uint32_t ti) const {
    if (!opts_.use_deltas || t_.attrs(ti).size == 0) return UINT32_MAX;
    uint32_t base = UINT32_MAX;
    if (const uint32_t* same = LowerAt(t_.rel[ti]); same && S_ISREG(l_.node(*same).mode)) {
      base = *same;
    } else if (auto it = lower_by_name_.find(t_.node(ti).name); it != lower_by_name_.end()) {
      base = it->second;
    }
    if (base == UINT32_MAX || l_.attrs(base).size == 0 || l_.rel[base].size() > kMaxSourcePathLen) {
      return UINT32_MAX;
    }
    return base;
  }

  // Input bytes (target and lower files) of the files being decided on the
  // pool at once: what bounds its memory (the encoder's suffix array takes
  // 4 bytes per lower byte, besides its inputs).
  static constexpr uint64_t kPoolInputBytes = 16u << 20;
  // Input bytes from which a file decided on the pool encodes its segments
  // with every thread.
  static constexpr uint64_t kSegmentThreadsFrom = 1u << 20;

  // One target file to decide: its bytes, its delta base and lower bytes.
  struct FileJob {
    uint32_t p = 0;      // target primary node
    uint64_t order = 0;  // in the order files are read
    uint32_t base = 0;   // lower node of the delta base; UINT32_MAX: none
    std::unique_ptr<const Scratch> data, lower;
  };

  // Ships target file `p` (a primary node), whose bytes are `data` (a copy
  // whose digest was checked): a delta when one beats what the data would
  // store, else the data. The lower file is copied out of the lower state
  // here, in file order; the delta is made on `pool` for a small pair, here
  // (with every thread) for a large one. Both copies' pages are released as
  // the encoder goes, so resident memory stays small whatever the files'
  // size.
  Status ShipOne(uint32_t p, std::unique_ptr<const Scratch> data, JobPool* pool) {
    auto job = std::make_shared<FileJob>();
    job->p = p;
    job->order = files_read_++;
    job->base = DeltaBase(p);
    job->data = std::move(data);
    if (job->data->bytes().size() != t_.node(p).size) {
      return Status::Internal(t_.rel[p] + ": size changed");
    }
    if (job->base != UINT32_MAX) {
      const uint32_t lp = l_.primary[job->base];
      CX_ASSIGN_OR_RETURN(job->lower,
                          CopyViewFile(lower_, lower_nodes_[lp], l_.node(lp).size,
                                       "lower /" + l_.rel[job->base], opts_.output_path, nullptr));
    }
    const uint64_t bytes =
        job->data->bytes().size() + (job->lower ? job->lower->bytes().size() : 0);
    if (bytes >= kDeltaReleaseEvery) return Decide(*job, opts_.threads);
    pool->Submit(bytes, [this, job, bytes] {
      {
        std::lock_guard lock(mu_);
        if (first_error_ && first_error_->first < job->order) return;  // moot
      }
      // A large pair's segments are encoded on every core too: the pool's
      // other threads may have nothing left to do (a patch of one or two
      // large files), and the output does not depend on threads.
      const int threads = bytes >= kSegmentThreadsFrom ? opts_.threads : 1;
      if (Status st = Decide(*job, threads); !st.ok()) Failed(job->order, st);
    });
    return Status::Ok();
  }

  // Records the failure of the file read `order`th; the first in order wins.
  void Failed(uint64_t order, const Status& st) {
    std::lock_guard lock(mu_);
    if (!first_error_ || order < first_error_->first) first_error_.emplace(order, st);
  }

  // Makes the delta of `job` (if it has a base) with `threads` threads and
  // ships the file: as the delta when smaller than what its data would
  // store, else as data. Safe to run on several threads at once.
  Status Decide(const FileJob& job, int threads) {
    const Scratch& data = *job.data;
    std::optional<std::vector<uint8_t>> delta;
    if (job.base != UINT32_MAX) {
      DeltaOptions dopts = opts_.delta;
      dopts.threads = threads;
      dopts.release_inputs = [&] {
        data.Release();
        job.lower->Release();
      };
      CX_ASSIGN_OR_RETURN(std::vector<uint8_t> d,
                          EncodeDelta(job.lower->bytes(), data.bytes(), dopts));
      job.lower->Release();
      data.Release();
      if (DataStoresMoreThan(data.bytes(), opts_.zstd_level, opts_.chunk_log2, d.size(),
                             [&] { data.Release(); })) {
        delta = std::move(d);
      }
      data.Release();
    }
    // A directory target's file shipped as data is read again by the
    // builder; an image target's bytes come from memory.
    std::shared_ptr<const std::string> content;
    if (delta) {
      content = std::make_shared<const std::string>(delta->begin(), delta->end());
    } else if (target_.view) {
      content = std::make_shared<const std::string>(data.bytes().begin(), data.bytes().end());
    }
    std::lock_guard lock(mu_);
    SourceNode& n = out_.nodes[node_of_.at(job.p)];
    if (!delta) {
      ShipData(n, job.p, std::move(content));
      return Status::Ok();
    }
    n.flags |= kInodeDelta;
    n.source_path = l_.rel[job.base];
    n.content = std::move(content);
    stats_->files.push_back({t_.rel[job.p], Shipped::kDelta, n.source_path, n.size, delta->size()});
    stats_->stored_file_bytes += delta->size();
    return Status::Ok();
  }

  void ShipData(SourceNode& n, uint32_t ti, std::shared_ptr<const std::string> data) {
    stats_->files.push_back({t_.rel[ti], Shipped::kData, "", n.size, n.size});
    stats_->stored_file_bytes += n.size;
    n.content = std::move(data);
  }

  const Flat& t_;
  const Flat& l_;
  const std::vector<uint64_t>& lower_nodes_;
  const PatchTarget& target_;
  const View& lower_;
  const PatchOptions& opts_;
  PatchStats* stats_;
  SourceTree out_;
  std::vector<int64_t> target_of_;  // per patch node: target node, -1 for a whiteout
  std::unordered_map<uint32_t, uint32_t> node_of_;  // target primary file -> patch node
  std::unordered_map<std::string, uint32_t> lower_by_path_;
  std::map<Digest, uint32_t> lower_by_digest_;  // first lower regular file with the digest
  std::unordered_map<std::string, uint32_t> lower_by_name_;
  uint64_t files_read_ = 0;  // Ship: target files read so far
  // Ship, while files are decided on several threads: guards out_.nodes'
  // file fields, stats_->files, stats_->stored_file_bytes and first_error_.
  std::mutex mu_;
  std::optional<std::pair<uint64_t, Status>> first_error_;  // file order, failure
};

Status CheckOptions(const LowerIdentity& id, const PatchOptions& opts, Manifest* m) {
  if (!opts.key) return Status::InvalidArgument("no signing key");
  if (opts.output_path.empty()) return Status::InvalidArgument("no output path");
  if (struct stat st; lstat(opts.output_path.c_str(), &st) == 0) {
    return Status::Exists(opts.output_path + ": already exists");
  }
  *m = opts.manifest;
  if (m->patch_id.empty()) return Status::InvalidArgument("a patch needs an id");
  for (const auto& p : id.patch_ids) {
    if (p == m->patch_id) {
      return Status::InvalidArgument("patch id " + p + " is already in the lower state");
    }
  }
  if (m->name.empty()) m->name = id.base_name;
  if (m->version.empty()) m->version = id.base_version;
  m->base_root_digest = id.base_root;
  m->requires_patches = id.patch_ids;
  return m->Validate();
}

}  // namespace

Result<PatchStats> MakePatch(const View& lower, const LowerIdentity& id, const PatchTarget& target,
                             const PatchOptions& opts) {
  Manifest manifest;
  CX_RETURN_IF_ERROR(CheckOptions(id, opts, &manifest));
  CX_ASSIGN_OR_RETURN(PatchTarget low, PatchTargetFromView(lower));
  if (target.tree.nodes.empty() || !S_ISDIR(target.tree.nodes[0].mode)) {
    return Status::InvalidArgument("target has no root directory");
  }
  std::vector<Digest> tdigests = target.digests;
  if (!target.view) {
    // Every regular file's digest: what decides whether it changed.
    const size_t n = target.tree.nodes.size();
    std::vector<char> want(n, 0);
    for (size_t i = 0; i < n; ++i) {
      const SourceNode& s = target.tree.nodes[i];
      want[i] = S_ISREG(s.mode) && s.hardlink_of < 0;
    }
    tdigests.assign(n, Digest{});
    CX_RETURN_IF_ERROR(DigestDirTarget(target.tree, want, ThreadsOf(opts), &tdigests));
  }
  const Flat t = Flatten(target.tree, std::move(tdigests));
  const Flat l = Flatten(low.tree, low.digests);

  bool changed = false;
  const std::vector<PlanNode> plan = Planner(t, l).Plan(&changed);
  if (!changed) {
    return Status::InvalidArgument("the target is identical to the lower state: nothing to patch");
  }
  if (opts.after_digests) opts.after_digests();
  PatchStats stats;
  PatchAssembler assembler(t, l, low.view_nodes, target, lower, opts, &stats);
  CX_ASSIGN_OR_RETURN(SourceTree tree, assembler.Assemble(plan));

  BuildOptions b;
  b.output_path = opts.output_path;
  b.key = opts.key;
  b.manifest = std::move(manifest);
  b.kind = kKindPatch;
  b.compact = opts.compact;
  b.zstd_level = opts.zstd_level;
  b.chunk_log2 = opts.chunk_log2;
  b.threads = opts.threads;
  b.progress = opts.progress;
  b.after_source_read = opts.after_source_read;
  CX_ASSIGN_OR_RETURN(stats.build, WriteImage(tree, b));
  return stats;
}

}  // namespace cryptex
