// The systemd readiness protocol (sd_notify(3)), implemented here instead of
// linking libsystemd: one datagram with "KEY=VALUE\n..." to the unix socket
// named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).
#pragma once

#include <string_view>

namespace cryptex::cxfs {

// Sends `state` (e.g. "READY=1\nSTATUS=...") when $NOTIFY_SOCKET is set.
// Returns 1 if sent, 0 if $NOTIFY_SOCKET is unset, -errno on failure.
// Thread safe; never throws.
int SdNotify(std::string_view state) noexcept;

}  // namespace cryptex::cxfs
