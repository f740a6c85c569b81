// Control requests of the file-server features (holds, schedule, prune,
// history, diff): their names, their JSON records and the server's handler.
// docs/control-protocol.md lists the requests and fields.
//
// The converters are inline (the client library links no psm_fs code);
// HandleFileServerOp lives in control_fileserver.cc (psm_fs), called by
// ControlServer::Dispatch.
//
// Thread safety: functions only.
#pragma once

#include <string_view>

#include "fs/json/control_json.h"
#include "fs/core/filesystem.h"
#include "fs/control/scheduler.h"

namespace psm {
namespace ctl {

inline constexpr std::string_view kOpSnapshotHold = "snapshot.hold";
inline constexpr std::string_view kOpSnapshotRelease = "snapshot.release";
inline constexpr std::string_view kOpSnapshotHolds = "snapshot.holds";
inline constexpr std::string_view kOpScheduleGet = "schedule.get";
inline constexpr std::string_view kOpScheduleSet = "schedule.set";
inline constexpr std::string_view kOpScheduleRemove = "schedule.remove";
inline constexpr std::string_view kOpPrune = "prune";
inline constexpr std::string_view kOpHistory = "history";
inline constexpr std::string_view kOpDiff = "diff";

// Requests that change the volume (root or the volume owner only).
inline bool IsFileServerModifying(std::string_view op) {
  return op == kOpSnapshotHold || op == kOpSnapshotRelease || op == kOpScheduleSet ||
         op == kOpScheduleRemove || op == kOpPrune;
}
// Requests that read across the whole volume's history (names and
// checksums of files in directories the caller may not be allowed to
// read): root or the volume owner only, too.
inline bool IsFileServerPrivileged(std::string_view op) {
  return op == kOpHistory || op == kOpDiff;
}

inline Json ToJson(const SchedulePolicy& p) {
  Json j = Json::Object();
  j.Set("enabled", p.enabled)
      .Set("interval_sec", p.interval_sec)
      .Set("prefix", p.prefix)
      .Set("keep_last", p.keep_last)
      .Set("keep_hourly", p.keep_hourly)
      .Set("keep_daily", p.keep_daily)
      .Set("keep_weekly", p.keep_weekly)
      .Set("keep_monthly", p.keep_monthly)
      .Set("keep_yearly", p.keep_yearly);
  return j;
}

inline SchedulePolicy PolicyFromJson(const Json& j) {
  SchedulePolicy d, p;
  p.enabled = j.GetBool("enabled", d.enabled);
  p.interval_sec = j.GetInt("interval_sec", d.interval_sec);
  p.prefix = j.GetString("prefix", d.prefix);
  p.keep_last = static_cast<uint32_t>(j.GetUint("keep_last", d.keep_last));
  p.keep_hourly = static_cast<uint32_t>(j.GetUint("keep_hourly", d.keep_hourly));
  p.keep_daily = static_cast<uint32_t>(j.GetUint("keep_daily", d.keep_daily));
  p.keep_weekly = static_cast<uint32_t>(j.GetUint("keep_weekly", d.keep_weekly));
  p.keep_monthly = static_cast<uint32_t>(j.GetUint("keep_monthly", d.keep_monthly));
  p.keep_yearly = static_cast<uint32_t>(j.GetUint("keep_yearly", d.keep_yearly));
  return p;
}

inline Json StringArray(const std::vector<std::string>& v) {
  Json a = Json::Array();
  for (const auto& s : v) a.Push(s);
  return a;
}

inline std::vector<std::string> StringsFromJson(const Json* a) {
  std::vector<std::string> out;
  if (a != nullptr && a->is_array()) {
    for (const Json& s : a->items()) out.push_back(s.AsString());
  }
  return out;
}

inline Json ToJson(const PruneReport& r) {
  Json j = Json::Object();
  j.Set("pruned", StringArray(r.pruned))
      .Set("kept", StringArray(r.kept))
      .Set("busy", StringArray(r.busy))
      .Set("errors", StringArray(r.errors));
  return j;
}

inline PruneReport PruneFromJson(const Json& j) {
  PruneReport r;
  r.pruned = StringsFromJson(j.Find("pruned"));
  r.kept = StringsFromJson(j.Find("kept"));
  r.busy = StringsFromJson(j.Find("busy"));
  r.errors = StringsFromJson(j.Find("errors"));
  return r;
}

inline Json ToJson(const FileVersion& v) {
  Json j = Json::Object();
  j.Set("snapshots", StringArray(v.snapshots))
      .Set("live", v.live)
      .Set("ino", v.ino)
      .Set("version", v.version)
      .Set("mode", v.mode)
      .Set("size", v.size)
      .Set("mtime_ns", v.mtime_ns)
      .Set("ctime_ns", v.ctime_ns)
      .Set("sha256", v.sha256);
  return j;
}

inline FileVersion FileVersionFromJson(const Json& j) {
  FileVersion v;
  v.snapshots = StringsFromJson(j.Find("snapshots"));
  v.live = j.GetBool("live");
  v.ino = j.GetUint("ino");
  v.version = j.GetUint("version");
  v.mode = static_cast<uint32_t>(j.GetUint("mode"));
  v.size = j.GetUint("size");
  v.mtime_ns = j.GetInt("mtime_ns");
  v.ctime_ns = j.GetInt("ctime_ns");
  v.sha256 = j.GetString("sha256");
  return v;
}

inline Json ToJson(const DiffResult& r) {
  Json list = Json::Array();
  for (const DiffEntry& e : r.entries) {
    Json j = Json::Object();
    j.Set("change", std::string(1, e.change)).Set("path", e.path).Set("type", e.type);
    if (e.change == 'R') j.Set("old_path", e.old_path);
    list.Push(std::move(j));
  }
  Json j = Json::Object();
  j.Set("from", r.from)
      .Set("to", r.to)
      .Set("entries", std::move(list))
      .Set("dead_entries_read", r.dead_entries_read)
      .Set("dirs_compared", r.dirs_compared);
  return j;
}

inline DiffResult DiffFromJson(const Json& j) {
  DiffResult r;
  r.from = j.GetString("from");
  r.to = j.GetString("to");
  r.dead_entries_read = j.GetUint("dead_entries_read");
  r.dirs_compared = j.GetUint("dirs_compared");
  if (const Json* a = j.Find("entries"); a != nullptr && a->is_array()) {
    for (const Json& x : a->items()) {
      DiffEntry e;
      std::string c = x.GetString("change");
      e.change = c.empty() ? '?' : c[0];
      e.path = x.GetString("path");
      e.old_path = x.GetString("old_path");
      e.type = static_cast<uint32_t>(x.GetUint("type"));
      r.entries.push_back(std::move(e));
    }
  }
  return r;
}

}  // namespace ctl

class Scheduler;

// Serves `op` if it is one of the requests above: fills *reply (an ok reply
// or an error reply) and returns true; false for any other op. `scheduler`
// may be null (no daemon thread: the policy is stored all the same).
bool HandleFileServerOp(FileSystem* fs, Scheduler* scheduler, std::string_view op, const Json& req,
                        Json* reply);

}  // namespace psm
