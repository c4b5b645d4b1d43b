// Shared by the shipped plugins' tests (compiled into each *_test): loads a
// built plugin .so with dlopen and calls its check_options() and decide()
// directly in the test process, as the host's child process would.
#pragma once

#include <cryptex/policy_plugin.h>

#include <cstdint>
#include <string>

#include "facts.h"

namespace cryptex::plugintest {

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

}  // namespace cryptex::plugintest
