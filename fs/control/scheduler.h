// Scheduled snapshots and retention (`psmctl schedule`, `psmctl prune`;
// docs/user-guide.md "Schedules and retention").
//
// The policy is a volume property ("schedule", FileSystem::SetProperty) in a
// key=value text form (EncodePolicy), so it travels with the volume and
// survives restarts. The daemon runs a Scheduler thread; Tick(now) is the
// whole of its work, so tests drive it with an injected clock and no thread.
//
// Names: a scheduled snapshot is called PREFIX + "@GMT-YYYY.MM.DD-HH.MM.SS"
// (UTC), the form Samba's vfs_shadow_copy2 understands, so with the default
// empty prefix Windows clients see every scheduled snapshot under "Previous
// Versions". Retention only ever considers snapshots whose name is PREFIX
// followed by such a timestamp; their time is the one in the name.
//
// Retention (Retain), as snapper's timeline and sanoid do it: walking from
// newest to oldest, keep the newest `keep_last` snapshots, and the newest
// snapshot of each of the newest `hourly` hours, `daily` days, `weekly` ISO
// weeks (Monday to Sunday) and `monthly` months and `yearly` years (UTC)
// that have one. Everything else among the candidates is pruned, unless a
// hold (or a backup stream) pins it: FileSystem::DeleteSnapshot then says
// kBusy and prune leaves it.
//
// When is a snapshot due: the schedule's grid is aligned to the epoch (an
// hourly schedule fires at :00 UTC, a daily one at 00:00 UTC). A snapshot is
// due when no candidate exists in the current grid slot, i.e. the newest
// candidate is older than the start of the slot. A daemon that was down for
// a week takes one snapshot when it comes back, not a week's worth.
//
// Thread safety: Tick/Prune may run concurrently with any FileSystem call;
// one Scheduler's Start/Stop/Kick from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fs/base/gmt_name.h"
#include "meta/status.h"

namespace psm {

class FileSystem;

inline constexpr std::string_view kSchedulePropertyName = "schedule";

struct SchedulePolicy {
  // Take snapshots at all (prune still applies retention). Default: true.
  bool enabled = true;
  // Seconds between snapshots, >= 60. Default: 3600 (hourly).
  int64_t interval_sec = 3600;
  // Name prefix; names are PREFIX@GMT-YYYY.MM.DD-HH.MM.SS. Default: "".
  std::string prefix;
  // Retention counts (0 = none of that kind). Defaults: 0, 24, 7, 4, 12, 0.
  uint32_t keep_last = 0;
  uint32_t keep_hourly = 24;
  uint32_t keep_daily = 7;
  uint32_t keep_weekly = 4;
  uint32_t keep_monthly = 12;
  uint32_t keep_yearly = 0;
  bool operator==(const SchedulePolicy&) const = default;
};

// kInvalid with a message when the policy makes no sense (interval < 60 s,
// a prefix with '/', nothing kept at all).
Status ValidatePolicy(const SchedulePolicy& p);
// key=value lines (enabled, interval, prefix, keep_*). Unknown keys are kept
// out of the way (ignored), missing ones take the defaults.
std::string EncodePolicy(const SchedulePolicy& p);
Result<SchedulePolicy> DecodePolicy(std::string_view text);
// "15m", "1h", "2d", "90s", "3600" (seconds) -> seconds.
Result<int64_t> ParseInterval(std::string_view text);
// "1h", "15m", "1d 12h" style, the largest whole units.
std::string FormatInterval(int64_t sec);

// GmtToken, ScheduledName, ParseScheduledName: fs/base/gmt_name.h.

struct RetentionItem {
  std::string name;
  int64_t time = 0;  // unix seconds
};
struct RetentionPlan {
  std::vector<RetentionItem> keep;   // newest first
  std::vector<RetentionItem> prune;  // newest first
};
// Pure: splits `items` (any order, distinct names) into keep and prune.
RetentionPlan Retain(std::vector<RetentionItem> items, const SchedulePolicy& p);

struct PruneReport {
  std::vector<std::string> pruned;   // deleted (dry run: would be)
  std::vector<std::string> kept;     // kept by the policy
  std::vector<std::string> busy;     // the policy would prune them but a hold/stream pins them
  std::vector<std::string> errors;   // "name: message" for other failures
};

// The stored policy; kNotFound when the volume has none.
Result<SchedulePolicy> LoadPolicy(FileSystem* fs);
Status StorePolicy(FileSystem* fs, const SchedulePolicy& p);  // validates first
Status RemovePolicy(FileSystem* fs);

// Applies retention to the volume's scheduled snapshots. With `dry_run`
// nothing is deleted; `busy` is then empty (holds are found only by trying)
// unless the snapshot list says so.
PruneReport Prune(FileSystem* fs, const SchedulePolicy& p, bool dry_run);

class Scheduler {
 public:
  using Clock = std::function<int64_t()>;  // unix seconds
  static int64_t RealClock();

  explicit Scheduler(FileSystem* fs, Clock clock = RealClock);
  ~Scheduler();  // Stop()s
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Called before each scheduled snapshot (the daemon: syncfs on the mount
  // point, so the kernel's cached writes are in it). Set before Start().
  void SetBeforeSnapshot(std::function<void()> fn) { before_snapshot_ = std::move(fn); }

  struct TickResult {
    bool policy = false;   // a policy is stored and enabled
    std::string created;   // the snapshot taken, if one was due
    PruneReport prune;     // when a snapshot was taken
    Status error;          // loading the policy or creating the snapshot
    int64_t next_due = 0;  // unix seconds; 0 without policy
  };
  // One round: load the policy; if a snapshot is due at `now`, take it and
  // prune. Never sleeps.
  TickResult Tick(int64_t now);

  // The thread: Tick(clock()), then sleep until the next due time (at most
  // 60 s, so a changed policy is picked up) or Kick().
  void Start();
  void Stop();
  // Wakes the thread now (the policy changed).
  void Kick();

 private:
  void Loop();
  FileSystem* fs_;
  Clock clock_;
  std::function<void()> before_snapshot_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // GUARDED_BY(mu_)
  bool kicked_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace psm
