#include "config.h"

#include <ini.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "durable.h"
#include "parse_size.h"
#include "store.h"

#ifndef CRYPTEX_PLUGIN_SUBDIR
#error "CRYPTEX_PLUGIN_SUBDIR must name the plugin directory relative to the prefix"
#endif

namespace cryptex::policy {
namespace {

// inih (built with its defaults, as Debian ships it) reads lines of at most
// this many bytes and silently splits longer ones: they are refused first.
constexpr size_t kMaxLineBytes = 197;
// ... and section and key names of at most this many (it truncates longer).
constexpr size_t kMaxNameBytes = 49;
constexpr uint32_t kMaxHealthKeep = 10000;
constexpr auto kMaxDuration = std::chrono::hours(24);

std::string Trim(std::string_view s) {
  const char* ws = " \t\r";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

// Plugin and health check names: bare names (they name files and sections).
bool IsBareName(std::string_view n) {
  if (n.empty() || n.size() > 40) return false;  // "health." + 40 < kMaxNameBytes
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// The installed plugin directory: PREFIX/CRYPTEX_PLUGIN_SUBDIR, PREFIX being
// the parent of the directory of the running binary (so it holds for any
// install prefix, the .deb's /usr too).
std::string InstalledPluginDir() {
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  std::string prefix = "/usr";
  if (n > 0) {
    std::string p(exe, static_cast<size_t>(n));
    p = p.substr(0, p.rfind('/'));  // bin
    const size_t slash = p.rfind('/');
    prefix = slash == std::string::npos || slash == 0 ? "" : p.substr(0, slash);
  }
  return prefix + "/" + CRYPTEX_PLUGIN_SUBDIR;
}

struct Parser {
  std::string path;
  Config cfg;
  std::string error;                     // the first error: "KEY: message" (the line is inih's)
  std::set<std::string> seen;            // "section\nkey" of single-valued keys
  std::map<std::string, size_t> health;  // check name -> index in cfg.health
  std::map<std::string, int> sections;   // section -> line of its (first) header
  std::map<std::string, int> key_lines;  // "section\nkey" -> line (first)
  std::set<std::string> given;           // [cryptex] keys given

  bool Fail(const std::string& section, const std::string& key, const std::string& msg) {
    if (error.empty()) {
      error = (section.empty() ? "" : "[" + section + "] ") + key + ": " + msg;
    }
    return false;
  }

  bool Once(const std::string& section, const std::string& key) {
    if (seen.insert(section + "\n" + key).second) return true;
    return Fail(section, key, "given twice");
  }

  bool Duration(const std::string& section, const std::string& key, const std::string& value,
                std::chrono::milliseconds* out) {
    auto d = ParseDuration(value, key);
    if (!d.ok()) return Fail(section, key, d.status().message());
    *out = *d;
    return true;
  }

  bool Path(const std::string& section, const std::string& key, const std::string& value,
            std::string* out) {
    if (value.empty() || value[0] != '/') {
      return Fail(section, key, "'" + value + "' is not an absolute path");
    }
    *out = value;
    return true;
  }

  bool Unsigned(const std::string& section, const std::string& key, const std::string& value,
                uint32_t lo, uint32_t hi, uint32_t* out) {
    const std::optional<uint64_t> v = ParseDecimal(value);
    if (!v || *v < lo || *v > hi) {
      return Fail(section, key,
                  "'" + value + "' is not a number from " + std::to_string(lo) + " to " +
                      std::to_string(hi));
    }
    *out = static_cast<uint32_t>(*v);
    return true;
  }

  // feed = https://HOST/PATH, file:///DIR or /DIR.
  bool FeedUrl(const std::string& key, const std::string& value) {
    const std::string s = "cryptex";
    const bool https = value.rfind("https://", 0) == 0 && value.size() > 8 && value[8] != '/';
    const bool file = value.rfind("file:///", 0) == 0;
    if (!https && !file && (value.empty() || value[0] != '/')) {
      return Fail(s, key,
                  "'" + value +
                      "' is not a feed (https://HOST/PATH, file:///DIR or an absolute directory; "
                      "http:// is refused: the transport must authenticate the server)");
    }
    cfg.feed = value;
    return true;
  }

  // The list of `plugins =`: names separated by commas and/or blanks.
  bool Plugins(const std::string& key, const std::string& value) {
    const std::string s = "cryptex";
    cfg.plugins.clear();
    std::string cur;
    for (char c : value + ",") {
      if (c == ',' || c == ' ' || c == '\t') {
        if (!cur.empty()) cfg.plugins.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    for (const auto& p : cfg.plugins) {
      if (!IsBareName(p)) {
        return Fail(s, key, "'" + p + "' is not a plugin name ([A-Za-z0-9_-], no '/')");
      }
    }
    std::set<std::string> uniq(cfg.plugins.begin(), cfg.plugins.end());
    if (uniq.size() != cfg.plugins.size()) return Fail(s, key, "a plugin is named twice");
    return true;
  }

  bool Main(const std::string& key, const std::string& value);
  bool Health(const std::string& section, const std::string& name, const std::string& key,
              const std::string& value);

  bool Handle(const char* section, const char* name, const char* value) {
    const std::string sec = section, key = name, val = value;
    if (sec == "cryptex") return Main(key, val);
    if (sec.rfind("plugin.", 0) == 0) {
      cfg.plugin_options[sec.substr(7)].emplace_back(key, val);
      return true;
    }
    if (sec.rfind("health.", 0) == 0) return Health(sec, sec.substr(7), key, val);
    // Sections were checked by the pre-scan: this is a key before any.
    return Fail(sec, key, "a key outside any section (start with [cryptex])");
  }
};

// The keys of [cryptex] and what each does with its value: the one list of
// them (the parser, its "unknown key" message, the feed keys' rule and
// KnownConfigKeys() all read it). In the order the documentation lists them.
struct MainKey {
  const char* name;
  bool (*set)(Parser& p, const std::string& key, const std::string& value);
};
using V = const std::string&;
constexpr char kMain[] = "cryptex";
constexpr MainKey kMainKeys[] = {
    {"store", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.store); }},
    {"trust", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.trust); }},
    {"plugin_dir", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.plugin_dir); }},
    {"plugins", [](Parser& p, V k, V v) { return p.Plugins(k, v); }},
    {"patch_dir", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.patch_dir); }},
    {"plugin_timeout",
     [](Parser& p, V k, V v) { return p.Duration(kMain, k, v, &p.cfg.plugin_timeout); }},
    {"device_bucket",
     [](Parser& p, V k, V v) {
       uint32_t b = 0;
       if (!p.Unsigned(kMain, k, v, 0, 99, &b)) return false;
       p.cfg.device_bucket = b;
       return true;
     }},
    {"health_timeout",
     [](Parser& p, V k, V v) { return p.Duration(kMain, k, v, &p.cfg.health_timeout); }},
    {"health_keep",
     [](Parser& p, V k, V v) {
       return p.Unsigned(kMain, k, v, 1, kMaxHealthKeep, &p.cfg.health_keep);
     }},
    // Every feed_* key requires `feed` (CheckFeedKeys).
    {"feed", [](Parser& p, V k, V v) { return p.FeedUrl(k, v); }},
    {"feed_trust", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_trust); }},
    {"feed_ca", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_ca); }},
    {"feed_capath", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_capath); }},
    {"feed_client_cert",
     [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_client_cert); }},
    {"feed_client_key",
     [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_client_key); }},
    {"feed_timeout",
     [](Parser& p, V k, V v) { return p.Duration(kMain, k, v, &p.cfg.feed_timeout); }},
    {"feed_connect_timeout",
     [](Parser& p, V k, V v) { return p.Duration(kMain, k, v, &p.cfg.feed_connect_timeout); }},
    {"feed_poll", [](Parser& p, V k, V v) { return p.Duration(kMain, k, v, &p.cfg.feed_poll); }},
    {"feed_state", [](Parser& p, V k, V v) { return p.Path(kMain, k, v, &p.cfg.feed_state); }},
};

// The keys of a [health.NAME] section, likewise.
struct HealthKey {
  const char* name;
  bool (*set)(Parser& p, const std::string& section, HealthCheck& h, const std::string& key,
              const std::string& value);
};
constexpr HealthKey kHealthKeys[] = {
    {"command",
     [](Parser& p, V s, HealthCheck& h, V k, V v) {
       if (v.empty()) return p.Fail(s, k, "empty command");
       h.command = v;
       return true;
     }},
    {"timeout",
     [](Parser& p, V s, HealthCheck& h, V k, V v) { return p.Duration(s, k, v, &h.timeout); }},
};

// "unknown key (known: a, b, ...)" from a table.
template <typename Table>
std::string UnknownKey(const Table& table) {
  std::string known;
  for (const auto& k : table) known += (known.empty() ? "" : ", ") + std::string(k.name);
  return "unknown key (known: " + known + ")";
}

bool Parser::Main(const std::string& key, const std::string& value) {
  if (!Once(kMain, key)) return false;
  given.insert(key);
  for (const MainKey& k : kMainKeys) {
    if (key == k.name) return k.set(*this, key, value);
  }
  return Fail(kMain, key, UnknownKey(kMainKeys));
}

bool Parser::Health(const std::string& section, const std::string& name, const std::string& key,
                    const std::string& value) {
  if (!Once(section, key)) return false;
  auto [it, added] = health.emplace(name, cfg.health.size());
  if (added) cfg.health.push_back(HealthCheck{name, "", {}, sections[section]});
  for (const HealthKey& k : kHealthKeys) {
    if (key == k.name) return k.set(*this, section, cfg.health[it->second], key, value);
  }
  return Fail(section, key, UnknownKey(kHealthKeys));
}

int OnKey(void* user, const char* section, const char* name, const char* value) {
  return static_cast<Parser*>(user)->Handle(section, name, value) ? 1 : 0;
}

// What inih cannot say: lines too long for it, NUL bytes, unknown or
// malformed section names (also of empty sections, which inih never
// reports). Fills `sections` with each section's first header line.
Status PreScan(std::string_view text, const std::string& path, std::map<std::string, int>* sections,
               std::map<std::string, int>* key_lines) {
  size_t pos = 0;
  std::string section;
  for (int n = 1; pos < text.size(); ++n) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string_view raw = text.substr(pos, nl - pos);
    pos = nl + 1;
    const std::string where = path + ":" + std::to_string(n);
    if (raw.find('\0') != std::string_view::npos) {
      return Status::InvalidArgument(where + ": a NUL byte");
    }
    if (raw.size() > kMaxLineBytes) {
      return Status::InvalidArgument(where + ": line longer than " + std::to_string(kMaxLineBytes) +
                                     " bytes");
    }
    const std::string line = Trim(raw);
    if (line.empty() || line[0] == ';' || line[0] == '#') continue;
    if (line[0] != '[') {
      const std::string key = Trim(line.substr(0, line.find_first_of("=:")));
      if (key.size() > kMaxNameBytes) {
        return Status::InvalidArgument(where + ": key '" + key.substr(0, 20) + "...' longer than " +
                                       std::to_string(kMaxNameBytes) + " bytes");
      }
      key_lines->emplace(section + "\n" + key, n);
      continue;
    }
    const size_t close = line.find(']');
    if (close == std::string::npos) continue;  // inih reports it
    const std::string sec = line.substr(1, close - 1);
    section = sec;
    sections->emplace(sec, n);
    const auto named = [&](const char* prefix, const char* what) -> Status {
      const size_t len = std::strlen(prefix);
      if (sec.rfind(prefix, 0) == 0) {
        if (!IsBareName(sec.substr(len))) {
          return Status::InvalidArgument(where + ": [" + sec + "]: '" + sec.substr(len) +
                                         "' is not a " + what + " name ([A-Za-z0-9_-])");
        }
        return Status::Ok();
      }
      return Status::NotFound("");
    };
    if (sec == "cryptex") continue;
    Status st = named("plugin.", "plugin");
    if (st.code() == Code::kNotFound) st = named("health.", "health check");
    if (st.code() == Code::kNotFound) {
      return Status::InvalidArgument(where + ": [" + sec +
                                     "]: unknown section (known: [cryptex], [plugin.NAME], "
                                     "[health.NAME])");
    }
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

// What the feed keys require of each other (they are read one at a time):
// an error names the line of the key at fault.
Status CheckFeedKeys(Parser& p) {
  Config& c = p.cfg;
  const auto fail = [&](const std::string& key, const std::string& msg) {
    auto it = p.key_lines.find("cryptex\n" + key);
    const int line = it == p.key_lines.end() ? 0 : it->second;
    return Status::InvalidArgument(p.path + ":" + std::to_string(line) + ": [cryptex] " + key +
                                   ": " + msg);
  };
  if (!p.given.count("feed_state")) c.feed_state = c.store + "/feed";
  if (c.feed.empty()) {
    for (const MainKey& k : kMainKeys) {
      if (std::string_view(k.name).starts_with("feed_") && p.given.count(k.name)) {
        return fail(k.name, "given without feed = URL");
      }
    }
    return Status::Ok();
  }
  if (c.feed_trust.empty()) {
    return fail("feed", "needs feed_trust = DIR|FILE (the keys that sign the feed's index)");
  }
  if (c.feed_client_cert.empty() != c.feed_client_key.empty()) {
    return fail(c.feed_client_cert.empty() ? "feed_client_key" : "feed_client_cert",
                "feed_client_cert and feed_client_key go together");
  }
  if (c.feed.rfind("https://", 0) != 0) {
    for (const char* k : {"feed_ca", "feed_capath", "feed_client_cert", "feed_client_key"}) {
      if (p.given.count(k)) return fail(k, "only for an https:// feed");
    }
  }
  return Status::Ok();
}

}  // namespace

const Options& Config::OptionsOf(const std::string& name) const {
  static const Options kNone;
  auto it = plugin_options.find(name);
  return it == plugin_options.end() ? kNone : it->second;
}

Config DefaultConfig() {
  Config c;
  c.store = store::kDefaultStoreDir;
  c.trust = "/etc/cryptex/keys";
  c.plugin_dir = InstalledPluginDir();
  c.plugins = {"auto"};
  c.feed_state = c.store + "/feed";
  return c;
}

std::vector<ConfigKey> KnownConfigKeys() {
  std::vector<ConfigKey> keys;
  for (const MainKey& k : kMainKeys) keys.push_back({"cryptex", k.name});
  for (const HealthKey& k : kHealthKeys) keys.push_back({"health.NAME", k.name});
  return keys;
}

Result<std::chrono::milliseconds> ParseDuration(std::string_view text, const std::string& what) {
  const std::string t = Trim(text);
  const std::optional<uint64_t> ms = ParseDurationMs(t);
  if (!ms || *ms == 0 || std::chrono::milliseconds(*ms) > kMaxDuration) {
    return Status::InvalidArgument("'" + t + "' is not a duration for " + what +
                                   " (e.g. 500ms, 5s, 2m, 1h; from 1ms to 24h)");
  }
  return std::chrono::milliseconds(*ms);
}

Result<Config> ParseConfig(std::string_view text, const std::string& path) {
  // The pre-scan bounds every line: inih sees each whole. Its handler gets
  // no line number; the one of the first failure is its return value.
  Parser p;
  CX_RETURN_IF_ERROR(PreScan(text, path, &p.sections, &p.key_lines));
  p.path = path;
  p.cfg = DefaultConfig();
  p.cfg.path = path;
  const std::string copy(text);
  const int rc = ini_parse_string(copy.c_str(), OnKey, &p);
  if (rc != 0) {
    const std::string where = path + ":" + std::to_string(rc);
    if (p.error.empty()) {
      return Status::InvalidArgument(where + ": not 'key = value', '[section]' or a comment");
    }
    return Status::InvalidArgument(where + ": " + p.error);
  }
  for (const auto& [sec, line] : p.sections) {  // a check without a command
    if (sec.rfind("health.", 0) != 0) continue;
    auto it = p.health.find(sec.substr(7));
    if (it == p.health.end() || p.cfg.health[it->second].command.empty()) {
      return Status::InvalidArgument(path + ":" + std::to_string(line) + ": [" + sec +
                                     "] command: missing");
    }
  }
  for (HealthCheck& h : p.cfg.health) {
    if (h.timeout.count() == 0) h.timeout = p.cfg.health_timeout;
  }
  CX_RETURN_IF_ERROR(CheckFeedKeys(p));
  for (const auto& [sec, line] : p.sections) {
    if (sec.rfind("plugin.", 0) == 0) p.cfg.plugin_lines[sec.substr(7)] = line;
  }
  return p.cfg;
}

Result<Config> LoadConfig(const std::string& path, bool missing_ok) {
  auto bytes = store::ReadWholeFile(path);
  if (!bytes.ok()) {
    if (bytes.status().code() != Code::kNotFound) return bytes.status();
    if (missing_ok) return DefaultConfig();
    return Status::NotFound(path + ": no such configuration file");
  }
  return ParseConfig(*bytes, path);
}

}  // namespace cryptex::policy
