#include "fs/daemon/sd_notify.h"

#include <systemd/sd-daemon.h>

#include <string>

namespace psm {

bool SdNotify(std::string_view state) {
  // > 0: sent; 0: no $NOTIFY_SOCKET; < 0: -errno.
  return sd_notify(0, std::string(state).c_str()) > 0;
}

}  // namespace psm
