// cryptex cat IMAGE PATH [--patch P ...]
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

#include "cli.h"

namespace cryptex::cli {

int CmdCat(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey", "--patch"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex cat IMAGE PATH [--patch PATCH ...]\n"
        "                   [--trust DIR | --pubkey FILE]\n\n"
        "Writes file PATH of IMAGE (with --patch, repeatable and bottom first: of\n"
        "IMAGE with the patches applied) to stdout. Every byte is verified before it is\n"
        "written; on a verification failure nothing more is written and the exit\n"
        "status is 3.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("cat", args.error());
  const auto& pos = args.positional();
  if (pos.size() != 2) return Usage("cat", "expected IMAGE PATH");
  auto img = OpenView(pos[0], args.GetAll("--patch"), args);
  if (!img.ok()) return Fail("cat", img.status());
  auto in = (*img)->Resolve(pos[1]);
  if (!in.ok()) return Fail("cat", in.status());
  if (!in->is_reg()) return Fail("cat", Status::IsDirectory(pos[1] + ": not a regular file"));
  std::vector<uint8_t> buf(1u << 20);
  for (uint64_t off = 0; off < in->size;) {
    auto n = (*img)->Read(in->ino, off, buf);
    if (!n.ok()) return Fail("cat", n.status().Prefixed(pos[1]));
    if (*n == 0) break;
    for (size_t w = 0; w < *n;) {
      ssize_t k = write(STDOUT_FILENO, buf.data() + w, *n - w);
      if (k < 0) {
        if (errno == EINTR) continue;
        return Fail("cat", Status::FromErrno(errno, "stdout"));
      }
      w += static_cast<size_t>(k);
    }
    off += *n;
  }
  return kExitOk;
}

}  // namespace cryptex::cli
