#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <set>
#include <utility>

#include "durable.h"
#include "format.h"
#include "layer_stack.h"
#include "output_file.h"
#include "trees.h"

namespace cryptex::store {
namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

Status Unlink(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, path + ": unlink");
  }
  CrashPoint("unlink");
  return Status::Ok();
}

Status RemoveDirIfEmpty(const std::string& path) {
  if (rmdir(path.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY) {
    return Status::FromErrno(errno, path + ": rmdir");
  }
  CrashPoint("rmdir");
  return Status::Ok();
}

// A history record describing patch `p` of line `line`.
HistoryRecord PatchRecord(const std::string& action, const std::string& line, const PatchEntry& p,
                          const Actor& actor) {
  HistoryRecord r;
  r.action = action;
  r.line = line;
  r.patch = p.id;
  r.version = p.version;
  r.cves = p.cves;
  r.severity = p.severity;
  r.who = actor.who;
  r.reason = actor.reason;
  return r;
}

PatchEntry EntryFromManifest(const Manifest& m) {
  PatchEntry p;
  p.id = m.patch_id;
  p.version = m.version;
  p.release_counter = m.release_counter;
  p.activation = m.activation.empty() ? "relaunch" : m.activation;
  p.severity = m.severity;
  p.cves = m.cves;
  p.requires_patches = m.requires_patches;
  return p;
}

// Refusals of policy (rollback, binding): not usage errors, not corruption.
Status Refused(const std::string& msg) { return Status::Permission(msg); }

// Stacks `patches` (bottom first) on `base`, handing the stack the
// persisted leaves of their delta files: `trees[i]` is patch i's tree file
// or "" (none). The stack checks each against its signed digest.
Result<std::unique_ptr<View>> OpenStackWithTrees(const std::string& base,
                                                 const std::vector<std::string>& patches,
                                                 const std::vector<std::string>& trees,
                                                 const ImageOptions& opts) {
  std::vector<TreeMap> maps(patches.size());
  for (size_t i = 0; i < trees.size() && i < patches.size(); ++i) {
    if (trees[i].empty()) continue;
    CX_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(trees[i]));
    CX_ASSIGN_OR_RETURN(maps[i], DecodeTrees(bytes, trees[i]));
  }
  StackOptions so;
  so.persisted_leaves = [&maps](uint32_t layer,
                                uint64_t ino) -> std::optional<std::vector<uint8_t>> {
    if (layer == 0 || layer > maps.size()) return std::nullopt;
    auto it = maps[layer - 1].find(ino);
    if (it == maps[layer - 1].end()) return std::nullopt;
    return std::move(it->second);
  };
  return OpenStack(base, patches, opts, std::move(so));
}

// Decodes every delta file of the top layer of `view` (patch image
// `patch`) once, building its fs-verity leaves and checking them against
// the signed digest (DeltaLeavesOf), and returns the leaves by inode
// number. Unchanged files and lower-content files are not read.
Result<TreeMap> BuildTrees(const View& view, const Image& patch, const std::string& what) {
  TreeMap trees;
  const uint32_t layer = static_cast<uint32_t>(view.layers().size() - 1);
  for (uint64_t ino = 1; ino <= patch.inode_count(); ++ino) {
    CX_ASSIGN_OR_RETURN(InodeInfo in, patch.GetInode(ino));
    if (!in.is_reg() || !(in.flags & format::kInodeDelta)) continue;
    auto leaves = DeltaLeavesOf(view, NodeId(layer, ino));
    if (!leaves.ok()) return leaves.status().Prefixed(what);
    trees.emplace(ino, (*leaves)->Serialize());
  }
  return trees;
}

// Every entry of tree file `tree` hashes up to the signed digest of its file
// in patch image `patch` (what OpenStack will require of it).
Status CheckTrees(const std::string& patch, const std::string& tree, const ImageOptions& opts) {
  CX_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(tree));
  CX_ASSIGN_OR_RETURN(TreeMap trees, DecodeTrees(bytes, tree));
  CX_ASSIGN_OR_RETURN(auto img, Image::Open(patch, opts));
  for (const auto& [ino, leaves] : trees) {
    CX_ASSIGN_OR_RETURN(InodeInfo in, img->GetInode(ino));
    if (!in.is_reg() || !(in.flags & format::kInodeDelta)) {
      return Status::Corruption(tree + ": inode " + std::to_string(ino) + " is not a delta file");
    }
    CX_RETURN_IF_ERROR(
        VerityLeaves::Parse(leaves, in.size, in.digest, tree + ": inode " + std::to_string(ino))
            .status());
  }
  return Status::Ok();
}

// `path` is the file install stored: `size` bytes with SHA-256 `sha256`.
// kCorruption naming the file and what differs (missing, size, digest).
Status CheckStoredFile(const std::string& path, uint64_t size, const Digest& sha256) {
  auto d = DigestOfFile(path);
  if (!d.ok()) {
    if (d.status().code() == Code::kNotFound) {
      return Status::Corruption(path + ": missing from the store");
    }
    return d.status();
  }
  if (d->size != size) {
    return Status::Corruption(path + ": damaged in the store: " + std::to_string(d->size) +
                              " bytes, " + std::to_string(size) + " were stored at install");
  }
  if (d->sha256 != sha256) {
    return Status::Corruption(path + ": damaged in the store: its SHA-256 " + HexEncode(d->sha256) +
                              " is not the one recorded at install " + HexEncode(sha256));
  }
  return Status::Ok();
}

}  // namespace

Status Store::CheckStoredPatch(const std::string& line, const PatchEntry& p) const {
  if (p.sha256) {
    CX_RETURN_IF_ERROR(CheckStoredFile(PatchPath(line, p.id), p.size, *p.sha256));
    if (p.tree_bytes == 0) return Status::Ok();
    if (p.tree_sha256) return CheckStoredFile(TreePath(line, p.id), p.tree_bytes, *p.tree_sha256);
    return CheckTrees(PatchPath(line, p.id), TreePath(line, p.id), Opts());
  }
  // Installed before the digests were recorded: a full check of the image
  // against its signed root, which needs the trusted keys.
  if (trust_ == nullptr) {
    return Status::Unsupported(PatchPath(line, p.id) +
                               ": no SHA-256 was recorded at install (an older store); checking "
                               "it needs the trusted keys");
  }
  CX_ASSIGN_OR_RETURN(auto img, Image::Open(PatchPath(line, p.id), Opts()));
  if (img->superblock().root_hash != p.root) {
    return Status::Corruption(PatchPath(line, p.id) + ": root digest " +
                              HexEncode(img->superblock().root_hash) +
                              " is not the installed one " + HexEncode(p.root));
  }
  CX_RETURN_IF_ERROR(img->VerifyAll().Prefixed(PatchPath(line, p.id)));
  if (p.tree_bytes == 0) return Status::Ok();
  return CheckTrees(PatchPath(line, p.id), TreePath(line, p.id), Opts());
}

// ---- locking and transactions ------------------------------------------------

class Store::Lock {
 public:
  // Creates the store directory only if `create` (add); otherwise a missing
  // store is kNotFound naming it.
  static Result<Lock> Take(const std::string& dir, bool create) {
    struct stat st;
    if (create) {
      CX_RETURN_IF_ERROR(EnsureDir(dir));
    } else if (stat(dir.c_str(), &st) != 0) {
      return Status::NotFound(dir + ": no store here (cryptex add creates one)");
    }
    CX_ASSIGN_OR_RETURN(FileLock held, FileLock::Take(dir + "/lock"));
    return Lock(std::move(held));
  }

 private:
  explicit Lock(FileLock held) : held_(std::move(held)) {}
  FileLock held_;
};

// One change under the lock: recovers, then commits a new state with its
// history records.
class Store::Txn {
 public:
  static Result<Txn> Begin(const Store& s, bool create = false) {
    CX_ASSIGN_OR_RETURN(Lock lock, Lock::Take(s.dir_, create));
    CX_ASSIGN_OR_RETURN(StoreState st, s.ReadState());
    Txn t(s, std::move(lock), std::move(st));
    CX_RETURN_IF_ERROR(t.Recover());
    return t;
  }

  StoreState& state() { return state_; }

  // Appends `records` to the history (durably), then replaces the state file
  // with `next` anchored at the last of them: the commit point.
  Status Commit(StoreState next, std::vector<HistoryRecord> records) {
    std::string lines;
    HistoryHead head = state_.history;
    for (HistoryRecord& r : records) {
      r.seq = head.records + 1;
      r.time = Now();
      r.prev = HexEncode(head.last);
      const std::string line = r.Encode();
      head.records = r.seq;
      head.last = RecordHash(line);
      lines += line + "\n";
    }
    CX_RETURN_IF_ERROR(AppendDurable(
        s_.HistoryPath(), std::span(reinterpret_cast<const uint8_t*>(lines.data()), lines.size())));
    next.history = head;
    const std::string bytes = next.Encode();
    CX_RETURN_IF_ERROR(ReplaceFile(
        s_.StatePath(), std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
    state_ = std::move(next);
    return Status::Ok();
  }

  // Records a refusal (the only change it makes) and returns `why`.
  Status Refuse(const std::string& line, const PatchEntry& p, const Actor& actor,
                const Status& why) {
    HistoryRecord r = PatchRecord("refuse", line, p, actor);
    r.reason = why.message();
    const Status st = Commit(state_, {r});
    return st.ok() ? why : st.Prefixed(why.message() + "; recording the refusal failed");
  }

 private:
  Txn(const Store& s, Lock lock, StoreState st)
      : s_(s), lock_(std::move(lock)), state_(std::move(st)) {}

  // Undoes what a killed command left: history lines past the committed
  // ones, temporary files, and files the state does not refer to.
  Status Recover() {
    uint64_t committed_end = 0;
    CX_ASSIGN_OR_RETURN(auto records,
                        ReadHistory(s_.HistoryPath(), state_.history, &committed_end));
    (void)records;
    struct stat st;
    if (stat(s_.HistoryPath().c_str(), &st) == 0 && uint64_t(st.st_size) > committed_end) {
      CX_RETURN_IF_ERROR(TruncateDurable(s_.HistoryPath(), committed_end));
    }
    CX_RETURN_IF_ERROR(Unlink(s_.StatePath() + ".tmp"));
    const std::string lines_dir = s_.dir_ + "/lines";
    for (const std::string& name : ListDir(lines_dir)) {
      auto it = state_.lines.find(name);
      const std::string ldir = lines_dir + "/" + name;
      std::set<std::string> keep_patches, keep_trees;
      if (it != state_.lines.end()) {
        keep_patches.insert("base.cryptex");
        for (const auto& p : it->second.patches) {
          keep_patches.insert(p.id + ".cxpatch");
          keep_trees.insert(p.id + ".tree");
        }
      }
      for (const std::string& f : ListDir(ldir + "/patches")) {
        if (!keep_patches.count(f)) CX_RETURN_IF_ERROR(Unlink(ldir + "/patches/" + f));
      }
      for (const std::string& f : ListDir(ldir + "/trees")) {
        if (!keep_trees.count(f)) CX_RETURN_IF_ERROR(Unlink(ldir + "/trees/" + f));
      }
      if (it == state_.lines.end()) {
        // A line whose add was not committed: its files and directories.
        for (const std::string& f : ListDir(ldir)) {
          if (f != "patches" && f != "trees") CX_RETURN_IF_ERROR(Unlink(ldir + "/" + f));
        }
        CX_RETURN_IF_ERROR(RemoveDirIfEmpty(ldir + "/patches"));
        CX_RETURN_IF_ERROR(RemoveDirIfEmpty(ldir + "/trees"));
        CX_RETURN_IF_ERROR(RemoveDirIfEmpty(ldir));
      }
    }
    return Status::Ok();
  }

  const Store& s_;
  Lock lock_;
  StoreState state_;
};

// ---- paths and readers ---------------------------------------------------------

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, const TrustStore* trust) {
  if (dir.empty()) return Status::InvalidArgument("store directory: empty path");
  struct stat st;
  if (stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    return Status::NotDirectory(dir + ": store is not a directory");
  }
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return std::unique_ptr<Store>(new Store(d, trust));
}

std::string Store::BasePath(const std::string& line) const {
  return dir_ + "/lines/" + line + "/base.cryptex";
}
std::string Store::PatchPath(const std::string& line, const std::string& id) const {
  return dir_ + "/lines/" + line + "/patches/" + id + ".cxpatch";
}
std::string Store::TreePath(const std::string& line, const std::string& id) const {
  return dir_ + "/lines/" + line + "/trees/" + id + ".tree";
}

ImageOptions Store::Opts() const {
  ImageOptions o;
  o.trust = trust_;
  return o;
}

Result<StoreState> Store::ReadState() const {
  auto bytes = ReadWholeFile(StatePath());
  if (!bytes.ok()) {
    if (bytes.status().code() == Code::kNotFound) return StoreState{};
    return bytes.status();
  }
  return StoreState::Decode(*bytes, StatePath());
}

Result<LineState> Store::ReadLine(const std::string& name) const {
  CX_ASSIGN_OR_RETURN(StoreState st, ReadState());
  auto it = st.lines.find(name);
  if (it == st.lines.end()) return Status::NotFound(name + ": no such image line in " + dir_);
  return it->second;
}

Result<LevelFiles> Store::FilesAt(const Store& s, const StoreState& st, const std::string& name,
                                  const std::string& level) {
  auto it = st.lines.find(name);
  if (it == st.lines.end()) return Status::NotFound(name + ": no such image line in " + s.dir_);
  const LineState& l = it->second;
  LevelFiles f;
  f.base = s.BasePath(name);
  f.generation = st.history.records;
  if (level == "base") return f;
  if (!level.empty() && !l.IsActive(level)) {
    return Status::NotFound(name + ": patch " + level + " is not active (active: [" +
                            Join(l.active) + "])");
  }
  for (const std::string& id : l.active) {
    const PatchEntry* p = l.Find(id);
    f.patches.push_back(s.PatchPath(name, id));
    f.trees.push_back(p->tree_bytes != 0 ? s.TreePath(name, id) : "");
    if (id == level) break;
  }
  return f;
}

Result<LevelFiles> Store::FilesAt(const std::string& name, const std::string& level) const {
  CX_ASSIGN_OR_RETURN(StoreState st, ReadState());
  return FilesAt(*this, st, name, level);
}

Result<std::unique_ptr<View>> Store::OpenLevel(const std::string& name, const std::string& level,
                                               ImageOptions opts) const {
  CX_ASSIGN_OR_RETURN(LevelFiles f, FilesAt(name, level));
  if (opts.trust == nullptr) opts.trust = trust_;
  return OpenStackWithTrees(f.base, f.patches, f.trees, opts);
}

Result<std::vector<HistoryRecord>> Store::History(uint64_t* uncommitted) const {
  CX_ASSIGN_OR_RETURN(StoreState st, ReadState());
  uint64_t end = 0;
  CX_ASSIGN_OR_RETURN(auto records, ReadHistory(HistoryPath(), st.history, &end));
  if (uncommitted != nullptr) {
    struct stat sb;
    *uncommitted = stat(HistoryPath().c_str(), &sb) == 0 && uint64_t(sb.st_size) > end
                       ? uint64_t(sb.st_size) - end
                       : 0;
  }
  return records;
}

Result<std::vector<Damage>> Store::Check() const {
  CX_ASSIGN_OR_RETURN(StoreState st, ReadState());
  std::vector<Damage> out;
  auto check_image = [&](const std::string& line, const std::string& id, const std::string& path,
                         uint64_t size, const Digest& root) {
    auto img = Image::Open(path, Opts());
    Status problem;
    if (!img.ok()) {
      problem = img.status();
    } else if ((*img)->superblock().root_hash != root) {
      problem =
          Status::Corruption(path + ": root digest " + HexEncode((*img)->superblock().root_hash) +
                             " is not the installed one " + HexEncode(root));
    } else {
      struct stat sb;
      if (stat(path.c_str(), &sb) != 0 || uint64_t(sb.st_size) != size) {
        problem = Status::Corruption(path + ": size changed since it was stored (" +
                                     std::to_string(size) + " bytes expected)");
      }
    }
    if (!problem.ok()) out.push_back({line, id, problem});
  };
  for (const auto& [name, l] : st.lines) {
    check_image(name, "", BasePath(name), l.base_size, l.base_root);
    for (const auto& p : l.patches) {
      const size_t before = out.size();
      check_image(name, p.id, PatchPath(name, p.id), p.size, p.root);
      if (out.size() != before) continue;
      const Status problem = CheckStoredPatch(name, p);
      if (!problem.ok()) out.push_back({name, p.id, problem});
    }
  }
  return out;
}

Result<std::string> Store::LineOf(const StoreState& st, const std::string& line,
                                  const std::string& id) const {
  if (!line.empty()) {
    auto it = st.lines.find(line);
    if (it == st.lines.end()) return Status::NotFound(line + ": no such image line in " + dir_);
    if (it->second.Find(id) == nullptr) {
      return Status::NotFound(line + ": patch " + id + " is not installed");
    }
    return line;
  }
  std::vector<std::string> found;
  for (const auto& [name, l] : st.lines) {
    if (l.Find(id) != nullptr) found.push_back(name);
  }
  if (found.empty()) return Status::NotFound("patch " + id + " is not installed in " + dir_);
  if (found.size() > 1) {
    return Status::InvalidArgument("patch " + id + " is installed in several lines (" +
                                   Join(found) + "): name one with --line");
  }
  return found[0];
}

// ---- changes -------------------------------------------------------------------

Result<LineState> Store::Add(const std::string& image, const Actor& actor, bool* added) {
  if (added != nullptr) *added = false;
  CX_ASSIGN_OR_RETURN(auto src, Image::Open(image, Opts()));
  if (src->superblock().kind != format::kKindBase) {
    return Status::InvalidArgument(image + ": is a patch image, not a base image (use install)");
  }
  const Manifest& m = src->manifest();
  CX_RETURN_IF_ERROR(CheckStoreName(m.name, image + ": image name"));
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this, /*create=*/true));
  auto it = txn.state().lines.find(m.name);
  if (it != txn.state().lines.end()) {
    if (it->second.base_root == src->superblock().root_hash) return it->second;
    return Status::Exists(image + ": the store already has a base named " + m.name +
                          " with another root digest (" + HexEncode(it->second.base_root) + ")");
  }
  const std::string ldir = dir_ + "/lines/" + m.name;
  CX_RETURN_IF_ERROR(EnsureDir(dir_ + "/lines"));
  CX_RETURN_IF_ERROR(EnsureDir(ldir));
  CX_RETURN_IF_ERROR(EnsureDir(ldir + "/patches"));
  CX_RETURN_IF_ERROR(EnsureDir(ldir + "/trees"));
  CX_ASSIGN_OR_RETURN(auto out, OutputFile::Create(BasePath(m.name)));
  uint64_t size = 0;
  CX_RETURN_IF_ERROR(CopyInto(image, out->fd(), BasePath(m.name), &size));
  CrashPoint("copy base");
  // Check the copy, not the source: what the store will serve.
  const std::string copy_path = "/proc/self/fd/" + std::to_string(out->fd());
  CX_ASSIGN_OR_RETURN(auto copy, Image::Open(copy_path, Opts()));
  if (copy->superblock().root_hash != src->superblock().root_hash) {
    return Status::IOError(image + ": changed while it was being added");
  }
  CX_RETURN_IF_ERROR(copy->VerifyAll().Prefixed(image));
  CX_RETURN_IF_ERROR(out->Commit());
  CrashPoint("link base");

  LineState l;
  l.name = m.name;
  l.base_version = m.version;
  l.base_root = src->superblock().root_hash;
  l.base_size = size;
  l.added_at = Now();
  l.highest_counter = m.release_counter;
  StoreState next = txn.state();
  next.lines[m.name] = l;
  HistoryRecord r;
  r.action = "add";
  r.line = m.name;
  r.version = m.version;
  r.who = actor.who;
  r.reason = actor.reason;
  CX_RETURN_IF_ERROR(txn.Commit(std::move(next), {r}));
  if (added != nullptr) *added = true;
  return l;
}

Result<PatchEntry> Store::Install(const std::string& patch, bool activate, const Actor& actor) {
  // Signature and kind first: an untrusted file is refused without a record.
  CX_ASSIGN_OR_RETURN(auto src, Image::Open(patch, Opts()));
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  const Manifest& m = src->manifest();
  PatchEntry entry = EntryFromManifest(m);
  auto refuse = [&](const Status& why) { return txn.Refuse(m.name, entry, actor, why); };
  if (src->superblock().kind != format::kKindPatch) {
    return Status::InvalidArgument(patch + ": is a base image, not a patch (use add)");
  }
  if (Status st = CheckStoreName(m.patch_id, patch + ": patch id"); !st.ok()) return refuse(st);
  auto lit = txn.state().lines.find(m.name);
  if (lit == txn.state().lines.end()) {
    return refuse(Status::NotFound(patch + ": no base image named " + m.name +
                                   " in the store (cryptex add it first)"));
  }
  const LineState& line = lit->second;
  if (!m.base_root_digest || *m.base_root_digest != line.base_root) {
    return refuse(Refused(patch + ": patch " + m.patch_id + " is for base " +
                          (m.base_root_digest ? HexEncode(*m.base_root_digest) : "(none)") +
                          ", the store's " + m.name + " base is " + HexEncode(line.base_root)));
  }
  if (line.Find(m.patch_id) != nullptr) {
    return refuse(Status::Exists(patch + ": patch " + m.patch_id + " is already installed in " +
                                 m.name + " (a replay is refused)"));
  }
  if (m.release_counter < line.highest_counter) {
    return refuse(Refused(patch + ": patch " + m.patch_id + " has release counter " +
                          std::to_string(m.release_counter) + ", older than the highest seen for " +
                          m.name + " (" + std::to_string(line.highest_counter) +
                          "): rollback refused"));
  }
  if (m.requires_patches != line.active) {
    std::vector<std::string> missing;
    for (const auto& r : m.requires_patches) {
      if (!line.IsActive(r)) missing.push_back(r);
    }
    return refuse(Refused(patch + ": patch " + m.patch_id + " requires [" +
                          Join(m.requires_patches) + "] active in that order; " + m.name +
                          " has [" + Join(line.active) + "] active" +
                          (missing.empty() ? "" : "; missing: " + Join(missing))));
  }

  // Copy into the store (unnamed until committed), then check the copy.
  CX_ASSIGN_OR_RETURN(auto out, OutputFile::Create(PatchPath(m.name, m.patch_id)));
  CX_RETURN_IF_ERROR(CopyInto(patch, out->fd(), out->dest(), &entry.size));
  const std::string copy_path = "/proc/self/fd/" + std::to_string(out->fd());
  auto copy = Image::Open(copy_path, Opts());
  if (!copy.ok()) return refuse(copy.status().Prefixed(patch + " (stored copy)"));
  if ((*copy)->superblock().root_hash != src->superblock().root_hash) {
    return Status::IOError(patch + ": changed while it was being installed");
  }
  entry.root = src->superblock().root_hash;
  if (Status st = (*copy)->VerifyAll(); !st.ok()) return refuse(st.Prefixed(patch));
  // What activation and status will compare the stored file with.
  CX_ASSIGN_OR_RETURN(FileDigest digest, DigestOfFd(out->fd(), out->dest()));
  if (digest.size != entry.size) {
    return Status::IOError(patch + ": changed while it was being installed");
  }
  entry.sha256 = digest.sha256;
  LevelFiles below = *FilesAt(*this, txn.state(), m.name, "");
  std::vector<std::string> stack = below.patches;
  stack.push_back(copy_path);
  auto view = OpenStackWithTrees(below.base, stack, {}, Opts());
  if (!view.ok()) return refuse(view.status().Prefixed(patch));
  auto trees = BuildTrees(**view, **copy, patch);
  if (!trees.ok()) return refuse(trees.status());

  // Checked: store the files, then commit.
  CX_RETURN_IF_ERROR(out->Commit());
  CrashPoint("link patch");
  if (!trees->empty()) {
    const std::vector<uint8_t> bytes = EncodeTrees(*trees);
    CX_ASSIGN_OR_RETURN(auto tf, OutputFile::Create(TreePath(m.name, m.patch_id)));
    CX_RETURN_IF_ERROR(tf->Append(bytes.data(), bytes.size()));
    CX_RETURN_IF_ERROR(tf->Commit());
    CrashPoint("link tree");
    entry.tree_files = trees->size();
    entry.tree_bytes = bytes.size();
    entry.tree_sha256 = Sha256::Hash(bytes.data(), bytes.size());
  }
  entry.installed_at = Now();
  StoreState next = txn.state();
  LineState& nl = next.lines[m.name];
  nl.patches.push_back(entry);
  nl.highest_counter = std::max(nl.highest_counter, entry.release_counter);
  std::vector<HistoryRecord> records = {PatchRecord("install", m.name, entry, actor)};
  if (activate) {
    nl.active.push_back(entry.id);
    records.push_back(PatchRecord("activate", m.name, entry, actor));
  }
  CX_RETURN_IF_ERROR(txn.Commit(std::move(next), std::move(records)));
  return entry;
}

Status Store::Activate(const std::string& line, const std::string& id, const Actor& actor) {
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  CX_ASSIGN_OR_RETURN(std::string name, LineOf(txn.state(), line, id));
  StoreState next = txn.state();
  LineState& l = next.lines[name];
  const PatchEntry& p = *l.Find(id);
  if (l.IsActive(id)) return Status::Exists(name + ": patch " + id + " is already active");
  if (p.requires_patches != l.active) {
    std::vector<std::string> missing;
    for (const auto& r : p.requires_patches) {
      if (!l.IsActive(r)) missing.push_back(r);
    }
    return Refused(name + ": patch " + id + " requires [" + Join(p.requires_patches) +
                   "] active in that order; [" + Join(l.active) + "] are active" +
                   (missing.empty() ? "" : "; missing: " + Join(missing)));
  }
  // Never make a damaged file live: the stored patch (and its tree file)
  // must be the bytes install checked. One pass over the patch, not the base.
  if (Status st = CheckStoredPatch(name, p); !st.ok()) {
    return txn.Refuse(name, p, actor, st.Prefixed(name + ": patch " + id + " not activated"));
  }
  l.active.push_back(id);
  return txn.Commit(next, {PatchRecord("activate", name, p, actor)});
}

Status Store::Revert(const std::string& line, const std::string& id, const Actor& actor) {
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  CX_ASSIGN_OR_RETURN(std::string name, LineOf(txn.state(), line, id));
  StoreState next = txn.state();
  LineState& l = next.lines[name];
  if (!l.IsActive(id)) return Status::InvalidArgument(name + ": patch " + id + " is not active");
  std::vector<std::string> dependents;
  for (const std::string& a : l.active) {
    const auto& req = l.Find(a)->requires_patches;
    if (std::find(req.begin(), req.end(), id) != req.end()) dependents.push_back(a);
  }
  if (!dependents.empty()) {
    return Refused(name + ": cannot revert " + id + ": active patches depend on it: " +
                   Join(dependents) + " (revert them first, or revert --all)");
  }
  const PatchEntry p = *l.Find(id);
  l.active.erase(std::find(l.active.begin(), l.active.end(), id));
  return txn.Commit(next, {PatchRecord("revert", name, p, actor)});
}

Status Store::RevertAll(const std::string& line, const Actor& actor) {
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  auto it = txn.state().lines.find(line);
  if (it == txn.state().lines.end()) {
    return Status::NotFound(line + ": no such image line in " + dir_);
  }
  StoreState next = txn.state();
  LineState& l = next.lines[line];
  HistoryRecord r;
  r.action = "revert-all";
  r.line = line;
  r.version = l.base_version;
  r.who = actor.who;
  r.reason = actor.reason.empty() ? "reverted: [" + Join(l.active) + "]" : actor.reason;
  l.active.clear();
  return txn.Commit(next, {r});
}

Status Store::Remove(const std::string& line, const std::string& id, const Actor& actor) {
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  CX_ASSIGN_OR_RETURN(std::string name, LineOf(txn.state(), line, id));
  StoreState next = txn.state();
  LineState& l = next.lines[name];
  if (l.IsActive(id)) {
    return Refused(name + ": patch " + id + " is active: revert it before removing it");
  }
  const PatchEntry p = *l.Find(id);
  l.patches.erase(std::find_if(l.patches.begin(), l.patches.end(),
                               [&](const PatchEntry& e) { return e.id == id; }));
  CX_RETURN_IF_ERROR(txn.Commit(next, {PatchRecord("remove", name, p, actor)}));
  // Committed: the files are garbage now (a crash here leaves them to the
  // next command's recovery).
  CX_RETURN_IF_ERROR(Unlink(PatchPath(name, id)));
  CX_RETURN_IF_ERROR(Unlink(TreePath(name, id)));
  return Status::Ok();
}

Status Store::Note(std::vector<HistoryRecord> records) {
  CX_ASSIGN_OR_RETURN(Txn txn, Txn::Begin(*this));
  return txn.Commit(txn.state(), std::move(records));
}

}  // namespace cryptex::store
