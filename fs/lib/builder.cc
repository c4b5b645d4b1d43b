// WriteImage: content pipeline, metadata layout, tree and signature.
//
// Content is cut into jobs in inode order: a job is either one chunk of a
// large file or a "pack" of whole small files (smaller than a chunk). A batch
// of jobs is hashed and compressed in parallel, then committed strictly in job
// order, which keeps the output byte-identical whatever the thread count.
#include "builder.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "cpus.h"
#include "format.h"
#include "fsverity.h"
#include "merkle.h"
#include "output_file.h"
#include "records.h"
#include "superblock.h"

namespace cryptex {

using namespace format;

namespace {

constexpr uint32_t kHoleJob = 0xFFFFFFFFu;
constexpr size_t kInflightBytes = 64u << 20;

struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t v;
    std::memcpy(&v, d.data(), sizeof v);
    return v;
  }
};

struct Piece {
  uint32_t file;    // node index
  uint32_t offset;  // in job raw bytes
  uint32_t len;
  bool small = false;  // a whole small file (hashed on the main thread)
};

struct Job {
  uint32_t id = 0;
  bool pack = false;
  std::vector<uint8_t> raw;
  std::vector<Piece> pieces;
  // Results of the parallel stage.
  std::vector<uint8_t> stored;
  std::vector<Digest> leaves;  // chunk jobs: leaf hashes of the chunk
  Digest key{};
  bool zero = false;
  bool known_zero = false;  // chunk lies in a hole of the source file
  bool done = false;        // GUARDED_BY(Pipeline::mu)
};

struct PendingExtent {
  uint32_t job;  // or kHoleJob
  uint32_t offset;
};

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

// Reads exactly `len` bytes at `off` of a source file stat said has `size`
// bytes. A short read is a source problem (kIOError), never corruption.
Status ReadSource(int fd, uint8_t* buf, size_t len, uint64_t off, uint64_t size,
                  const std::function<std::string()>& path) {
  while (len > 0) {
    const ssize_t n = pread(fd, buf, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, path() + ": read at offset " + std::to_string(off));
    }
    if (n == 0) {
      return Status::IOError(path() + ": ends at offset " + std::to_string(off) +
                             " but stat reported " + std::to_string(size) +
                             " bytes: file changed while reading, or the size reported by stat "
                             "is not the file's size (not a regular on-disk file)");
    }
    buf += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

bool SameTime(const struct timespec& a, int64_t sec, uint32_t nsec) {
  return a.tv_sec == sec && static_cast<uint32_t>(a.tv_nsec) == nsec;
}

std::string TimeString(const struct timespec& t) {
  char ns[16];
  std::snprintf(ns, sizeof ns, "%09ld", static_cast<long>(t.tv_nsec));
  return std::to_string(t.tv_sec) + "." + ns;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

void ProcessJob(Job& j, int level) {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  if (!j.pack) {
    j.zero = j.known_zero || AllZero(j.raw.data(), j.raw.size());
    if (j.zero) {  // a hole: every leaf is the hash of a zero block
      static const Digest kZeroLeaf = [] {
        std::vector<uint8_t> z(kBlockSize, 0);
        return Sha256::Hash(z.data(), z.size());
      }();
      j.leaves.assign((j.raw.size() + kBlockSize - 1) / kBlockSize, kZeroLeaf);
      return;
    }
    j.leaves = LeafHashes(j.raw.data(), j.raw.size());
    Sha256 h;
    Le64 len;
    len.set(j.raw.size());
    h.Update(&len, sizeof len);
    h.Update(j.leaves.data(), j.leaves.size() * sizeof(Digest));
    j.key = h.Final();
  }
  j.stored.resize(ZSTD_compressBound(j.raw.size()));
  size_t n = ZSTD_compressCCtx(cctx.get(), j.stored.data(), j.stored.size(), j.raw.data(),
                               j.raw.size(), level);
  if (ZSTD_isError(n) || n >= j.raw.size()) {
    j.stored = j.raw;  // incompressible: stored as is
  } else {
    j.stored.resize(n);
  }
}

class ImageWriter {
 public:
  ImageWriter(const SourceTree& tree, const BuildOptions& opts) : tree_(tree), opts_(opts) {
    threads_ = opts.threads > 0 ? opts.threads : static_cast<int>(UsableCpus());
  }

  Result<BuildStats> Run() {
    if (opts_.key == nullptr) return Status::InvalidArgument("no signing key");
    if (opts_.chunk_log2 < kMinChunkLog2 || opts_.chunk_log2 > kMaxChunkLog2) {
      return Status::InvalidArgument("chunk size must be 2^12..2^20");
    }
    chunk_ = 1u << opts_.chunk_log2;
    if (opts_.zstd_level < 1 || opts_.zstd_level > ZSTD_maxCLevel()) {
      return Status::InvalidArgument("zstd level must be 1.." + std::to_string(ZSTD_maxCLevel()));
    }
    // Everything a reader would refuse is refused before anything is written.
    CX_RETURN_IF_ERROR(opts_.manifest.Validate());
    CX_RETURN_IF_ERROR(CheckTree());
    compact_ = opts_.compact && TablesBytesBound() <= kMaxPackedMetaBytes;
    CX_ASSIGN_OR_RETURN(out_, OutputFile::Create(opts_.output_path));
    CX_RETURN_IF_ERROR(WriteHeader());
    AssignInodes();
    StartWorkers();
    Status content = WriteContent();
    StopWorkers();
    CX_RETURN_IF_ERROR(content);
    if (opts_.progress) ReportProgress();
    CX_RETURN_IF_ERROR(WriteMetadata());
    CX_RETURN_IF_ERROR(WriteTreeAndSeal());
    CX_RETURN_IF_ERROR(out_->Commit());
    stats_.image_size = out_->size();
    return stats_;
  }

 private:
  // The reader's limits on the tree (GetInode, ReadDirent, ReadXattrNames,
  // and the directory depth), for trees not made by ScanDirectory too.
  Status CheckTree() const {
    const auto& nodes = tree_.nodes;
    if (nodes.empty() || !S_ISDIR(nodes[0].mode) || nodes[0].hardlink_of >= 0) {
      return Status::BadSource("source tree has no root directory");
    }
    if (nodes.size() >= 0xFFFFFFF0u) {
      return Status::BadSource(tree_.root_path + ": too many entries (" +
                               std::to_string(nodes.size()) + ")");
    }
    std::vector<uint32_t> depth(nodes.size(), 0);
    for (size_t i = 0; i < nodes.size(); ++i) {
      const SourceNode& n = nodes[i];
      auto path = [&] { return tree_.PathOf(static_cast<uint32_t>(i)); };
      if (i > 0 && (n.parent >= i || !S_ISDIR(nodes[n.parent].mode) ||
                    n.hardlink_of >= static_cast<int64_t>(i))) {
        return Status::BadSource(path() + ": malformed source tree");
      }
      if (i > 0) depth[i] = depth[n.parent] + 1;
      if (S_ISDIR(n.mode) && depth[i] > kMaxDirDepth) {
        return Status::BadSource(path().substr(0, 240) + "...: directories nested deeper than " +
                                 std::to_string(kMaxDirDepth) + " levels, the format limit");
      }
      if (n.hardlink_of >= 0) {
        if (S_ISDIR(n.mode)) return Status::BadSource(path() + ": hard-linked directory");
        continue;
      }
      if (Status st = CheckSourceNode(n, i == 0); !st.ok()) return st.Prefixed(path());
      if (EntryTypeFor(n.mode, n.flags) == 0 || n.mtime_nsec >= 1000000000u ||
          (n.flags & ~kInodeFlagsKnown) != 0 || (n.flags != 0 && opts_.kind != kKindPatch)) {
        return Status::BadSource(path() + ": file type, time or flags not representable");
      }
      if (n.is_sourced() &&
          (!S_ISREG(n.mode) || n.source_path.empty() || n.source_path.size() > kMaxSourcePathLen ||
           ((n.flags & kInodeLowerContent) && (n.flags & kInodeDelta)) ||
           ((n.flags & kInodeDelta) != 0) != (n.content != nullptr))) {
        return Status::BadSource(path() + ": malformed lower-content or delta node");
      }
      if (S_ISREG(n.mode) && ((n.size - 1) >> opts_.chunk_log2) + 1 > 0xFFFFFFFFull &&
          n.size != 0) {
        return Status::BadSource(path() + ": " + std::to_string(n.size) + " bytes need more than " +
                                 std::to_string(0xFFFFFFFFull) +
                                 " extents (the format limit) at chunk size " +
                                 std::to_string(chunk_) + "; use a larger chunk size");
      }
    }
    return Status::Ok();
  }

  // An upper bound of the table regions' bytes (inodes, dirents, extents,
  // xattrs, strings, frames), from the source tree alone: whether they fit
  // the compact layout's packed metadata is decided before writing.
  uint64_t TablesBytesBound() const {
    uint64_t n = 0;
    for (const SourceNode& node : tree_.nodes) {
      n += sizeof(DiskInode) + sizeof(DiskDirent) + node.name.size() + node.symlink_target.size() +
           node.source_path.size();
      for (const auto& [k, v] : node.xattrs) n += sizeof(DiskXattr) + k.size() + v.size();
      if (S_ISREG(node.mode)) {
        // One extent per chunk, and at most one frame per extent.
        n += ((node.size >> opts_.chunk_log2) + 1) * (sizeof(DiskExtent) + sizeof(DiskFrame));
      }
    }
    return n;
  }

  uint64_t HeaderSize() const { return compact_ ? sizeof(DiskHeader) : kBlockSize; }

  Status WriteHeader() {
    std::vector<uint8_t> block(HeaderSize(), 0);
    DiskHeader h;
    std::memset(&h, 0, sizeof h);
    std::memcpy(h.magic, kHeaderMagic, 8);
    h.format_version.set(kFormatVersion);
    std::memcpy(block.data(), &h, sizeof h);
    return out_->Append(block.data(), block.size());
  }

  void AssignInodes() {
    const auto& nodes = tree_.nodes;
    ino_.assign(nodes.size(), 0);
    uint32_t next = 1;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].hardlink_of >= 0) {
        ino_[i] = ino_[static_cast<size_t>(nodes[i].hardlink_of)];
      } else {
        ino_[i] = next++;
        primary_.push_back(static_cast<uint32_t>(i));
      }
    }
    nlink_.assign(primary_.size() + 1, 0);
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (S_ISDIR(nodes[i].mode)) {
        nlink_[ino_[i]] += 2;
        if (i != 0) nlink_[ino_[nodes[i].parent]] += 1;
      } else {
        nlink_[ino_[i]] += 1;
      }
    }
    file_extents_.assign(nodes.size(), {0, 0});
    digests_.assign(nodes.size(), Digest{});
  }

  // ---- content ------------------------------------------------------------

  // Reads the files directory by directory (WalkSourceDirs), each opened
  // relative to its directory: linear in the tree whatever its depth.
  // A tree with no root_path (made in memory, e.g. by the patch builder from
  // an image) must hold every file's bytes in SourceNode::content.
  Status WriteContent() {
    if (tree_.root_path.empty()) {
      for (uint32_t dir = 0; dir < tree_.nodes.size(); ++dir) {
        if (S_ISDIR(tree_.nodes[dir].mode)) CX_RETURN_IF_ERROR(AddFilesOf(dir, -1));
      }
    } else {
      CX_RETURN_IF_ERROR(WalkSourceDirs(
          tree_, [this](uint32_t dir, int dfd) { return AddFilesOf(dir, dfd); },
          &stats_.components_resolved));
    }
    CX_RETURN_IF_ERROR(ClosePack());
    while (!inflight_.empty()) CX_RETURN_IF_ERROR(CommitOldest());
    return Status::Ok();
  }

  // The regular files of directory `dir`, open as `dfd`.
  Status AddFilesOf(uint32_t dir, int dfd) {
    for (uint32_t idx : tree_.nodes[dir].children) {
      const SourceNode& n = tree_.nodes[idx];
      if (!S_ISREG(n.mode) || n.hardlink_of >= 0) continue;
      if (n.flags & kInodeLowerContent) {
        file_extents_[idx] = {static_cast<uint32_t>(extents_.size()), 0};  // no bytes stored
      } else if (n.content) {
        CX_RETURN_IF_ERROR(AddMemoryFile(idx));
      } else {
        CX_RETURN_IF_ERROR(AddFile(idx, dfd));
      }
      ++progress_.files_done;
    }
    return Status::Ok();
  }

  // Reads regular file `idx` (an entry of the directory open as `dfd`) into
  // jobs. The file must be the one scanned (same inode, size and mtime) and
  // must not change while it is read: its size, mtime and ctime are compared
  // before and after, and a read past the size must find nothing.
  Status AddFile(uint32_t idx, int dfd) {
    const SourceNode& n = tree_.nodes[idx];
    const std::function<std::string()> path = [this, idx] { return tree_.PathOf(idx); };
    if (dfd < 0) return Status::InvalidArgument(path() + ": no content and no source directory");
    ++stats_.components_resolved;
    const int fd = openat(dfd, n.name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, path() + ": cannot open");
    struct FdCloser {
      int fd;
      ~FdCloser() { close(fd); }
    } closer{fd};
    struct stat before;
    if (fstat(fd, &before) != 0) return Status::FromErrno(errno, path());
    if (!S_ISREG(before.st_mode) || before.st_dev != n.dev || before.st_ino != n.ino) {
      return Status::IOError(path() + ": replaced by another file since the scan");
    }
    // The metadata recorded at the scan (size, mtime; ctime covers mode,
    // owner and xattrs) must still describe the file.
    if (static_cast<uint64_t>(before.st_size) != n.size ||
        !SameTime(before.st_mtim, n.mtime_sec, n.mtime_nsec) ||
        !SameTime(before.st_ctim, n.ctime_sec, n.ctime_nsec)) {
      return Status::IOError(path() + ": changed since the scan (size " + std::to_string(n.size) +
                             " -> " + std::to_string(before.st_size) + ")");
    }
    CX_RETURN_IF_ERROR(AddBytes(idx, fd, before, n.size, path));
    return CheckUnchanged(fd, before, path);
  }

  // The stored bytes of file `idx`, `size` of them, read from `fd`.
  Status AddBytes(uint32_t idx, int fd, const struct stat& before, uint64_t size,
                  const std::function<std::string()>& path) {
    file_extents_[idx].first = static_cast<uint32_t>(extents_.size());
    if (size == 0) {
      digests_[idx] = FsVerityDigest(nullptr, 0);
    } else if (size < chunk_) {
      CX_RETURN_IF_ERROR(AddSmallFile(idx, fd, size, path));
    } else {
      CX_RETURN_IF_ERROR(AddChunks(idx, fd, before, size, path));
    }
    return Status::Ok();
  }

  // A file whose stored bytes are SourceNode::content (a delta, or content
  // that comes from no directory). Under a chunk, the bytes go to the pack
  // as they are; a larger one goes through a memfd so that the one chunked
  // read path serves it.
  Status AddMemoryFile(uint32_t idx) {
    const SourceNode& n = tree_.nodes[idx];
    const std::function<std::string()> path = [this, idx] { return tree_.PathOf(idx); };
    const std::string& bytes = *n.content;
    if (!(n.flags & kInodeDelta) && bytes.size() != n.size) {
      return Status::InvalidArgument(path() + ": content is " + std::to_string(bytes.size()) +
                                     " bytes, size says " + std::to_string(n.size));
    }
    if (!bytes.empty() && bytes.size() < chunk_) {  // as AddBytes would, without the file
      file_extents_[idx].first = static_cast<uint32_t>(extents_.size());
      AfterRead(path, bytes.size());
      return AddSmallBytes(idx,
                           std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    const int fd = memfd_create("cryptex-content", MFD_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "memfd_create");
    struct FdCloser {
      int fd;
      ~FdCloser() { close(fd); }
    } closer{fd};
    for (size_t off = 0; off < bytes.size();) {
      const ssize_t w = pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Status::FromErrno(errno, path() + ": staging content");
      off += static_cast<size_t>(w);
    }
    struct stat before;
    if (fstat(fd, &before) != 0) return Status::FromErrno(errno, path());
    return AddBytes(idx, fd, before, bytes.size(), path);
  }

  // Fails if the file open as `fd` differs from `before` or holds bytes past
  // before.st_size (procfs and sysfs files report sizes that are not theirs).
  Status CheckUnchanged(int fd, const struct stat& before,
                        const std::function<std::string()>& path) {
    uint8_t extra;
    ssize_t r;
    do {
      r = pread(fd, &extra, 1, before.st_size);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return Status::FromErrno(errno, path() + ": read");
    struct stat after;
    if (fstat(fd, &after) != 0) return Status::FromErrno(errno, path());
    if (after.st_size != before.st_size ||
        !SameTime(after.st_mtim, before.st_mtim.tv_sec,
                  static_cast<uint32_t>(before.st_mtim.tv_nsec)) ||
        !SameTime(after.st_ctim, before.st_ctim.tv_sec,
                  static_cast<uint32_t>(before.st_ctim.tv_nsec))) {
      return Status::IOError(
          path() + ": file changed while reading (size " + std::to_string(before.st_size) + " -> " +
          std::to_string(after.st_size) + ", mtime " + TimeString(before.st_mtim) + " -> " +
          TimeString(after.st_mtim) + ", ctime " + TimeString(before.st_ctim) + " -> " +
          TimeString(after.st_ctim) + ")");
    }
    if (r > 0) {
      return Status::IOError(path() + ": has bytes past the " + std::to_string(before.st_size) +
                             " bytes stat reports: the size reported by stat is not the file's "
                             "size; not a regular on-disk file (procfs, sysfs?)");
    }
    return Status::Ok();
  }

  void AfterRead(const std::function<std::string()>& path, uint64_t bytes) {
    if (opts_.after_source_read) opts_.after_source_read(path(), bytes);
  }

  // The chunks of a file of at least one chunk.
  Status AddChunks(uint32_t idx, int fd, const struct stat& before, uint64_t size,
                   const std::function<std::string()>& path) {
    hashers_[idx] = std::make_unique<FsVerityHasher>();
    bool probe_holes = true;
    const uint64_t nchunks = (size + chunk_ - 1) / chunk_;
    for (uint64_t c = 0; c < nchunks; ++c) {
      auto job = std::make_unique<Job>();
      job->id = next_job_++;
      const uint64_t off = c * chunk_;
      const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(chunk_, size - off));
      job->raw.resize(len);
      // Skip reading holes of sparse files: SEEK_DATA tells whether any data
      // lies in [off, off + len); where none does, the chunk is zeros.
      bool hole = false;
      if (probe_holes) {
        const off_t d = lseek(fd, static_cast<off_t>(off), SEEK_DATA);
        if (d < 0 && errno == ENXIO) {
          // No data from off to the end of the file -- or off is past the
          // end because the file shrank: trusted only while the size is
          // the one read at the start.
          struct stat now;
          if (fstat(fd, &now) != 0) return Status::FromErrno(errno, path());
          if (now.st_size != before.st_size) {
            return Status::IOError(path() + ": file changed while reading (size " +
                                   std::to_string(before.st_size) + " -> " +
                                   std::to_string(now.st_size) + ")");
          }
          hole = true;
        } else if (d < 0) {
          probe_holes = false;  // not supported here: read everything
        } else {
          hole = static_cast<uint64_t>(d) >= off + len;
        }
      }
      if (hole) {
        job->known_zero = true;  // raw is already zero-filled
      } else {
        CX_RETURN_IF_ERROR(ReadSource(fd, job->raw.data(), len, off, size, path));
      }
      AfterRead(path, off + len);
      job->pieces.push_back({idx, 0, len, false});
      extents_.push_back({job->id, 0});
      ++file_extents_[idx].second;
      progress_.bytes_done += len;
      CX_RETURN_IF_ERROR(Submit(std::move(job)));
    }
    return Status::Ok();
  }

  Status AddSmallFile(uint32_t idx, int fd, uint64_t size,
                      const std::function<std::string()>& path) {
    std::vector<uint8_t> buf(size);
    CX_RETURN_IF_ERROR(ReadSource(fd, buf.data(), static_cast<uint32_t>(size), 0, size, path));
    AfterRead(path, size);
    return AddSmallBytes(idx, buf);
  }

  // The bytes of a file under a chunk, `buf`: deduplicated, or packed with
  // other small files.
  Status AddSmallBytes(uint32_t idx, std::span<const uint8_t> buf) {
    const uint32_t len = static_cast<uint32_t>(buf.size());
    std::vector<Digest> leaves = LeafHashes(buf.data(), len);
    FsVerityHasher hv;
    hv.AddLeafHashes(leaves, len);
    digests_[idx] = hv.Final();
    Sha256 h;
    Le64 le;
    le.set(len);
    h.Update(&le, sizeof le);
    h.Update(leaves.data(), leaves.size() * sizeof(Digest));
    Digest key = h.Final();
    progress_.bytes_done += len;
    ++file_extents_[idx].second;
    if (auto it = small_dedup_.find(key); it != small_dedup_.end()) {
      extents_.push_back(it->second);
      ++stats_.dedup_hits;
      return Status::Ok();
    }
    if (pack_ && pack_->raw.size() + len > chunk_) CX_RETURN_IF_ERROR(ClosePack());
    if (!pack_) {
      pack_ = std::make_unique<Job>();
      pack_->id = next_job_++;
      pack_->pack = true;
      pack_->raw.reserve(chunk_);
    }
    PendingExtent e{pack_->id, static_cast<uint32_t>(pack_->raw.size())};
    pack_->pieces.push_back({idx, e.offset, len, true});
    pack_->raw.insert(pack_->raw.end(), buf.begin(), buf.end());
    extents_.push_back(e);
    small_dedup_.emplace(key, e);
    return Status::Ok();
  }

  Status ClosePack() {
    if (!pack_) return Status::Ok();
    return Submit(std::move(pack_));
  }

  // ---- pipeline: the main thread reads and commits, workers compress -------

  void StartWorkers() {
    for (int t = 0; t < threads_; ++t) {
      workers_.emplace_back([this] {
        for (;;) {
          Job* j;
          {
            std::unique_lock<std::mutex> lock(mu_);
            work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;
            j = queue_.front();
            queue_.pop_front();
          }
          ProcessJob(*j, opts_.zstd_level);
          {
            std::lock_guard<std::mutex> lock(mu_);
            j->done = true;
          }
          done_cv_.notify_all();
        }
      });
    }
  }

  void StopWorkers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      queue_.clear();
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  // Hands a job to the workers; commits finished jobs in order, waiting for
  // the oldest while more than kInflightBytes are outstanding.
  Status Submit(std::unique_ptr<Job> job) {
    inflight_bytes_ += job->raw.size();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job.get());
    }
    work_cv_.notify_one();
    inflight_.push_back(std::move(job));
    while (!inflight_.empty()) {
      bool front_done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        front_done = inflight_.front()->done;
      }
      if (!front_done && inflight_bytes_ < kInflightBytes) break;
      CX_RETURN_IF_ERROR(CommitOldest());
    }
    return Status::Ok();
  }

  Status CommitOldest() {
    std::unique_ptr<Job> jp = std::move(inflight_.front());
    inflight_.pop_front();
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return jp->done; });
    }
    inflight_bytes_ -= jp->raw.size();
    Job& j = *jp;
    if (job_frame_.size() <= j.id) job_frame_.resize(j.id + 1, kHoleFrame);
    if (!j.pack) {
      const uint32_t file = j.pieces[0].file;
      auto& hasher = hashers_[file];
      hasher->AddLeafHashes(j.leaves, j.raw.size());
      if (j.zero) {
        job_frame_[j.id] = kHoleFrame;
        ++stats_.hole_chunks;
      } else {
        auto [it, inserted] = chunk_dedup_.try_emplace(j.key, 0);
        if (inserted) {
          CX_ASSIGN_OR_RETURN(it->second, WriteFrame(j));
        } else {
          ++stats_.dedup_hits;
        }
        job_frame_[j.id] = it->second;
      }
      if (IsLastChunk(j)) {
        digests_[file] = hasher->Final();
        hashers_.erase(file);
      }
    } else {
      CX_ASSIGN_OR_RETURN(job_frame_[j.id], WriteFrame(j));
    }
    committed_bytes_ += j.raw.size();
    if (opts_.progress && committed_bytes_ - last_progress_ >= (16u << 20)) {
      last_progress_ = committed_bytes_;
      ReportProgress();
    }
    return Status::Ok();
  }

  void ReportProgress() {
    progress_.files_total = tree_.regular_files;
    progress_.bytes_total = tree_.total_file_bytes;
    opts_.progress(progress_);
  }

  bool IsLastChunk(const Job& j) const {
    const uint32_t file = j.pieces[0].file;
    const auto [first, count] = file_extents_[file];
    // A file's extents are appended in order; the job of its last extent is
    // the last chunk. Only valid once all of the file's jobs were created,
    // which holds because a file's last job is created before its flush.
    return count > 0 && extents_[first + count - 1].job == j.id &&
           count == (StoredSize(tree_.nodes[file]) + chunk_ - 1) / chunk_;
  }

  // Bytes the image stores for regular file `n` (InodeInfo::stored_bytes).
  static uint64_t StoredSize(const SourceNode& n) {
    if (n.flags & kInodeDelta) return n.content->size();
    if (n.flags & kInodeLowerContent) return 0;
    return n.size;
  }

  Result<uint32_t> WriteFrame(const Job& j) {
    if (frames_.size() >= kHoleFrame - 1) return Status::BadSource("too many frames");
    const DiskFrame f = records::EncodeFrame({out_->size(), static_cast<uint32_t>(j.stored.size()),
                                              static_cast<uint32_t>(j.raw.size())});
    CX_RETURN_IF_ERROR(out_->Append(j.stored.data(), j.stored.size()));
    frames_.push_back(f);
    stats_.stored_bytes += j.stored.size();
    ++stats_.frames;
    return static_cast<uint32_t>(frames_.size() - 1);
  }

  // ---- metadata -------------------------------------------------------------

  uint64_t AddString(const std::string& s) {
    uint64_t off = strings_.size();
    strings_.insert(strings_.end(), s.begin(), s.end());
    return off;
  }

  template <typename T>
  static void AppendRecord(std::vector<uint8_t>& v, const T& rec) {
    const auto* p = reinterpret_cast<const uint8_t*>(&rec);
    v.insert(v.end(), p, p + sizeof rec);
  }

  Status WriteMetadata() {
    std::vector<uint8_t> inodes, dirents, extents, xattrs, frames;
    uint64_t xattr_index = 0, dirent_index = 0;
    for (uint32_t idx : primary_) {
      const SourceNode& n = tree_.nodes[idx];
      InodeInfo d;
      d.mode = n.mode;
      d.uid = n.uid;
      d.gid = n.gid;
      d.nlink = nlink_[ino_[idx]];
      d.mtime_sec = n.mtime_sec;
      d.mtime_nsec = n.mtime_nsec;
      d.flags = n.flags;
      d.rdev = n.rdev;
      d.xattr_count = static_cast<uint32_t>(n.xattrs.size());
      d.xattr_index = xattr_index;
      for (const auto& [name, value] : n.xattrs) {
        AppendRecord(xattrs, records::EncodeXattr({AddString(name), AddString(value),
                                                   static_cast<uint32_t>(name.size()),
                                                   static_cast<uint32_t>(value.size())}));
        ++xattr_index;
      }
      switch (n.mode & S_IFMT) {
        case S_IFDIR:
          d.size = n.children.size();
          d.payload = dirent_index;
          d.payload_count = static_cast<uint32_t>(n.children.size());
          for (uint32_t c : n.children) {
            const SourceNode& cn = tree_.nodes[c];
            AppendRecord(dirents, records::EncodeDirent(
                                      {AddString(cn.name), static_cast<uint16_t>(cn.name.size()),
                                       ino_[c], EntryTypeFor(cn.mode, cn.flags)}));
            ++dirent_index;
          }
          break;
        case S_IFREG: {
          d.size = n.size;
          const auto [first, count] = file_extents_[idx];
          d.payload = extents.size() / sizeof(DiskExtent);
          d.payload_count = count;
          for (uint32_t k = 0; k < count; ++k) {
            const PendingExtent& pe = extents_[first + k];
            AppendRecord(extents,
                         records::EncodeExtent(
                             {pe.job == kHoleJob ? kHoleFrame : job_frame_[pe.job], pe.offset}));
          }
          // A sourced file's digest is its target content's, given by the
          // patch builder (what was stored is a delta, or nothing).
          d.digest = n.is_sourced() ? n.content_digest : digests_[idx];
          if (n.is_sourced()) {
            d.source_offset = AddString(n.source_path);
            d.source_len = static_cast<uint32_t>(n.source_path.size());
            d.stored_size = StoredSize(n);
          }
          stats_.content_bytes += n.size;
          ++stats_.files;
          break;
        }
        case S_IFLNK:
          d.size = n.symlink_target.size();
          d.payload = AddString(n.symlink_target);
          ++stats_.symlinks;
          break;
        default:
          ++stats_.other;
      }
      if (S_ISDIR(n.mode)) ++stats_.directories;
      AppendRecord(inodes, records::EncodeInode(d));
    }
    for (const auto& f : frames_) AppendRecord(frames, f);

    regions_[kRegionData] = {HeaderSize(), out_->size() - HeaderSize()};
    manifest_bytes_ = opts_.manifest.Encode();
    if (compact_) return WritePackedMetadata(&frames, &inodes, &dirents, &extents, &xattrs);
    auto put = [&](Region r, const std::vector<uint8_t>& bytes) -> Status {
      uint64_t off = (out_->size() + 127) & ~uint64_t{127};
      regions_[r] = {off, bytes.size()};
      return out_->PWrite(bytes.data(), bytes.size(), off);
    };
    CX_RETURN_IF_ERROR(put(kRegionFrames, frames));
    CX_RETURN_IF_ERROR(put(kRegionInodes, inodes));
    CX_RETURN_IF_ERROR(put(kRegionDirents, dirents));
    CX_RETURN_IF_ERROR(put(kRegionExtents, extents));
    CX_RETURN_IF_ERROR(put(kRegionXattrs, xattrs));
    CX_RETURN_IF_ERROR(put(kRegionStrings, strings_));
    CX_RETURN_IF_ERROR(put(kRegionManifest, manifest_bytes_));
    return Status::Ok();
  }

  // Compact layout: the table regions back to back in one buffer (their
  // offsets are into it), stored as one zstd frame (or as is, if that is not
  // smaller) right after the data; then the manifest, in the clear so that a
  // feed can read it without decompressing anything.
  Status WritePackedMetadata(const std::vector<uint8_t>* frames, const std::vector<uint8_t>* inodes,
                             const std::vector<uint8_t>* dirents,
                             const std::vector<uint8_t>* extents,
                             const std::vector<uint8_t>* xattrs) {
    std::vector<uint8_t> raw;
    auto add = [&](Region r, const std::vector<uint8_t>& bytes) {
      regions_[r] = {raw.size(), bytes.size()};
      raw.insert(raw.end(), bytes.begin(), bytes.end());
    };
    add(kRegionFrames, *frames);
    add(kRegionInodes, *inodes);
    add(kRegionDirents, *dirents);
    add(kRegionExtents, *extents);
    add(kRegionXattrs, *xattrs);
    add(kRegionStrings, strings_);
    if (raw.size() > kMaxPackedMetaBytes) {  // TablesBytesBound() was wrong
      return Status::Internal("packed metadata of " + std::to_string(raw.size()) +
                              " bytes exceeds the compact layout's limit");
    }
    // Stored by columns (kIncompatColumns), or by rows when that is smaller:
    // columns win on a patch of many files (libc6: 14.2 against 15.6 KB),
    // rows on one of a few entries (curl: 0.78 against 0.83 KB). Rows are
    // tried only for tables of up to kTryRowsBelow bytes: on larger ones
    // they lost in every case measured, and compressing them too took 11 of
    // the 15 ms. Level 15: the tables are small next to the data, and level
    // 22 took 37 ms (of a 0.4 s mkpatch) to save 0.4%.
    constexpr int kLevel = 15;
    constexpr size_t kTryRowsBelow = 16u << 10;
    std::vector<uint8_t> cols = raw;
    for (uint32_t r = 0; r < kRegionCount; ++r) {
      const size_t record = records::RecordSize(static_cast<Region>(r));
      if (record == 0) continue;
      records::ToColumns(std::span<uint8_t>(cols.data() + regions_[r].offset, regions_[r].length),
                         record);
    }
    std::vector<uint8_t> stored;
    bool first = true;
    for (const auto* in : {&cols, &raw}) {
      if (in == &raw && raw.size() > kTryRowsBelow) break;
      std::vector<uint8_t> z(ZSTD_compressBound(in->size()));
      const size_t n = ZSTD_compress(z.data(), z.size(), in->data(), in->size(), kLevel);
      if (ZSTD_isError(n)) {
        return Status::Internal(std::string("zstd (packed metadata): ") + ZSTD_getErrorName(n));
      }
      z.resize(n);
      if (z.size() >= in->size()) z = *in;  // stored as it is
      if (first || z.size() < stored.size()) {
        stored = std::move(z);
        columns_ = in == &cols;
      }
      first = false;
    }
    const size_t stored_size = stored.size();
    packed_meta_ = {out_->size(), stored_size};
    packed_meta_raw_ = raw.size();
    CX_RETURN_IF_ERROR(out_->Append(stored.data(), stored_size));
    regions_[kRegionManifest] = {out_->size(), manifest_bytes_.size()};
    return out_->Append(manifest_bytes_.data(), manifest_bytes_.size());
  }

  // ---- tree and seal ----------------------------------------------------------

  Status WriteTreeAndSeal() {
    const uint64_t data_end = (out_->size() + kBlockSize - 1) / kBlockSize * kBlockSize;
    if (data_end > out_->size()) {
      std::vector<uint8_t> pad(data_end - out_->size(), 0);
      CX_RETURN_IF_ERROR(out_->Append(pad.data(), pad.size()));
    }
    SuperblockInfo sb;
    sb.kind = opts_.kind;
    sb.compat = kCompatDedup;
    sb.incompat = kIncompatZstd | (opts_.kind == kKindPatch ? kIncompatWhiteouts : 0) |
                  (compact_ ? kIncompatCompact : 0) | (columns_ ? kIncompatColumns : 0);
    sb.packed_meta_offset = packed_meta_.offset;
    sb.packed_meta_stored = packed_meta_.length;
    sb.packed_meta_raw = packed_meta_raw_;
    for (const SourceNode& n : tree_.nodes) {
      if (n.is_sourced()) sb.incompat |= kIncompatLowerContent;
    }
    sb.chunk_log2 = opts_.chunk_log2;
    sb.data_blocks = data_end / kBlockSize;
    sb.hash_offset = data_end;
    sb.created_at = opts_.manifest.created_at;
    // Deterministic salt: bound to this image's manifest.
    Sha256 sh;
    static const char kSaltLabel[] = "cryptex-verity-salt-v1";
    sh.Update(kSaltLabel, sizeof kSaltLabel);
    sh.Update(manifest_bytes_.data(), manifest_bytes_.size());
    Digest salt = sh.Final();
    std::copy(salt.begin(), salt.end(), sb.salt.begin());
    for (uint32_t r = 0; r < kRegionCount; ++r) sb.regions[r] = regions_[r];

    const int fd = out_->fd();
    const std::string what = out_->dest();
    std::vector<uint8_t> hash_area;
    CX_RETURN_IF_ERROR(BuildMerkleTree(
        sb.data_blocks, sb.salt,
        [fd, &what](uint64_t i, uint8_t* buf) {
          return PReadFull(fd, buf, kBlockSize, i * kBlockSize, what);
        },
        threads_, &hash_area, &sb.root_hash));
    TreeGeometry g = TreeGeometry::For(sb.data_blocks);
    sb.hash_blocks = g.total_hash_blocks;
    sb.tree_levels = static_cast<uint32_t>(g.levels.size());
    // The trailer: the superblock and signature, alone (compact) or at the
    // start of an otherwise zero block (classic).
    const size_t trailer = compact_ ? kTrailerSize : kBlockSize;
    sb.image_size = data_end + hash_area.size() + trailer;
    CX_RETURN_IF_ERROR(out_->Append(hash_area.data(), hash_area.size()));

    std::vector<uint8_t> block(trailer, 0);
    auto sbytes = EncodeSuperblock(sb);
    std::memcpy(block.data(), sbytes.data(), sbytes.size());
    CX_ASSIGN_OR_RETURN(Ed25519Sig sig, opts_.key->Sign(sbytes));
    DiskSignature ds;
    std::memset(&ds, 0, sizeof ds);
    std::memcpy(ds.magic, kSigMagic, 8);
    ds.algorithm.set(kSigEd25519);
    ds.sig_size.set(64);
    KeyId id = opts_.key->id();
    std::memcpy(ds.key_id, id.data(), 32);
    std::memcpy(ds.sig, sig.data(), 64);
    std::memcpy(block.data() + kSignatureOffsetInBlock, &ds, sizeof ds);
    CX_RETURN_IF_ERROR(out_->Append(block.data(), block.size()));
    stats_.root_hash = sb.root_hash;
    return Status::Ok();
  }

  const SourceTree& tree_;
  const BuildOptions& opts_;
  int threads_ = 1;
  uint32_t chunk_ = 0;
  std::unique_ptr<OutputFile> out_;
  BuildStats stats_;
  BuildProgress progress_;

  std::vector<uint32_t> ino_;                                // node -> inode number
  std::vector<uint32_t> primary_;                            // inode number - 1 -> node
  std::vector<uint32_t> nlink_;                              // inode number -> link count
  std::vector<std::pair<uint32_t, uint32_t>> file_extents_;  // node -> (first, count)
  std::vector<Digest> digests_;                              // node -> fs-verity digest
  std::vector<PendingExtent> extents_;

  uint32_t next_job_ = 0;
  std::deque<std::unique_ptr<Job>> inflight_;  // submitted, not committed; in job order
  size_t inflight_bytes_ = 0;
  uint64_t committed_bytes_ = 0, last_progress_ = 0;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> queue_;  // GUARDED_BY(mu_): jobs waiting for a worker
  bool stop_ = false;       // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;
  std::unique_ptr<Job> pack_;
  std::map<uint32_t, std::unique_ptr<FsVerityHasher>> hashers_;  // big files in flight
  std::unordered_map<Digest, PendingExtent, DigestHash> small_dedup_;
  std::unordered_map<Digest, uint32_t, DigestHash> chunk_dedup_;
  std::vector<uint32_t> job_frame_;
  std::vector<DiskFrame> frames_;
  std::vector<uint8_t> strings_;
  std::vector<uint8_t> manifest_bytes_;
  RegionInfo regions_[kRegionCount];
  bool compact_ = false;    // writing the compact layout
  RegionInfo packed_meta_;  // compact: where the packed metadata lies, stored bytes
  uint64_t packed_meta_raw_ = 0;
  bool columns_ = false;  // compact: the tables are stored by columns
};

}  // namespace

Result<BuildStats> WriteImage(const SourceTree& tree, const BuildOptions& opts) {
  ImageWriter w(tree, opts);
  return w.Run();
}

}  // namespace cryptex
