// The read interface of a tree: one sealed base image (ImageView), or a base
// with patches stacked on it (a layer stack, layer_stack.h). The CLI reads
// through it, so `cryptex cat IMAGE --patch P` and a mount share every rule;
// the overlay rules (whiteouts, opaque directories, new node ids for changed
// files) live only in the stack.
//
// Node ids: a node is (layer, inode) packed as NodeId(layer, ino); the base
// is layer 0, so for a base image alone node id == inode number and the
// root is 1. A directory that several layers carry keeps the id of the
// lowest one that has it (stable as patches are added); anything a patch
// replaces gets the id of the patch's inode (a changed file is a new node).
//
// Every byte returned was verified against a signed digest (DESIGN.md
// invariant 1); corrupt data gives Code::kCorruption naming the image, the
// path or inode, and the offset, never wrong bytes.
//
// Thread safety: all const methods may be called concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "image.h"
#include "sha256.h"
#include "status.h"

namespace cryptex {

constexpr uint64_t NodeId(uint32_t layer, uint64_t ino) { return (uint64_t{layer} << 32) | ino; }
constexpr uint32_t NodeLayer(uint64_t node) { return static_cast<uint32_t>(node >> 32); }
constexpr uint64_t NodeIno(uint64_t node) { return node & 0xFFFFFFFFull; }

class View {
 public:
  virtual ~View() = default;

  // Node id of "/".
  virtual uint64_t root() const = 0;
  // Attributes of `node`; InodeInfo::ino is the node id. The payload and
  // xattr index fields describe the layer's inode and mean nothing to
  // callers. kNotFound for an id the view does not serve.
  virtual Result<InodeInfo> GetAttr(uint64_t node) const = 0;
  // kNotFound if `name` is not in directory `dir`. Never a whiteout.
  virtual Result<DirEntry> Lookup(uint64_t dir, std::string_view name) const = 0;
  // Calls fn(entry, index) for entries index >= start in name order (bytes,
  // memcmp) until fn returns false. Never a whiteout.
  virtual Status ReadDir(uint64_t dir, uint64_t start,
                         const std::function<bool(const DirEntry&, uint64_t index)>& fn) const = 0;
  // Up to buf.size() bytes of regular file `node` at `offset`; 0 at EOF.
  // Reads only what the range needs (random access), verified.
  virtual Result<size_t> Read(uint64_t node, uint64_t offset, std::span<uint8_t> buf) const = 0;
  virtual Result<std::string> ReadLink(uint64_t node) const = 0;
  virtual Result<std::vector<Xattr>> ListXattrs(uint64_t node) const = 0;
  // kNotFound if absent.
  virtual Result<std::string> GetXattr(uint64_t node, std::string_view name) const = 0;
  // Full offline check (cryptex verify): every layer's VerifyAll, then every
  // file of the merged tree read and compared with its signed fs-verity
  // digest. progress(done, total) now and then.
  virtual Status VerifyAll(const std::function<void(uint64_t, uint64_t)>& progress = {}) const = 0;
  // The images, base first. Owned by the view.
  virtual std::vector<const Image*> layers() const = 0;

  // The signed fs-verity digest of regular file `node`.
  Result<Digest> FileDigest(uint64_t node) const;
  // "/a/b" or "a/b" from the root; does not follow symlinks; "/" or "" is the
  // root. kNotFound naming the path if a component is missing,
  // kNotADirectory if one is not a directory.
  Result<InodeInfo> Resolve(std::string_view path) const;
};

// A base image on its own. kInvalidArgument for a patch image (a patch is
// read on top of its lower state: OpenStack).
Result<std::unique_ptr<View>> OpenImageView(std::unique_ptr<Image> image);

// Opens `base` and `patches` (bottom first) with `opts` and stacks them.
// Each patch must bind to the state below it: its base root digest is the
// base's, and its required patch ids are exactly the ids of the patches below
// it, in order. Refusals name the patch and what does not match. With no
// patches this is OpenImageView. Cost: opening every image, plus merging the
// directories the patches touch (once, here; lookups do not grow with the
// number of layers). Design, node ids, when sources bind, and the delta-file
// counters (DeltaStatsOf): layer_stack.h.
Result<std::unique_ptr<View>> OpenStack(const std::string& base,
                                        const std::vector<std::string>& patches,
                                        const ImageOptions& opts);

}  // namespace cryptex
