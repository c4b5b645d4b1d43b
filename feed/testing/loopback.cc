#include "loopback.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#ifndef CRYPTEX_HOSTILE_SERVER_PY
#error "CRYPTEX_HOSTILE_SERVER_PY must name tests/feed/hostile_server.py"
#endif

namespace cryptex::feed::testing {
namespace {

using Clock = std::chrono::steady_clock;

// How long a server may take to come up.
constexpr std::chrono::seconds kStartTimeout{15};
constexpr const char* kNginxBinary = "/usr/sbin/nginx";
constexpr int kPortAttempts = 8;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

Status WriteAll(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IOError("writing " + path);
  return Status::Ok();
}

Result<std::string> MakeTempDir(const char* what) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/cryptex-" + what + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno(errno, "mkdtemp " + tmpl);
  return tmpl;
}

void RemoveTree(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Loopback requests must never go through a proxy the environment names.
void BypassProxies() { ::setenv("no_proxy", "*", 1); }

// Starts argv[0] with stdin from /dev/null, stdout to `out_fd` (or the log)
// and stderr to `log`, killed with SIGKILL when the starting thread dies.
Result<ChildProcess> Spawn(const std::vector<std::string>& argv, const std::string& log,
                           int out_fd = -1) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return Status::FromErrno(errno, "opening " + log);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(null_fd, 0);
    ::dup2(out_fd >= 0 ? out_fd : log_fd, 1);
    ::dup2(log_fd, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int err = errno;
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  if (pid < 0) return Status::FromErrno(err, "fork for " + argv[0]);
  return ChildProcess(pid);
}

// Runs argv to its end; kInternal with its output if it fails.
Status Run(const std::vector<std::string>& argv, const std::string& log) {
  CX_ASSIGN_OR_RETURN(ChildProcess child, Spawn(argv, log));
  int status = child.Wait();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  std::string cmd;
  for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  return Status::Internal("`" + cmd + "` failed (status " + std::to_string(status) +
                          "): " + ReadAll(log));
}

// A port of 127.0.0.1 that was free a moment ago.
Result<int> PickPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc == 0) rc = ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, "binding 127.0.0.1:0");
  return static_cast<int>(ntohs(a.sin_port));
}

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// Waits until `port` accepts connections or `child` exits (false).
bool WaitAccepting(ChildProcess& child, int port) {
  const Clock::time_point deadline = Clock::now() + kStartTimeout;
  while (Clock::now() < deadline) {
    if (Accepts(port)) return true;
    if (!child.Running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string Python3() {
  return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "/usr/local/bin/python3";
}

std::string HostileServerScript() {
  const char* env = std::getenv("CRYPTEX_HOSTILE_SERVER");
  return env && *env ? env : CRYPTEX_HOSTILE_SERVER_PY;
}

bool IsIpAddress(const std::string& host) {
  in6_addr buf;
  return ::inet_pton(AF_INET, host.c_str(), &buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

}  // namespace

// --- ChildProcess -------------------------------------------------------------

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    Stop();
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}

bool ChildProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return false;
  }
  return true;
}

int ChildProcess::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return status;
}

void ChildProcess::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

// --- TestCa -------------------------------------------------------------------

Result<TestCa> TestCa::Create(const std::string& dir, const std::vector<std::string>& hosts) {
  if (hosts.empty()) return Status::InvalidArgument("TestCa::Create: no host names");
  if (::access("/usr/bin/openssl", X_OK) != 0) {
    return Status::NotFound("/usr/bin/openssl is missing: install the Debian package openssl");
  }
  std::string san;
  for (const std::string& h : hosts) {
    if (!san.empty()) san += ',';  // appends: GCC 12 -O3 -Wrestrict on "lit" + std::string
    san += IsIpAddress(h) ? "IP:" : "DNS:";
    san += h;
  }
  // Our own configuration: nothing from the system's openssl.cnf applies.
  const std::string cnf = dir + "/openssl.cnf";
  CX_RETURN_IF_ERROR(WriteAll(cnf,
                              "[req]\n"
                              "distinguished_name = dn\n"
                              "[dn]\n"
                              "[ca]\n"
                              "basicConstraints = critical,CA:TRUE\n"
                              "keyUsage = critical,keyCertSign,cRLSign\n"
                              "subjectKeyIdentifier = hash\n"
                              "[server]\n"
                              "basicConstraints = critical,CA:FALSE\n"
                              "keyUsage = critical,digitalSignature\n"
                              "extendedKeyUsage = serverAuth\n"
                              "subjectKeyIdentifier = hash\n"
                              "authorityKeyIdentifier = keyid\n"
                              "subjectAltName = " +
                                  san +
                                  "\n"
                                  "[client]\n"
                                  "basicConstraints = critical,CA:FALSE\n"
                                  "keyUsage = critical,digitalSignature\n"
                                  "extendedKeyUsage = clientAuth\n"
                                  "subjectKeyIdentifier = hash\n"
                                  "authorityKeyIdentifier = keyid\n"));
  std::random_device rd;
  const std::string serial = std::to_string((uint64_t{rd()} << 20) ^ rd());
  const std::string log = dir + "/openssl.log";
  TestCa ca;
  ca.dir_ = dir;
  ca.cnf_file_ = cnf;
  ca.ca_file_ = dir + "/ca.pem";
  ca.ca_key_file_ = dir + "/ca.key";
  ca.cert_file_ = dir + "/server.pem";
  ca.key_file_ = dir + "/server.key";
  const std::string& ca_key = ca.ca_key_file_;
  const std::string csr = dir + "/server.csr";
  const std::string openssl = "/usr/bin/openssl";
  CX_RETURN_IF_ERROR(Run({openssl,       "req",       "-config",
                          cnf,           "-x509",     "-newkey",
                          "ec",          "-pkeyopt",  "ec_paramgen_curve:prime256v1",
                          "-nodes",      "-keyout",   ca_key,
                          "-out",        ca.ca_file_, "-days",
                          "3",           "-subj",     "/CN=cryptex test CA " + serial,
                          "-extensions", "ca"},
                         log));
  CX_RETURN_IF_ERROR(Run({openssl, "req", "-config", cnf, "-new", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca.key_file_, "-out",
                          csr, "-subj", "/CN=" + hosts.front()},
                         log));
  CX_RETURN_IF_ERROR(
      Run({openssl, "x509", "-req", "-in", csr, "-CA", ca.ca_file_, "-CAkey", ca_key, "-set_serial",
           serial, "-days", "3", "-extfile", cnf, "-extensions", "server", "-out", ca.cert_file_},
          log));
  return ca;
}

Result<TestCa::ClientCert> TestCa::IssueClient(const std::string& name) const {
  ClientCert c{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key"};
  const std::string csr = dir_ + "/" + name + ".csr", log = dir_ + "/openssl.log";
  const std::string openssl = "/usr/bin/openssl";
  std::random_device rd;
  const std::string serial = std::to_string((uint64_t{rd()} << 20) ^ rd());
  CX_RETURN_IF_ERROR(Run({openssl, "req", "-config", cnf_file_, "-new", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", c.key_file, "-out",
                          csr, "-subj", "/CN=" + name},
                         log));
  CX_RETURN_IF_ERROR(Run(
      {openssl, "x509", "-req", "-in", csr, "-CA", ca_file_, "-CAkey", ca_key_file_, "-set_serial",
       serial, "-days", "3", "-extfile", cnf_file_, "-extensions", "client", "-out", c.cert_file},
      log));
  return c;
}

// --- Nginx --------------------------------------------------------------------

Nginx::Nginx(Nginx&& o) noexcept
    : process_(std::move(o.process_)),
      dir_(std::exchange(o.dir_, "")),
      url_(std::move(o.url_)),
      access_log_(std::move(o.access_log_)),
      error_log_(std::move(o.error_log_)),
      port_(o.port_) {}

Nginx::~Nginx() {
  process_.Stop();
  if (std::getenv("CRYPTEX_KEEP_TEMP") == nullptr) RemoveTree(dir_);
}

std::vector<std::string> Nginx::log_lines() const { return ReadLines(access_log_); }

std::vector<std::string> Nginx::WaitForLogLines(size_t n, std::chrono::milliseconds timeout) const {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::vector<std::string> lines = log_lines();
  while (lines.size() < n && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    lines = log_lines();
  }
  return lines;
}

Result<Nginx> Nginx::Start(const std::string& root_dir, const TestCa& ca,
                           const std::string& client_ca) {
  if (::access(kNginxBinary, X_OK) != 0) {
    return Status::NotFound(std::string(kNginxBinary) +
                            " is missing: install the Debian package nginx (scripts/deps.sh)");
  }
  BypassProxies();
  Nginx n;
  CX_ASSIGN_OR_RETURN(n.dir_, MakeTempDir("nginx"));
  n.access_log_ = n.dir_ + "/access.log";
  n.error_log_ = n.dir_ + "/error.log";
  const std::string conf = n.dir_ + "/nginx.conf";
  const std::string& d = n.dir_;
  std::string last_error;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    CX_ASSIGN_OR_RETURN(int port, PickPort());
    std::string text =
        "daemon off;\n"
        "master_process off;\n"
        "worker_processes 1;\n" +
        std::string(::geteuid() == 0 ? "user root;\n" : "") + "pid " + d +
        "/nginx.pid;\n"
        "error_log " +
        n.error_log_ +
        " info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "  log_format feed escape=none '$request_method $request_uri $status $body_bytes_sent "
        "range=$http_range inm=$http_if_none_match';\n"
        "  access_log " +
        n.access_log_ +
        " feed;\n"
        "  client_body_temp_path " +
        d + "/body;\n  proxy_temp_path " + d + "/proxy;\n  fastcgi_temp_path " + d +
        "/fastcgi;\n  uwsgi_temp_path " + d + "/uwsgi;\n  scgi_temp_path " + d +
        "/scgi;\n"
        "  default_type application/octet-stream;\n"
        "  server {\n"
        "    listen 127.0.0.1:" +
        std::to_string(port) +
        " ssl;\n"
        "    server_name localhost;\n"
        "    ssl_certificate " +
        ca.cert_file() + ";\n    ssl_certificate_key " + ca.key_file() + ";\n" +
        (client_ca.empty()
             ? std::string()
             : "    ssl_client_certificate " + client_ca + ";\n    ssl_verify_client on;\n") +
        "    root " + root_dir +
        ";\n"
        "    location / { }\n"
        "  }\n"
        "}\n";
    CX_RETURN_IF_ERROR(WriteAll(conf, text));
    CX_ASSIGN_OR_RETURN(
        n.process_,
        Spawn({kNginxBinary, "-p", d + "/", "-c", conf, "-e", n.error_log_}, d + "/stderr.log"));
    if (WaitAccepting(n.process_, port)) {
      n.port_ = port;
      n.url_ = "https://127.0.0.1:" + std::to_string(port) + "/";
      return n;
    }
    n.process_.Stop();
    last_error = ReadAll(d + "/stderr.log") + ReadAll(n.error_log_);
    if (last_error.find("Address already in use") == std::string::npos) break;
  }
  return Status::Internal("nginx did not start (" + conf + "): " + last_error);
}

// --- HostileServer ------------------------------------------------------------

HostileServer::HostileServer(HostileServer&& o) noexcept
    : process_(std::move(o.process_)),
      dir_(std::exchange(o.dir_, "")),
      url_(std::move(o.url_)),
      log_(std::move(o.log_)),
      port_(o.port_) {}

HostileServer::~HostileServer() {
  process_.Stop();
  if (std::getenv("CRYPTEX_KEEP_TEMP") == nullptr) RemoveTree(dir_);
}

std::vector<std::string> HostileServer::log_lines() const { return ReadLines(log_); }

Result<HostileServer> HostileServer::Start(const std::string& mode, const std::string& root_dir,
                                           const TestCa& ca,
                                           const std::map<std::string, std::string>& per_path) {
  const std::string python = Python3();
  if (::access(python.c_str(), X_OK) != 0) {
    return Status::NotFound("/usr/bin/python3 is missing: install the Debian package python3");
  }
  BypassProxies();
  HostileServer h;
  CX_ASSIGN_OR_RETURN(h.dir_, MakeTempDir("hostile"));
  h.log_ = h.dir_ + "/requests.log";
  std::vector<std::string> argv = {
      python,   HostileServerScript(), "--mode", mode,          "--root", root_dir,
      "--cert", ca.cert_file(),        "--key",  ca.key_file(), "--log",  h.log_};
  for (const auto& [path, m] : per_path) {
    argv.push_back("--path-mode");
    argv.push_back(path + "=" + m);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  auto spawned = Spawn(argv, h.dir_ + "/stderr.log", fds[1]);
  ::close(fds[1]);
  if (!spawned.ok()) {
    ::close(fds[0]);
    return spawned.status();
  }
  h.process_ = std::move(spawned).value();
  // The server prints its port once it listens.
  std::string line;
  const Clock::time_point deadline = Clock::now() + kStartTimeout;
  while (line.find('\n') == std::string::npos && Clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[64];
    ssize_t r = ::read(fds[0], buf, sizeof(buf));
    if (r <= 0) break;
    line.append(buf, static_cast<size_t>(r));
  }
  ::close(fds[0]);
  int port = std::atoi(line.c_str());
  if (port <= 0 || port > 65535) {
    h.process_.Stop();
    return Status::Internal("hostile server (" + HostileServerScript() +
                            ") did not start: " + ReadAll(h.dir_ + "/stderr.log"));
  }
  h.port_ = port;
  h.url_ = "https://127.0.0.1:" + std::to_string(port) + "/";
  return h;
}

}  // namespace cryptex::feed::testing
