#include "iso_time.h"

#include <time.h>

#include <ctime>

namespace cryptex {

std::string IsoTime(int64_t t) {
  const time_t tt = static_cast<time_t>(t);
  struct tm tm;
  char buf[64];
  if (gmtime_r(&tt, &tm) == nullptr ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(t);
  }
  return buf;
}

}  // namespace cryptex
