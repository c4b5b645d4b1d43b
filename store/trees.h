// Persisted fs-verity leaves of a patch's delta files (docs/STORE.md,
// "Hash trees"): computed once at install, read back by every mount so that
// no mount decodes a whole delta file before serving it. The file is
// untrusted: each entry is accepted only if it hashes up to the file's
// signed digest (VerityLeaves::Parse, patched_file.h).
//
// Format ("trees/ID.tree"): magic "CXTREES1", u32 LE count, then per entry
// u64 LE inode number (in the patch image), u64 LE length, that many bytes
// (VerityLeaves::Serialize: 32 bytes per 4 KiB block of the file).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "status.h"

namespace cryptex::store {

// Leaves bytes by patch-image inode number.
using TreeMap = std::map<uint64_t, std::vector<uint8_t>>;

std::vector<uint8_t> EncodeTrees(const TreeMap& trees);
// kCorruption naming `what` and the offset on a malformed file.
Result<TreeMap> DecodeTrees(const std::string& bytes, const std::string& what);

}  // namespace cryptex::store
