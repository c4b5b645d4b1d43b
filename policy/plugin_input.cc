#include "plugin_input.h"

namespace cryptex::policy {

int32_t SeverityCode(const std::string& severity) {
  if (severity == "low") return CX_SEVERITY_LOW;
  if (severity == "medium") return CX_SEVERITY_MEDIUM;
  if (severity == "high") return CX_SEVERITY_HIGH;
  if (severity == "critical") return CX_SEVERITY_CRITICAL;
  return CX_SEVERITY_NONE;
}

PluginInput::PluginInput(const PatchFacts& patch, const DeviceFacts& device, const Options& options)
    : patch_facts_(patch), device_facts_(device), options_facts_(options) {
  const PatchFacts& p = patch_facts_;
  for (const auto& c : p.cves) cves_.push_back(Str(c));
  patch_.id = Str(p.id);
  patch_.line = Str(p.line);
  patch_.version = Str(p.version);
  patch_.severity = SeverityCode(p.severity);
  patch_.activation_class = p.activation == "reboot" ? CX_CLASS_REBOOT : CX_CLASS_RELAUNCH;
  patch_.cves = cves_.data();
  patch_.cve_count = cves_.size();
  patch_.released_at = p.released_at;
  patch_.size = p.size;
  patch_.release_counter = p.release_counter;
  patch_.state = static_cast<int32_t>(p.state);
  patch_.revoked = p.revoked ? 1 : 0;
  patch_.revoked_reason = Str(p.revoked_reason);
  patch_.approved = p.approved ? 1 : 0;
  patch_.approved_at = p.approved_at;
  patch_.installed_at = p.installed_at;
  patch_.activated_at = p.activated_at;
  patch_.level = p.level;

  const DeviceFacts& d = device_facts_;
  for (const auto& i : d.patches) {
    installed_.push_back(cx_installed_patch{Str(i.id), Str(i.line), i.active ? 1 : 0,
                                            i.installed_at, i.activated_at});
  }
  for (const auto& h : d.health) {
    health_.push_back(cx_health_result{Str(h.check), h.at, h.ok ? 1 : 0});
  }
  device_.now = d.now;
  device_.bucket = d.bucket;
  device_.patches = installed_.data();
  device_.patch_count = installed_.size();
  device_.health = health_.data();
  device_.health_count = health_.size();

  for (const auto& [k, v] : options_facts_) options_.push_back(cx_option{Str(k), Str(v)});

  input_.struct_size = sizeof(cx_policy_input);
  input_.patch = &patch_;
  input_.device = &device_;
  input_.options = options_.data();
  input_.option_count = options_.size();
}

}  // namespace cryptex::policy
