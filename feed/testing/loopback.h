// Test support for the feed (library cryptex_feed_testing): real HTTPS
// servers on 127.0.0.1 for tests of the transport, the client and the agent.
//
//   TestCa ca = TestCa::Create(dir).value();       // CA + leaf for 127.0.0.1
//   Nginx nginx = Nginx::Start(feed_dir, ca).value();
//   opts.ca_file = ca.ca_file();  url = nginx.url();  // "https://127.0.0.1:P/"
//
// Servers are plain child processes (no systemd, no daemonising) bound to
// 127.0.0.1 only, killed and reaped by their destructors, and killed by the
// kernel if the thread that started them dies (PR_SET_PDEATHSIG): start
// them from the test's main thread. Starting one sets no_proxy=* in the
// environment so that libcurl never sends a loopback request to a proxy.
//
// Nothing here skips: a missing nginx binary or python3 is an error naming
// the Debian package that provides it (scripts/deps.sh installs both).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "status.h"

namespace cryptex::feed::testing {

// A throwaway certificate authority and one server certificate it signed.
class TestCa {
 public:
  // Writes into `dir` (which must exist): ca.pem, ca.key, server.pem,
  // server.key. The server certificate's subjectAltName holds each of
  // `hosts` (IP addresses as IP entries, the rest as DNS names). Two calls
  // give two unrelated CAs: one's ca_file() does not trust the other's
  // server (the "wrong certificate" case); hosts = {"wrong.invalid"} gives
  // a trusted certificate for the wrong name. Uses the `openssl` tool.
  static Result<TestCa> Create(const std::string& dir,
                               const std::vector<std::string>& hosts = {"127.0.0.1", "localhost"});

  const std::string& ca_file() const { return ca_file_; }      // trust this (PEM)
  const std::string& cert_file() const { return cert_file_; }  // the server's chain (PEM)
  const std::string& key_file() const { return key_file_; }    // the server's key (PEM)

  // A client certificate (extendedKeyUsage clientAuth, subject CN=`name`)
  // this CA signs: writes NAME.pem and NAME.key into the CA's directory.
  struct ClientCert {
    std::string cert_file, key_file;
  };
  Result<ClientCert> IssueClient(const std::string& name) const;

 private:
  std::string dir_, ca_file_, ca_key_file_, cnf_file_, cert_file_, key_file_;
};

// A child process that is SIGKILLed and reaped when this is destroyed.
class ChildProcess {
 public:
  ChildProcess() = default;
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ChildProcess(ChildProcess&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Stop(); }

  pid_t pid() const { return pid_; }
  // True while the child has not exited (reaps it if it has).
  bool Running();
  // SIGKILL and waitpid; idempotent.
  void Stop();
  // Waits for the child to exit; its wait status (-1 if there is none).
  int Wait();

 private:
  pid_t pid_ = -1;
};

// nginx from the Debian package (/usr/sbin/nginx) serving `root_dir` over
// TLS with the CA's server certificate, on a free port of 127.0.0.1. It
// answers as it does for any static site: ETag and Last-Modified, 304 to
// If-None-Match / If-Modified-Since, 206 to Range requests.
class Nginx {
 public:
  // Writes nginx.conf, the logs and the pid file into a fresh temporary
  // directory (removed by the destructor), starts nginx in the foreground
  // (one process, `user root` when run as root so it can read 0700 test
  // directories) and returns once it accepts connections. A port that
  // turns out to be taken is retried with another.
  // With `client_ca` (a PEM file), nginx asks for a client certificate and
  // answers 400 to a request without one that this CA signed
  // (ssl_verify_client on).
  static Result<Nginx> Start(const std::string& root_dir, const TestCa& ca,
                             const std::string& client_ca = "");

  Nginx(Nginx&& o) noexcept;
  Nginx& operator=(Nginx&&) = delete;
  ~Nginx();

  const std::string& url() const { return url_; }  // "https://127.0.0.1:PORT/"
  int port() const { return port_; }
  // The access log, one line per request answered:
  //   "METHOD URI STATUS BODY_BYTES range=RANGE inm=IF_NONE_MATCH"
  // ("-" for an absent header). requests() is its line count. nginx logs a
  // request after answering it: a client may see its answer before the
  // line is there, so wait for the count you expect with WaitForLogLines.
  std::vector<std::string> log_lines() const;
  size_t requests() const { return log_lines().size(); }
  // The log once it has at least `n` lines, or as it is after `timeout`.
  std::vector<std::string> WaitForLogLines(
      size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  const std::string& error_log() const { return error_log_; }

 private:
  Nginx() = default;
  ChildProcess process_;
  std::string dir_, url_, access_log_, error_log_;
  int port_ = 0;
};

// tests/feed/hostile_server.py: python3's http.server over TLS on a free
// port of 127.0.0.1, serving the files of `root_dir` and misbehaving as
// `mode` says:
//   normal         as a static server should (ETag, 304, Range -> 206)
//   endless        200 without Content-Length, the file then bytes forever
//   longer         the file plus 4096 extra bytes (Content-Length says so)
//   truncate       Content-Length of the whole file, half the body, close
//   slow           headers and 16 bytes of the body, then silence
//   stall-headers  reads the request, then never answers
//   ignore-range   200 with the whole file whatever the Range header says
//   wrong-body     the file's length of different bytes (each byte ^ 0xff)
//   stall-tls      accepts connections, never completes a TLS handshake
//                  (applies to the whole server, not per path)
//   redirect       302 to the same URL + "?redirected" (https), then normal
//   redirect-http  302 to the same URL over http://
//   redirect-loop  302 to itself, forever
//   trickle        the file one byte every 100 ms (never idle for long)
//   wrong-range    to a Range request, 206 with the whole file and a
//                  Content-Range that starts at 0 (not where it was asked)
// `per_path` overrides the mode for single paths relative to the root
// (e.g. {{"index.cxfeed", "normal"}}) so a test can serve a good index and
// a bad patch.
class HostileServer {
 public:
  static Result<HostileServer> Start(const std::string& mode, const std::string& root_dir,
                                     const TestCa& ca,
                                     const std::map<std::string, std::string>& per_path = {});

  HostileServer(HostileServer&& o) noexcept;
  HostileServer& operator=(HostileServer&&) = delete;
  ~HostileServer();

  const std::string& url() const { return url_; }  // "https://127.0.0.1:PORT/"
  int port() const { return port_; }
  // One line per request received: "METHOD PATH range=RANGE inm=INM",
  // written before the server answers.
  std::vector<std::string> log_lines() const;
  size_t requests() const { return log_lines().size(); }

 private:
  HostileServer() = default;
  ChildProcess process_;
  std::string dir_, url_, log_;
  int port_ = 0;
};

}  // namespace cryptex::feed::testing
