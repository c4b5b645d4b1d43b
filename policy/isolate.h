// Runs a function in a fresh fork()ed child process with a time limit and
// hands its answer (bytes) back through a pipe: the policy host's one way of
// running plugin code. Whatever the child does -- crash, hang, exit early,
// write garbage or too much -- the caller gets a Status, never a signal, a
// zombie or a leaked descriptor.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "status.h"

namespace cryptex::policy {

struct IsolateOptions {
  std::chrono::milliseconds timeout{5000};  // from fork to the child's exit
  size_t max_answer = 64 * 1024;            // more bytes than this: a failure
  // Descriptors the child needs (e.g. the plugin file): in the child they are
  // renumbered to kFirstChildFd, kFirstChildFd + 1, ... in this order, and
  // every other descriptor but 0, 1, 2 and the answer pipe is closed.
  std::vector<int> keep_fds;
};

// In the child: the answer pipe is kAnswerFd, kept descriptors follow it.
inline constexpr int kAnswerFd = 3;
inline constexpr int kFirstChildFd = 4;

// Runs `child` in a child process and returns what it returned, once the
// child has exited 0 after writing it. The child:
//  - has stdin from /dev/null and stdout redirected to stderr (so a plugin's
//    chatter cannot corrupt the caller's output);
//  - has every signal at its default action and unblocked, no core dumps
//    (RLIMIT_CORE 0), at most 256 MiB more address space than the caller had
//    (RLIMIT_AS; not under sanitizers), and dies with the caller
//    (PR_SET_PDEATHSIG);
//  - leads its own process group, which is SIGKILLed when the call ends, so
//    what it forked dies with it (unless it left the group);
//  - ends with _exit(): no atexit handler or stdio flush of the caller's runs.
// Errors (kInternal for what the child did, kIOError if fork/pipe failed):
// killed by a signal, non-zero exit, the time limit (the child is SIGKILLed
// and reaped), an answer longer than max_answer. `what` starts each message.
// Safe against EINTR; never writes to the pipe, so never gets SIGPIPE.
Result<std::string> RunIsolated(const std::string& what, const IsolateOptions& options,
                                const std::function<std::string()>& child);

}  // namespace cryptex::policy
