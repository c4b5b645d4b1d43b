// cryptex mount IMAGE DIR [cryptexfs options] / cryptex umount DIR
//
// Thin wrappers for people who don't know FUSE: they run cryptexfs and
// fusermount3, found next to this binary or on PATH.
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"

namespace cryptex::cli {

namespace {

std::string Sibling(const char* name) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    std::string dir(self);
    dir = dir.substr(0, dir.find_last_of('/'));
    for (std::string cand : {dir + "/" + name, dir + "/../fs/cryptexfs/" + name}) {
      if (access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return name;  // execvp searches PATH
}

int Run(const std::string& cmd, std::vector<std::string> argv) {
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return Fail(cmd, Status::FromErrno(errno, "fork"));
  if (pid == 0) {
    execvp(a[0], a.data());
    std::fprintf(stderr, "cryptex %s: cannot run %s: %s\n", cmd.c_str(), a[0], strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : kExitError;
}

}  // namespace

int CmdMount(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf(
        "usage: cryptex mount IMAGE DIR [-o trust=DIR|pubkey=FILE,cache_size=SIZE,...]\n\n"
        "Mounts IMAGE read-only on DIR with cryptexfs (the signature is checked\n"
        "first; every block is verified as it is read) and returns once it serves.\n"
        "The owners and modes recorded in the image always apply (default_permissions).\n"
        "Unmount with 'cryptex umount DIR'.\n"
        "Exit status: 0 mounted, 2 usage, 3 corrupt, badly signed or no trusted key,\n"
        "4 unsupported, 5 no such image, 1 other errors.\n");
    return kExitOk;
  }
  if (argc < 3) return Usage("mount", "expected IMAGE DIR");
  std::vector<std::string> a{Sibling("cryptexfs")};
  for (int i = 1; i < argc; ++i) a.push_back(argv[i]);
  return Run("mount", a);
}

int CmdUmount(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf("usage: cryptex umount DIR\n\nUnmounts a cryptexfs mount (fusermount3 -u).\n");
    return kExitOk;
  }
  if (argc != 2) return Usage("umount", "expected DIR");
  return Run("umount", {"fusermount3", "-u", argv[1]});
}

}  // namespace cryptex::cli
