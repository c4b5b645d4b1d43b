// What a policy decision is about, as the host holds it (C++ types): the
// patch, the device, and a plugin's options. plugin_input.h turns these into
// the plain C structs of the plugin ABI (include/cryptex/policy_plugin.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cryptex::policy {

enum class PatchState { kAvailable = 0, kInstalled = 1, kActive = 2 };

struct PatchFacts {
  std::string id;
  std::string line;
  std::string version;
  std::string severity;    // "" | low | medium | high | critical (the manifest's)
  std::string activation;  // relaunch | reboot ("" = relaunch)
  std::vector<std::string> cves;
  int64_t released_at = 0;
  uint64_t size = 0;
  uint64_t release_counter = 0;
  PatchState state = PatchState::kAvailable;
  bool revoked = false;
  std::string revoked_reason;
  bool approved = false;
  int64_t approved_at = 0;
  int64_t installed_at = 0;
  int64_t activated_at = 0;
  uint32_t level = 0;  // 1-based position in the line's active stack (or the one it would get)
};

struct InstalledFacts {
  std::string id;
  std::string line;
  bool active = false;
  int64_t installed_at = 0;
  int64_t activated_at = 0;
};

struct HealthResult {
  std::string check;
  int64_t at = 0;
  bool ok = false;
};

struct DeviceFacts {
  int64_t now = 0;
  uint32_t bucket = 0;  // 0..99
  std::vector<InstalledFacts> patches;
  std::vector<HealthResult> health;  // oldest first
};

// A plugin's own INI section, key = value in file order.
using Options = std::vector<std::pair<std::string, std::string>>;

}  // namespace cryptex::policy
