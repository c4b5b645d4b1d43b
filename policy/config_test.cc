// cryptex.conf (policy/config.h): every key parsed, every error naming the
// file, the line and the key, table-driven.
#include "config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex::policy {
namespace {

using std::chrono::milliseconds;

constexpr char kPath[] = "/etc/cryptex/test.conf";

TEST(ConfigTest, EveryKeyIsRead) {
  const std::string text =
      "; a comment\n"
      "# another\n"
      "[cryptex]\n"
      "store = /srv/store\n"
      "trust = /srv/keys\n"
      "plugin_dir = /srv/plugins\n"
      "plugins = lists, defer window\n"
      "patch_dir = /srv/offered\n"
      "plugin_timeout = 750ms\n"
      "device_bucket = 42\n"
      "health_timeout = 2m\n"
      "health_keep = 7\n"
      "\n"
      "[plugin.defer]\n"
      "days = 7\n"
      "immediate = critical\n"
      "[plugin.lists]\n"
      "deny = p1\n"
      "deny = p2\n"
      "[health.web]\n"
      "command = curl -fsS http://localhost/ >/dev/null\n"
      "timeout = 5s\n"
      "[health.disk]\n"
      "command = test -w /var\n";
  auto c = ParseConfig(text, kPath);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->path, kPath);
  EXPECT_EQ(c->store, "/srv/store");
  EXPECT_EQ(c->trust, "/srv/keys");
  EXPECT_EQ(c->plugin_dir, "/srv/plugins");
  EXPECT_EQ(c->plugins, (std::vector<std::string>{"lists", "defer", "window"}));
  EXPECT_EQ(c->patch_dir, "/srv/offered");
  EXPECT_EQ(c->plugin_timeout, milliseconds(750));
  ASSERT_TRUE(c->device_bucket.has_value());
  EXPECT_EQ(*c->device_bucket, 42u);
  EXPECT_EQ(c->health_timeout, milliseconds(120000));
  EXPECT_EQ(c->health_keep, 7u);
  EXPECT_EQ(c->OptionsOf("defer"), (Options{{"days", "7"}, {"immediate", "critical"}}));
  // Repeated keys of a plugin's section are kept, in file order.
  EXPECT_EQ(c->OptionsOf("lists"), (Options{{"deny", "p1"}, {"deny", "p2"}}));
  EXPECT_EQ(c->OptionsOf("window"), Options{});
  ASSERT_EQ(c->health.size(), 2u);
  EXPECT_EQ(c->health[0].name, "web");
  EXPECT_EQ(c->health[0].command, "curl -fsS http://localhost/ >/dev/null");
  EXPECT_EQ(c->health[0].timeout, milliseconds(5000));
  EXPECT_EQ(c->health[1].name, "disk");
  EXPECT_EQ(c->health[1].timeout, milliseconds(120000));  // health_timeout
}

TEST(ConfigTest, DefaultsWithoutKeys) {
  auto c = ParseConfig("[cryptex]\n", kPath);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store, "/var/lib/cryptex");
  EXPECT_EQ(c->trust, "/etc/cryptex/keys");
  EXPECT_EQ(c->plugins, std::vector<std::string>{"auto"});
  EXPECT_EQ(c->patch_dir, "");
  EXPECT_FALSE(c->device_bucket.has_value());
  EXPECT_EQ(c->health_keep, 100u);
  // The installed plugin directory, found from the running binary.
  EXPECT_NE(c->plugin_dir.find("/cryptex/plugins"), std::string::npos) << c->plugin_dir;
  // An empty plugins= is an empty chain (which defers everything).
  auto e = ParseConfig("[cryptex]\nplugins =\n", kPath);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(e->plugins.empty());
}

struct BadCase {
  const char* name;
  std::string text;
  int line;               // the line the message must name
  std::string key;        // ... and this key or section
  std::string also = "";  // ... and this
};

// Each case is refused as kInvalidArgument with a message that starts with
// "FILE:LINE: " and names its key (and `also`).
void ExpectRefused(const std::vector<BadCase>& cases) {
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = ParseConfig(c.text, kPath);
    ASSERT_FALSE(r.ok()) << "accepted";
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    const std::string& m = r.status().message();
    EXPECT_EQ(m.rfind(std::string(kPath) + ":" + std::to_string(c.line) + ": ", 0), 0u) << m;
    EXPECT_NE(m.find(c.key), std::string::npos) << m;
    EXPECT_NE(m.find(c.also), std::string::npos) << m;
  }
}

TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  const std::string long_value(300, 'x');
  const std::vector<BadCase> cases = {
      {"unknown key", "[cryptex]\nstore = /s\nstorage = /x\n", 3, "storage", "unknown key"},
      {"unknown section", "[cryptex]\n[plugins]\nx = 1\n", 2, "[plugins]", "unknown section"},
      {"unknown empty section", "[cryptex]\n\n[agent]\n", 3, "[agent]", "unknown section"},
      {"key outside a section", "store = /s\n", 1, "store", "outside any section"},
      {"relative store", "[cryptex]\nstore = var/lib\n", 2, "store", "absolute path"},
      {"relative patch_dir", "[cryptex]\n\npatch_dir = x\n", 3, "patch_dir", "absolute"},
      {"bucket too big", "[cryptex]\ndevice_bucket = 100\n", 2, "device_bucket", "0 to 99"},
      {"bucket negative", "[cryptex]\ndevice_bucket = -1\n", 2, "device_bucket", "0 to 99"},
      {"bucket not a number", "[cryptex]\ndevice_bucket = 7x\n", 2, "device_bucket"},
      {"bucket with a sign", "[cryptex]\ndevice_bucket = +7\n", 2, "device_bucket", "0 to 99"},
      {"health_keep with a sign", "[cryptex]\nhealth_keep = +3\n", 2, "health_keep"},
      {"bad timeout unit", "[cryptex]\nplugin_timeout = 5 weeks\n", 2, "plugin_timeout",
       "duration"},
      {"zero timeout", "[cryptex]\nplugin_timeout = 0s\n", 2, "plugin_timeout"},
      {"timeout over a day", "[cryptex]\nplugin_timeout = 25h\n", 2, "plugin_timeout"},
      {"health_keep 0", "[cryptex]\nhealth_keep = 0\n", 2, "health_keep"},
      {"key twice", "[cryptex]\nstore = /a\ntrust = /k\nstore = /b\n", 4, "store", "twice"},
      {"plugin with a slash", "[cryptex]\nplugins = auto, ../evil\n", 2, "plugins", "../evil"},
      {"plugin named twice", "[cryptex]\nplugins = auto defer auto\n", 2, "plugins", "twice"},
      {"bad plugin section name", "[cryptex]\n[plugin.a/b]\nx = 1\n", 2, "[plugin.a/b]"},
      {"empty plugin section name", "[plugin.]\n", 1, "[plugin.]"},
      {"health without command", "[cryptex]\n[health.web]\ntimeout = 5s\n", 2, "[health.web]",
       "command: missing"},
      {"empty health section", "[cryptex]\n[health.web]\n[cryptex]\n", 2, "[health.web]",
       "command"},
      {"health unknown key", "[health.web]\ncommand = true\ncmd = x\n", 3, "cmd", "unknown key"},
      {"health bad timeout", "[health.web]\ncommand = true\ntimeout = soon\n", 3, "timeout"},
      {"health empty command", "[health.web]\ncommand =\n", 2, "command", "empty"},
      {"not key = value", "[cryptex]\nstore /var\n", 2, "", "not 'key = value'"},
      {"unterminated section", "[cryptex\nstore = /s\n", 1, ""},
      {"line too long", "[cryptex]\nstore = /" + long_value + "\n", 2, "", "longer than"},
      {"NUL byte", std::string("[cryptex]\nstore = /a\0b\n", 22), 2, "", "NUL"},
  };
  ExpectRefused(cases);
}

TEST(ConfigTest, FeedKeysAreRead) {
  const std::string text =
      "[cryptex]\n"
      "store = /srv/store\n"
      "feed = https://updates.example.com/app/feed\n"
      "feed_trust = /etc/cryptex/feed-keys\n"
      "feed_ca = /etc/cryptex/feed-ca.pem\n"
      "feed_capath = /etc/ssl/certs\n"
      "feed_client_cert = /etc/cryptex/device.pem\n"
      "feed_client_key = /etc/cryptex/device.key\n"
      "feed_timeout = 45s\n"
      "feed_connect_timeout = 5s\n"
      "feed_poll = 15m\n";
  auto c = ParseConfig(text, kPath);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->feed, "https://updates.example.com/app/feed");
  EXPECT_EQ(c->feed_trust, "/etc/cryptex/feed-keys");
  EXPECT_EQ(c->feed_ca, "/etc/cryptex/feed-ca.pem");
  EXPECT_EQ(c->feed_capath, "/etc/ssl/certs");
  EXPECT_EQ(c->feed_client_cert, "/etc/cryptex/device.pem");
  EXPECT_EQ(c->feed_client_key, "/etc/cryptex/device.key");
  EXPECT_EQ(c->feed_timeout, milliseconds(45000));
  EXPECT_EQ(c->feed_connect_timeout, milliseconds(5000));
  EXPECT_EQ(c->feed_poll, milliseconds(15 * 60000));
  // The client state sits in the store unless feed_state says otherwise.
  EXPECT_EQ(c->feed_state, "/srv/store/feed");
  auto d =
      ParseConfig("[cryptex]\nfeed = /srv/feed\nfeed_trust = /k/a.pub\nfeed_state = /s\n", kPath);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->feed, "/srv/feed");
  EXPECT_EQ(d->feed_state, "/s");
  EXPECT_EQ(d->feed_timeout, milliseconds(30000));  // the defaults
  EXPECT_EQ(d->feed_connect_timeout, milliseconds(10000));
  EXPECT_EQ(d->feed_poll, milliseconds(3600000));
  auto f = ParseConfig("[cryptex]\nfeed = file:///srv/feed\nfeed_trust = /k\n", kPath);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->feed_state, "/var/lib/cryptex/feed");
  EXPECT_EQ(DefaultConfig().feed, "");
  EXPECT_EQ(DefaultConfig().feed_state, "/var/lib/cryptex/feed");
}

TEST(ConfigTest, FeedKeyErrorsNameFileLineAndKey) {
  const std::string ok_feed = "feed = https://h.example/f\nfeed_trust = /k\n";
  const std::vector<BadCase> cases = {
      {"http feed", "[cryptex]\nfeed = http://h.example/f\nfeed_trust = /k\n", 2, "feed",
       "http:// is refused"},
      {"relative feed", "[cryptex]\nfeed = feed/dir\nfeed_trust = /k\n", 2, "feed", "not a feed"},
      {"relative file URL", "[cryptex]\nfeed = file://feed\nfeed_trust = /k\n", 2, "feed",
       "not a feed"},
      {"https without host", "[cryptex]\nfeed = https:///f\nfeed_trust = /k\n", 2, "feed"},
      {"feed without trust", "[cryptex]\nstore = /s\nfeed = /srv/feed\n", 3, "feed", "feed_trust"},
      {"relative feed_trust", "[cryptex]\nfeed = /f\nfeed_trust = keys\n", 3, "feed_trust",
       "absolute"},
      {"relative feed_ca", "[cryptex]\n" + ok_feed + "feed_ca = ca.pem\n", 4, "feed_ca"},
      {"relative feed_state", "[cryptex]\n" + ok_feed + "feed_state = st\n", 4, "feed_state"},
      {"bad feed_timeout", "[cryptex]\n" + ok_feed + "feed_timeout = forever\n", 4, "feed_timeout",
       "duration"},
      {"feed_connect_timeout 0", "[cryptex]\n" + ok_feed + "feed_connect_timeout = 0\n", 4,
       "feed_connect_timeout"},
      {"feed_poll over a day", "[cryptex]\n" + ok_feed + "feed_poll = 25h\n", 4, "feed_poll"},
      {"cert without key", "[cryptex]\n" + ok_feed + "feed_client_cert = /c.pem\n", 4,
       "feed_client_cert", "together"},
      {"key without cert", "[cryptex]\n" + ok_feed + "\nfeed_client_key = /c.key\n", 5,
       "feed_client_key", "together"},
      {"ca for a directory feed", "[cryptex]\nfeed = /f\nfeed_trust = /k\nfeed_ca = /ca.pem\n", 4,
       "feed_ca", "https"},
      {"feed key without feed", "[cryptex]\nstore = /s\nfeed_trust = /k\n", 3, "feed_trust",
       "without feed"},
      {"feed twice", "[cryptex]\n" + ok_feed + "feed = /g\n", 4, "feed", "twice"},
  };
  ExpectRefused(cases);
}

TEST(ConfigTest, LoadConfigMissingFile) {
  test::TempDir dir;
  // Named on the command line: must exist.
  auto r = LoadConfig(dir.Join("nope.conf"), /*missing_ok=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find(dir.Join("nope.conf")), std::string::npos);
  // The default path may be absent: the defaults.
  auto d = LoadConfig(dir.Join("nope.conf"), /*missing_ok=*/true);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->plugins, std::vector<std::string>{"auto"});
  EXPECT_EQ(d->path, "");
  // A file is read and named in its errors.
  test::WriteFile(dir.Join("c.conf"), "[cryptex]\nplugins = auto\nfoo = 1\n");
  auto e = LoadConfig(dir.Join("c.conf"), false);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().message().rfind(dir.Join("c.conf") + ":3: ", 0), 0u) << e.status().message();
}

TEST(ConfigTest, Durations) {
  const std::vector<std::pair<std::string, int64_t>> good = {{"1", 1000},     {"500ms", 500},
                                                             {"5s", 5000},    {"2m", 120000},
                                                             {"1h", 3600000}, {"24h", 86400000}};
  for (const auto& [text, ms] : good) {
    auto d = ParseDuration(text, "t");
    ASSERT_TRUE(d.ok()) << text << ": " << d.status().ToString();
    EXPECT_EQ(d->count(), ms) << text;
  }
  for (const char* text : {"", "0", "0ms", "-1s", "1.5s", "s", "5 s", "5d", "25h", "9999999999"}) {
    EXPECT_FALSE(ParseDuration(text, "t").ok()) << text;
  }
}

}  // namespace
}  // namespace cryptex::policy

namespace cryptex::policy {
namespace {

using std::chrono::milliseconds;

// The shipped example parses (and says what docs/POLICY.md says it does).
TEST(ConfigTest, ExampleParses) {
  const std::string path = std::string(CRYPTEX_SOURCE_DIR) + "/examples/cryptex.conf";
  auto c = LoadConfig(path, false);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->plugins, (std::vector<std::string>{"revocation", "health", "defer"}));
  EXPECT_EQ(c->patch_dir, "/var/lib/cryptex/offered");
  ASSERT_EQ(c->health.size(), 1u);
  EXPECT_EQ(c->health[0].timeout, milliseconds(10000));
  EXPECT_EQ(c->OptionsOf("health"), (Options{{"failures", "2"}}));
}

}  // namespace
}  // namespace cryptex::policy
