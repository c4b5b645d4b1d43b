// Builds the plain C input of one plugin decision (cx_policy_input and what
// it points to) from the host's facts. The PluginInput owns every byte the C
// structs point to, so it must outlive the call it is passed to.
#pragma once

#include <cryptex/policy_plugin.h>

#include <string>
#include <vector>

#include "facts.h"

namespace cryptex::policy {

// cx_severity of a manifest severity string ("" or unknown: CX_SEVERITY_NONE).
int32_t SeverityCode(const std::string& severity);

class PluginInput {
 public:
  PluginInput(const PatchFacts& patch, const DeviceFacts& device, const Options& options);
  PluginInput(const PluginInput&) = delete;
  PluginInput& operator=(const PluginInput&) = delete;

  const cx_policy_input* get() const { return &input_; }

 private:
  static cx_str Str(const std::string& s) { return cx_str{s.data(), s.size()}; }

  // Copies of the facts: the C structs point into these.
  PatchFacts patch_facts_;
  DeviceFacts device_facts_;
  Options options_facts_;

  std::vector<cx_str> cves_;
  std::vector<cx_installed_patch> installed_;
  std::vector<cx_health_result> health_;
  std::vector<cx_option> options_;
  cx_patch patch_{};
  cx_device device_{};
  cx_policy_input input_{};
};

}  // namespace cryptex::policy
