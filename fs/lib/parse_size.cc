#include "parse_size.h"

#include <limits>

namespace cryptex {

bool ParseSize(std::string_view text, uint64_t* bytes) {
  size_t i = 0;
  uint64_t v = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (kMax - d) / 10) return false;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  std::string_view suffix = text.substr(i);
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      case 'b':
      case 'B':
        break;
      default:
        return false;
    }
    std::string_view rest = suffix.substr(shift == 0 ? 0 : 1);
    if (!(rest.empty() || rest == "B" || rest == "b" || (shift != 0 && rest == "iB"))) {
      return false;
    }
  }
  if (shift != 0 && v > (kMax >> shift)) return false;
  *bytes = v << shift;
  return true;
}

}  // namespace cryptex
