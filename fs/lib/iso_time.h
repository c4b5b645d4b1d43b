// UTC times as ISO 8601 text, the one format of every message, record and
// journal line that names a time.
#pragma once

#include <cstdint>
#include <string>

namespace cryptex {

// "2026-11-29T10:00:00Z"; a time gmtime cannot represent prints as seconds.
std::string IsoTime(int64_t t);

}  // namespace cryptex
