#include "terminal.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

namespace cryptex::cli {

namespace {

// Length (2..4) of the well-formed UTF-8 sequence at s[i] (no overlongs, no
// surrogates, at most U+10FFFF), or 0. Sets *cp to its code point.
size_t Utf8Sequence(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  size_t n;
  uint32_t v;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    v = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    v = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    v = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3f);
  }
  if ((n == 3 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) ||
      (n == 4 && (v < 0x10000 || v > 0x10ffff))) {
    return 0;
  }
  *cp = v;
  return n;
}

// Length of the printable character at s[i] (1..4), or 0 if s[i] is a byte
// a terminal might act on.
size_t PrintableAt(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return (c < 0x20 || c == 0x7f) ? 0 : 1;
  uint32_t cp = 0;
  const size_t n = Utf8Sequence(s, i, &cp);
  if (n == 0 || (cp >= 0x80 && cp <= 0x9f)) return 0;
  return n;
}

void AppendEscaped(unsigned char c, std::string* out) {
  switch (c) {
    case '\a':
      *out += "\\a";
      return;
    case '\b':
      *out += "\\b";
      return;
    case '\t':
      *out += "\\t";
      return;
    case '\n':
      *out += "\\n";
      return;
    case '\v':
      *out += "\\v";
      return;
    case '\f':
      *out += "\\f";
      return;
    case '\r':
      *out += "\\r";
      return;
    default: {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", c);
      *out += buf;
    }
  }
}

}  // namespace

bool HasTerminalControls(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = PrintableAt(s, i);
    if (n == 0) return true;
    i += n;
  }
  return false;
}

std::string ShellEscape(std::string_view s) {
  std::string out;
  bool quoted = false;  // inside '...'
  for (size_t i = 0; i < s.size();) {
    const size_t n = PrintableAt(s, i);
    if (n == 0) {
      if (quoted) out += '\'';
      quoted = false;
      out += "$'";
      for (; i < s.size() && PrintableAt(s, i) == 0; ++i) {
        AppendEscaped(static_cast<unsigned char>(s[i]), &out);
      }
      out += '\'';
      continue;
    }
    if (!quoted) out += '\'';
    quoted = true;
    if (s[i] == '\'') {
      out += "'\\''";
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  if (quoted) out += '\'';
  if (out.empty()) out = "''";
  return out;
}

std::string ForTerminal(std::string_view s, bool tty) {
  if (tty && HasTerminalControls(s)) return ShellEscape(s);
  return std::string(s);
}

bool StdoutIsTerminal() {
  static const bool tty = isatty(STDOUT_FILENO) == 1;
  return tty;
}

bool StderrIsTerminal() {
  static const bool tty = isatty(STDERR_FILENO) == 1;
  return tty;
}

std::string UtcTime(int64_t sec, const char* fmt) {
  const time_t t = static_cast<time_t>(sec);
  struct tm tm;
  char buf[64];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, fmt, &tm) == 0) {
    return std::to_string(sec);
  }
  return buf;
}

}  // namespace cryptex::cli
