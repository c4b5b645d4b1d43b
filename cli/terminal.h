// Text for people and for scripts.
//
// When a stream is not a terminal, names, paths and manifest text are written
// byte for byte, so scripts and `cryptex ls IMAGE | xargs ...` see exactly
// what the image holds. On a terminal, a string holding bytes the terminal
// could act on -- C0 controls (newline, escape, ...), DEL, C1 controls
// (U+0080..U+009F) or bytes that are not valid UTF-8 -- is shown quoted the
// way GNU ls does: bash quoting with $'\ooo' escapes ('red'$'\033''[31m'),
// which pasted into bash gives back the exact bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cryptex::cli {

// True if `s` holds a C0 control, DEL, a C1 control or invalid UTF-8.
bool HasTerminalControls(std::string_view s);

// `s` in bash/ksh/zsh quoting that contains no control byte: printable runs
// in single quotes, every other byte as $'\ooo' (\n, \t, ... by name).
std::string ShellEscape(std::string_view s);

// What to write for `s` on a stream that is (`tty`) or is not a terminal:
// `s` itself unless tty and HasTerminalControls(s), else ShellEscape(s).
std::string ForTerminal(std::string_view s, bool tty);

// isatty() of stdout and stderr, asked once.
bool StdoutIsTerminal();
bool StderrIsTerminal();

// `sec` (seconds since the epoch) formatted in UTC by strftime `fmt`; the
// decimal seconds when the time lies outside what gmtime_r can represent.
std::string UtcTime(int64_t sec, const char* fmt);

}  // namespace cryptex::cli
