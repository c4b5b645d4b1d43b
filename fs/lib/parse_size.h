// The one parser of sizes, counts and durations that users type (cryptex
// --chunk-size, --threads, --release-counter, feed publish --expires;
// cryptexfs -o cache_size= and readahead=; numbers and durations in
// cryptex.conf).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cryptex {

// Parses "123", "64K", "64M", "1G", "2T" (powers of 1024; the suffix may be
// lower case and may be followed by "B" or "iB"). False on anything else,
// including overflow; *bytes is left alone then.
bool ParseSize(std::string_view text, uint64_t* bytes);

// A decimal number: one or more digits and nothing else (no sign, space or
// suffix), at most UINT64_MAX. nullopt on anything else.
std::optional<uint64_t> ParseDecimal(std::string_view text);

// A duration: 1 to 9 digits and a unit, ms, s, m, h, d or w (none:
// seconds), nothing else ("500ms", "90s", "30m", "12h", "7d", "2w"). In
// milliseconds; nullopt on anything else. Callers check their own range.
std::optional<uint64_t> ParseDurationMs(std::string_view text);

}  // namespace cryptex
