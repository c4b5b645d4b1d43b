#include "plugin_host.h"

#include <cryptex/policy_plugin.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "isolate.h"
#include "plugin_input.h"

namespace cryptex::policy {
namespace {

// The plugin table's own name: 1..kMaxTableName bytes of UTF-8, no controls.
constexpr size_t kMaxTableName = 64;
// Bytes a plugin may write as the message of a check_options refusal.
constexpr size_t kOptionsErrorCap = 1024;
// The host reads a plugin table's members up to `decide` (and check_options
// only if struct_size covers it).
constexpr size_t kMinTableSize = offsetof(cx_policy_plugin, decide) + sizeof(void*);
constexpr size_t kCheckOptionsEnd = offsetof(cx_policy_plugin, check_options) + sizeof(void*);
constexpr size_t kMajorEnd = offsetof(cx_policy_plugin, abi_minor) + sizeof(uint16_t);

// ---- The child's answers: fixed fields, little-endian host order (parent
// and child are the same binary), strings as u64 length + bytes. ----

class Encoder {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void PutBytes(const char* p, size_t n) {
    Put<uint64_t>(n);
    out_.append(p, n);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetBytes(std::string* s, size_t max) {
    uint64_t n = 0;
    if (!Get(&n) || n > max || n > in_.size()) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool Done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

// How far the child got loading the plugin.
enum class Stage : uint8_t {
  kTable = 0,      // got the table (the rest of the answer describes it)
  kDlopen = 1,     // dlopen failed (msg: dlerror)
  kNoEntry = 2,    // no entry symbol (msg: dlerror)
  kNullTable = 3,  // the entry returned NULL
  kBadTable = 4,   // (decide) the table no longer passes the load checks
};

// In the child: loads the plugin file at kFirstChildFd and returns its table,
// or null with *stage and *msg set.
const cx_policy_plugin* ChildLoadTable(Stage* stage, std::string* msg) {
  const std::string self = "/proc/self/fd/" + std::to_string(kFirstChildFd);
  void* handle = dlopen(self.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    *stage = Stage::kDlopen;
    const char* e = dlerror();
    *msg = e != nullptr ? e : "unknown error";
    return nullptr;
  }
  dlerror();
  void* sym = dlsym(handle, CX_POLICY_ENTRY_SYMBOL);
  if (sym == nullptr) {
    *stage = Stage::kNoEntry;
    const char* e = dlerror();
    *msg = e != nullptr ? e : "the symbol is NULL";
    return nullptr;
  }
  cx_policy_entry_fn entry;
  static_assert(sizeof(entry) == sizeof(sym));
  std::memcpy(&entry, &sym, sizeof(entry));
  const cx_policy_plugin* table = entry();
  if (table == nullptr) *stage = Stage::kNullTable;
  return table;
}

// True if the table passes the checks the child must make before it may
// read the table's members or call into it.
bool TableUsable(const cx_policy_plugin* t) {
  return t->struct_size >= kMinTableSize && t->abi_major == CX_POLICY_ABI_MAJOR &&
         t->decide != nullptr;
}

// What the load probe reports (child -> parent).
struct ProbeReport {
  uint8_t stage = 0;
  std::string msg;
  uint32_t struct_size = 0;
  uint8_t has_major = 0;  // struct_size covers abi_major/abi_minor
  uint16_t abi_major = 0;
  uint16_t abi_minor = 0;
  uint8_t has_members = 0;  // major matches and struct_size covers `decide`
  uint8_t has_decide = 0;
  uint64_t name_len = 0;
  std::string name;     // only if name_len <= kMaxTableName
  uint8_t checked = 0;  // check_options was called
  int32_t check_rc = 0;
  uint64_t err_len = 0;
  std::string err;  // min(err_len, kOptionsErrorCap) bytes

  std::string Encode() const {
    Encoder e;
    e.Put(stage);
    e.PutBytes(msg.data(), msg.size());
    e.Put(struct_size);
    e.Put(has_major);
    e.Put(abi_major);
    e.Put(abi_minor);
    e.Put(has_members);
    e.Put(has_decide);
    e.Put(name_len);
    e.PutBytes(name.data(), name.size());
    e.Put(checked);
    e.Put(check_rc);
    e.Put(err_len);
    e.PutBytes(err.data(), err.size());
    return e.Take();
  }
  bool Decode(std::string_view in) {
    Decoder d(in);
    return d.Get(&stage) && d.GetBytes(&msg, 4096) && d.Get(&struct_size) && d.Get(&has_major) &&
           d.Get(&abi_major) && d.Get(&abi_minor) && d.Get(&has_members) && d.Get(&has_decide) &&
           d.Get(&name_len) && d.GetBytes(&name, kMaxTableName) && d.Get(&checked) &&
           d.Get(&check_rc) && d.Get(&err_len) && d.GetBytes(&err, kOptionsErrorCap) && d.Done();
  }
};

// In the child: loads the plugin, reads its table (as far as it may) and
// calls check_options on `options`.
std::string ChildProbe(const PluginInput& input) {
  ProbeReport r;
  Stage stage = Stage::kTable;
  const cx_policy_plugin* t = ChildLoadTable(&stage, &r.msg);
  r.stage = static_cast<uint8_t>(stage);
  if (t == nullptr) return r.Encode();
  r.struct_size = t->struct_size;
  if (t->struct_size >= kMajorEnd) {
    r.has_major = 1;
    r.abi_major = t->abi_major;
    r.abi_minor = t->abi_minor;
  }
  if (r.has_major == 0 || t->abi_major != CX_POLICY_ABI_MAJOR || t->struct_size < kMinTableSize) {
    return r.Encode();
  }
  r.has_members = 1;
  r.has_decide = t->decide != nullptr ? 1 : 0;
  r.name_len = t->name.len;
  if (t->name.len <= kMaxTableName && (t->name.ptr != nullptr || t->name.len == 0)) {
    r.name.assign(t->name.ptr, t->name.len);
  }
  if (TableUsable(t) && t->struct_size >= kCheckOptionsEnd && t->check_options != nullptr) {
    std::string err(kOptionsErrorCap, '\0');
    size_t err_len = 0;
    const cx_policy_input* in = input.get();
    r.checked = 1;
    r.check_rc = t->check_options(in->options, in->option_count, err.data(), err.size(), &err_len);
    r.err_len = err_len;
    err.resize(std::min(err_len, kOptionsErrorCap));
    r.err = std::move(err);
  }
  return r.Encode();
}

// What a decide call reports (child -> parent).
struct DecideReport {
  uint8_t stage = 0;
  std::string msg;
  int32_t rc = 0;
  int32_t verdict = -1;
  int64_t until = 0;
  uint64_t reason_len = 0;
  std::string reason;  // min(reason_len, reason_cap) bytes

  std::string Encode() const {
    Encoder e;
    e.Put(stage);
    e.PutBytes(msg.data(), msg.size());
    e.Put(rc);
    e.Put(verdict);
    e.Put(until);
    e.Put(reason_len);
    e.PutBytes(reason.data(), reason.size());
    return e.Take();
  }
  bool Decode(std::string_view in, size_t reason_cap) {
    Decoder d(in);
    return d.Get(&stage) && d.GetBytes(&msg, 4096) && d.Get(&rc) && d.Get(&verdict) &&
           d.Get(&until) && d.Get(&reason_len) && d.GetBytes(&reason, reason_cap) && d.Done();
  }
};

// The verdict a plugin returns before it sets one: out of range, so a plugin
// that forgets to set it fails instead of silently installing or deferring.
constexpr int32_t kVerdictUnset = -1;

// In the child: loads the plugin and asks it. `reason` and `cap` are the
// host's own copies of out->reason and out->reason_cap (the plugin may
// overwrite those members).
std::string ChildDecide(const PluginInput& input, cx_policy_decision* out, const char* reason,
                        size_t cap) {
  DecideReport r;
  Stage stage = Stage::kTable;
  const cx_policy_plugin* t = ChildLoadTable(&stage, &r.msg);
  if (t != nullptr && !TableUsable(t)) stage = Stage::kBadTable;
  r.stage = static_cast<uint8_t>(stage);
  if (stage != Stage::kTable) return r.Encode();
  r.rc = t->decide(input.get(), out);
  r.verdict = out->verdict;
  r.until = out->until;
  r.reason_len = out->reason_len;
  r.reason.assign(reason, std::min<size_t>(out->reason_len, cap));
  return r.Encode();
}

// ---- Checks ----

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
// U+10FFFF, no truncated sequence.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    uint32_t min;
    if ((c & 0xE0) == 0xC0) {
      n = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < n) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7F;
  });
}

// What is wrong with a reason or message text ("" if nothing): it must be
// UTF-8 and hold no NUL (records are text; escaping is the history's job).
std::string TextProblem(std::string_view s) {
  if (!ValidUtf8(s)) return "is not valid UTF-8";
  if (s.find('\0') != std::string_view::npos) return "contains a NUL byte";
  return "";
}

// The checks of the plugin's name as the configuration gives it.
Status CheckName(const std::string& dir, const std::string& name) {
  const std::string shown = dir + "/" + name + ".so";
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      HasControl(name)) {
    return Status::Permission(shown +
                              ": a plugin name must be a bare file name (not empty, \".\" or "
                              "\"..\", no '/' or control character)");
  }
  return Status::Ok();
}

// Owned by root and not writable by group or others.
Status CheckOwnerAndMode(const struct stat& st, const std::string& path, const char* what) {
  if (st.st_uid != 0) {
    return Status::Permission(path + ": " + what + " is owned by uid " + std::to_string(st.st_uid) +
                              ", not root");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::Permission(path + ": " + what + " is writable by group or others (mode " + mode +
                              ")");
  }
  return Status::Ok();
}

// Opens DIR and DIR/NAME.so without following a symlink at either last
// component and checks both through their descriptors. Returns the file's
// descriptor (O_CLOEXEC).
Result<int> OpenChecked(const std::string& dir, const std::string& name, const std::string& path) {
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(dir + ": plugin directory does not exist");
    if (err == ENOTDIR || err == ELOOP) {
      return Status::NotDirectory(dir + ": plugin directory is not a directory (or a symlink)");
    }
    return Status::FromErrno(err, dir + ": cannot open the plugin directory");
  }
  struct stat dst {};
  Status st;
  if (fstat(dfd, &dst) != 0) {
    st = Status::FromErrno(errno, dir + ": fstat");
  } else {
    st = CheckOwnerAndMode(dst, dir, "the plugin directory");
  }
  if (!st.ok()) {
    close(dfd);
    return st;
  }
  const std::string file = name + ".so";
  const int fd = openat(dfd, file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  const int err = errno;
  close(dfd);
  if (fd < 0) {
    if (err == ENOENT) return Status::NotFound(path + ": no such plugin");
    if (err == ELOOP) return Status::Permission(path + ": is a symlink (refused)");
    return Status::FromErrno(err, path + ": cannot open the plugin");
  }
  struct stat fst {};
  if (fstat(fd, &fst) != 0) {
    st = Status::FromErrno(errno, path + ": fstat");
  } else if (!S_ISREG(fst.st_mode)) {
    st = Status::Permission(path + ": not a regular file");
  } else {
    st = CheckOwnerAndMode(fst, path, "the plugin file");
  }
  if (!st.ok()) {
    close(fd);
    return st;
  }
  return fd;
}

// Validates the probe's report; kInvalidArgument only for an options refusal.
Status CheckProbe(const ProbeReport& r, const std::string& path) {
  const std::string p = path + ": ";
  switch (static_cast<Stage>(r.stage)) {
    case Stage::kTable:
      break;
    case Stage::kDlopen:
      return Status::Unsupported(p + "cannot load it: " + r.msg);
    case Stage::kNoEntry:
      return Status::Unsupported(p + "not a cryptex policy plugin (no symbol " +
                                 CX_POLICY_ENTRY_SYMBOL + ")");
    case Stage::kNullTable:
      return Status::Unsupported(p + CX_POLICY_ENTRY_SYMBOL + "() returned NULL");
    default:
      return Status::Internal(p + "load probe gave an unknown answer");
  }
  if (r.has_major == 0) {
    return Status::Unsupported(p + "plugin table struct_size " + std::to_string(r.struct_size) +
                               " is too small (needs at least " + std::to_string(kMinTableSize) +
                               ")");
  }
  if (r.abi_major != CX_POLICY_ABI_MAJOR) {
    return Status::Unsupported(p + "plugin ABI major " + std::to_string(r.abi_major) +
                               ", the host speaks " + std::to_string(CX_POLICY_ABI_MAJOR));
  }
  if (r.struct_size < kMinTableSize || r.has_members == 0) {
    return Status::Unsupported(p + "plugin table struct_size " + std::to_string(r.struct_size) +
                               " is too small (needs at least " + std::to_string(kMinTableSize) +
                               ")");
  }
  if (r.has_decide == 0) return Status::Unsupported(p + "plugin table has no decide function");
  if (r.name_len > 0 && r.name_len <= kMaxTableName && r.name.size() != r.name_len) {
    return Status::Unsupported(p + "plugin name has a NULL pointer");
  }
  if (r.name_len == 0 || r.name_len > kMaxTableName) {
    return Status::Unsupported(p + "plugin name must be 1.." + std::to_string(kMaxTableName) +
                               " bytes (it is " + std::to_string(r.name_len) + ")");
  }
  if (!ValidUtf8(r.name) || HasControl(r.name)) {
    return Status::Unsupported(p + "plugin name is not printable UTF-8");
  }
  if (r.checked != 0 && r.check_rc != 0) {
    std::string msg = r.err;
    std::string problem;
    if (r.err_len > kOptionsErrorCap) {
      problem = "its message length " + std::to_string(r.err_len) + " exceeds the buffer";
    } else {
      problem = TextProblem(msg);
      if (!problem.empty()) problem = "its message " + problem;
    }
    if (!problem.empty()) msg = "(" + problem + ")";
    if (msg.empty()) msg = "(no message)";
    return Status::InvalidArgument(p + "the plugin refused its options: " + msg);
  }
  return Status::Ok();
}

}  // namespace

std::string_view VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kInstall:
      return "install";
    case Verdict::kDefer:
      return "defer";
    case Verdict::kReject:
      return "reject";
    case Verdict::kRevert:
      return "revert";
  }
  return "unknown";
}

struct Plugin::Impl {
  Impl(std::string n, std::string p, int f, Options o, HostLimits l)
      : name(std::move(n)), path(std::move(p)), fd(f), options(std::move(o)), limits(l) {}
  ~Impl() {
    if (fd >= 0) close(fd);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  std::string name;
  std::string path;
  int fd;  // the checked plugin file (O_CLOEXEC)
  Options options;
  HostLimits limits;
};

Result<Plugin> Plugin::Load(const std::string& dir, const std::string& name, const Options& options,
                            HostLimits limits) {
  CX_RETURN_IF_ERROR(CheckName(dir, name));
  const std::string path = dir + "/" + name + ".so";
  CX_ASSIGN_OR_RETURN(const int fd, OpenChecked(dir, name, path));
  auto impl = std::make_shared<Impl>(name, path, fd, options, limits);

  // check_options gets the options through the same C structs decide does.
  const PluginInput input(PatchFacts{}, DeviceFacts{}, options);
  IsolateOptions iso;
  iso.timeout = limits.timeout;
  iso.keep_fds = {fd};
  auto answer = RunIsolated(path + ": load probe", iso, [&input] { return ChildProbe(input); });
  if (!answer.ok()) {
    const Status& s = answer.status();
    return Status(s.code() == Code::kIOError ? Code::kIOError : Code::kUnsupported, s.message());
  }
  ProbeReport report;
  if (!report.Decode(*answer)) {
    return Status::Unsupported(path + ": load probe: malformed answer");
  }
  CX_RETURN_IF_ERROR(CheckProbe(report, path));

  Plugin plugin;
  plugin.impl_ = std::move(impl);
  return plugin;
}

const std::string& Plugin::name() const { return impl_->name; }
const std::string& Plugin::path() const { return impl_->path; }

Vote Plugin::Decide(const PatchFacts& patch, const DeviceFacts& device) const {
  const Impl& im = *impl_;
  Vote vote;
  vote.plugin = im.name;
  auto fail = [&vote, &im](const std::string& what) {
    vote.verdict = Verdict::kDefer;
    vote.until = 0;
    vote.failed = true;
    vote.reason = im.path + ": " + what;
    return vote;
  };

  // Everything the child needs is made here, before the fork.
  const PluginInput input(patch, device, im.options);
  const size_t cap = im.limits.reason_cap;
  std::string reason_buf(cap + 1, '\0');  // +1: data() is never null
  cx_policy_decision out{};
  out.struct_size = sizeof(cx_policy_decision);
  out.verdict = kVerdictUnset;
  out.until = 0;
  out.reason = reason_buf.data();
  out.reason_cap = cap;
  out.reason_len = 0;

  IsolateOptions iso;
  iso.timeout = im.limits.timeout;
  iso.keep_fds = {im.fd};
  iso.max_answer = cap + 8192;
  auto answer =
      RunIsolated("decide", iso, [&] { return ChildDecide(input, &out, reason_buf.data(), cap); });
  if (!answer.ok()) return fail(answer.status().message());
  DecideReport r;
  if (!r.Decode(*answer, cap)) return fail("decide: malformed answer");
  switch (static_cast<Stage>(r.stage)) {
    case Stage::kTable:
      break;
    case Stage::kDlopen:
      return fail("cannot load it: " + r.msg);
    case Stage::kNoEntry:
      return fail(std::string("no symbol ") + CX_POLICY_ENTRY_SYMBOL);
    case Stage::kNullTable:
      return fail(std::string(CX_POLICY_ENTRY_SYMBOL) + "() returned NULL");
    case Stage::kBadTable:
      return fail("the plugin table no longer passes the load checks");
    default:
      return fail("decide: unknown answer");
  }
  if (r.rc != 0) return fail("decide returned " + std::to_string(r.rc));
  if (r.verdict == kVerdictUnset) return fail("decide set no verdict");
  if (r.verdict < CX_VERDICT_INSTALL || r.verdict > CX_VERDICT_REVERT) {
    return fail("decide returned verdict " + std::to_string(r.verdict) + " (out of range)");
  }
  if (r.reason_len > cap) {
    return fail("decide reported a reason of " + std::to_string(r.reason_len) +
                " bytes (the cap is " + std::to_string(cap) + ")");
  }
  if (const std::string problem = TextProblem(r.reason); !problem.empty()) {
    return fail("decide's reason " + problem);
  }
  vote.verdict = static_cast<Verdict>(r.verdict);
  if (vote.verdict == Verdict::kDefer) {
    if (r.until < 0) return fail("decide deferred until " + std::to_string(r.until) + " (< 0)");
    vote.until = r.until;
  }
  vote.reason = std::move(r.reason);
  return vote;
}

ChainDecision DecideChain(const std::vector<ChainMember>& chain, const PatchFacts& patch,
                          const DeviceFacts& device) {
  ChainDecision d;
  if (chain.empty()) {
    d.verdict = Verdict::kDefer;
    d.reason = "no policy plugin is configured";
    return d;
  }
  for (const ChainMember& m : chain) {
    if (m.plugin != nullptr) {
      d.votes.push_back(m.plugin->Decide(patch, device));
      continue;
    }
    Vote v;
    v.plugin = m.name;
    v.verdict = Verdict::kDefer;
    v.failed = true;
    v.reason =
        "not loaded: " + (m.load_error.ok() ? std::string("no plugin") : m.load_error.message());
    d.votes.push_back(std::move(v));
  }
  d.verdict = Verdict::kInstall;
  for (const Vote& v : d.votes) d.verdict = std::max(d.verdict, v.verdict);
  d.until = 0;
  for (const Vote& v : d.votes) {
    if (v.verdict != d.verdict) continue;
    if (d.verdict == Verdict::kDefer) d.until = std::max(d.until, v.until);
    if (!d.reason.empty()) d.reason += "; ";
    d.reason += v.plugin + ": " + v.reason;
  }
  return d;
}

}  // namespace cryptex::policy
