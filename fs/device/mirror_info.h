// What the mirror reports (fs/device/mirror_device.h): plain structs, part
// of the public VolumeStats (fs/core/filesystem.h) and of the installed
// client headers.
#pragma once

#include <cstdint>
#include <string>

namespace psm {

struct MirrorSideInfo {
  std::string path;
  // "online", "resilvering", "missing" (could not be opened at mount, or
  // holds no copy of this volume), "faulted" (an I/O error), "stale" (holds
  // an old copy; resilvered when it is online).
  std::string health;
  std::string reason;  // why missing or faulted
  uint64_t read_errors = 0;      // EIO from this side
  uint64_t write_errors = 0;     // failed writes and syncs
  uint64_t checksum_errors = 0;  // blocks read from this side that failed their checksum
  uint64_t repaired_blocks = 0;  // blocks rewritten on this side from the other
};

struct MirrorInfo {
  bool mirrored = false;  // a mirror is configured
  bool degraded = false;  // some side cannot serve every block
  MirrorSideInfo sides[2];
  bool resilvering = false;
  uint64_t resilver_done = 0;   // bytes below the cursor
  uint64_t resilver_total = 0;  // the image's size
  int stale = -1;
};

}  // namespace psm
