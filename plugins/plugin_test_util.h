// Shared by the shipped plugins' tests (compiled into each *_test): loads a
// built plugin .so with dlopen and calls its check_options() and decide()
// directly in the test process, as the host's child process would.
#pragma once

#include <cryptex/policy_plugin.h>
#include <gtest/gtest.h>

#include <concepts>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "facts.h"

namespace cryptex::plugintest {

using policy::DeviceFacts;
using policy::Options;
using policy::PatchFacts;
using policy::PatchState;

// One decide() call's result.
struct Result {
  int rc = -1;  // decide's return value
  int32_t verdict = -1;
  int64_t until = 0;
  std::string reason;
};

// What check_options() said.
struct Check {
  int rc = 0;  // 0: accepted
  std::string message;
};

class LoadedPlugin {
 public:
  // dlopen()s PATH and fetches its table; a failure fails the test (ADD_FAILURE).
  explicit LoadedPlugin(const std::string& path);
  ~LoadedPlugin();
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  const cx_policy_plugin* table() const { return table_; }

  Check CheckOptions(const policy::Options& options) const;

  // Calls decide() with a reason buffer of `reason_cap` bytes. Asserts (with
  // ADD_FAILURE) what holds for every call: the reason fits, is valid UTF-8,
  // the verdict is in range, and a second call with the same input gives the
  // same result (decide is pure).
  Result Decide(const policy::PatchFacts& patch, const policy::DeviceFacts& device,
                const policy::Options& options, size_t reason_cap = 1024) const;

 private:
  Result DecideOnce(const policy::PatchFacts& patch, const policy::DeviceFacts& device,
                    const policy::Options& options, size_t reason_cap) const;
  void* handle_ = nullptr;
  const cx_policy_plugin* table_ = nullptr;
};

// "YYYY-MM-DD HH:MM[:SS]" read as UTC -> Unix seconds (test inputs).
int64_t Utc(const std::string& text);

// True if `s` is valid UTF-8.
bool ValidUtf8(const std::string& s);

// The plugin under test: the .so at CX_PLUGIN_PATH (each NAME_test target
// defines it as its own plugin's path), loaded once.
const LoadedPlugin& Plugin();

// ---- table tests (TEST_P over a vector of rows) -----------------------------

// The first field of every table row: the row's name, which names its test
// (CaseName) and is what gtest prints for the row (PrintTo).
struct NamedCase {
  std::string name;
};

template <std::derived_from<NamedCase> C>
void PrintTo(const C& c, std::ostream* os) {
  *os << c.name;
}

// INSTANTIATE_TEST_SUITE_P's name generator: the row's name.
struct CaseName {
  template <std::derived_from<NamedCase> C>
  std::string operator()(const testing::TestParamInfo<C>& info) const {
    return info.param.name;
  }
};

// Each of `parts` occurs in `text` (one EXPECT failure, showing `text`, per
// missing part).
void ExpectContainsAll(const std::string& text, const std::vector<std::string>& parts);

// `r` is a successful decide(): rc 0, `verdict`, `until`, and a reason holding
// each of `reason_parts`.
void ExpectDecided(const Result& r, int32_t verdict, int64_t until,
                   const std::vector<std::string>& reason_parts);

// A row of options the plugin must refuse, with what its message must say.
struct BadOptions : NamedCase {
  Options options;
  std::vector<std::string> message_parts;
};

// check_options() refuses `bad.options` with a message holding each of
// `bad.message_parts`, and decide() on (patch, device) with the same options
// fails (non-zero rc, verdict DEFER) rather than guessing.
void ExpectRefused(const BadOptions& bad, const PatchFacts& patch, const DeviceFacts& device);

}  // namespace cryptex::plugintest
