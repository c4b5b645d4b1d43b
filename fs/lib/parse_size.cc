#include "parse_size.h"

#include <limits>

namespace cryptex {

namespace {

// The leading digits of `text` as a number: how many there are (0: none,
// or the number overflows).
size_t LeadingDecimal(std::string_view text, uint64_t* v) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  size_t i = 0;
  *v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (*v > (kMax - d) / 10) return 0;
    *v = *v * 10 + d;
    ++i;
  }
  return i;
}

}  // namespace

std::optional<uint64_t> ParseDecimal(std::string_view text) {
  uint64_t v = 0;
  const size_t n = LeadingDecimal(text, &v);
  if (n == 0 || n != text.size()) return std::nullopt;
  return v;
}

std::optional<uint64_t> ParseDurationMs(std::string_view text) {
  uint64_t n = 0;
  const size_t digits = LeadingDecimal(text, &n);
  if (digits == 0 || digits > 9) return std::nullopt;
  const std::string_view unit = text.substr(digits);
  static constexpr struct {
    std::string_view name;
    uint64_t ms;
  } kUnits[] = {{"ms", 1},        {"", 1000},        {"s", 1000},       {"m", 60'000},
                {"h", 3'600'000}, {"d", 86'400'000}, {"w", 604'800'000}};
  for (const auto& u : kUnits) {
    if (u.name == unit) return n * u.ms;  // at most 10^9 * 6.048 * 10^8: no overflow
  }
  return std::nullopt;
}

bool ParseSize(std::string_view text, uint64_t* bytes) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t v = 0;
  const size_t i = LeadingDecimal(text, &v);
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
