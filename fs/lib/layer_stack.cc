// OpenStack: a base image with patches stacked on it (view.h; the design is
// described in layer_stack.h).
#include "layer_stack.h"

#include <algorithm>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "format.h"
#include "fsverity.h"

namespace cryptex {
namespace {

using format::kTypeDirectory;
using format::kTypeWhiteout;

// One entry of a merged directory; `node` is a view node id.
struct MergedEntry {
  std::string name;
  uint64_t node = 0;
  uint8_t type = 0;
};

struct MergedDir {
  InodeInfo attr;  // of the topmost layer carrying it; ino/size/nlink of the merge
  uint32_t attr_layer = 0;
  uint64_t attr_ino = 0;             // where xattrs come from
  std::vector<MergedEntry> entries;  // strictly sorted by name (bytes)
};

// A regular file of a patch whose content comes from the state below it.
struct SourcedFile {
  uint64_t lower = 0;                  // node id of the lower file
  std::unique_ptr<PatchedFile> delta;  // kInodeDelta; null for lower content
};

// A directory of patch `layer` (inode `ino`) to lay over merged node `node`.
struct ApplyTask {
  uint64_t ino = 0;
  uint64_t node = 0;
  bool fresh = false;  // no lower directory: starts empty
};

class LayerStack final : public View {
 public:
  // Decoded delta segments share the frame cache budget of `opts`.
  LayerStack(std::vector<std::unique_ptr<Image>> images, const ImageOptions& opts,
             StackOptions stack_opts)
      : images_(std::move(images)),
        stack_opts_(std::move(stack_opts)),
        segment_cache_(opts.frame_cache_bytes) {}

  // Lays every patch over the state below it (see layer_stack.h).
  Status Build() {
    for (uint32_t k = 1; k < images_.size(); ++k) {
      CX_RETURN_IF_ERROR(BindSources(k));
      CX_RETURN_IF_ERROR(ApplyLayer(k));
    }
    return Status::Ok();
  }

  uint64_t root() const override { return NodeId(0, 1); }

  Result<InodeInfo> GetAttr(uint64_t node) const override {
    if (const MergedDir* d = FindDir(node)) return d->attr;
    CX_ASSIGN_OR_RETURN(InodeInfo in, LayerInode(node));
    in.ino = node;
    return in;
  }

  Result<DirEntry> Lookup(uint64_t dir, std::string_view name) const override {
    if (const MergedDir* d = FindDir(dir)) {
      auto it = std::lower_bound(
          d->entries.begin(), d->entries.end(), name,
          [](const MergedEntry& e, std::string_view n) { return std::string_view(e.name) < n; });
      if (it == d->entries.end() || it->name != name) return Status::NotFound(std::string(name));
      return DirEntry{it->name, it->node, it->type};
    }
    CX_RETURN_IF_ERROR(CheckPlainDir(dir));
    CX_ASSIGN_OR_RETURN(DirEntry e, images_[0]->Lookup(NodeIno(dir), name));
    if (e.type == kTypeWhiteout) return Status::NotFound(std::string(name));
    return e;  // base ids are inode numbers
  }

  Status ReadDir(uint64_t dir, uint64_t start,
                 const std::function<bool(const DirEntry&, uint64_t)>& fn) const override {
    if (const MergedDir* d = FindDir(dir)) {
      for (uint64_t i = start; i < d->entries.size(); ++i) {
        const MergedEntry& e = d->entries[i];
        if (!fn(DirEntry{e.name, e.node, e.type}, i)) break;
      }
      return Status::Ok();
    }
    CX_RETURN_IF_ERROR(CheckPlainDir(dir));
    return images_[0]->ReadDir(NodeIno(dir), start, [&](const DirEntry& e, uint64_t i) {
      return e.type == kTypeWhiteout || fn(e, i);
    });
  }

  // The caller keeps what it reads (View::Read's contract for a mount or an
  // extract): delta files decode whole segments straight into buf.
  Result<size_t> Read(uint64_t node, uint64_t offset, std::span<uint8_t> buf) const override {
    return ReadNode(node, offset, buf, true);
  }

  // through: PatchedFile::ReadThrough, else PatchedFile::Read (a decoder's
  // lower reads, which the segment cache serves).
  Result<size_t> ReadNode(uint64_t node, uint64_t offset, std::span<uint8_t> buf,
                          bool through) const {
    if (FindDir(node))
      return Status::IsDirectory("node " + std::to_string(node) + " is a directory");
    auto it = sourced_.find(node);
    if (it != sourced_.end()) {
      if (it->second.delta) {
        return through ? it->second.delta->ReadThrough(offset, buf)
                       : it->second.delta->Read(offset, buf);
      }
      return ReadNode(it->second.lower, offset, buf, through);
    }
    CX_RETURN_IF_ERROR(CheckServed(node));
    return images_[NodeLayer(node)]->Read(NodeIno(node), offset, buf);
  }

  Result<std::string> ReadLink(uint64_t node) const override {
    if (FindDir(node)) {
      return Status::InvalidArgument("node " + std::to_string(node) + " is not a symlink");
    }
    CX_RETURN_IF_ERROR(CheckServed(node));
    return images_[NodeLayer(node)]->ReadLink(NodeIno(node));
  }

  Result<std::vector<Xattr>> ListXattrs(uint64_t node) const override {
    if (const MergedDir* d = FindDir(node)) return images_[d->attr_layer]->ListXattrs(d->attr_ino);
    CX_RETURN_IF_ERROR(CheckServed(node));
    return images_[NodeLayer(node)]->ListXattrs(NodeIno(node));
  }

  Result<std::string> GetXattr(uint64_t node, std::string_view name) const override {
    if (const MergedDir* d = FindDir(node)) {
      return images_[d->attr_layer]->GetXattr(d->attr_ino, name);
    }
    CX_RETURN_IF_ERROR(CheckServed(node));
    return images_[NodeLayer(node)]->GetXattr(NodeIno(node), name);
  }

  Status VerifyAll(const std::function<void(uint64_t, uint64_t)>& progress) const override {
    for (const auto& img : images_) CX_RETURN_IF_ERROR(img->VerifyAll(progress));
    return VerifyMergedFiles(progress);
  }

  std::vector<const Image*> layers() const override {
    std::vector<const Image*> out;
    for (const auto& img : images_) out.push_back(img.get());
    return out;
  }

  const PatchedFileStats& delta_stats() const { return delta_stats_; }
  // The delta file serving `node`, or nullptr.
  const PatchedFile* delta_file(uint64_t node) const {
    auto it = sourced_.find(node);
    return it == sourced_.end() ? nullptr : it->second.delta.get();
  }

 private:
  const MergedDir* FindDir(uint64_t node) const {
    auto it = dirs_.find(node);
    return it == dirs_.end() ? nullptr : &it->second;
  }

  // The layer inode behind a node that is not a merged directory. Patch
  // directories and whiteouts are never served under their own id.
  Result<InodeInfo> LayerInode(uint64_t node) const {
    const uint32_t layer = NodeLayer(node);
    if (layer >= images_.size() || NodeIno(node) == 0) {
      return Status::NotFound("node " + std::to_string(node) + " is not in this stack");
    }
    CX_ASSIGN_OR_RETURN(InodeInfo in, images_[layer]->GetInode(NodeIno(node)));
    if ((layer > 0 && in.is_dir()) || (in.flags & format::kInodeWhiteout)) {
      return Status::NotFound("node " + std::to_string(node) + " is not served by this stack");
    }
    return in;
  }

  // Whether a non-merged node may be served. Base nodes are checked by the
  // base image itself (a base holds no whiteouts), sparing the hot read path
  // an inode fetch.
  Status CheckServed(uint64_t node) const {
    if (NodeLayer(node) == 0) return Status::Ok();
    return LayerInode(node).status();
  }

  // A directory not merged is the base's (Image::Lookup/ReadDir check the
  // type of a base node); any other node is a patch's non-directory or a
  // patch directory that is never served under its own id.
  Status CheckPlainDir(uint64_t dir) const {
    if (NodeLayer(dir) == 0) return Status::Ok();
    CX_RETURN_IF_ERROR(CheckServed(dir));
    return Status::NotDirectory("node " + std::to_string(dir) + " is not a directory");
  }

  const std::string& PatchPath(uint32_t k) const { return images_[k]->path(); }

  // Every regular file of patch k with its path in the patch: calls
  // fn(ino, path) once per inode (hard links once).
  Status WalkPatchFiles(uint32_t k,
                        const std::function<Status(uint64_t, const std::string&)>& fn) const {
    const Image& img = *images_[k];
    std::vector<std::pair<uint64_t, std::string>> todo{{img.root_ino(), ""}};
    std::unordered_set<uint64_t> seen;
    while (!todo.empty()) {
      auto [dir, path] = std::move(todo.back());
      todo.pop_back();
      std::vector<DirEntry> entries;
      CX_RETURN_IF_ERROR(img.ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
        entries.push_back(e);
        return true;
      }));
      for (DirEntry& e : entries) {
        std::string child = path + "/" + e.name;
        if (e.type == kTypeDirectory) {
          todo.emplace_back(e.ino, std::move(child));
        } else if (e.type == format::kTypeRegular && seen.insert(e.ino).second) {
          CX_RETURN_IF_ERROR(fn(e.ino, child));
        }
      }
    }
    return Status::Ok();
  }

  // Resolve(source), with the node of the source's directory remembered in
  // *dirs: a patch's sourced files mostly share a few directories. Only
  // for use while the merged state does not change. On any failure the
  // path is resolved again in full, so the error is Resolve's.
  Result<InodeInfo> ResolveSource(const std::string& source,
                                  std::unordered_map<std::string, uint64_t>* dirs) const {
    const size_t slash = source.rfind('/');
    if (slash == std::string::npos) return Resolve(source);
    const std::string_view name = std::string_view(source).substr(slash + 1);
    if (name.empty() || name == ".") return Resolve(source);
    const std::string parent = source.substr(0, slash);
    auto it = dirs->find(parent);
    if (it == dirs->end()) {
      auto dir = Resolve(parent);
      if (!dir.ok()) return Resolve(source);
      it = dirs->emplace(parent, dir->ino).first;
    }
    auto e = Lookup(it->second, name);
    if (!e.ok()) return Resolve(source);
    return GetAttr(e->ino);
  }

  // Binds each sourced file of patch k to its lower file in the state of
  // layers 0..k-1 (the current merged state: patch k is not laid on yet).
  Status BindSources(uint32_t k) {
    std::unordered_map<std::string, uint64_t> source_dirs;  // for ResolveSource
    return WalkPatchFiles(k, [&](uint64_t ino, const std::string& path) -> Status {
      CX_ASSIGN_OR_RETURN(InodeInfo in, images_[k]->GetInode(ino));
      if (!in.is_sourced()) return Status::Ok();
      const std::string what = PatchPath(k) + ": " + path;
      CX_ASSIGN_OR_RETURN(std::string source, images_[k]->SourcePath(ino));
      auto lower = ResolveSource(source, &source_dirs);
      if (!lower.ok()) {
        return Status::Corruption(what + ": lower file /" + source +
                                  " is not in the state below the patch (" +
                                  lower.status().message() + ")");
      }
      if (!lower->is_reg()) {
        return Status::Corruption(what + ": lower file /" + source + " is not a regular file");
      }
      SourcedFile sf;
      sf.lower = lower->ino;
      if (in.flags & format::kInodeLowerContent) {
        if (lower->digest != in.digest || lower->size != in.size) {
          return Status::Corruption(what + ": lower file /" + source + " has digest " +
                                    HexEncode(lower->digest) + " (" + std::to_string(lower->size) +
                                    " bytes), the patch expects " + HexEncode(in.digest) + " (" +
                                    std::to_string(in.size) + " bytes)");
        }
      } else {
        CX_ASSIGN_OR_RETURN(sf.delta, MakePatchedFile(k, in, what, *lower));
      }
      sourced_.emplace(NodeId(k, ino), std::move(sf));
      return Status::Ok();
    });
  }

  // The delta file, with its persisted leaves if stack_opts_ has them.
  Result<std::unique_ptr<PatchedFile>> MakePatchedFile(uint32_t k, const InodeInfo& in,
                                                       const std::string& what,
                                                       const InodeInfo& lower) {
    PatchedFileSource src;
    src.context = what;
    src.size = in.size;
    src.digest = in.digest;
    src.delta_size = in.stored_size;
    const Image* img = images_[k].get();
    const uint64_t ino = in.ino;
    src.read_delta = [img, ino, what](uint64_t offset, std::span<uint8_t> out) {
      return ReadFull(*img, ino, offset, out, what + " (delta)", &Image::ReadStored);
    };
    src.lower_size = lower.size;
    const uint64_t lower_node = lower.ino;
    // Called once per decoded segment or more: the context is built once.
    src.read_lower = [this, lower_node, lower_what = what + " (lower file)"](
                         uint64_t offset, std::span<uint8_t> out) {
      return ReadFullNode(lower_node, offset, out, lower_what);
    };
    PatchedFileEnv env;
    env.stats = &delta_stats_;
    env.cache = &segment_cache_;
    env.cache_id = next_cache_id_++;
    if (stack_opts_.persisted_leaves) {
      std::optional<std::vector<uint8_t>> bytes = stack_opts_.persisted_leaves(k, in.ino);
      if (bytes) {
        CX_ASSIGN_OR_RETURN(
            VerityLeaves leaves,
            VerityLeaves::Parse(*bytes, in.size, in.digest, what + " (persisted hash tree)"));
        return std::make_unique<PatchedFile>(std::move(src), env, std::move(leaves));
      }
    }
    return std::make_unique<PatchedFile>(std::move(src), env);
  }

  // Fills `out` from an image's Read-like method; a short file is corruption.
  static Status ReadFull(const Image& img, uint64_t ino, uint64_t offset, std::span<uint8_t> out,
                         const std::string& what,
                         Result<size_t> (Image::*read)(uint64_t, uint64_t, std::span<uint8_t>)
                             const) {
    while (!out.empty()) {
      CX_ASSIGN_OR_RETURN(size_t n, (img.*read)(ino, offset, out));
      if (n == 0) {
        return Status::Corruption(what + ": ends before offset " + std::to_string(offset));
      }
      out = out.subspan(n);
      offset += n;
    }
    return Status::Ok();
  }

  Status ReadFullNode(uint64_t node, uint64_t offset, std::span<uint8_t> out,
                      const std::string& what) const {
    while (!out.empty()) {
      CX_ASSIGN_OR_RETURN(size_t n, ReadNode(node, offset, out, false));
      if (n == 0) {
        return Status::Corruption(what + ": ends before offset " + std::to_string(offset));
      }
      out = out.subspan(n);
      offset += n;
    }
    return Status::Ok();
  }

  // The merged directory of `node`, created from the state below on first
  // touch (only base directories are ever unmerged; `fresh` ones start empty).
  Result<MergedDir*> Touch(uint64_t node, bool fresh) {
    auto it = dirs_.find(node);
    if (it != dirs_.end()) return &it->second;
    MergedDir d;
    if (!fresh) {
      if (NodeLayer(node) != 0) {
        return Status::Internal("node " + std::to_string(node) + ": unmerged patch directory");
      }
      CX_ASSIGN_OR_RETURN(d.attr, images_[0]->GetInode(NodeIno(node)));
      d.attr_ino = NodeIno(node);
      CX_RETURN_IF_ERROR(images_[0]->ReadDir(NodeIno(node), 0, [&](const DirEntry& e, uint64_t) {
        if (e.type != kTypeWhiteout) d.entries.push_back({e.name, e.ino, e.type});
        return true;
      }));
    }
    return &dirs_.emplace(node, std::move(d)).first->second;
  }

  Status ApplyLayer(uint32_t k) {
    std::vector<ApplyTask> todo{{images_[k]->root_ino(), root(), false}};
    while (!todo.empty()) {
      const ApplyTask t = todo.back();
      todo.pop_back();
      CX_RETURN_IF_ERROR(ApplyDir(k, t, &todo));
    }
    return Status::Ok();
  }

  // Lays directory t.ino of patch k over merged node t.node; queues the
  // subdirectories to merge next.
  Status ApplyDir(uint32_t k, const ApplyTask& t, std::vector<ApplyTask>* todo) {
    const Image& img = *images_[k];
    CX_ASSIGN_OR_RETURN(InodeInfo pin, img.GetInode(t.ino));
    CX_ASSIGN_OR_RETURN(MergedDir * d, Touch(t.node, t.fresh));
    std::vector<MergedEntry> lower;
    if (!(pin.flags & format::kInodeOpaque)) lower = std::move(d->entries);
    std::vector<MergedEntry> merged;
    merged.reserve(lower.size() + pin.size);
    size_t li = 0;
    Status st;
    CX_RETURN_IF_ERROR(img.ReadDir(t.ino, 0, [&](const DirEntry& e, uint64_t) {
      while (li < lower.size() && lower[li].name < e.name) merged.push_back(std::move(lower[li++]));
      const MergedEntry* below = nullptr;
      if (li < lower.size() && lower[li].name == e.name) below = &lower[li++];
      if (e.type == kTypeWhiteout) return true;
      MergedEntry out{e.name, NodeId(k, e.ino), e.type};
      if (e.type == kTypeDirectory) {
        auto child = img.GetInode(e.ino);
        if (!child.ok()) {
          st = child.status();
          return false;
        }
        const bool keep =
            below && below->type == kTypeDirectory && !(child->flags & format::kInodeOpaque);
        if (keep) out.node = below->node;
        todo->push_back({e.ino, out.node, !keep});
      }
      merged.push_back(std::move(out));
      return true;
    }));
    CX_RETURN_IF_ERROR(st);
    while (li < lower.size()) merged.push_back(std::move(lower[li++]));

    const uint64_t node = t.node;
    d->attr = pin;
    d->attr.ino = node;
    d->attr_layer = k;
    d->attr_ino = t.ino;
    d->entries = std::move(merged);
    d->attr.size = d->entries.size();
    d->attr.nlink = 2 + static_cast<uint32_t>(std::count_if(
                            d->entries.begin(), d->entries.end(),
                            [](const MergedEntry& e) { return e.type == kTypeDirectory; }));
    return Status::Ok();
  }

  // Reads every regular file of the merged tree through the stack and
  // compares it with its signed digest.
  Status VerifyMergedFiles(const std::function<void(uint64_t, uint64_t)>& progress) const {
    struct File {
      uint64_t node;
      std::string path;
      uint64_t size;
      Digest digest;
    };
    std::vector<File> files;
    std::unordered_set<uint64_t> seen;
    uint64_t total = 0;
    std::vector<std::pair<uint64_t, std::string>> todo{{root(), ""}};
    while (!todo.empty()) {
      auto [dir, path] = std::move(todo.back());
      todo.pop_back();
      std::vector<DirEntry> entries;
      CX_RETURN_IF_ERROR(ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
        entries.push_back(e);
        return true;
      }));
      for (DirEntry& e : entries) {
        std::string child = path + "/" + e.name;
        if (e.type == kTypeDirectory) {
          todo.emplace_back(e.ino, std::move(child));
        } else if (e.type == format::kTypeRegular && seen.insert(e.ino).second) {
          CX_ASSIGN_OR_RETURN(InodeInfo in, GetAttr(e.ino));
          files.push_back({e.ino, std::move(child), in.size, in.digest});
          total += in.size;
        }
      }
    }
    std::vector<uint8_t> buf(1 << 20);
    FsVerityHasher h;
    uint64_t done = 0;
    for (const File& f : files) {
      for (uint64_t off = 0; off < f.size;) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), f.size - off));
        auto n = Read(f.node, off, std::span<uint8_t>(buf.data(), want));
        if (!n.ok()) return n.status().Prefixed(f.path);
        if (*n == 0) {
          return Status::Corruption(f.path + ": ends at offset " + std::to_string(off) +
                                    ", its size is " + std::to_string(f.size));
        }
        h.Update(buf.data(), *n);
        off += *n;
        done += *n;
        if (progress) progress(done, total);
      }
      const Digest got = h.Final();
      if (got != f.digest) {
        return Status::Corruption(f.path + ": content has fs-verity digest " + HexEncode(got) +
                                  ", signed digest is " + HexEncode(f.digest));
      }
    }
    return Status::Ok();
  }

  std::vector<std::unique_ptr<Image>> images_;  // base first
  std::unordered_map<uint64_t, MergedDir> dirs_;
  std::unordered_map<uint64_t, SourcedFile> sourced_;
  mutable PatchedFileStats delta_stats_;
  const StackOptions stack_opts_;
  mutable SegmentCache segment_cache_;
  uint64_t next_cache_id_ = 0;
};

std::string IdList(const std::vector<std::string>& ids) {
  if (ids.empty()) return "(none)";
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ", ") + id;
  return out;
}

// Patch `k` (1-based layer) must bind to the state below it.
Status CheckBinding(const Image& base, const std::vector<std::unique_ptr<Image>>& images,
                    size_t k) {
  const Image& p = *images[k];
  if (p.superblock().kind != format::kKindPatch) {
    return Status::InvalidArgument(p.path() + ": is not a patch image (kind " +
                                   std::to_string(p.superblock().kind) + ")");
  }
  const Manifest& m = p.manifest();
  if (!m.base_root_digest) {
    return Status::InvalidArgument(p.path() + ": the patch names no base root digest");
  }
  if (*m.base_root_digest != base.superblock().root_hash) {
    return Status::InvalidArgument(p.path() + ": made for the base with root hash " +
                                   HexEncode(*m.base_root_digest) + ", but " + base.path() +
                                   " has root hash " + HexEncode(base.superblock().root_hash));
  }
  std::vector<std::string> below;
  for (size_t j = 1; j < k; ++j) below.push_back(images[j]->manifest().patch_id);
  if (m.requires_patches == below) return Status::Ok();
  std::vector<std::string> missing, extra;
  for (const auto& id : m.requires_patches) {
    if (std::find(below.begin(), below.end(), id) == below.end()) missing.push_back(id);
  }
  for (const auto& id : below) {
    if (std::find(m.requires_patches.begin(), m.requires_patches.end(), id) ==
        m.requires_patches.end()) {
      extra.push_back(id);
    }
  }
  std::string why = p.path() + " (patch " + m.patch_id + "): requires patches [" +
                    IdList(m.requires_patches) + "] below it, the stack has [" + IdList(below) +
                    "]";
  if (!missing.empty()) why += "; missing: " + IdList(missing);
  if (!extra.empty()) why += "; not required: " + IdList(extra);
  if (missing.empty() && extra.empty()) why += "; wrong order";
  return Status::InvalidArgument(why);
}

}  // namespace

const PatchedFileStats* DeltaStatsOf(const View& view) {
  const auto* stack = dynamic_cast<const LayerStack*>(&view);
  return stack ? &stack->delta_stats() : nullptr;
}

Result<std::shared_ptr<const VerityLeaves>> DeltaLeavesOf(const View& view, uint64_t node) {
  const auto* stack = dynamic_cast<const LayerStack*>(&view);
  const PatchedFile* f = stack ? stack->delta_file(node) : nullptr;
  if (f == nullptr) {
    return Status::NotFound("node " + std::to_string(node) + " is not a delta file");
  }
  return f->Leaves();
}

Result<std::unique_ptr<View>> OpenStack(const std::string& base,
                                        const std::vector<std::string>& patches,
                                        const ImageOptions& opts) {
  return OpenStack(base, patches, opts, StackOptions{});
}

Result<std::unique_ptr<View>> OpenStack(const std::string& base,
                                        const std::vector<std::string>& patches,
                                        const ImageOptions& opts, StackOptions stack_opts) {
  CX_ASSIGN_OR_RETURN(auto image, Image::Open(base, opts));
  // OpenImageView refuses a base that is not one (its wording, one place).
  if (patches.empty() || image->superblock().kind != format::kKindBase) {
    return OpenImageView(std::move(image));
  }
  std::vector<std::unique_ptr<Image>> images;
  images.push_back(std::move(image));
  for (const std::string& p : patches) {
    CX_ASSIGN_OR_RETURN(auto img, Image::Open(p, opts));
    images.push_back(std::move(img));
    CX_RETURN_IF_ERROR(CheckBinding(*images[0], images, images.size() - 1));
  }
  auto stack = std::make_unique<LayerStack>(std::move(images), opts, std::move(stack_opts));
  CX_RETURN_IF_ERROR(stack->Build());
  return std::unique_ptr<View>(std::move(stack));
}

}  // namespace cryptex
