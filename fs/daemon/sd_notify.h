// systemd readiness notification through libsystemd's sd_notify(3): sends a
// state such as "READY=1" to $NOTIFY_SOCKET. psmfs started by the
// psmfs@.service unit (Type=notify, -f) says READY=1 once the volume is
// mounted and serving, STOPPING=1 when it begins to unmount.
//
// Thread safety: may be called from any thread.
#pragma once

#include <string_view>

namespace psm {

// Sends `state` when $NOTIFY_SOCKET is set (and leaves it set); returns false
// when it is not set or sending failed (which is never fatal).
bool SdNotify(std::string_view state);

}  // namespace psm
