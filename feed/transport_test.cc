// The transports against real servers on 127.0.0.1: nginx from the Debian
// package for the well-behaved cases, tests/feed/hostile_server.py for the
// hostile ones (feed/testing/loopback.h). Nothing here reaches an address
// outside 127.0.0.0/8, and nothing skips: a missing nginx or python3 fails
// with the name of the package to install.
#include "transport.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "loopback.h"
#include "test_util.h"

namespace cryptex::feed {
namespace {

using namespace cryptex::test;  // TempDir, ReadFile, WriteFile, ...
using std::chrono::milliseconds;
using testing::HostileServer;
using testing::Nginx;
using testing::TestCa;

using Clock = std::chrono::steady_clock;

constexpr uint64_t kPatchSize = (uint64_t{1} << 20) + 12345;  // not a multiple of anything
constexpr milliseconds kShortTimeout{500};
// Slack allowed beyond a time limit on a loaded 2-core machine.
constexpr milliseconds kTimeMargin{1500};
// libcurl's own timers (connect, total) may fire a little early.
constexpr milliseconds kTimerSlack{20};
// The total limit of the hostile tests, far above what any of them takes.
constexpr milliseconds kBackstop{15000};

std::unique_ptr<Transport> Open(const std::string& url, const TransportOptions& o) {
  auto t = OpenTransport(url, o);
  EXPECT_TRUE(t.ok()) << url << ": " << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

// --- CheckFeedPath and OpenTransport -----------------------------------------

TEST(FeedPathTest, AcceptsRelativeNamesOnly) {
  for (const char* ok : {"index.cxfeed", "patches/a-1_2.cxpatch", "a/b/c", "..a", "a..b"}) {
    EXPECT_TRUE(CheckFeedPath(ok).ok()) << ok;
  }
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../b", "a/./b", ".", "a//b", "a/", "a b",
                          "a\nb", "a%2e", "a\\b", "x?y", "\xc3\xa9"}) {
    Status st = CheckFeedPath(bad);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << bad;
    EXPECT_TRUE(Contains(st.message(), bad)) << st.message();
  }
}

TEST(OpenTransportTest, RefusesAnythingButHttpsAndLocal) {
  TempDir dir;
  TransportOptions o;
  for (const std::string& url :
       {std::string("http://127.0.0.1:1/"), std::string("ftp://127.0.0.1/"),
        std::string("file://relative/dir"), std::string("gopher://x"), std::string(""),
        std::string("https://127.0.0.1/feed?q=1"), std::string("https:///nohost"),
        std::string("https://")}) {
    auto t = OpenTransport(url, o);
    ASSERT_FALSE(t.ok()) << url;
    EXPECT_EQ(t.status().code(), Code::kInvalidArgument) << url;
    if (!url.empty()) {
      EXPECT_TRUE(Contains(t.status().message(), url)) << t.status().message();
    }
  }
  for (const std::string& url : {"file://" + dir.path(), dir.path(), dir.path() + "/",
                                 std::string("https://127.0.0.1:1/feed")}) {
    EXPECT_TRUE(OpenTransport(url, o).ok()) << url;
  }
  auto missing = OpenTransport(dir.Join("missing"), o);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  o.ca_file = dir.Join("no-such-ca.pem");
  auto no_ca = OpenTransport("https://127.0.0.1:1/", o);
  EXPECT_EQ(no_ca.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(no_ca.status().message(), o.ca_file)) << no_ca.status().message();
}

// --- the local transport ------------------------------------------------------

class LocalTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(feed_.Join("patches").c_str(), 0755), 0);
    WriteFile(feed_.Join("index.cxfeed"), "index v1");
    WriteFile(feed_.Join("patches/p.cxpatch"), data_);
    t_ = Open("file://" + feed_.path(), {});
    ASSERT_NE(t_, nullptr);
  }
  TempDir feed_, work_;
  std::string data_ = RandomBytes(300000, 7);
  std::unique_ptr<Transport> t_;
};

TEST_F(LocalTransportTest, FetchSmallThenNotModified) {
  auto a = t_->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_FALSE(a->not_modified);
  EXPECT_EQ(a->body, "index v1");
  ASSERT_FALSE(a->validators.etag.empty());
  auto b = t_->FetchSmall("index.cxfeed", a->validators, 1000);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(b->not_modified);
  EXPECT_EQ(b->body, "");
  TransportStats s = t_->stats();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.body_bytes, 8u);
  EXPECT_EQ(s.not_modified, 1u);
  // Same size, new contents: a new token.
  WriteFile(feed_.Join("index.cxfeed"), "index v2");
  auto c = t_->FetchSmall("index.cxfeed", a->validators, 1000);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->not_modified);
  EXPECT_EQ(c->body, "index v2");
}

TEST_F(LocalTransportTest, FetchSmallBound) {
  auto exact = t_->FetchSmall("index.cxfeed", {}, 8);
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  auto over = t_->FetchSmall("index.cxfeed", {}, 7);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(over.status().message(), feed_.Join("index.cxfeed") + ": more than 7 bytes"))
      << over.status().message();
}

TEST_F(LocalTransportTest, MissingFileAndBadPaths) {
  auto st = t_->FetchSmall("nothing.cxfeed", {}, 100);
  EXPECT_EQ(st.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(st.status().message(), feed_.Join("nothing.cxfeed")));
  EXPECT_EQ(t_->FetchSmall("../x", {}, 100).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(t_->FetchFile("/etc/passwd", work_.Join("p"), 10).code(), Code::kInvalidArgument);
  EXPECT_EQ(t_->FetchFile("nothing.cxpatch", work_.Join("p"), 10).code(), Code::kNotFound);
  EXPECT_TRUE(cryptex::test::ListDirNames(work_.path()).empty());  // no partial left behind
  EXPECT_EQ(t_->FetchSmall("patches", {}, 100).status().code(), Code::kIOError);  // a directory
}

TEST_F(LocalTransportTest, SymlinksRefusedAtEveryComponent) {
  TempDir outside;
  WriteFile(outside.Join("secret"), "not part of the feed");
  ASSERT_EQ(::symlink(outside.Join("secret").c_str(), feed_.Join("link.cxfeed").c_str()), 0);
  ASSERT_EQ(::symlink(outside.path().c_str(), feed_.Join("dirlink").c_str()), 0);
  for (const char* rel : {"link.cxfeed", "dirlink/secret"}) {
    auto r = t_->FetchSmall(rel, {}, 100);
    ASSERT_FALSE(r.ok()) << rel;
    EXPECT_EQ(r.status().code(), Code::kPermission) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), "symbolic link")) << r.status().message();
    EXPECT_EQ(t_->FetchFile(rel, work_.Join("part"), 20).code(), Code::kPermission) << rel;
  }
  // The partial download itself is never followed either.
  ASSERT_EQ(::symlink(outside.Join("secret").c_str(), work_.Join("evil.part").c_str()), 0);
  EXPECT_FALSE(t_->FetchFile("patches/p.cxpatch", work_.Join("evil.part"), data_.size()).ok());
  EXPECT_EQ(ReadFile(outside.Join("secret")), "not part of the feed");
}

TEST_F(LocalTransportTest, FetchFileWholeResumedAndExact) {
  const std::string part = work_.Join("p.part");
  uint64_t last_done = 0, last_total = 0;
  TransportOptions o;
  o.progress = [&](uint64_t d, uint64_t n) {
    last_done = d;
    last_total = n;
  };
  auto t = Open(feed_.path(), o);
  ASSERT_TRUE(t->FetchFile("patches/p.cxpatch", part, data_.size()).ok());
  EXPECT_EQ(ReadFile(part), data_);
  EXPECT_EQ(last_done, data_.size());
  EXPECT_EQ(last_total, data_.size());
  struct stat st;
  ASSERT_EQ(::stat(part.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // Resume: only the rest is read.
  WriteFile(part, data_.substr(0, 100000));
  uint64_t before = t->stats().body_bytes;
  ASSERT_TRUE(t->FetchFile("patches/p.cxpatch", part, data_.size()).ok());
  EXPECT_EQ(ReadFile(part), data_);
  EXPECT_EQ(t->stats().body_bytes - before, data_.size() - 100000);

  // Longer than signed: refused unread, partial untouched.
  WriteFile(part, "");
  Status longer = t->FetchFile("patches/p.cxpatch", part, data_.size() - 1);
  EXPECT_EQ(longer.code(), Code::kCorruption);
  EXPECT_TRUE(Contains(longer.message(),
                       "more than the signed " + std::to_string(data_.size() - 1) + " bytes"))
      << longer.message();
  EXPECT_EQ(FileSize(part), 0u);

  // An empty file: the partial exists and is empty.
  WriteFile(feed_.Join("patches/empty.cxpatch"), "");
  ASSERT_TRUE(t->FetchFile("patches/empty.cxpatch", work_.Join("e.part"), 0).ok());
  EXPECT_EQ(FileSize(work_.Join("e.part")), 0u);

  // Shorter than signed: truncated, the prefix kept.
  Status shorter = t->FetchFile("patches/p.cxpatch", part, data_.size() + 10);
  EXPECT_EQ(shorter.code(), Code::kIOError);
  EXPECT_TRUE(Contains(shorter.message(), "truncated at " + std::to_string(data_.size()) + " of " +
                                              std::to_string(data_.size() + 10) + " bytes"))
      << shorter.message();
  EXPECT_EQ(ReadFile(part), data_);
}

// --- https against nginx ------------------------------------------------------

// One CA, one nginx and one feed directory for the whole suite.
class HttpsTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_EQ(::mkdir(Feed().c_str(), 0700), 0);
    ASSERT_EQ(::mkdir((Feed() + "/patches").c_str(), 0700), 0);
    ASSERT_EQ(::mkdir(dir_->Join("ca").c_str(), 0700), 0);
    WriteFile(Feed() + "/index.cxfeed", "the index");
    WriteFile(Feed() + "/patches/p.cxpatch", Data());
    // Files only one test asks for: its lines in nginx's log are its own.
    WriteFile(Feed() + "/conditional.cxfeed", "the index");
    WriteFile(Feed() + "/trickle.bin", "twelve bytes");
    WriteFile(Feed() + "/patches/resume.cxpatch", Data());
    auto ca = TestCa::Create(dir_->Join("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status().ToString();
    ca_ = new TestCa(*ca);
    auto n = Nginx::Start(Feed(), *ca_);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    nginx_ = new Nginx(std::move(n).value());
  }
  static void TearDownTestSuite() {
    delete nginx_;
    delete ca_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(nginx_, nullptr) << "nginx did not start (see above)";
    opts_.ca_file = ca_->ca_file();
    opts_.connect_timeout = milliseconds(3000);
    opts_.idle_timeout = milliseconds(3000);
  }
  static std::string Feed() { return dir_->Join("feed"); }
  static const std::string& Data() {
    static const std::string d = RandomBytes(kPatchSize, 11);
    return d;
  }

  static TempDir* dir_;
  static TestCa* ca_;
  static Nginx* nginx_;
  TempDir work_;
  TransportOptions opts_;
};
TempDir* HttpsTransportTest::dir_ = nullptr;
TestCa* HttpsTransportTest::ca_ = nullptr;
Nginx* HttpsTransportTest::nginx_ = nullptr;

// nginx's access log lines for `uri`, once there are `want` of them (it
// logs a request after answering it) or after 5 s.
std::vector<std::string> LinesFor(const Nginx& n, const std::string& uri, size_t want) {
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    std::vector<std::string> lines;
    for (const std::string& l : n.log_lines()) {
      if (Contains(l, " " + uri + " ")) lines.push_back(l);
    }
    if (lines.size() >= want || Clock::now() > deadline) return lines;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

TEST_F(HttpsTransportTest, SmallFetchThenNotModified) {
  auto t = Open(nginx_->url(), opts_);
  auto a = t->FetchSmall("conditional.cxfeed", {}, 1000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->body, "the index");
  EXPECT_FALSE(a->validators.etag.empty());
  EXPECT_FALSE(a->validators.last_modified.empty());
  auto b = t->FetchSmall("conditional.cxfeed", a->validators, 1000);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(b->not_modified);
  EXPECT_EQ(b->body, "");
  EXPECT_EQ(b->validators.etag, a->validators.etag);
  TransportStats s = t->stats();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.body_bytes, 9u);
  EXPECT_EQ(s.not_modified, 1u);
  auto lines = LinesFor(*nginx_, "/conditional.cxfeed", 2);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(Contains(lines.back(), " 304 ")) << lines.back();
  EXPECT_TRUE(Contains(lines.back(), "inm=" + a->validators.etag)) << lines.back();

  // Last-Modified alone is a validator too (If-Modified-Since).
  auto c = t->FetchSmall("conditional.cxfeed", {"", a->validators.last_modified}, 1000);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->not_modified);
  EXPECT_EQ(t->stats().body_bytes, 9u);
  // A validator that would smuggle a header in is refused unsent.
  auto bad = t->FetchSmall("conditional.cxfeed", {"\"x\"\r\nX-Evil: 1", ""}, 1000);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(t->stats().requests, 3u);
}

TEST_F(HttpsTransportTest, MissingFileAndBound) {
  auto t = Open(nginx_->url(), opts_);
  // max_bytes below the size of nginx's 404 page: still a 404.
  auto missing = t->FetchSmall("nothing.cxfeed", {}, 8);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), nginx_->url() + "nothing.cxfeed: HTTP 404"))
      << missing.status().message();
  Status file = t->FetchFile("nothing.cxpatch", work_.Join("n.part"), 100);
  EXPECT_EQ(file.code(), Code::kNotFound) << file.ToString();
  EXPECT_TRUE(cryptex::test::ListDirNames(work_.path()).empty());  // no partial left behind
  auto over = t->FetchSmall("index.cxfeed", {}, 8);
  EXPECT_EQ(over.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(over.status().message(), nginx_->url() + "index.cxfeed: more than 8 bytes"))
      << over.status().message();
  auto exact = t->FetchSmall("index.cxfeed", {}, 9);
  EXPECT_TRUE(exact.ok()) << exact.status().ToString();
}

TEST_F(HttpsTransportTest, FetchFileWholeAndResumed) {
  uint64_t last_done = 0, calls = 0;
  opts_.progress = [&](uint64_t d, uint64_t n) {
    EXPECT_EQ(n, kPatchSize);
    EXPECT_GE(d, last_done);
    last_done = d;
    ++calls;
  };
  auto t = Open(nginx_->url(), opts_);
  const std::string part = work_.Join("p.part");
  Status st = t->FetchFile("patches/resume.cxpatch", part, kPatchSize);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(part), Data());
  EXPECT_EQ(last_done, kPatchSize);
  EXPECT_GT(calls, 1u);

  const uint64_t prefix = 300001;
  WriteFile(part, Data().substr(0, prefix));
  last_done = prefix;
  uint64_t before = t->stats().body_bytes;
  st = t->FetchFile("patches/resume.cxpatch", part, kPatchSize);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(part), Data());
  EXPECT_EQ(t->stats().body_bytes - before, kPatchSize - prefix);
  // Wait for the 206's line (nginx logs after answering).
  auto lines = LinesFor(*nginx_, "/patches/resume.cxpatch", 2);
  ASSERT_EQ(lines.size(), 2u);
  std::string last = lines.back();
  EXPECT_TRUE(Contains(last, " 206 ")) << last;
  EXPECT_TRUE(Contains(last, "range=bytes=" + std::to_string(prefix) + "-")) << last;

  // Complete already: no request. Longer than signed: not a prefix, fetched anew.
  uint64_t requests = t->stats().requests;
  ASSERT_TRUE(t->FetchFile("patches/p.cxpatch", part, kPatchSize).ok());
  EXPECT_EQ(t->stats().requests, requests);
  WriteFile(part, Data() + "junk");
  last_done = 0;
  st = t->FetchFile("patches/p.cxpatch", part, kPatchSize);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(part), Data());
  EXPECT_EQ(t->stats().requests, requests + 1);
}

TEST_F(HttpsTransportTest, FetchFileExactLength) {
  auto t = Open(nginx_->url(), opts_);
  const std::string part = work_.Join("p.part");
  Status longer = t->FetchFile("patches/p.cxpatch", part, kPatchSize - 1);
  EXPECT_EQ(longer.code(), Code::kCorruption);
  EXPECT_TRUE(Contains(longer.message(), nginx_->url() +
                                             "patches/p.cxpatch: more than the signed " +
                                             std::to_string(kPatchSize - 1) + " bytes"))
      << longer.message();
  // Refused on its Content-Length, before any byte: no partial made.
  EXPECT_NE(::access(part.c_str(), F_OK), 0);

  WriteFile(part, "");
  Status shorter = t->FetchFile("patches/p.cxpatch", part, kPatchSize + 1);
  EXPECT_EQ(shorter.code(), Code::kIOError);
  EXPECT_TRUE(Contains(shorter.message(), "truncated at " + std::to_string(kPatchSize) + " of " +
                                              std::to_string(kPatchSize + 1) + " bytes"))
      << shorter.message();
  EXPECT_EQ(ReadFile(part), Data());
}

// One transport shared by threads: requests are serialised, stats add up.
TEST_F(HttpsTransportTest, SharedBetweenThreads) {
  auto t = Open(nginx_->url(), opts_);
  constexpr int kThreads = 4, kEach = 5;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < kEach; ++j) {
        auto r = t->FetchSmall("index.cxfeed", {}, 1000);
        if (r.ok() && r->body == "the index") ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good, kThreads * kEach);
  EXPECT_EQ(t->stats().requests, uint64_t{kThreads * kEach});
  EXPECT_EQ(t->stats().body_bytes, uint64_t{9 * kThreads * kEach});
}

TEST_F(HttpsTransportTest, UntrustedCertificateRefused) {
  ASSERT_EQ(::mkdir(work_.Join("other").c_str(), 0700), 0);
  auto other = TestCa::Create(work_.Join("other"));
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  opts_.ca_file = other->ca_file();
  auto t = Open(nginx_->url(), opts_);
  auto r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), nginx_->url() + "index.cxfeed: "))
      << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "certificate")) << r.status().message();
  EXPECT_EQ(t->stats().body_bytes, 0u);
}

TEST_F(HttpsTransportTest, WrongHostNameRefused) {
  ASSERT_EQ(::mkdir(work_.Join("wrong").c_str(), 0700), 0);
  auto wrong = TestCa::Create(work_.Join("wrong"), {"wrong.invalid"});
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  auto n = Nginx::Start(Feed(), *wrong);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  opts_.ca_file = wrong->ca_file();  // trusted, but not for 127.0.0.1
  auto t = Open(n->url(), opts_);
  auto r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), n->url() + "index.cxfeed: ")) << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "127.0.0.1")) << r.status().message();
  EXPECT_EQ(n->requests(), 0u);
}

// A feed behind mutual TLS: the device's client_cert/client_key are sent,
// and a server that wants one refuses a device without it, or with one
// another CA signed. A client key without its certificate is refused
// before any request, as are unreadable files, naming the option.
TEST_F(HttpsTransportTest, ClientCertificateForAFeedThatAsksForOne) {
  auto device = ca_->IssueClient("device");
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  TempDir other_dir;
  auto other = TestCa::Create(other_dir.path());
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto stranger = other->IssueClient("stranger");
  ASSERT_TRUE(stranger.ok()) << stranger.status().ToString();
  auto n = Nginx::Start(Feed(), *ca_, ca_->ca_file());
  ASSERT_TRUE(n.ok()) << n.status().ToString();

  auto without = Open(n->url(), opts_)->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(without.ok());
  EXPECT_TRUE(Contains(without.status().message(), n->url() + "index.cxfeed: HTTP 400"))
      << without.status().message();

  auto presenting = [&](const TestCa::ClientCert& c) {
    TransportOptions o = opts_;
    o.client_cert = c.cert_file;
    o.client_key = c.key_file;
    return o;
  };
  const TransportOptions with = presenting(*device);
  auto ok = Open(n->url(), with)->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->body, "the index");
  Status file =
      Open(n->url(), with)->FetchFile("patches/p.cxpatch", work_.Join("p.part"), kPatchSize);
  ASSERT_TRUE(file.ok()) << file.ToString();
  EXPECT_TRUE(ReadFile(work_.Join("p.part")) == Data()) << "fetched bytes differ";

  auto refused = Open(n->url(), presenting(*stranger))->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(), n->url() + "index.cxfeed: "))
      << refused.status().message();

  TransportOptions key_only = opts_;
  key_only.client_key = device->key_file;
  auto bad = OpenTransport(n->url(), key_only);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(
      Contains(bad.status().message(), "client_key " + device->key_file + " without a client_cert"))
      << bad.status().message();
  TransportOptions missing = opts_;
  missing.client_cert = work_.Join("absent.pem");
  bad = OpenTransport(n->url(), missing);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status().message(), "client_cert " + work_.Join("absent.pem")))
      << bad.status().message();
  // Only the request with the right certificate was served.
  std::vector<std::string> lines = n->WaitForLogLines(4);
  size_t served = 0;
  for (const std::string& l : lines) served += Contains(l, " 200 ") ? 1 : 0;
  EXPECT_EQ(served, 2u) << ::testing::PrintToString(lines);
}

// --- https against hostile servers --------------------------------------------

class HostileTest : public HttpsTransportTest {
 protected:
  void SetUp() override {
    HttpsTransportTest::SetUp();
    opts_.connect_timeout = kShortTimeout;
    opts_.idle_timeout = kShortTimeout;
    // A transport that loses a bound fails the test instead of hanging it.
    opts_.total_timeout = kBackstop;
  }
  std::unique_ptr<HostileServer> Serve(const std::string& mode,
                                       const std::map<std::string, std::string>& per_path = {}) {
    auto h = HostileServer::Start(mode, Feed(), *ca_, per_path);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? std::make_unique<HostileServer>(std::move(h).value()) : nullptr;
  }
  std::string part_ = work_.Join("p.part");
};

TEST_F(HostileTest, EndlessBodyRefusedAfterTheSignedLength) {
  auto h = Serve("endless");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_TRUE(Contains(st.message(), h->url() + "patches/p.cxpatch: more than the signed " +
                                         std::to_string(kPatchSize) + " bytes"))
      << st.message();
  // Stopped within one read of the limit, not after the stream went on.
  EXPECT_GT(t->stats().body_bytes, kPatchSize);
  EXPECT_LE(t->stats().body_bytes, kPatchSize + (256 << 10));
  EXPECT_LE(FileSize(part_), kPatchSize);

  auto small = t->FetchSmall("index.cxfeed", {}, 4096);
  EXPECT_EQ(small.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(small.status().message(), "more than 4096 bytes"))
      << small.status().message();
}

TEST_F(HostileTest, LongerBodyRefused) {
  auto h = Serve("longer");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_TRUE(Contains(st.message(), "more than the signed " + std::to_string(kPatchSize)))
      << st.message();
  EXPECT_LE(t->stats().body_bytes, kPatchSize + 1);
  auto small = t->FetchSmall("index.cxfeed", {}, 9);
  EXPECT_EQ(small.status().code(), Code::kCorruption) << small.status().ToString();
}

TEST_F(HostileTest, TruncatedKeepsThePrefixAndResumes) {
  auto h = Serve("truncate");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  EXPECT_EQ(st.code(), Code::kIOError);
  const uint64_t half = kPatchSize / 2;
  EXPECT_TRUE(Contains(st.message(), h->url() + "patches/p.cxpatch: ")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "truncated at " + std::to_string(half) + " of " +
                                         std::to_string(kPatchSize) + " bytes"))
      << st.message();
  EXPECT_EQ(ReadFile(part_), Data().substr(0, half));

  auto fixed = Serve("normal");
  ASSERT_NE(fixed, nullptr);
  auto t2 = Open(fixed->url(), opts_);
  st = t2->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(part_), Data());
  EXPECT_EQ(t2->stats().body_bytes, kPatchSize - half);
  ASSERT_EQ(fixed->requests(), 1u);
  EXPECT_TRUE(Contains(fixed->log_lines()[0], "range=bytes=" + std::to_string(half) + "-"));
}

// A server that stops sending is given up on after idle_timeout, whether it
// stops in the body or before the headers.
TEST_F(HostileTest, SlowAndSilentServersTimeOut) {
  for (const char* mode : {"slow", "stall-headers"}) {
    SCOPED_TRACE(mode);
    auto h = Serve(mode);
    ASSERT_NE(h, nullptr);
    auto t = Open(h->url(), opts_);
    Clock::time_point start = Clock::now();
    Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
    auto took = Clock::now() - start;
    EXPECT_EQ(st.code(), Code::kIOError);
    EXPECT_TRUE(Contains(st.message(), h->url() + "patches/p.cxpatch: no data for 500 ms"))
        << st.message();
    EXPECT_GE(took, kShortTimeout - kTimerSlack);
    EXPECT_LT(took, kShortTimeout + kTimeMargin);

    start = Clock::now();
    auto small = t->FetchSmall("patches/p.cxpatch", {}, kPatchSize);
    took = Clock::now() - start;
    EXPECT_EQ(small.status().code(), Code::kIOError);
    EXPECT_TRUE(Contains(small.status().message(), "idle timeout")) << small.status().message();
    EXPECT_LT(took, kShortTimeout + kTimeMargin);
    WriteFile(part_, "");
  }
}

// The idle limit counts from the last byte, not from the start: a server
// that keeps sending, however slowly, is not idle.
TEST_F(HostileTest, TrickleIsNotIdle) {
  auto h = Serve("trickle");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  Clock::time_point start = Clock::now();
  auto r = t->FetchSmall("trickle.bin", {}, 100);  // 12 bytes, 100 ms apart
  auto took = Clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "twelve bytes");
  EXPECT_GT(took, kShortTimeout);
}

TEST_F(HostileTest, TotalLimit) {
  auto h = Serve("slow");
  ASSERT_NE(h, nullptr);
  opts_.idle_timeout = milliseconds(10000);
  opts_.total_timeout = milliseconds(700);
  auto t = Open(h->url(), opts_);
  Clock::time_point start = Clock::now();
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  auto took = Clock::now() - start;
  EXPECT_EQ(st.code(), Code::kIOError);
  EXPECT_TRUE(Contains(st.message(), h->url() + "patches/p.cxpatch: total timeout of 700 ms"))
      << st.message();
  EXPECT_GE(took, milliseconds(700) - kTimerSlack);
  EXPECT_LT(took, milliseconds(700) + kTimeMargin);
}

TEST_F(HostileTest, IgnoredRangeStillResumesRight) {
  auto h = Serve("ignore-range");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  WriteFile(part_, Data().substr(0, 5000));
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(part_), Data());
  ASSERT_EQ(h->requests(), 1u);
  EXPECT_TRUE(Contains(h->log_lines()[0], "range=bytes=5000-")) << h->log_lines()[0];
}

// A 206 whose Content-Range does not start where the partial file ends is
// refused: its bytes would land at the wrong offset. The partial file is
// left as it was, for the next attempt.
TEST_F(HostileTest, RangeAnsweredAtTheWrongOffsetIsRefused) {
  auto h = Serve("wrong-range");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  WriteFile(part_, Data().substr(0, 5000));
  Status st = t->FetchFile("patches/p.cxpatch", part_, kPatchSize);
  EXPECT_EQ(st.code(), Code::kIOError) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), h->url() + "patches/p.cxpatch: answered range \"bytes 0-"))
      << st.message();
  EXPECT_TRUE(Contains(st.message(), "to a request for bytes 5000-")) << st.message();
  const std::string kept = ReadFile(part_);
  EXPECT_EQ(kept.size(), 5000u);
  EXPECT_TRUE(kept == Data().substr(0, 5000)) << "the partial file changed";
  ASSERT_EQ(h->requests(), 1u);
  EXPECT_TRUE(Contains(h->log_lines()[0], "range=bytes=5000-")) << h->log_lines()[0];
}

TEST_F(HostileTest, RedirectsOnlyToHttpsAndBounded) {
  auto ok = Serve("redirect");
  ASSERT_NE(ok, nullptr);
  auto t = Open(ok->url(), opts_);
  auto r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "the index");
  EXPECT_EQ(ok->requests(), 2u);

  auto to_http = Serve("redirect-http");
  ASSERT_NE(to_http, nullptr);
  t = Open(to_http->url(), opts_);
  r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), to_http->url() + "index.cxfeed: "))
      << r.status().message();
  EXPECT_EQ(to_http->requests(), 1u);  // never followed (it would fail TLS-less anyway)

  auto loop = Serve("redirect-loop");
  ASSERT_NE(loop, nullptr);
  t = Open(loop->url(), opts_);
  r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), "redirect")) << r.status().message();
  EXPECT_LE(loop->requests(), 6u);
}

TEST_F(HostileTest, ConnectLimitAndRefusedConnection) {
  auto h = Serve("stall-tls");
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  Clock::time_point start = Clock::now();
  auto r = t->FetchSmall("index.cxfeed", {}, 1000);
  auto took = Clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), h->url() + "index.cxfeed: connect timeout of 500 ms"))
      << r.status().message();
  EXPECT_GE(took, kShortTimeout - kTimerSlack);
  EXPECT_LT(took, kShortTimeout + kTimeMargin);

  // Nothing listens on a port just released.
  const std::string dead = "https://127.0.0.1:" + std::to_string(h->port()) + "/";
  h.reset();
  t = Open(dead, opts_);
  r = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(r.status().message(), dead + "index.cxfeed: ")) << r.status().message();
}

// The hostile server's per-path modes (what the client's tests rely on): a
// good index next to a bad patch. The transport checks lengths, not bytes.
TEST_F(HostileTest, PerPathModes) {
  auto h = Serve("wrong-body", {{"index.cxfeed", "normal"}});
  ASSERT_NE(h, nullptr);
  auto t = Open(h->url(), opts_);
  auto index = t->FetchSmall("index.cxfeed", {}, 1000);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->body, "the index");
  ASSERT_TRUE(t->FetchFile("patches/p.cxpatch", part_, kPatchSize).ok());
  std::string got = ReadFile(part_);
  ASSERT_EQ(got.size(), kPatchSize);
  EXPECT_NE(got, Data());
  EXPECT_EQ(static_cast<uint8_t>(got[0]), static_cast<uint8_t>(Data()[0] ^ 0xff));
}

}  // namespace
}  // namespace cryptex::feed
