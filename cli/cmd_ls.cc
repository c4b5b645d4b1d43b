// cryptex ls IMAGE [PATH] [-l] [--patch P ...]
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <string>

#include "cli.h"
#include "terminal.h"

namespace cryptex::cli {

namespace {

// One `ls -l` line. Names and symlink targets are escaped on a terminal
// (terminal.h) and written byte for byte otherwise.
void PrintLong(const View& view, const InodeInfo& in, const std::string& name, bool tty) {
  const std::string when = UtcTime(in.mtime_sec, "%Y-%m-%d %H:%M");
  std::string size;
  if (S_ISCHR(in.mode) || S_ISBLK(in.mode)) {
    size = std::to_string(major(in.rdev)) + ", " + std::to_string(minor(in.rdev));
  } else {
    size = std::to_string(in.size);
  }
  std::string suffix;
  if (in.is_symlink()) {
    auto target = view.ReadLink(in.ino);
    suffix = " -> " + (target.ok() ? ForTerminal(*target, tty) : std::string("?"));
  }
  std::printf("%s %3u %5u %5u %12s %s %s%s\n", ModeString(in.mode).c_str(), in.nlink, in.uid,
              in.gid, size.c_str(), when.c_str(), ForTerminal(name, tty).c_str(), suffix.c_str());
}

}  // namespace

int CmdLs(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey", "--patch"}, {"-l"});
  if (args.help()) {
    std::printf(
        "usage: cryptex ls IMAGE [PATH] [-l] [--patch PATCH ...]\n"
        "                  [--trust DIR | --pubkey FILE]\n\n"
        "Lists directory PATH (default /) of IMAGE, verifying as it reads; with\n"
        "--patch (repeatable, bottom first), of IMAGE with the patches applied.\n"
        "-l shows mode, links, owner, size, modification time (UTC; seconds since the\n"
        "epoch when out of range) and symlink targets. On a terminal, names holding\n"
        "control characters or invalid UTF-8 are shown quoted for bash, as GNU ls\n"
        "does; piped, names are written byte for byte.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("ls", args.error());
  const auto& pos = args.positional();
  if (pos.empty() || pos.size() > 2) return Usage("ls", "expected IMAGE [PATH]");
  auto img = OpenView(pos[0], args.GetAll("--patch"), args);
  if (!img.ok()) return Fail("ls", img.status());
  const std::string path = pos.size() > 1 ? pos[1] : "/";
  auto in = (*img)->Resolve(path);
  if (!in.ok()) return Fail("ls", in.status());
  const bool lng = args.Has("-l");
  const bool tty = StdoutIsTerminal();
  if (!in->is_dir()) {
    if (lng) {
      PrintLong(**img, *in, path, tty);
    } else {
      std::printf("%s\n", ForTerminal(path, tty).c_str());
    }
    return kExitOk;
  }
  Status err;
  Status st = (*img)->ReadDir(in->ino, 0, [&](const DirEntry& e, uint64_t) {
    if (!lng) {
      std::printf("%s\n", ForTerminal(e.name, tty).c_str());
      return true;
    }
    auto child = (*img)->GetAttr(e.ino);
    if (!child.ok()) {
      err = child.status();
      return false;
    }
    PrintLong(**img, *child, e.name, tty);
    return true;
  });
  if (!st.ok()) return Fail("ls", st);
  if (!err.ok()) return Fail("ls", err);
  return kExitOk;
}

}  // namespace cryptex::cli
