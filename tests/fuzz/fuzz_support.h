// Shared plumbing of the libFuzzer targets: a fixed signing key (so runs are
// reproducible and crashes replay), its trust store, in-memory images opened
// through a memfd, and the full exploration of an opened image.
//
// The key below is a test key, published here on purpose: it signs fuzzed
// superblocks so that the fuzzer explores everything behind the signature.
// No product trust store contains it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "keys.h"
#include "walk.h"

namespace cryptex::fuzz {

const PrivateKey& FixedKey();
const TrustStore& FixedTrust();

// A file descriptor holding `bytes` (memfd), and its /proc/self/fd path.
class MemFile final {
 public:
  explicit MemFile(std::span<const uint8_t> bytes);
  ~MemFile();
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Opens `image` with the fixed trust store and walks everything (walk.h)
// within budgets sized for fuzzing. Aborts (a finding) when the walker's
// guards trip, when VerifyAll passes an image that some access refuses, or
// when an error is not an integrity/IO error.
void ExploreImage(std::span<const uint8_t> image);

// Aborts with `what` printed: a property violation.
[[noreturn]] void Finding(const std::string& what);

}  // namespace cryptex::fuzz
