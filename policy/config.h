// The agent's configuration, /etc/cryptex/cryptex.conf (docs/POLICY.md,
// "Configuration"): an INI file read with inih. Every key is checked when
// the file is read; an error names the file, the line and the key
// (kInvalidArgument: `cryptex` exits 2) and nothing is changed.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "facts.h"
#include "status.h"

namespace cryptex::policy {

inline constexpr const char* kDefaultConfigPath = "/etc/cryptex/cryptex.conf";

// One [health.NAME] section: a command run with `sh -c`, killed after
// `timeout`; exit status 0 within the time is a pass.
struct HealthCheck {
  std::string name;
  std::string command;
  std::chrono::milliseconds timeout{0};
  int line = 0;  // where the section starts (for messages)
};

struct Config {
  std::string path;  // the file read; "" when no file was read (defaults)
  std::string store;
  std::string trust;
  std::string plugin_dir;
  std::vector<std::string> plugins;  // the chain, in order
  std::string patch_dir;             // "" = none
  std::chrono::milliseconds plugin_timeout{5000};
  std::optional<uint32_t> device_bucket;            // overrides the machine id's (tests)
  std::chrono::milliseconds health_timeout{30000};  // default per check
  uint32_t health_keep = 100;                       // results kept per check
  std::map<std::string, Options> plugin_options;    // [plugin.NAME], file order
  std::map<std::string, int> plugin_lines;          // line of each [plugin.NAME] header
  std::vector<HealthCheck> health;                  // [health.NAME], file order

  // The signed feed (docs/FEED.md, "Pulling (device side)"). "" = none.
  std::string feed;        // https://HOST/PATH, file:///DIR or /DIR
  std::string feed_trust;  // the index keys: a directory of *.pub or one file (required with feed)
  std::string feed_ca;     // TLS: PEM bundle of trusted CAs ("" = the system's)
  std::string feed_capath;
  std::string feed_client_cert;  // TLS client certificate and key (both or neither)
  std::string feed_client_key;
  std::chrono::milliseconds feed_timeout{30000};  // no byte received for this long: give up
  std::chrono::milliseconds feed_connect_timeout{10000};
  std::chrono::milliseconds feed_poll{3600000};  // `cryptex agent --loop`'s interval
  std::string feed_state;                        // default STORE/feed

  // Options of plugin `name` (empty if it has no section).
  const Options& OptionsOf(const std::string& name) const;
};

// The defaults (no file): store /var/lib/cryptex, trust /etc/cryptex/keys,
// the installed plugin directory, plugins = auto.
Config DefaultConfig();

// Parses `text` as the configuration file `path` (named in errors).
Result<Config> ParseConfig(std::string_view text, const std::string& path);

// Reads and parses `path`. A missing file is kNotFound naming it, unless
// `missing_ok` (the default path, not given on the command line): then the
// defaults.
Result<Config> LoadConfig(const std::string& path, bool missing_ok);

// A key the configuration file may give: `section` is "cryptex" or
// "health.NAME" (any check's name).
struct ConfigKey {
  std::string section;
  std::string key;
};

// Every key the parser accepts, from its one table, in the order it lists
// them: the [cryptex] keys, then those of a [health.NAME] section. The keys
// of a [plugin.NAME] section are the plugin's (it checks them), not these.
// docs/man/cryptex.conf.5 documents exactly these (config_man_test).
std::vector<ConfigKey> KnownConfigKeys();

// "5s", "500ms", "2m", "1h", "30" (seconds): kInvalidArgument naming `what`
// otherwise, or if it is 0 or more than a day.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text, const std::string& what);

}  // namespace cryptex::policy
