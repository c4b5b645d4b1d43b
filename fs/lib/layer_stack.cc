// OpenStack: a base image with patches stacked on it (see view.h).
// PLACEHOLDER until the layer stack lands: serves the base alone.
#include "view.h"

namespace cryptex {

Result<std::unique_ptr<View>> OpenStack(const std::string& base,
                                        const std::vector<std::string>& patches,
                                        const ImageOptions& opts) {
  CX_ASSIGN_OR_RETURN(auto image, Image::Open(base, opts));
  if (!patches.empty()) return Status::Unsupported("patch stacks are not implemented yet");
  return OpenImageView(std::move(image));
}

}  // namespace cryptex
