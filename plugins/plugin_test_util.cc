#include "plugin_test_util.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "plugin_input.h"

namespace cryptex::plugintest {

LoadedPlugin::LoadedPlugin(const std::string& path) {
  handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ == nullptr) {
    ADD_FAILURE() << "dlopen " << path << ": " << dlerror();
    return;
  }
  auto entry = reinterpret_cast<cx_policy_entry_fn>(dlsym(handle_, CX_POLICY_ENTRY_SYMBOL));
  if (entry == nullptr) {
    ADD_FAILURE() << path << ": no " << CX_POLICY_ENTRY_SYMBOL;
    return;
  }
  table_ = entry();
  if (table_ == nullptr || table_->abi_major != CX_POLICY_ABI_MAJOR ||
      table_->struct_size < sizeof(cx_policy_plugin) || table_->decide == nullptr) {
    ADD_FAILURE() << path << ": bad plugin table";
    table_ = nullptr;
    return;
  }
  // The agent loads NAME.so by the name in its config: the table says the same.
  std::string file = path.substr(path.rfind('/') + 1);
  EXPECT_EQ(std::string(table_->name.ptr, table_->name.len), file.substr(0, file.size() - 3));
  EXPECT_NE(table_->check_options, nullptr) << path;
}

LoadedPlugin::~LoadedPlugin() {
  if (handle_ != nullptr) dlclose(handle_);
}

static std::vector<cx_option> ToC(const policy::Options& options) {
  std::vector<cx_option> c;
  for (const auto& [k, v] : options)
    c.push_back(cx_option{{k.data(), k.size()}, {v.data(), v.size()}});
  return c;
}

Check LoadedPlugin::CheckOptions(const policy::Options& options) const {
  Check result;
  if (table_ == nullptr || table_->check_options == nullptr) {
    ADD_FAILURE() << "plugin has no check_options";
    return result;
  }
  std::vector<cx_option> c = ToC(options);
  std::string err(512, '\xAA');
  size_t err_len = 12345;
  result.rc = table_->check_options(c.data(), c.size(), err.data(), err.size(), &err_len);
  if (result.rc != 0) {
    EXPECT_LE(err_len, err.size());
    result.message = err.substr(0, std::min(err_len, err.size()));
    EXPECT_TRUE(ValidUtf8(result.message)) << result.message;
    EXPECT_FALSE(result.message.empty());
  }
  return result;
}

Result LoadedPlugin::DecideOnce(const policy::PatchFacts& patch, const policy::DeviceFacts& device,
                                const policy::Options& options, size_t reason_cap) const {
  Result r;
  if (table_ == nullptr) return r;
  policy::PluginInput input(patch, device, options);
  // One guard byte after the cap catches a write past it.
  std::string buf(reason_cap + 1, '\xAA');
  cx_policy_decision out{};
  out.struct_size = sizeof(out);
  out.verdict = -1;
  out.until = -12345;
  out.reason = buf.data();
  out.reason_cap = reason_cap;
  r.rc = table_->decide(input.get(), &out);
  EXPECT_EQ(buf[reason_cap], '\xAA') << "decide wrote past reason_cap";
  EXPECT_LE(out.reason_len, reason_cap);
  r.verdict = out.verdict;
  r.until = out.until;
  r.reason = buf.substr(0, std::min(out.reason_len, reason_cap));
  return r;
}

Result LoadedPlugin::Decide(const policy::PatchFacts& patch, const policy::DeviceFacts& device,
                            const policy::Options& options, size_t reason_cap) const {
  Result r = DecideOnce(patch, device, options, reason_cap);
  // CX_PRINT_REASONS=1 shows every reason (to read them, e.g. for the README).
  if (const char* p = std::getenv("CX_PRINT_REASONS"); p != nullptr && *p == '1') {
    fprintf(stderr, "[rc %d verdict %d until %lld] %s\n", r.rc, r.verdict,
            static_cast<long long>(r.until), r.reason.c_str());
  }
  EXPECT_TRUE(ValidUtf8(r.reason)) << r.reason;
  if (r.rc == 0) {
    EXPECT_GE(r.verdict, CX_VERDICT_INSTALL);
    EXPECT_LE(r.verdict, CX_VERDICT_REVERT);
    if (reason_cap > 0) {
      EXPECT_FALSE(r.reason.empty());
    }
    if (r.verdict != CX_VERDICT_DEFER) {
      EXPECT_EQ(r.until, 0) << r.reason;
    }
  }
  Result again = DecideOnce(patch, device, options, reason_cap);
  EXPECT_EQ(again.rc, r.rc);
  EXPECT_EQ(again.verdict, r.verdict);
  EXPECT_EQ(again.until, r.until);
  EXPECT_EQ(again.reason, r.reason) << "decide is not pure";
  return r;
}

const LoadedPlugin& Plugin() {
  static LoadedPlugin p(CX_PLUGIN_PATH);
  return p;
}

void ExpectContainsAll(const std::string& text, const std::vector<std::string>& parts) {
  for (const auto& part : parts) {
    EXPECT_NE(text.find(part), std::string::npos) << text << "\n  lacks: " << part;
  }
}

void ExpectDecided(const Result& r, int32_t verdict, int64_t until,
                   const std::vector<std::string>& reason_parts) {
  EXPECT_EQ(r.rc, 0) << r.reason;
  EXPECT_EQ(r.verdict, verdict) << r.reason;
  EXPECT_EQ(r.until, until) << r.reason;
  ExpectContainsAll(r.reason, reason_parts);
}

void ExpectRefused(const BadOptions& bad, const PatchFacts& patch, const DeviceFacts& device) {
  Check check = Plugin().CheckOptions(bad.options);
  EXPECT_NE(check.rc, 0);
  ExpectContainsAll(check.message, bad.message_parts);
  Result r = Plugin().Decide(patch, device, bad.options);
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.verdict, CX_VERDICT_DEFER);
}

int64_t Utc(const std::string& text) {
  struct tm tm {};
  int sec = 0;
  int n = sscanf(text.c_str(), "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                 &tm.tm_hour, &tm.tm_min, &sec);
  if (n < 5) ADD_FAILURE() << "bad test time " << text;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_sec = sec;
  return static_cast<int64_t>(timegm(&tm));
}

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; k++) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace cryptex::plugintest
