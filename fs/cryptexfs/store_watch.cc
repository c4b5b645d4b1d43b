#include "store_watch.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

namespace cryptex::cxfs {
namespace {

constexpr uint32_t kDirEvents =
    IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

}  // namespace

Result<std::unique_ptr<StateWatcher>> StateWatcher::Start(const std::string& dir,
                                                          const std::string& file,
                                                          std::function<void()> on_change) {
  const int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (in < 0) return Status::FromErrno(errno, "inotify");
  const int stop = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop < 0) {
    const int e = errno;
    ::close(in);
    return Status::FromErrno(e, "eventfd");
  }
  std::unique_ptr<StateWatcher> w(new StateWatcher(dir, file, std::move(on_change), in, stop));
  if (!w->Watch()) return Status::FromErrno(errno, dir + ": cannot watch");
  w->thread_ = std::thread([p = w.get()] {
    p->Run();
    std::lock_guard lock(p->mu_);
    p->finished_ = true;
    p->finished_cv_.notify_all();
  });
  return w;
}

StateWatcher::StateWatcher(std::string dir, std::string file, std::function<void()> on_change,
                           int inotify_fd, int stop_fd)
    : dir_(std::move(dir)),
      file_(std::move(file)),
      on_change_(std::move(on_change)),
      inotify_fd_(inotify_fd),
      stop_fd_(stop_fd) {}

StateWatcher::~StateWatcher() {
  Stop();
  ::close(inotify_fd_);
  ::close(stop_fd_);
}

void StateWatcher::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
  thread_.join();
}

bool StateWatcher::Stop(std::chrono::milliseconds timeout) {
  if (!thread_.joinable()) return true;
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
  std::unique_lock lock(mu_);
  if (!finished_cv_.wait_for(lock, timeout, [this] { return finished_; })) return false;
  lock.unlock();
  thread_.join();
  return true;
}

bool StateWatcher::Watch() {
  if (wd_ >= 0) return true;
  // The identity first: if the path is replaced between the two calls, the
  // next check sees another directory and watches again.
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) return false;
  wd_ = ::inotify_add_watch(inotify_fd_, dir_.c_str(), kDirEvents);
  if (wd_ < 0) return false;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  return true;
}

void StateWatcher::Unwatch() {
  if (wd_ < 0) return;
  (void)::inotify_rm_watch(inotify_fd_, wd_);
  wd_ = -1;
}

bool StateWatcher::SameDirectory() const {
  struct stat st;
  return ::stat(dir_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
}

bool StateWatcher::Drain() {
  alignas(inotify_event) char buf[16 * (sizeof(inotify_event) + NAME_MAX + 1)];
  bool changed = false;
  while (true) {
    const ssize_t n = ::read(inotify_fd_, buf, sizeof(buf));
    if (n <= 0) return changed;  // EAGAIN: drained (EINTR: the next poll comes back)
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        changed = true;  // events were lost: look again
      } else if (ev->wd != wd_) {
        continue;  // a watch already given up
      } else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
        // The directory at that path is another one now (or none): watch
        // the path again; a change is reported once it is watched.
        Unwatch();
      } else if (ev->len > 0 && file_ == ev->name) {
        changed = true;
      }
    }
  }
}

void StateWatcher::Run() {
  while (true) {
    bool changed = false;
    if (wd_ < 0 && Watch()) changed = true;  // whatever happened while unwatched
    if (!changed) {
      pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
      const auto timeout = wd_ < 0 ? kRewatchInterval : kIdentityInterval;
      const int r = ::poll(fds, 2, static_cast<int>(timeout.count()));
      if (r < 0 && errno != EINTR) return;  // cannot happen with valid fds
      if (fds[0].revents != 0) return;      // Stop()
      if (fds[1].revents != 0) changed = Drain();
      // A directory removed or renamed while something keeps it (its open
      // files pin it) sends no event: compare the path's identity.
      if (r == 0 && wd_ >= 0 && !SameDirectory()) Unwatch();
    }
    if (changed && wd_ >= 0) on_change_();
  }
}

}  // namespace cryptex::cxfs
