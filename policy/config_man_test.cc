// docs/man/cryptex.conf.5 against the parser (policy/config.cc): the page
// documents exactly the keys KnownConfigKeys() accepts, one .TP entry each
// under its section's .SS heading, and its EXAMPLES configuration is read
// by the real parser and its plugins accept their options.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent.h"
#include "config.h"
#include "test_util.h"

#ifndef CRYPTEX_CONF_MAN
#error "CRYPTEX_CONF_MAN must name docs/man/cryptex.conf.5"
#endif

namespace cryptex::policy {
namespace {

std::string ReadPage() {
  std::ifstream in(CRYPTEX_CONF_MAN);
  EXPECT_TRUE(in.good()) << CRYPTEX_CONF_MAN;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// The text a roff line shows: the leading macro, quotes, font escapes and
// zero-width escapes gone; "\-" is '-' and "\e" is '\'.
std::string RoffText(std::string line) {
  if (!line.empty() && line[0] == '.') {
    const size_t sp = line.find(' ');
    line = sp == std::string::npos ? "" : line.substr(sp + 1);
  }
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '"') continue;
    if (line[i] != '\\' || i + 1 == line.size()) {
      out += line[i];
      continue;
    }
    const char c = line[++i];
    if (c == '-') {
      out += '-';
    } else if (c == 'e') {
      out += '\\';
    } else if (c == 'f') {
      ++i;  // \fB, \fI, \fR, \fP
    } else if (c != '%' && c != '&') {
      ADD_FAILURE() << "cryptex.conf.5: an escape the test does not read: \\" << c << " in "
                    << line;
    }
  }
  return out;
}

// "SECTION KEY" for every .TP entry under a ".SS [SECTION] ..." heading
// (the key: the first word of the tag, up to a blank or '='), but those of
// [plugin.NAME], whose keys are each plugin's. Also counts the entries.
std::multiset<std::string> DocumentedKeys(const std::string& page) {
  std::multiset<std::string> keys;
  const std::vector<std::string> lines = Lines(page);
  std::string section;  // "" outside a ".SS [SECTION]"
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind(".SH", 0) == 0 || l.rfind(".SS", 0) == 0) {
      const std::string heading = RoffText(l);
      const size_t close = heading.find(']');
      section = heading.rfind("[", 0) == 0 && close != std::string::npos
                    ? heading.substr(1, close - 1)
                    : "";
      continue;
    }
    if (section.empty() || section == "plugin.NAME" || l.rfind(".TP", 0) != 0) continue;
    const std::string tag = i + 1 < lines.size() ? RoffText(lines[i + 1]) : "";
    keys.insert(section + " " + tag.substr(0, tag.find_first_of(" =")));
  }
  return keys;
}

TEST(ConfigManTest, DocumentsExactlyTheKeysTheParserAccepts) {
  std::multiset<std::string> accepted;
  for (const ConfigKey& k : KnownConfigKeys()) accepted.insert(k.section + " " + k.key);
  ASSERT_GE(accepted.size(), 20u);  // the table is read, not empty
  const std::multiset<std::string> documented = DocumentedKeys(ReadPage());
  for (const std::string& k : std::set<std::string>(accepted.begin(), accepted.end())) {
    EXPECT_EQ(documented.count(k), 1u)
        << "[" << k.substr(0, k.find(' ')) << "] " << k.substr(k.find(' ') + 1)
        << ": accepted by policy/config.cc, documented by " << documented.count(k)
        << " .TP entries of docs/man/cryptex.conf.5 (want 1)";
  }
  for (const std::string& k : std::set<std::string>(documented.begin(), documented.end())) {
    EXPECT_EQ(accepted.count(k), 1u)
        << "[" << k.substr(0, k.find(' ')) << "] " << k.substr(k.find(' ') + 1)
        << ": documented by docs/man/cryptex.conf.5 but not a key policy/config.cc accepts";
  }
}

TEST(ConfigManTest, SynopsisNamesTheDefaultPath) {
  const std::vector<std::string> lines = Lines(ReadPage());
  auto it = std::find(lines.begin(), lines.end(), ".SH SYNOPSIS");
  ASSERT_NE(it, lines.end());
  ASSERT_NE(it + 1, lines.end());
  EXPECT_EQ(*(it + 1), std::string(".I ") + kDefaultConfigPath);
}

// What DESCRIPTION, "Syntax", says of inih as the parser runs it (Debian's
// build: multi-line values, inline comments after a blank, a BOM skipped).
TEST(ConfigManTest, TheSyntaxThePageDescribes) {
  const auto parse = [](const std::string& text) { return ParseConfig(text, "/c.conf"); };
  auto c = parse(
      "\xEF\xBB\xBF[cryptex] text after the bracket\n"
      "  ; an indented comment\n"
      "store: /srv/a ; a comment after a blank\n"
      "patch_dir = /srv/b;c # part of the value\n"
      "[plugin.lists]\n"
      "deny_ids = a\n"
      "  b\n"
      "[cryptex]\n"
      "trust = /k\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store, "/srv/a");
  EXPECT_EQ(c->patch_dir, "/srv/b;c # part of the value");
  EXPECT_EQ(c->trust, "/k");  // a section started again adds its keys
  EXPECT_EQ(c->OptionsOf("lists"), (Options{{"deny_ids", "a"}, {"deny_ids", "b"}}));
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"[cryptex]\nstore = /a\n  /b\n", "/c.conf:3: [cryptex] store: given twice"},
      {"[cryptex]\nstore = /a\n  [health.x]\n", "/c.conf:3: [cryptex] store: given twice"},
      {"[cryptex]\nstore = /a\n[cryptex]\nstore = /b\n", "/c.conf:4: [cryptex] store: given twice"},
      {"[ cryptex ]\n", "/c.conf:1: [ cryptex ]: unknown section"},
      {"[cryptex]\nStore = /a\n", "/c.conf:2: [cryptex] Store: unknown key"},
      {"[cryptex]\nstore = \"/a\"\n",
       "/c.conf:2: [cryptex] store: '\"/a\"' is not an absolute path"},
  };
  for (const auto& [text, message] : refused) {
    auto r = parse(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().message().rfind(message, 0), 0u) << r.status().message();
  }
}

// The configuration of EXAMPLES: its one .nf ... .fi block, as the reader
// copies it.
std::string ExampleConfig(const std::string& page) {
  std::string text, section;
  int blocks = 0;
  bool in_block = false;
  for (const std::string& l : Lines(page)) {
    if (l.rfind(".SH", 0) == 0) section = l;
    if (section != ".SH EXAMPLES") continue;
    if (l == ".nf") {
      in_block = true;
      ++blocks;
    } else if (l == ".fi") {
      in_block = false;
    } else if (in_block) {
      EXPECT_NE(l.rfind(".", 0), 0u) << "a request inside the example: " << l;
      text += RoffText(l) + "\n";
    }
  }
  EXPECT_EQ(blocks, 1) << "EXAMPLES must hold one .nf block, the configuration";
  return text;
}

// The plugins of this build (BUILD/plugins/lib), copied as root-owned 0644
// files into a 0755 directory, as the loader wants them.
class PluginCopies {
 public:
  PluginCopies() {
    namespace fs = std::filesystem;
    const char* env = std::getenv("CRYPTEX_BUILD_DIR");
    const std::string build = env != nullptr && *env != '\0' ? env : CRYPTEX_DEFAULT_BUILD_DIR;
    EXPECT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    for (const auto& e : fs::directory_iterator(build + "/plugins/lib")) {
      if (e.path().extension() != ".so") continue;
      const std::string to = dir_.Join(e.path().filename().string());
      fs::copy_file(e.path(), to);
      EXPECT_EQ(chown(to.c_str(), 0, 0), 0) << to;
      EXPECT_EQ(chmod(to.c_str(), 0644), 0) << to;
    }
  }
  const std::string& path() const { return dir_.path(); }

 private:
  test::TempDir dir_;
};

// Every plugin of `c`'s chain loads from this build and accepts its options,
// as `cryptex agent` would load them.
void ExpectChainLoads(Config c) {
  if (geteuid() != 0) GTEST_SKIP() << "the loader wants root-owned plugins: needs root";
  PluginCopies plugins;
  c.plugin_dir = plugins.path();
  auto chain = LoadChain(c);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  ASSERT_EQ(chain->size(), c.plugins.size());
  for (const ChainMember& m : *chain) {
    EXPECT_TRUE(m.load_error.ok()) << m.name << ": " << m.load_error.ToString();
    EXPECT_NE(m.plugin, nullptr) << m.name;
  }
}

TEST(ConfigManTest, ExampleParsesAndItsPluginsAcceptTheirOptions) {
  const std::string text = ExampleConfig(ReadPage());
  auto c = ParseConfig(text, "cryptex.conf.5 EXAMPLES");
  ASSERT_TRUE(c.ok()) << c.status().ToString() << "\n" << text;
  // What the page says it shows: plugins, a feed over https with its keys.
  EXPECT_GE(c->plugins.size(), 2u);
  EXPECT_EQ(c->feed.rfind("https://", 0), 0u) << c->feed;
  EXPECT_FALSE(c->feed_trust.empty());
  EXPECT_FALSE(c->health.empty());
  ExpectChainLoads(*c);
}

// The shipped example (examples/cryptex.conf) likewise: its plugins accept
// their options (config_test checks that it parses).
TEST(ConfigManTest, ShippedExamplePluginsAcceptTheirOptions) {
  auto c = LoadConfig(std::string(CRYPTEX_SOURCE_DIR) + "/examples/cryptex.conf", false);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ExpectChainLoads(*c);
}

}  // namespace
}  // namespace cryptex::policy
