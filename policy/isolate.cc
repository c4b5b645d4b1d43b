#include "isolate.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

namespace cryptex::policy {
namespace {

using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Address space the child may use beyond what the caller had mapped.
constexpr rlim_t kChildAddressHeadroom = rlim_t{256} << 20;

// Closes `fd` on scope exit (if >= 0).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// The caller's mapped address space in bytes (0 if unknown).
rlim_t AddressSpaceInUse() {
  FILE* f = std::fopen("/proc/self/statm", "re");
  if (f == nullptr) return 0;
  unsigned long pages = 0;
  const int n = std::fscanf(f, "%lu", &pages);
  std::fclose(f);
  if (n != 1) return 0;
  return static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE));
}

// Writes all of `data` to `fd` (child side). False on error.
bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Closes every descriptor >= `first` (child side).
void CloseFrom(int first) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return;
#endif
  rlimit rl{};
  long max = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < static_cast<rlim_t>(max)) {
    max = static_cast<long>(rl.rlim_cur);
  }
  for (long fd = first; fd < max; ++fd) close(static_cast<int>(fd));
}

// Sets up the child's process state, runs `child`, writes its answer and
// exits. Never returns.
[[noreturn]] void ChildMain(pid_t parent, int answer_fd, const std::vector<int>& keep_fds,
                            rlim_t address_limit, const std::function<std::string()>& child) {
  // Die with the caller; if it already died, stop now.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(125);
  setpgid(0, 0);

  // Default signal dispositions, nothing blocked: the caller's handlers
  // (SIGTERM for a clean shutdown...) must not run in plugin code.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  // Descriptors: 0 = /dev/null, 1 = 2, kAnswerFd = the pipe, then keep_fds.
  // Move the ones we keep above every target first so dup2 cannot clobber.
  const int high = kFirstChildFd + static_cast<int>(keep_fds.size()) + 16;
  const int answer = fcntl(answer_fd, F_DUPFD, high);
  std::vector<int> kept;
  for (int fd : keep_fds) kept.push_back(fcntl(fd, F_DUPFD, high));
  if (answer < 0) _exit(124);
  const int devnull = open("/dev/null", O_RDWR);
  if (devnull < 0 || dup2(devnull, 0) < 0) _exit(124);
  if (fcntl(2, F_GETFD) < 0 && dup2(devnull, 2) < 0) _exit(124);  // the caller had no stderr
  if (dup2(2, 1) < 0) _exit(124);
  if (dup2(answer, kAnswerFd) < 0) _exit(124);
  for (size_t i = 0; i < kept.size(); ++i) {
    if (kept[i] < 0 || dup2(kept[i], kFirstChildFd + static_cast<int>(i)) < 0) _exit(124);
  }
  CloseFrom(kFirstChildFd + static_cast<int>(kept.size()));

  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  if (!kSanitized && address_limit != 0) {
    const rlimit as{address_limit, address_limit};
    setrlimit(RLIMIT_AS, &as);
  }

  int code = 0;
  try {
    if (!WriteAll(kAnswerFd, child())) code = 123;
  } catch (...) {
    code = 122;
  }
  _exit(code);
}

std::string DescribeWait(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigdescr_np(sig);
    std::string m = "killed by signal " + std::to_string(sig);
    if (name != nullptr) m += std::string(" (") + name + ")";
    return m;
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "stopped (status " + std::to_string(status) + ")";
}

// Reaps `pid` (blocking; it has been SIGKILLed or has exited). Returns its
// wait status, or -1 if it cannot be reaped (e.g. SIGCHLD is ignored).
int Reap(pid_t pid) {
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, 0);
    if (r == pid) return status;
    if (r < 0 && errno == EINTR) continue;
    return -1;
  }
}

// Kills the child's process group (the child and what it forked) and reaps
// the child. Returns the child's wait status (-1 if it could not be reaped).
int KillAndReap(pid_t pid) {
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);  // in case it had not yet made its group
  return Reap(pid);
}

}  // namespace

Result<std::string> RunIsolated(const std::string& what, const IsolateOptions& options,
                                const std::function<std::string()>& child) {
  const Clock::time_point deadline = Clock::now() + options.timeout;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, what + ": pipe");
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  const rlim_t in_use = AddressSpaceInUse();
  const rlim_t address_limit = in_use == 0 ? 0 : in_use + kChildAddressHeadroom;
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, what + ": fork");
  if (pid == 0) ChildMain(parent, write_end.get(), options.keep_fds, address_limit, child);

  setpgid(pid, pid);  // also done by the child: whichever runs first
  write_end.Reset();  // EOF once the child (and all it forked) closed theirs

  // Read the answer until EOF, the deadline or too many bytes.
  std::string answer;
  std::string failure;
  char buf[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      failure = "timed out after " + std::to_string(options.timeout.count()) + " ms";
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      failure = std::string("poll: ") + std::strerror(errno);
      break;
    }
    if (r == 0) continue;  // the deadline check above ends the loop
    const ssize_t n = read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      failure = std::string("read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;  // EOF
    if (answer.size() + static_cast<size_t>(n) > options.max_answer) {
      failure = "answer longer than " + std::to_string(options.max_answer) + " bytes";
      break;
    }
    answer.append(buf, static_cast<size_t>(n));
  }

  if (!failure.empty()) {
    KillAndReap(pid);
    return Status::Internal(what + ": " + failure);
  }

  // EOF: the child normally exits right away. Wait for it until the
  // deadline, then kill it.
  for (;;) {
    // WNOWAIT: the exited child stays a zombie, so its pid (= its group's
    // id) cannot be reused before we kill what it left in its group.
    siginfo_t info{};
    const int r = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (r == 0 && info.si_pid == pid) break;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      kill(-pid, SIGKILL);
      return Status::Internal(what + ": waitid: " + std::strerror(errno));
    }
    if (Clock::now() >= deadline) {
      KillAndReap(pid);
      return Status::Internal(what + ": timed out after " +
                              std::to_string(options.timeout.count()) +
                              " ms (closed its answer without exiting)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const int status = KillAndReap(pid);  // what it forked into its group dies with it
  if (status == -1) return Status::Internal(what + ": cannot reap the child");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Internal(what + ": " + DescribeWait(status));
  }
  return answer;
}

}  // namespace cryptex::policy
