// Shared plumbing of the `cryptex` subcommands: argument parsing, exit codes,
// error printing, trust loading. Each subcommand lives in cmd_<name>.cc.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "image.h"
#include "keys.h"
#include "status.h"
#include "view.h"

namespace cryptex::cli {

// Exit codes and ExitCodeFor(): exit_codes.h (shared with cryptexfs).

// Prints "cryptex <cmd>: <message>" to stderr and returns the exit code.
int Fail(const std::string& cmd, const Status& st);
int Usage(const std::string& cmd, const std::string& msg);

// Minimal getopt-style parser: "--name value", "--name=value", "-x value",
// boolean flags, positionals. Unknown options are errors.
class Args {
 public:
  // `with_value`: options taking a value; `flags`: boolean options.
  Args(int argc, char** argv, std::vector<std::string> with_value, std::vector<std::string> flags);
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool help() const { return Has("--help") || Has("-h"); }
  bool Has(const std::string& name) const;
  std::optional<std::string> Get(const std::string& name) const;
  // Every value given for a repeatable option, in command-line order (Get
  // returns the last).
  std::vector<std::string> GetAll(const std::string& name) const;
  const std::vector<std::string>& positional() const { return pos_; }

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
  std::vector<std::string> pos_;
  std::string error_;
};

// --trust DIR | --pubkey FILE | default /etc/cryptex/keys; both given is a
// usage error (CheckTrustSource, the rule cryptexfs applies too). Key files
// skipped in a directory are warned about on stderr.
Result<TrustStore> LoadTrust(const Args& args);
Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const Args& args);
// `image` with `patches` (bottom first) stacked on it (OpenStack), trusted as
// OpenImage trusts. Before stacking, each patch is opened and checked to be a
// patch image: a missing or unreadable one, or a base image given as a patch,
// is refused naming it and `option` (the option that named it).
Result<std::unique_ptr<View>> OpenView(const std::string& image,
                                       const std::vector<std::string>& patches, const Args& args,
                                       const std::string& option = "--patch");

std::string HumanBytes(uint64_t n);

using CommandFn = int (*)(int argc, char** argv);
int CmdKeygen(int argc, char** argv);
int CmdBuild(int argc, char** argv);
int CmdMkpatch(int argc, char** argv);
int CmdVerify(int argc, char** argv);
int CmdInspect(int argc, char** argv);
int CmdLs(int argc, char** argv);
int CmdCat(int argc, char** argv);
int CmdExtract(int argc, char** argv);
int CmdMount(int argc, char** argv);
int CmdUmount(int argc, char** argv);
int CmdStatus(int argc, char** argv);
int CmdDiff(int argc, char** argv);
// The device store (cmd_store.cc).
int CmdAdd(int argc, char** argv);
int CmdInstall(int argc, char** argv);
int CmdActivate(int argc, char** argv);
int CmdRevert(int argc, char** argv);
int CmdRemove(int argc, char** argv);
int CmdHistory(int argc, char** argv);
// `cryptex status` of store lines (args parsed by CmdStatus).
int StoreStatus(const Args& args);
// The policy agent (cmd_agent.cc).
int CmdAgent(int argc, char** argv);
// `cryptex feed status` (cmd_feed_status.cc): the device's feed client state.
int CmdFeedStatus(int argc, char** argv);
int CmdPolicy(int argc, char** argv);
int CmdApprove(int argc, char** argv);
// The vendor side of a patch feed (cmd_feed.cc).
int CmdFeed(int argc, char** argv);

}  // namespace cryptex::cli

namespace cryptex::store {
class Store;
struct StoreState;
}  // namespace cryptex::store
namespace cryptex::policy {
struct Config;
}  // namespace cryptex::policy

namespace cryptex::cli {
// Live activation after a committed change of store `s` (cmd_store.cc):
// asks every cryptexfs mount of a line of `s` to serve its line's committed
// level, and waits until each does; with `live` false (reboot-class
// patches) mounts are left alone. Prints one line per mount (not if
// `quiet`; errors always go to stderr). Returns kExitOk, or kExitError if a
// mount could not follow.
int FollowMounts(const std::string& cmd, const store::Store& s, bool live, bool quiet = false);
// `cryptex status` lines of the agent's pending decisions (deferred,
// rejected) of line `line`, and its reboot-class patches activated since
// boot (cmd_agent.cc); with `json`, also sets its "pending" and
// "reboot_pending" members.
std::string PendingOfLine(const store::Store& s, const store::StoreState& st,
                          const std::string& line, nlohmann::ordered_json* json);
// The agent's configuration (cmd_agent.cc): --config FILE (which must
// exist), else the default file if there is one. Errors name the file, line
// and key (exit 2). kAgentConfigHelp is the --config line of --help.
Result<policy::Config> LoadConfigOf(const Args& args);
extern const char* const kAgentConfigHelp;
// "-rwxr-xr-x" style mode string.
std::string ModeString(uint32_t mode);
}  // namespace cryptex::cli
