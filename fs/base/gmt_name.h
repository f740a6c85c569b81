// Snapshot names that carry their time: PREFIX@GMT-YYYY.MM.DD-HH.MM.SS (UTC),
// the form Samba's vfs_shadow_copy2 shows to Windows as Previous Versions.
// The scheduler (fs/control/scheduler.h) names and ages its snapshots by it, and
// `psmctl snapshot create --gmt` names one by it. Kept apart from the
// scheduler so that psmctl's front end links it without the engine.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace psm {

// "@GMT-2024.05.06-02.00.00" for `unix_sec` (UTC).
std::string GmtToken(int64_t unix_sec);
// PREFIX + GmtToken.
std::string ScheduledName(std::string_view prefix, int64_t unix_sec);
// True when `name` is PREFIX + a valid @GMT token; *unix_sec gets its time.
bool ParseScheduledName(std::string_view name, std::string_view prefix, int64_t* unix_sec);

}  // namespace psm
