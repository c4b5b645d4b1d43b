// cryptex ls IMAGE [PATH] [-l]
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <ctime>

#include "cli.h"
#include "format.h"

namespace cryptex::cli {

namespace {

void PrintLong(const Image& img, const InodeInfo& in, const std::string& name) {
  char when[32];
  time_t t = static_cast<time_t>(in.mtime_sec);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
  std::string size;
  if (S_ISCHR(in.mode) || S_ISBLK(in.mode)) {
    size = std::to_string(major(in.rdev)) + ", " + std::to_string(minor(in.rdev));
  } else {
    size = std::to_string(in.size);
  }
  std::string suffix;
  if (in.is_symlink()) {
    auto target = img.ReadLink(in.ino);
    suffix = " -> " + (target.ok() ? *target : std::string("?"));
  }
  std::printf("%s %3u %5u %5u %12s %s %s%s\n", ModeString(in.mode).c_str(), in.nlink, in.uid,
              in.gid, size.c_str(), when, name.c_str(), suffix.c_str());
}

}  // namespace

int CmdLs(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey"}, {"-l"});
  if (args.help()) {
    std::printf(
        "usage: cryptex ls IMAGE [PATH] [-l] [--trust DIR | --pubkey FILE]\n\n"
        "Lists directory PATH (default /) of IMAGE, verifying as it reads.\n"
        "-l shows mode, links, owner, size, modification time (UTC) and symlink targets.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("ls", args.error());
  const auto& pos = args.positional();
  if (pos.empty() || pos.size() > 2) return Usage("ls", "expected IMAGE [PATH]");
  auto img = OpenImage(pos[0], args);
  if (!img.ok()) return Fail("ls", img.status());
  const std::string path = pos.size() > 1 ? pos[1] : "/";
  auto in = (*img)->Resolve(path);
  if (!in.ok()) return Fail("ls", in.status());
  const bool lng = args.Has("-l");
  if (!in->is_dir()) {
    if (lng) {
      PrintLong(**img, *in, path);
    } else {
      std::printf("%s\n", path.c_str());
    }
    return kExitOk;
  }
  Status err;
  Status st = (*img)->ReadDir(in->ino, 0, [&](const DirEntry& e, uint64_t) {
    if (e.type == format::kTypeWhiteout) return true;
    if (!lng) {
      std::printf("%s\n", e.name.c_str());
      return true;
    }
    auto child = (*img)->GetInode(e.ino);
    if (!child.ok()) {
      err = child.status();
      return false;
    }
    PrintLong(**img, *child, e.name);
    return true;
  });
  if (!st.ok()) return Fail("ls", st);
  if (!err.ok()) return Fail("ls", err);
  return kExitOk;
}

}  // namespace cryptex::cli
