#include "filesystem.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <unordered_set>
#include <utility>

#include "errno_map.h"
#include "format.h"
#include "sha256.h"

namespace cryptex::cxfs {
namespace {

// Bounds of the tree walks behind ParentOf/DescribeInode (only used when the
// kernel never told us, or for log lines): entries visited per walk.
constexpr uint64_t kWalkEntryLimit = 4u << 20;
constexpr size_t kMaxCachedPaths = 1024;

// Directory listing cookies (the offsets readdir hands the kernel): a
// listing that spans several replies must continue in the generation it
// began in, or a reload between two replies would join the first part of
// one level's listing to the rest of another's. A cookie below 2^31 (so
// that 32-bit readdir callers never get EOVERFLOW) carries that generation's
// sequence number (1..kListingSeqs) in bits 20..30 and the stream position
// in bits 0..19; kListingEnd as position marks the end of the listing, so a
// listing that fit in one reply ends the same whatever happened since.
// Directories too big for 20 bits (a million entries) get unpinned cookies:
// the position with bit 40 set (they continue in the current generation).
constexpr uint32_t kListingSeqs = 2047;
constexpr uint64_t kListingPosBits = 20;
constexpr uint64_t kListingEnd = (uint64_t{1} << kListingPosBits) - 1;
constexpr uint64_t kUnpinnedCookie = uint64_t{1} << 40;
constexpr std::chrono::milliseconds kListingIdle{1000};

mode_t ModeOfType(uint8_t type) {
  switch (type) {
    case format::kTypeRegular:
      return S_IFREG;
    case format::kTypeDirectory:
      return S_IFDIR;
    case format::kTypeSymlink:
      return S_IFLNK;
    case format::kTypeCharDev:
      return S_IFCHR;
    case format::kTypeBlockDev:
      return S_IFBLK;
    case format::kTypeFifo:
      return S_IFIFO;
    case format::kTypeSocket:
      return S_IFSOCK;
    default:
      return 0;  // DT_UNKNOWN
  }
}

// Per-thread read buffer: grows to the largest read this thread has served
// (at most kMaxReadBytes) and is reused, so the read path does not allocate.
uint8_t* ThreadReadBuffer(size_t n) {
  thread_local std::unique_ptr<uint8_t[]> buf;
  thread_local size_t cap = 0;
  if (n > cap) {
    size_t want = std::max<size_t>(n, std::min<size_t>(kMaxReadBytes, cap * 2));
    want = std::max<size_t>(want, 128u << 10);
    buf = std::make_unique_for_overwrite<uint8_t[]>(want);
    cap = want;
  }
  return buf.get();
}

}  // namespace

Filesystem::Filesystem(std::unique_ptr<View> view, Options options)
    : options_(std::move(options)), pool_(options_.read_helpers) {
  base_ = view->layers().front();
  base_root_ = base_->superblock().root_hash;
  std::shared_ptr<const View> first(std::move(view));
  anchor_ = first;  // owns base_ for the life of the mount (push, statfs)
  {
    std::unique_lock lock(gen_mu_);
    Install(MakeGeneration(std::move(first)), {});
  }
  parents_[kRootIno] = kRootIno;
}

std::shared_ptr<Filesystem::Generation> Filesystem::MakeGeneration(
    std::shared_ptr<const View> view) {
  auto g = std::make_shared<Generation>();
  const std::vector<const Image*> layers = view->layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    uint32_t slot = 0;
    if (i > 0) {
      const auto [it, inserted] = slot_by_root_.emplace(
          layers[i]->superblock().root_hash, static_cast<uint32_t>(slot_by_root_.size() + 1));
      slot = it->second;
    }
    g->slot_of_layer.push_back(slot);
    g->layer_of_slot[slot] = static_cast<uint32_t>(i);
  }
  g->view = std::move(view);
  return g;
}

void Filesystem::Install(std::shared_ptr<Generation> g, const std::set<uint64_t>& changed_dirs) {
  last_seq_ = last_seq_ % kListingSeqs + 1;
  g->seq = last_seq_;
  g->epoch = ++epoch_;
  seq_epoch_[g->seq] = g->epoch;
  for (uint64_t d : changed_dirs) dir_changed_[d] = g->epoch;
  // A change older than every seq's epoch can no longer refuse a cookie.
  if (g->epoch > kListingSeqs) {
    const uint64_t oldest = g->epoch - kListingSeqs;
    std::erase_if(dir_changed_, [&](const auto& kv) { return kv.second <= oldest; });
  }
  if (current_) retired_.push_back(current_);
  current_ = std::move(g);
}

std::shared_ptr<const Filesystem::Generation> Filesystem::Current() const {
  std::shared_lock lock(gen_mu_);
  return current_;
}

Result<Filesystem::Target> Filesystem::Find(uint64_t ino) const {
  const uint32_t slot = NodeLayer(ino);
  std::shared_lock lock(gen_mu_);
  if (slot == 0) return Target{current_, ino};  // the base: layer 0 everywhere
  if (auto it = current_->layer_of_slot.find(slot); it != current_->layer_of_slot.end()) {
    return Target{current_, NodeId(it->second, NodeIno(ino))};
  }
  for (auto r = retired_.rbegin(); r != retired_.rend(); ++r) {
    if (auto it = (*r)->layer_of_slot.find(slot); it != (*r)->layer_of_slot.end()) {
      return Target{*r, NodeId(it->second, NodeIno(ino))};
    }
  }
  return Status::NotFound("inode " + std::to_string(ino) + " is no longer served");
}

Result<Filesystem::Target> Filesystem::FindForListing(uint64_t ino, uint32_t seq) {
  if (seq == 0) return Find(ino);  // a position someone made up (seekdir)
  std::shared_ptr<const Generation> g;
  {
    std::shared_lock lock(gen_mu_);
    if (current_->seq == seq) g = current_;
    for (auto r = retired_.rbegin(); !g && r != retired_.rend(); ++r) {
      if ((*r)->seq == seq) g = *r;
    }
  }
  if (!g) {
    std::lock_guard lock(listings_mu_);
    if (auto it = listings_.find(seq); it != listings_.end()) g = it->second.gen;
  }
  const std::string gone = "the listing of inode " + std::to_string(ino) +
                           " began at a level no longer served; list the directory again";
  if (!g) {
    // A cookie the kernel kept in its cache of this directory's listing
    // (or one telldir(3) gave): the same listing, if nothing changed it.
    bool unchanged = false;
    {
      std::shared_lock lock(gen_mu_);
      const auto began = seq_epoch_.find(seq);
      const auto changed = dir_changed_.find(ino);
      unchanged = began != seq_epoch_.end() &&
                  (changed == dir_changed_.end() || changed->second <= began->second);
    }
    if (unchanged) return Find(ino);
    return Status::IOError(gone);
  }
  const uint32_t slot = NodeLayer(ino);
  if (slot == 0) return Target{g, ino};
  if (auto it = g->layer_of_slot.find(slot); it != g->layer_of_slot.end()) {
    return Target{g, NodeId(it->second, NodeIno(ino))};
  }
  return Status::IOError(gone);
}

void Filesystem::NoteListing(const std::shared_ptr<const Generation>& gen) {
  if (!reopen_) return;  // fixed images: one generation for the mount's life
  std::lock_guard lock(listings_mu_);
  listings_[gen->seq] = Listed{gen, std::chrono::steady_clock::now()};
  if (!listings_pruner_.joinable()) {
    listings_pruner_ = std::thread([this] { PruneListingsLoop(); });
  }
}

void Filesystem::PruneListingsLoop() {
  std::unique_lock lock(listings_mu_);
  while (!listings_stop_) {
    listings_cv_.wait_for(lock, kListingIdle / 4);
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(listings_,
                  [&](const auto& kv) { return now - kv.second.touched > kListingIdle; });
  }
}

Filesystem::~Filesystem() {
  {
    std::lock_guard lock(listings_mu_);
    listings_stop_ = true;
  }
  listings_cv_.notify_all();
  if (listings_pruner_.joinable()) listings_pruner_.join();
}

void Filesystem::EnableReload(Reopen reopen, Notifier notify) {
  reopen_ = std::move(reopen);
  notify_ = std::move(notify);
}

size_t Filesystem::generations() const {
  std::shared_lock lock(gen_mu_);
  return 1 + retired_.size();
}

void Filesystem::Remember(uint64_t ino) {
  const uint32_t slot = NodeLayer(ino);
  if (slot == 0) return;  // base inodes are served by every generation
  std::unique_lock lock(gen_mu_);
  ++slot_refs_[slot];
}

void Filesystem::Forget(uint64_t ino, uint64_t nlookup) {
  const uint32_t slot = NodeLayer(ino);
  if (slot == 0) return;
  std::unique_lock lock(gen_mu_);
  auto it = slot_refs_.find(slot);
  if (it == slot_refs_.end()) return;
  it->second -= std::min(it->second, nlookup);
  if (it->second == 0) {
    slot_refs_.erase(it);
    PruneRetired();
  }
}

// Keeps, newest first, only the retired generations that serve a slot some
// remembered inode needs and no generation kept so far serves: at most one
// per such slot, so memory stays bounded however many reloads there were.
void Filesystem::PruneRetired() {
  std::unordered_set<uint32_t> needed;
  for (const auto& [slot, refs] : slot_refs_) {
    if (refs > 0 && current_->layer_of_slot.count(slot) == 0) needed.insert(slot);
  }
  std::vector<std::shared_ptr<const Generation>> keep;
  for (auto r = retired_.rbegin(); r != retired_.rend() && !needed.empty(); ++r) {
    bool useful = false;
    for (const auto& [slot, layer] : (*r)->layer_of_slot) {
      if (needed.erase(slot) > 0) useful = true;
    }
    if (useful) keep.push_back(*r);
  }
  std::reverse(keep.begin(), keep.end());
  retired_ = std::move(keep);
}

bool Filesystem::ChangeIsLive(const std::vector<const Image*>& from,
                              const std::vector<const Image*>& to) {
  auto roots = [](const std::vector<const Image*>& layers) {
    std::set<Digest> r;
    for (size_t i = 1; i < layers.size(); ++i) r.insert(layers[i]->superblock().root_hash);
    return r;
  };
  const std::set<Digest> a = roots(from), b = roots(to);
  auto all_relaunch = [](const std::vector<const Image*>& layers, const std::set<Digest>& other) {
    for (size_t i = 1; i < layers.size(); ++i) {
      // Fail safe: only the relaunch class ("" is its default) goes live.
      const std::string& cls = layers[i]->manifest().activation;
      if (other.count(layers[i]->superblock().root_hash) == 0 && !cls.empty() &&
          cls != "relaunch") {
        return false;
      }
    }
    return true;
  };
  return all_relaunch(from, b) && all_relaunch(to, a);
}

std::vector<Digest> Filesystem::ServedPatchRoots() const {
  const std::shared_ptr<const Generation> g = Current();  // keeps its images alive
  const std::vector<const Image*> layers = g->view->layers();
  std::vector<Digest> out;
  for (size_t i = 1; i < layers.size(); ++i) out.push_back(layers[i]->superblock().root_hash);
  return out;
}

Result<Filesystem::ReloadOutcome> Filesystem::Reload() {
  std::lock_guard reload_lock(reload_mu_);
  if (!reopen_) {
    return Status::Unsupported("this mount serves fixed images; only a store line reloads");
  }
  CX_ASSIGN_OR_RETURN(std::unique_ptr<View> view, reopen_());
  if (view->layers().front()->superblock().root_hash != base_root_) {
    return Status::InvalidArgument("the line's base image changed; unmount and mount again");
  }
  const std::shared_ptr<const Generation> served = Current();
  if (!ChangeIsLive(served->view->layers(), view->layers())) {
    pending_.store(true);
    return ReloadOutcome::kPending;
  }
  pending_.store(false);
  std::shared_ptr<const Generation> before;
  std::shared_ptr<Generation> after;
  {
    std::unique_lock lock(gen_mu_);
    before = current_;
    after = MakeGeneration(std::shared_ptr<const View>(std::move(view)));
    if (after->slot_of_layer == before->slot_of_layer) return ReloadOutcome::kUnchanged;
  }
  // Outside the lock (it walks the layers that came or went); `before`
  // stays current meanwhile (reload_mu_). Recorded in the same step that
  // makes `after` current, so that no listing cookie of `before` continues
  // in `after` through a directory that changed.
  const Changes changes = ChangesBetween(*before, *after);
  {
    std::unique_lock lock(gen_mu_);
    Install(after, changes.dirs);
    PruneRetired();
  }
  {
    // Parents and paths are rebuilt from lookups of the new level.
    std::unique_lock lock(parents_mu_);
    parents_.clear();
    parents_[kRootIno] = kRootIno;
  }
  {
    std::unique_lock lock(paths_mu_);
    paths_.clear();
  }
  if (notify_.inval_entry && notify_.inval_inode) {
    for (const auto& [parent, name] : changes.entries) notify_.inval_entry(parent, name);
    for (uint64_t d : changes.dirs) notify_.inval_inode(d);
  }
  reloads_.fetch_add(1, std::memory_order_relaxed);
  return ReloadOutcome::kMoved;
}

// Every path a layer that came or went carries (its directories, and each
// name in them, whiteouts included), as the kernel knows it in either
// generation: the directory inodes (attributes and listings) and their
// (directory, name) entries. For an opaque directory, also every name the
// old level listed there. Nothing else changed, so nothing else is dropped
// from the kernel's caches.
Filesystem::Changes Filesystem::ChangesBetween(const Generation& before, const Generation& after) {
  std::vector<const Image*> changed;
  auto collect = [&](const Generation& from, const Generation& other) {
    const std::vector<const Image*> layers = from.view->layers();
    for (const auto& [slot, layer] : from.layer_of_slot) {
      if (slot != 0 && other.layer_of_slot.count(slot) == 0) changed.push_back(layers[layer]);
    }
  };
  collect(before, after);
  collect(after, before);
  Changes out;
  auto& entries = out.entries;
  auto& dirs = out.dirs;
  for (const Image* layer : changed) {
    std::deque<std::pair<uint64_t, std::string>> queue{{1, ""}};  // patch dir inode, path
    while (!queue.empty()) {
      auto [dir, path] = std::move(queue.front());
      queue.pop_front();
      std::vector<uint64_t> known;  // this path's directory inode in each generation
      for (const Generation* g : {&before, &after}) {
        Result<InodeInfo> in = g->view->Resolve(path);
        if (in.ok() && in->is_dir()) known.push_back(ToIno(*g, in->ino));
      }
      for (uint64_t d : known) dirs.insert(d);
      Result<InodeInfo> self = layer->GetInode(dir);
      if (self.ok() && (self->flags & format::kInodeOpaque)) {
        Result<InodeInfo> old_dir = before.view->Resolve(path);
        if (old_dir.ok() && old_dir->is_dir()) {
          (void)before.view->ReadDir(old_dir->ino, 0, [&](const DirEntry& e, uint64_t) {
            for (uint64_t d : known) entries.emplace(d, e.name);
            return true;
          });
        }
      }
      // Errors only leave entries cached: the layer was verified at open.
      (void)layer->ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
        for (uint64_t d : known) entries.emplace(d, e.name);
        if (e.type == format::kTypeDirectory) queue.emplace_back(e.ino, path + "/" + e.name);
        return true;
      });
    }
  }
  return out;
}

void Filesystem::FillStat(const InodeInfo& in, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = in.ino;
  st->st_mode = in.mode;
  st->st_nlink = in.nlink;
  st->st_uid = in.uid;
  st->st_gid = in.gid;
  st->st_rdev = in.rdev;
  st->st_size = static_cast<off_t>(in.size);
  st->st_blksize = format::kBlockSize;
  st->st_blocks = static_cast<blkcnt_t>(in.blocks512());
  st->st_mtim.tv_sec = in.mtime_sec;
  st->st_mtim.tv_nsec = in.mtime_nsec;
  st->st_atim = st->st_mtim;
  st->st_ctim = st->st_mtim;
}

void Filesystem::RecordParent(uint64_t dir, uint64_t parent) {
  {
    std::shared_lock lock(parents_mu_);
    auto it = parents_.find(dir);
    if (it != parents_.end() && it->second == parent) return;
  }
  std::unique_lock lock(parents_mu_);
  parents_[dir] = parent;
}

Result<uint64_t> Filesystem::ParentOf(uint64_t ino) {
  {
    std::shared_lock lock(parents_mu_);
    auto it = parents_.find(ino);
    if (it != parents_.end()) return it->second;
  }
  // Every directory inode the kernel holds came from lookup or readdirplus,
  // which record its parent, so this is a fallback: walk the tree breadth
  // first (bounded, cycle-safe), recording every directory's parent.
  const std::shared_ptr<const Generation> g = Current();
  std::deque<uint64_t> queue{kRootIno};
  std::unordered_set<uint64_t> seen{kRootIno};
  uint64_t visited = 0;
  std::optional<uint64_t> found;
  while (!queue.empty() && !found) {
    uint64_t dir = queue.front();
    queue.pop_front();
    Result<Target> t = Find(dir);
    if (!t.ok()) continue;
    Status st = t->gen->view->ReadDir(t->node, 0, [&](const DirEntry& e, uint64_t) {
      if (++visited > kWalkEntryLimit) return false;
      const uint64_t child = ToIno(*t->gen, e.ino);
      if (e.type != format::kTypeDirectory || !seen.insert(child).second) return true;
      RecordParent(child, dir);
      queue.push_back(child);
      if (child == ino) found = dir;
      return !found;
    });
    CX_RETURN_IF_ERROR(st);
    if (visited > kWalkEntryLimit) break;
  }
  if (found) return *found;
  return Status::NotFound("directory inode " + std::to_string(ino) + " is not in the tree");
}

std::string Filesystem::DescribeInode(uint64_t ino) {
  if (ino == kRootIno) return "/";
  {
    std::shared_lock lock(paths_mu_);
    auto it = paths_.find(ino);
    if (it != paths_.end()) return it->second;
  }
  std::string result = "ino " + std::to_string(ino);
  std::deque<std::pair<uint64_t, std::string>> queue;
  queue.emplace_back(kRootIno, "");
  std::unordered_set<uint64_t> seen{kRootIno};
  uint64_t visited = 0;
  bool found = false;
  while (!queue.empty() && !found && visited <= kWalkEntryLimit) {
    auto [dir, path] = std::move(queue.front());
    queue.pop_front();
    // Errors only shorten the search: this is for a log line.
    Result<Target> t = Find(dir);
    if (!t.ok()) continue;
    (void)t->gen->view->ReadDir(t->node, 0, [&](const DirEntry& e, uint64_t) {
      if (++visited > kWalkEntryLimit) return false;
      const uint64_t child = ToIno(*t->gen, e.ino);
      if (child == ino) {
        result = path + "/" + e.name;
        found = true;
        return false;
      }
      if (e.type == format::kTypeDirectory && seen.insert(child).second) {
        queue.emplace_back(child, path + "/" + e.name);
      }
      return true;
    });
  }
  std::unique_lock lock(paths_mu_);
  if (paths_.size() >= kMaxCachedPaths) paths_.clear();
  paths_[ino] = result;
  return result;
}

Result<struct stat> Filesystem::DoGetattr(uint64_t ino) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(t.node));
  struct stat st;
  FillStat(in, &st);
  st.st_ino = ino;
  return st;
}

Result<struct stat> Filesystem::DoLookup(uint64_t parent, std::string_view name) {
  if (name == ".") return DoGetattr(parent);
  if (name == "..") {
    CX_ASSIGN_OR_RETURN(uint64_t up, ParentOf(parent));
    return DoGetattr(up);
  }
  if (name.size() > format::kMaxNameLen) return Status::NotFound("name too long");
  CX_ASSIGN_OR_RETURN(Target t, Find(parent));
  CX_ASSIGN_OR_RETURN(DirEntry e, t.gen->view->Lookup(t.node, name));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(e.ino));
  const uint64_t child = ToIno(*t.gen, e.ino);
  if (in.is_dir()) RecordParent(child, parent);
  struct stat st;
  FillStat(in, &st);
  st.st_ino = child;
  return st;
}

Result<std::string> Filesystem::DoReadlink(uint64_t ino) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  return t.gen->view->ReadLink(t.node);
}

Status Filesystem::DoOpen(uint64_t ino) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(t.node));
  if (in.is_dir()) return Status::IsDirectory("inode " + std::to_string(ino));
  return Status::Ok();
}

Result<std::span<const uint8_t>> Filesystem::DoRead(uint64_t ino, uint64_t offset, size_t size) {
  // All or nothing: a failure anywhere fails the whole request. A short
  // reply would tell the kernel the file ends there (it caches the smaller
  // size and zero-fills), i.e. wrong data instead of EIO.
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(t.node));
  if (!in.is_reg()) return Status::IsDirectory("inode " + std::to_string(ino));
  if (offset >= in.size || size == 0) return std::span<const uint8_t>();
  size = static_cast<size_t>(std::min<uint64_t>({size, kMaxReadBytes, in.size - offset}));
  uint8_t* buf = ThreadReadBuffer(size);

  // A request spanning several chunks is cut at chunk boundaries into up to
  // kMaxPieces pieces that the pool decodes in parallel (decompression and
  // hashing dominate a cold read; one kernel request would otherwise keep
  // one core busy while the others idle).
  constexpr size_t kMaxPieces = 8;
  const uint64_t chunk = base().superblock().chunk_size();
  const uint64_t first_chunk = offset / chunk;
  const uint64_t last_chunk = (offset + size - 1) / chunk;
  const uint64_t chunks = last_chunk - first_chunk + 1;
  const uint64_t per_piece = (chunks + kMaxPieces - 1) / kMaxPieces;
  struct Piece {
    uint64_t begin, end;  // file offsets
    Status st;
  };
  std::array<Piece, kMaxPieces> pieces;
  size_t n = 0;
  for (uint64_t c = first_chunk; c <= last_chunk; c += per_piece) {
    pieces[n].begin = std::max(offset, c * chunk);
    pieces[n].end = std::min<uint64_t>(offset + size, (c + per_piece) * chunk);
    ++n;
  }
  struct Ctx {
    const View* view;
    uint64_t ino, offset;
    uint8_t* buf;
    Piece* pieces;
  } ctx{t.gen->view.get(), t.node, offset, buf, pieces.data()};
  pool_.ParallelFor(
      n,
      [](void* vctx, size_t i) {
        auto& c = *static_cast<Ctx*>(vctx);
        Piece& p = c.pieces[i];
        for (uint64_t pos = p.begin; pos < p.end;) {
          auto got =
              c.view->Read(c.ino, pos, std::span<uint8_t>(c.buf + (pos - c.offset), p.end - pos));
          if (!got.ok()) {
            p.st = got.status();
            return;
          }
          if (*got == 0) {
            p.st = Status::Corruption("inode " + std::to_string(c.ino) + " ends early");
            return;
          }
          pos += *got;
        }
      },
      &ctx);
  for (size_t i = 0; i < n; ++i) CX_RETURN_IF_ERROR(pieces[i].st);
  // Push serves the base image's files (node id == base inode); patch
  // layers' files are read on demand only.
  if (pusher_ && NodeLayer(ino) == 0) {
    if (offset == 0 && in.size <= chunk) pusher_->FileRead(ino);
    if (offset + size >= in.size) pusher_->ReachedEnd(ino);
  }
  return std::span<const uint8_t>(buf, size);
}

void Filesystem::EnablePush(Pusher::StoreFn store) {
  pusher_ = std::make_unique<Pusher>(base(), std::move(store));
}

bool Filesystem::StopPush(std::chrono::milliseconds timeout) {
  return pusher_ ? pusher_->Stop(timeout) : true;
}

Status Filesystem::DoOpendir(uint64_t ino) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(t.node));
  if (!in.is_dir()) return Status::NotDirectory("inode " + std::to_string(ino));
  return Status::Ok();
}

Status Filesystem::DoReaddir(uint64_t ino, uint64_t offset, bool plus, const DirEmitter& emit) {
  // Where the listing continues: see the cookies at the top of this file.
  Target t;
  uint64_t pos = offset;
  bool pinned = true;
  if (offset == 0) {
    CX_ASSIGN_OR_RETURN(t, Find(ino));
  } else if (offset & kUnpinnedCookie) {
    pinned = false;
    pos = offset & (kUnpinnedCookie - 1);
    CX_ASSIGN_OR_RETURN(t, Find(ino));
  } else {
    pos = offset & kListingEnd;
    if (pos == kListingEnd) return Status::Ok();
    CX_ASSIGN_OR_RETURN(t, FindForListing(ino, static_cast<uint32_t>(offset >> kListingPosBits)));
  }
  const View& view = *t.gen->view;
  CX_ASSIGN_OR_RETURN(InodeInfo dir, view.GetAttr(t.node));
  if (!dir.is_dir()) return Status::NotDirectory("inode " + std::to_string(ino));
  const uint64_t entries = dir.size;  // a directory's size is its entry count
  if (offset == 0 && entries + 3 >= kListingEnd) pinned = false;
  auto cookie = [&](uint64_t next) -> uint64_t {
    if (!pinned) return next | kUnpinnedCookie;
    if (next >= entries + 2) next = kListingEnd;  // after the last entry
    return (uint64_t{t.gen->seq} << kListingPosBits) | next;
  };
  struct stat st;
  if (pos == 0) {
    std::memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = S_IFDIR;
    if (!emit(".", st, cookie(1), false)) return Status::Ok();
  }
  if (pos <= 1) {
    // A directory the walk cannot place (a bounded walk gave up) gets the
    // root as "..": only getdents(2) callers see it, the kernel does not.
    Result<uint64_t> up = ParentOf(ino);
    if (!up.ok() && up.status().code() != Code::kNotFound) return up.status();
    std::memset(&st, 0, sizeof(st));
    st.st_ino = up.ok() ? *up : kRootIno;
    st.st_mode = S_IFDIR;
    if (!emit("..", st, cookie(2), false)) return Status::Ok();
  }
  uint64_t start = pos <= 2 ? 0 : pos - 2;
  // Entries of a level no longer current are listed, never linked: the
  // kernel must not cache a name to an inode the current level lacks.
  const bool link = t.gen == Current();
  bool full = false;
  Status inner;
  Status outer = view.ReadDir(t.node, start, [&](const DirEntry& e, uint64_t index) {
    const uint64_t child = ToIno(*t.gen, e.ino);
    if (plus) {
      Result<InodeInfo> in = view.GetAttr(e.ino);
      if (!in.ok()) {
        inner = in.status();
        return false;
      }
      FillStat(*in, &st);
      st.st_ino = child;
    } else {
      std::memset(&st, 0, sizeof(st));
      st.st_ino = child;
      st.st_mode = ModeOfType(e.type);
    }
    if (!emit(e.name, st, cookie(index + 3), link)) {
      full = true;
      return false;
    }
    // Only once the kernel has the entry (readdirplus creates its inode).
    if (plus && link && e.type == format::kTypeDirectory) RecordParent(child, ino);
    return true;
  });
  CX_RETURN_IF_ERROR(inner);
  CX_RETURN_IF_ERROR(outer);
  // A listing that may continue keeps its generation (see NoteListing).
  if (pinned && full) NoteListing(t.gen);
  return Status::Ok();
}

Result<struct statvfs> Filesystem::DoStatfs() {
  struct statvfs sv;
  std::memset(&sv, 0, sizeof(sv));
  uint64_t bytes = 0, inodes = 0;
  // Held for the loop: the generation owns the images (a reload may retire
  // and drop it meanwhile; a temporary would die before the loop body).
  const std::shared_ptr<const Generation> g = Current();
  for (const Image* layer : g->view->layers()) {
    bytes += layer->superblock().image_size;
    inodes += layer->inode_count();
  }
  sv.f_bsize = format::kBlockSize;
  sv.f_frsize = format::kBlockSize;
  sv.f_blocks = (bytes + format::kBlockSize - 1) / format::kBlockSize;
  sv.f_files = inodes;
  sv.f_namemax = format::kMaxNameLen;
  sv.f_flag = ST_RDONLY;
  return sv;
}

MountStatus Filesystem::CurrentStatus() const {
  MountStatus m;
  m.image = base().path();
  static_assert(sizeof(m.root_hash) == sizeof(base().superblock().root_hash));
  std::memcpy(m.root_hash.data(), base().superblock().root_hash.data(), m.root_hash.size());
  m.verify_failures = integrity_failures_.load();
  // Held for the loop: the generation owns the images (a reload may retire
  // and drop it meanwhile; a temporary would die before the loop body).
  const std::shared_ptr<const Generation> g = Current();
  for (const Image* layer : g->view->layers()) {
    const ImageStats& s = layer->stats();
    m.blocks_verified += s.blocks_verified.load();
    m.cache_hits += s.frame_cache_hits.load();
    m.cache_misses += s.frame_cache_misses.load();
  }
  m.files_pushed = files_pushed();
  return m;
}

Result<std::string> Filesystem::DoGetxattr(uint64_t ino, std::string_view name) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  return t.gen->view->GetXattr(t.node, name);
}

Result<std::string> Filesystem::DoListxattr(uint64_t ino) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(std::vector<Xattr> xattrs, t.gen->view->ListXattrs(t.node));
  std::string out;
  for (const Xattr& x : xattrs) {
    out += x.name;
    out.push_back('\0');
  }
  return out;
}

Status Filesystem::DoAccess(uint64_t ino, int mask, const Caller& caller) {
  CX_ASSIGN_OR_RETURN(Target t, Find(ino));
  CX_ASSIGN_OR_RETURN(InodeInfo in, t.gen->view->GetAttr(t.node));
  int want = mask & (R_OK | W_OK | X_OK);
  if (want == 0) return Status::Ok();  // F_OK
  if (caller.uid == 0) {
    // root: everything but executing a non-directory with no x bit.
    if ((want & X_OK) && !in.is_dir() && (in.mode & 0111) == 0) {
      return Status::Permission("no execute bit");
    }
    return Status::Ok();
  }
  int bits;
  if (caller.uid == in.uid) {
    bits = (in.mode >> 6) & 7;
  } else if (caller.gid == in.gid || std::find(caller.groups.begin(), caller.groups.end(),
                                               static_cast<gid_t>(in.gid)) != caller.groups.end()) {
    bits = (in.mode >> 3) & 7;
  } else {
    bits = in.mode & 7;
  }
  if ((want & ~bits) != 0) return Status::Permission("mode " + std::to_string(in.mode & 07777));
  return Status::Ok();
}

void Filesystem::Log(const std::string& line) {
  if (options_.log_to_syslog) {
    syslog(LOG_ERR, "%s", line.c_str());
  } else {
    std::fprintf(stderr, "cryptexfs: %s\n", line.c_str());
  }
}

// The library prefixes messages with the image path; the log line names the
// image once, up front.
std::string Filesystem::WithoutImagePath(const std::string& message) const {
  const std::string prefix = base().path() + ": ";
  if (message.rfind(prefix, 0) == 0) return message.substr(prefix.size());
  return message;
}

int Filesystem::ErrnoForFailure(const Status& status, const ErrorSite& site, bool xattr) {
  switch (status.code()) {
    case Code::kOk:
    case Code::kNotFound:
    case Code::kNotDirectory:
    case Code::kIsDirectory:
    case Code::kPermission:
      break;  // ordinary answers, not worth a log line
    case Code::kCorruption: {
      integrity_failures_.fetch_add(1, std::memory_order_relaxed);
      std::string where = DescribeInode(site.ino);
      where += site.offset ? " offset " + std::to_string(*site.offset)
                           : std::string(" (") + site.op + ")";
      Log(options_.display_name + ": integrity failure: " + where + ": " +
          WithoutImagePath(status.message()));
      break;
    }
    default:
      Log(options_.display_name + ": " + site.op + " " + DescribeInode(site.ino) + ": " +
          CodeName(status.code()) + ": " + WithoutImagePath(status.message()));
      break;
  }
  return xattr ? XattrErrnoFromStatus(status) : ErrnoFromStatus(status);
}

}  // namespace cryptex::cxfs
