// View's non-virtual helpers, and ImageView: a base image on its own.
#include <memory>
#include <string>
#include <utility>

#include "view.h"

namespace cryptex {

Result<Digest> View::FileDigest(uint64_t node) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, GetAttr(node));
  if (!in.is_reg()) {
    return Status::InvalidArgument("node " + std::to_string(node) + " is not a regular file");
  }
  return in.digest;
}

Result<InodeInfo> View::Resolve(std::string_view path) const {
  CX_ASSIGN_OR_RETURN(
      uint64_t node,
      WalkPath(path, root(), [this](uint64_t dir, std::string_view n) { return Lookup(dir, n); }));
  return GetAttr(node);
}

namespace {

class ImageView final : public View {
 public:
  explicit ImageView(std::unique_ptr<Image> image) : image_(std::move(image)) {}

  uint64_t root() const override { return image_->root_ino(); }
  Result<InodeInfo> GetAttr(uint64_t node) const override { return image_->GetInode(node); }
  Result<DirEntry> Lookup(uint64_t dir, std::string_view name) const override {
    return image_->Lookup(dir, name);
  }
  Status ReadDir(uint64_t dir, uint64_t start,
                 const std::function<bool(const DirEntry&, uint64_t)>& fn) const override {
    return image_->ReadDir(dir, start, fn);
  }
  Result<size_t> Read(uint64_t node, uint64_t offset, std::span<uint8_t> buf) const override {
    return image_->Read(node, offset, buf);
  }
  Result<std::string> ReadLink(uint64_t node) const override { return image_->ReadLink(node); }
  Result<std::vector<Xattr>> ListXattrs(uint64_t node) const override {
    return image_->ListXattrs(node);
  }
  Result<std::string> GetXattr(uint64_t node, std::string_view name) const override {
    return image_->GetXattr(node, name);
  }
  Status VerifyAll(const std::function<void(uint64_t, uint64_t)>& progress) const override {
    return image_->VerifyAll(progress);
  }
  std::vector<const Image*> layers() const override { return {image_.get()}; }

 private:
  std::unique_ptr<Image> image_;
};

}  // namespace

Result<std::unique_ptr<View>> OpenImageView(std::unique_ptr<Image> image) {
  if (image->superblock().kind != format::kKindBase) {
    return Status::InvalidArgument(image->path() +
                                   ": is a patch; read it on top of its base (--patch)");
  }
  return std::unique_ptr<View>(std::make_unique<ImageView>(std::move(image)));
}

}  // namespace cryptex
