// A bounded, cycle-proof walk over everything an image serves, through the
// public Image API only: readdir, lookup, getattr, read, readlink, xattrs,
// then VerifyAll. Shared by the adversarial tests, the fuzz targets and the
// corruption campaign. Never trusts the image: it keeps its own guards
// (visited directories, entry and byte budgets) and reports a tripped guard
// as a "WALKER:" error, which the callers treat as a library bug (the library
// must refuse such images before a walker could loop or blow up).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "image.h"
#include "keys.h"
#include "status.h"

namespace cryptex::walk {

struct Limits {
  uint64_t max_entries = 100000;
  uint64_t max_file_bytes = 64ull << 20;    // larger files are read up to here
  uint64_t max_total_bytes = 256ull << 20;  // across the walk
  bool verify_all = true;  // also run Image::VerifyAll (skipped if the walk was truncated)
  size_t frame_cache_bytes = 256u << 10;
  size_t block_cache_bytes = 256u << 10;
};

struct Report {
  Status open;                                // Image::Open
  std::vector<std::string> errors;            // every failed operation, "path: message"
  std::vector<std::string> walker_errors;     // guards tripped (library bugs)
  std::map<std::string, std::string> files;   // path -> content, files read in full
  std::map<std::string, std::string> failed;  // path -> error, files that failed
  std::map<std::string, std::string> links;   // path -> target
  std::map<std::string, std::string> xattrs;  // path -> "name=value\n..." (sorted)
  std::map<std::string, uint32_t> modes;      // path -> st_mode
  Status verify;                              // VerifyAll (if run and opened)
  bool verified = false;                      // VerifyAll ran
  bool truncated = false;  // a file was larger than the limits allow: read in part
  uint64_t entries = 0;
  // True if any error message (open, walk, verify) contains `needle`.
  bool Mentions(const std::string& needle) const;
  std::string Summary() const;  // for test failure messages
};

Report Run(const std::string& image_path, const TrustStore& trust, const Limits& limits = {});

// Compares a walk of a hostile image with the walk of the legit image it was
// derived from: every path both hold must have identical content, target
// and xattrs. Returns the differences ("WRONG DATA: ...").
std::vector<std::string> Differences(const Report& legit, const Report& hostile);

}  // namespace cryptex::walk
