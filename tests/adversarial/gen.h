// Adversarial image generator: builds a small valid image with every kind of
// entry, then derives hostile-but-signed variants from it (metadata rewritten
// and re-sealed with the test key, see surgery.h). Each case names where the
// reader must catch it and a substring of the error it must give.
//
// Used by adversarial_test.cc, extract_safety_test.cc, the corruption
// campaign (--generate) and the corpus generator of the fuzz targets; the
// `cryptex_adversarial_gen OUTDIR` tool writes every case to disk so that the
// FUSE driver can be pointed at them too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "status.h"
#include "surgery.h"

namespace cryptex::adversarial {

// Writes a small deterministic tree under `root` (created): small, empty,
// multi-chunk, compressible, incompressible and sparse files, nested
// directories, relative and absolute symlinks, a hard-link pair, a fifo and
// user xattrs (skipped where the filesystem refuses them). `small` shrinks
// every file (same entries, same chunk structure at 4 KiB chunks) for fuzz
// seeds.
Status MakeSourceTree(const std::string& root, uint64_t seed, bool small = false);

struct Base {
  std::string dir;     // work directory
  std::string source;  // dir/src
  std::string image;   // dir/base.cryptex
  surgery::Bytes bytes;
  surgery::TestKey key;  // key.trust_dir == dir/keys
};

// MakeSourceTree(dir/src) (unless `source` is given), a key in dir/keys, and
// the image dir/base.cryptex built with the library's builder (chunk 2^chunk_log2).
cryptex::Result<Base> BuildBase(const std::string& dir, uint32_t chunk_log2 = 12,
                                const std::string& source = "");

// Where an attack must be caught at the latest.
enum class Stage {
  kOpen,    // Image::Open refuses the image
  kAccess,  // Open succeeds; some readdir/lookup/read/readlink/xattr call fails
  kVerify,  // only VerifyAll is required to notice
};
const char* StageName(Stage s);

struct Case {
  std::string name;
  std::string what;  // one line for humans
  Stage stage;
  std::string expect;  // substring of the error message
  std::function<cryptex::Result<surgery::Bytes>(const Base&)> make;
};

std::vector<Case> AllCases();

}  // namespace cryptex::adversarial
