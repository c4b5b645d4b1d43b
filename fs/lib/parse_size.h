// The one parser of sizes that users type (cryptex --chunk-size, cryptexfs
// -o cache_size= and readahead=).
#pragma once

#include <cstdint>
#include <string_view>

namespace cryptex {

// Parses "123", "64K", "64M", "1G", "2T" (powers of 1024; the suffix may be
// lower case and may be followed by "B" or "iB"). False on anything else,
// including overflow; *bytes is left alone then.
bool ParseSize(std::string_view text, uint64_t* bytes);

}  // namespace cryptex
