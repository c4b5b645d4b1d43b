// What `cryptex ls`, `verify` and `inspect` write: on a terminal (a real
// pty) no byte of image-controlled text can act on the terminal, and what is
// shown pastes back into bash as the exact bytes; piped, output is byte for
// byte; `ls -l` of times gmtime cannot represent is defined (valgrind-clean);
// the veritysetup line inspect prints runs under sh for any image path; and
// every --json document parses (nlohmann) back to the exact strings.
// Needs root (xattrs are not needed, but a tmpfs for extreme mtimes).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "terminal.h"
#include "test_util.h"

namespace cryptex {
namespace {

using test::CommandResult;
using test::Contains;
using test::CryptexBin;
using test::ReadFile;
using test::RunCommand;
using test::RunCommandCapture;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Q(const std::string& s) { return ShellQuote(s); }

// Runs `cmd` with /bin/sh -c on a new pty in raw mode (so "\n" stays "\n"),
// stdin, stdout and stderr all on the pty. Returns what the terminal got.
CommandResult RunOnPty(const std::string& cmd) {
  CommandResult r;
  std::fflush(nullptr);
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) {
    ADD_FAILURE() << "forkpty: " << std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &t) == 0) {
      cfmakeraw(&t);
      tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  char buf[65536];
  for (;;) {
    const ssize_t n = read(master, buf, sizeof buf);
    if (n > 0) {
      r.out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EIO once the child side is closed
    }
  }
  close(master);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// "" if `s` is safe for a terminal: no C0 control other than "\n", no DEL,
// no C1 control, valid UTF-8 (cli::HasTerminalControls, checked
// independently in TerminalText.*); else `s` escaped, for the failure message.
std::string UnsafeForTerminal(const std::string& s) {
  std::string lines = s;
  for (char& c : lines) c = c == '\n' ? ' ' : c;
  return cli::HasTerminalControls(lines) ? "unsafe: " + cli::ShellEscape(s) : "";
}

// What bash makes of `word` (a quoted word as ls shows it).
std::string BashValue(const std::string& word) {
  const CommandResult r = RunCommand("bash -c " + Q("printf %s " + word));
  EXPECT_EQ(r.exit_code, 0) << word;
  return r.out;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

nlohmann::json ParseJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not valid JSON:\n" << text;
  return j;
}

// Names a hostile image carries: terminal escapes, newline, DEL, C1 CSI,
// invalid UTF-8, and harmless ones that must stay as they are.
const std::vector<std::string>& HostileNames() {
  static const std::vector<std::string> names = {"new\nline",
                                                 "red\x1b[31mtext",
                                                 "title\x1b]0;pwned\x07",
                                                 "del\x7f",
                                                 "bad\xff\xfeutf8",
                                                 "csi\xc2\x9b"
                                                 "31m",
                                                 "quote'name",
                                                 "tab\there",
                                                 "plain.txt",
                                                 "\xc3\xbcnic\xc3\xb6"
                                                 "de",
                                                 "back\\slash",
                                                 "cr\rreturn"};
  return names;
}

const std::string kDescription = "desc \x1b[2J\x1b[H wiped \"q\" \\ \n next \xff end";
const std::string kName = "org.example.\x1b[31mred";
const std::string kVersion = "1\n2";
constexpr int64_t kFarFuture = int64_t{1} << 62;  // gmtime_r cannot represent it

class OutputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir;
    src_ = new TempDir(test::TmpfsDir());
    for (const std::string& n : HostileNames()) WriteFile(src_->Join(n), "x");
    ASSERT_EQ(symlink("target\x1b[31m\n", src_->Join("link").c_str()), 0);
    WriteFile(src_->Join("future"), "f");
    WriteFile(src_->Join("past"), "p");
    const struct timespec future[2] = {{kFarFuture, 0}, {kFarFuture, 0}};
    const struct timespec past[2] = {{-kFarFuture, 0}, {-kFarFuture, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, src_->Join("future").c_str(), future, 0), 0)
        << std::strerror(errno);
    ASSERT_EQ(utimensat(AT_FDCWD, src_->Join("past").c_str(), past, 0), 0) << std::strerror(errno);
    struct stat st;
    ASSERT_EQ(stat(src_->Join("future").c_str(), &st), 0);
    ASSERT_EQ(st.st_mtim.tv_sec, kFarFuture) << "the tmpfs clamped the time";

    key_ = work_->Join("key");
    ASSERT_EQ(Cx("keygen -o " + Q(key_)).exit_code, 0);
    trust_ = work_->Join("trust");
    std::filesystem::create_directory(trust_);
    std::filesystem::copy_file(key_ + ".pub", trust_ + "/k.pub");
    image_ = work_->Join("hostile.cryptex");
    const CommandResult b =
        Cx("build " + Q(src_->path()) + " -o " + Q(image_) + " --key " + Q(key_) + " --name " +
           Q(kName) + " --version " + Q(kVersion) + " --description " + Q(kDescription) + " -q");
    ASSERT_EQ(b.exit_code, 0) << b.err;
  }
  static void TearDownTestSuite() {
    delete src_;
    delete work_;
  }

  static CommandResult Cx(const std::string& args) { return test::RunCryptex(args); }
  // The same command on a terminal.
  static CommandResult CxOnPty(const std::string& args) {
    return RunOnPty(Q(CryptexBin()) + " " + args);
  }
  static std::string Trust() { return " --trust " + Q(trust_); }

  static inline TempDir* work_ = nullptr;
  static inline TempDir* src_ = nullptr;
  static inline std::string key_, trust_, image_;
};

// ---- the escaping itself ----------------------------------------------------------

TEST(TerminalText, EveryByteRoundTripsThroughBashAndNoneReachesTheTerminal) {
  std::string all;
  for (int c = 1; c < 256; ++c) all += static_cast<char>(c);
  for (const std::string& s : {all, std::string("it's"), std::string("\xc2\x9b"),
                               std::string("\xed\xa0\x80"), std::string("ok \xe2\x9c\x93")}) {
    const std::string shown = cli::ShellEscape(s);
    EXPECT_FALSE(cli::HasTerminalControls(shown)) << shown;
    EXPECT_EQ(BashValue(shown), s) << shown;
  }
  EXPECT_EQ(cli::ForTerminal("plain \xc3\xa9 name", true), "plain \xc3\xa9 name");
  EXPECT_EQ(cli::ForTerminal("a\nb", false), "a\nb");
  EXPECT_EQ(cli::ForTerminal("a\nb", true), "'a'$'\\n''b'");
  EXPECT_EQ(cli::ForTerminal("\x1b[31m", true), "$'\\033''[31m'");
}

TEST(TerminalText, UtcTimeIsDefinedOutsideGmtimesRange) {
  EXPECT_EQ(cli::UtcTime(0, "%Y-%m-%d %H:%M"), "1970-01-01 00:00");
  EXPECT_EQ(cli::UtcTime(kFarFuture, "%Y-%m-%d %H:%M"), std::to_string(kFarFuture));
  EXPECT_EQ(cli::UtcTime(-kFarFuture, "%Y-%m-%d %H:%M"), std::to_string(-kFarFuture));
  EXPECT_EQ(cli::UtcTime(INT64_MAX, "%Y"), std::to_string(INT64_MAX));
  EXPECT_EQ(cli::UtcTime(INT64_MIN, "%Y"), std::to_string(INT64_MIN));
}

// ---- ls, verify, inspect on a terminal --------------------------------------------

TEST_F(OutputTest, NothingFromTheImageReachesATerminalRaw) {
  for (const std::string& args :
       {"ls " + Q(image_), "ls -l " + Q(image_),
        "verify " + Q(image_) + " 2>/dev/null" /* its \r progress */, "inspect " + Q(image_),
        "ls " + Q(image_) + " " + Q("/red\x1b[31mtext"), "ls -l " + Q(image_) + " /link"}) {
    SCOPED_TRACE(args);
    const CommandResult r = CxOnPty(args + Trust());
    EXPECT_EQ(r.exit_code, 0) << cli::ShellEscape(r.out);
    EXPECT_EQ(UnsafeForTerminal(r.out), "");
  }
  // Error messages naming image entries too.
  const CommandResult r = CxOnPty("cat " + Q(image_) + " " + Q("/no\x1b[31m\nsuch") + Trust());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_EQ(UnsafeForTerminal(r.out), "");
  EXPECT_TRUE(Contains(r.out, "/no'$'\\033''[31m'$'\\n''such")) << r.out;
}

// What ls shows on a terminal is what GNU ls shows: each escaped name,
// pasted into bash, is the exact name.
TEST_F(OutputTest, TerminalNamesPasteBackIntoBash) {
  const CommandResult r = CxOnPty("ls " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, 0);
  std::set<std::string> want(HostileNames().begin(), HostileNames().end());
  want.insert({"link", "future", "past"});
  std::set<std::string> decoded;
  for (const std::string& line : Lines(r.out)) {
    // A name shown as is, or an escaped one that bash turns back into it.
    decoded.insert(want.count(line) ? line : BashValue(line));
  }
  EXPECT_EQ(decoded, want);
}

// Piped (not a terminal), names and manifest text are written byte for byte.
TEST_F(OutputTest, PipedOutputIsByteExact) {
  CommandResult r = Cx("ls " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string want;
  for (const std::string& n : test::ListDirNames(src_->path())) want += n + "\n";
  EXPECT_TRUE(r.out == want) << cli::ShellEscape(r.out);
  r = Cx("inspect " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "\nname:            " + kName + "\n"));
  EXPECT_TRUE(Contains(r.out, "\nversion:         " + kVersion + "\n"));
  EXPECT_TRUE(Contains(r.out, "\ndescription:     " + kDescription + "\n"));
  r = Cx("verify " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind(image_ + ": OK (" + kName + " " + kVersion + ", signed by key ", 0), 0u)
      << r.out;
  r = Cx("ls -l " + Q(image_) + " /link" + Trust());
  EXPECT_TRUE(Contains(r.out, " /link -> target\x1b[31m\n\n")) << cli::ShellEscape(r.out);
}

// ---- ls -l of times gmtime cannot represent ---------------------------------------

TEST_F(OutputTest, LsLongPrintsOutOfRangeTimesAsSeconds) {
  for (const auto& [name, secs] :
       {std::pair<std::string, int64_t>{"future", kFarFuture}, {"past", -kFarFuture}}) {
    SCOPED_TRACE(name);
    const CommandResult r = Cx("ls -l " + Q(image_) + " /" + name + Trust());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(Contains(r.out, " " + std::to_string(secs) + " /" + name + "\n")) << r.out;
  }
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer build: valgrind cannot run it (ASan checked the runs above)";
#endif
  // Uninitialised memory (the old gmtime_r failure) is what valgrind sees.
  if (access("/usr/bin/valgrind", X_OK) != 0) GTEST_SKIP() << "no valgrind";
  const CommandResult v = RunCommandCapture("valgrind -q --error-exitcode=99 " + Q(CryptexBin()) +
                                            " ls -l " + Q(image_) + Trust());
  EXPECT_EQ(v.exit_code, 0) << v.err;
}

// ---- the veritysetup line inspect prints --------------------------------------------

// Copies of the image under hostile directory names; the printed command
// (text piped, text on a terminal via bash, and --json) checks the tree, and
// nothing in the path is executed.
TEST_F(OutputTest, VeritysetupLineRunsForAnyImagePath) {
  TempDir d;
  const std::string marker = d.Join("pwned");  // what the hostile name would create
  for (const std::string& dir :
       {std::string("it's"), std::string("sp ace"), std::string("new\nline"),
        std::string("a'b\"c\\d $(touch pwned) `touch pwned`")}) {
    SCOPED_TRACE(dir);
    std::filesystem::create_directory(d.Join(dir));
    const std::string img = d.Join(dir) + "/i.cryptex";
    std::filesystem::copy_file(image_, img);

    const CommandResult text = Cx("inspect " + Q(img) + Trust());
    ASSERT_EQ(text.exit_code, 0) << text.err;
    const std::string intro = "check the tree independently with:\n  ";
    const size_t at = text.out.find(intro);
    ASSERT_NE(at, std::string::npos) << text.out;
    const std::string line =
        text.out.substr(at + intro.size(), text.out.size() - at - intro.size() - 1);
    const std::string in_d = "cd " + Q(d.path()) + " && ";
    CommandResult run = RunCommandCapture(in_d + "sh -c " + Q(line));
    EXPECT_EQ(run.exit_code, 0) << line << "\n" << run.err;

    const CommandResult json = Cx("inspect --json " + Q(img) + Trust());
    ASSERT_EQ(json.exit_code, 0) << json.err;
    const nlohmann::json j = ParseJson(json.out);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["image"].get<std::string>(), img);
    EXPECT_EQ(j["veritysetup_command"].get<std::string>(), line);
    run = RunCommandCapture(in_d + "sh -c " + Q(j["veritysetup_command"].get<std::string>()));
    EXPECT_EQ(run.exit_code, 0) << run.err;

    const CommandResult tty = CxOnPty("inspect " + Q(img) + Trust());
    ASSERT_EQ(tty.exit_code, 0) << cli::ShellEscape(tty.out);
    EXPECT_EQ(UnsafeForTerminal(tty.out), "");
    const size_t tat = tty.out.find(intro);
    ASSERT_NE(tat, std::string::npos) << tty.out;
    const std::string tline = Lines(tty.out.substr(tat + intro.size()))[0];
    run = RunCommandCapture(in_d + "bash -c " + Q(tline));
    EXPECT_EQ(run.exit_code, 0) << tline << "\n" << run.err;
    std::filesystem::remove(img);
  }
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the image path was executed";
}

// ---- --json documents ------------------------------------------------------------

TEST_F(OutputTest, InspectJsonParsesBackToTheExactStrings) {
  const CommandResult r = Cx("inspect --json " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["name"].get<std::string>(), kName);
  EXPECT_EQ(j["version"].get<std::string>(), kVersion);
  // JSON strings are Unicode: the invalid byte 0xff becomes U+FFFD.
  std::string want = kDescription;
  want.replace(want.find('\xff'), 1, "\xef\xbf\xbd");
  EXPECT_EQ(j["description"].get<std::string>(), want);
  EXPECT_EQ(j["image"].get<std::string>(), image_);
  EXPECT_TRUE(j["release_counter"].is_number_unsigned());
  EXPECT_TRUE(j["compression_ratio"].is_number());
  EXPECT_EQ(j["verity"]["hash"], "sha256");
  EXPECT_EQ(j["root_hash"].get<std::string>().size(), 64u);
}

}  // namespace
}  // namespace cryptex
