#include "fs/control/scheduler.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <ctime>
#include <set>

#include "fs/core/filesystem.h"
#include "fs/base/log.h"

namespace psm {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

std::tm Utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  return tm;
}

bool ParseU32(std::string_view s, uint32_t* out) {
  if (s.empty() || s.size() > 9) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

Status ValidatePolicy(const SchedulePolicy& p) {
  if (p.interval_sec < 60) return Status::Invalid("the interval must be at least 1 minute");
  if (p.interval_sec > 366LL * 86400) return Status::Invalid("the interval must be at most 366 days");
  if (p.prefix.size() > 200) return Status::Invalid("the prefix is longer than 200 bytes");
  for (unsigned char c : p.prefix) {
    if (c == '/' || c < 0x20 || c == 0x7f) {
      return Status::Invalid("the prefix may not contain '/' or control characters");
    }
  }
  if (p.prefix == "." || p.prefix == "..") return Status::Invalid("bad prefix");
  if (p.keep_last + p.keep_hourly + p.keep_daily + p.keep_weekly + p.keep_monthly +
          p.keep_yearly == 0) {
    return Status::Invalid("the retention keeps nothing; set at least one --keep-* above 0");
  }
  return Status::Ok();
}

std::string EncodePolicy(const SchedulePolicy& p) {
  std::string s;
  auto line = [&](const char* k, const std::string& v) { s += std::string(k) + "=" + v + "\n"; };
  line("version", "1");
  line("enabled", p.enabled ? "1" : "0");
  line("interval", std::to_string(p.interval_sec));
  line("prefix", p.prefix);
  line("keep_last", std::to_string(p.keep_last));
  line("keep_hourly", std::to_string(p.keep_hourly));
  line("keep_daily", std::to_string(p.keep_daily));
  line("keep_weekly", std::to_string(p.keep_weekly));
  line("keep_monthly", std::to_string(p.keep_monthly));
  line("keep_yearly", std::to_string(p.keep_yearly));
  return s;
}

Result<SchedulePolicy> DecodePolicy(std::string_view text) {
  SchedulePolicy p;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view k = line.substr(0, eq), v = line.substr(eq + 1);
    uint32_t n = 0;
    auto num = [&](uint32_t* dst) -> Status {
      if (!ParseU32(v, &n)) return Status::Corruption("bad schedule value " + std::string(line));
      *dst = n;
      return Status::Ok();
    };
    if (k == "enabled") {
      p.enabled = v == "1";
    } else if (k == "interval") {
      uint32_t sec = 0;
      PSM_RETURN_IF_ERROR(num(&sec));
      p.interval_sec = sec;
    } else if (k == "prefix") {
      p.prefix.assign(v);
    } else if (k == "keep_last") {
      PSM_RETURN_IF_ERROR(num(&p.keep_last));
    } else if (k == "keep_hourly") {
      PSM_RETURN_IF_ERROR(num(&p.keep_hourly));
    } else if (k == "keep_daily") {
      PSM_RETURN_IF_ERROR(num(&p.keep_daily));
    } else if (k == "keep_weekly") {
      PSM_RETURN_IF_ERROR(num(&p.keep_weekly));
    } else if (k == "keep_monthly") {
      PSM_RETURN_IF_ERROR(num(&p.keep_monthly));
    } else if (k == "keep_yearly") {
      PSM_RETURN_IF_ERROR(num(&p.keep_yearly));
    }
  }
  return p;
}

Result<int64_t> ParseInterval(std::string_view text) {
  if (text.empty()) return Status::Invalid("empty interval");
  int64_t mult = 1;
  std::string_view num = text;
  switch (text.back()) {
    case 's': mult = 1; num.remove_suffix(1); break;
    case 'm': mult = 60; num.remove_suffix(1); break;
    case 'h': mult = 3600; num.remove_suffix(1); break;
    case 'd': mult = 86400; num.remove_suffix(1); break;
    case 'w': mult = 7 * 86400; num.remove_suffix(1); break;
    default: break;
  }
  uint32_t n = 0;
  if (!ParseU32(num, &n) || n == 0) {
    return Status::Invalid("interval '" + std::string(text) +
                           "': expected a number with s, m, h, d or w (e.g. 15m, 1h, 1d)");
  }
  return static_cast<int64_t>(n) * mult;
}

std::string FormatInterval(int64_t sec) {
  if (sec % 86400 == 0) return std::to_string(sec / 86400) + "d";
  if (sec % 3600 == 0) return std::to_string(sec / 3600) + "h";
  if (sec % 60 == 0) return std::to_string(sec / 60) + "m";
  return std::to_string(sec) + "s";
}

RetentionPlan Retain(std::vector<RetentionItem> items, const SchedulePolicy& p) {
  std::stable_sort(items.begin(), items.end(), [](const RetentionItem& a, const RetentionItem& b) {
    return a.time > b.time;
  });
  std::vector<bool> keep(items.size(), false);
  for (size_t i = 0; i < items.size() && i < p.keep_last; ++i) keep[i] = true;
  auto by_bucket = [&](uint32_t count, const std::function<int64_t(int64_t)>& bucket) {
    uint32_t kept = 0;
    bool have = false;
    int64_t last = 0;
    for (size_t i = 0; i < items.size() && kept < count; ++i) {
      int64_t b = bucket(items[i].time);
      if (have && b == last) continue;  // an older one in a bucket already served
      have = true;
      last = b;
      keep[i] = true;
      ++kept;
    }
  };
  by_bucket(p.keep_hourly, [](int64_t t) { return FloorDiv(t, 3600); });
  by_bucket(p.keep_daily, [](int64_t t) { return FloorDiv(t, 86400); });
  // ISO weeks start on Monday; 1970-01-01 was a Thursday (day 0 -> +3).
  by_bucket(p.keep_weekly, [](int64_t t) { return FloorDiv(FloorDiv(t, 86400) + 3, 7); });
  by_bucket(p.keep_monthly, [](int64_t t) {
    std::tm tm = Utc(t);
    return static_cast<int64_t>(tm.tm_year) * 12 + tm.tm_mon;
  });
  by_bucket(p.keep_yearly, [](int64_t t) { return static_cast<int64_t>(Utc(t).tm_year); });
  RetentionPlan plan;
  for (size_t i = 0; i < items.size(); ++i) {
    (keep[i] ? plan.keep : plan.prune).push_back(items[i]);
  }
  return plan;
}

Result<SchedulePolicy> LoadPolicy(FileSystem* fs) {
  Result<std::string> v = fs->GetProperty(kSchedulePropertyName);
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return Status::NotFound("the volume has no snapshot schedule");
    return v.status();
  }
  return DecodePolicy(v.value());
}

Status StorePolicy(FileSystem* fs, const SchedulePolicy& p) {
  PSM_RETURN_IF_ERROR(ValidatePolicy(p));
  return fs->SetProperty(kSchedulePropertyName, EncodePolicy(p));
}

Status RemovePolicy(FileSystem* fs) { return fs->SetProperty(kSchedulePropertyName, ""); }

namespace {

std::vector<RetentionItem> Candidates(FileSystem* fs, const SchedulePolicy& p) {
  std::vector<RetentionItem> items;
  for (const SnapshotInfo& s : fs->ListSnapshots(false)) {
    int64_t t = 0;
    if (!s.deleting && ParseScheduledName(s.name, p.prefix, &t)) items.push_back({s.name, t});
  }
  return items;
}

}  // namespace

PruneReport Prune(FileSystem* fs, const SchedulePolicy& p, bool dry_run) {
  PruneReport r;
  RetentionPlan plan = Retain(Candidates(fs, p), p);
  for (const auto& k : plan.keep) r.kept.push_back(k.name);
  for (const auto& x : plan.prune) {
    if (dry_run) {
      r.pruned.push_back(x.name);
      continue;
    }
    Status s = fs->DeleteSnapshot(x.name);
    if (s.ok()) {
      r.pruned.push_back(x.name);
    } else if (s.Is(Code::kBusy)) {
      r.busy.push_back(x.name);  // held or being sent: never pruned
    } else if (!s.Is(Code::kNotFound)) {  // NotFound: someone deleted it meanwhile
      r.errors.push_back(x.name + ": " + s.ToString());
    }
  }
  return r;
}

int64_t Scheduler::RealClock() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Scheduler::Scheduler(FileSystem* fs, Clock clock) : fs_(fs), clock_(std::move(clock)) {}

Scheduler::~Scheduler() { Stop(); }

Scheduler::TickResult Scheduler::Tick(int64_t now) {
  TickResult r;
  Result<SchedulePolicy> pol = LoadPolicy(fs_);
  if (!pol.ok()) {
    if (!pol.status().Is(Code::kNotFound)) r.error = pol.status();
    return r;
  }
  const SchedulePolicy& p = pol.value();
  if (!p.enabled) return r;
  r.policy = true;
  const int64_t slot = FloorDiv(now, p.interval_sec) * p.interval_sec;
  r.next_due = slot + p.interval_sec;
  int64_t newest = INT64_MIN;
  for (const RetentionItem& c : Candidates(fs_, p)) newest = std::max(newest, c.time);
  if (newest >= slot) return r;  // this slot has its snapshot
  const std::string name = ScheduledName(p.prefix, now);
  if (before_snapshot_) before_snapshot_();
  Result<SnapshotInfo> snap = fs_->CreateSnapshot(name);
  if (!snap.ok() && !snap.status().Is(Code::kExists)) {
    r.error = snap.status();
    r.next_due = now + 60;  // try again in a minute
    return r;
  }
  if (snap.ok()) r.created = name;
  r.prune = Prune(fs_, p, false);
  return r;
}

void Scheduler::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread(&Scheduler::Loop, this);
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Kick() {
  {
    std::lock_guard<std::mutex> l(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

void Scheduler::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    kicked_ = false;
    l.unlock();
    const int64_t now = clock_();
    TickResult r = Tick(now);
    if (!r.created.empty()) PSM_LOG(kLogInfo, "psmfs: scheduled snapshot '%s' taken", r.created.c_str());
    for (const auto& n : r.prune.pruned) PSM_LOG(kLogInfo, "psmfs: pruned snapshot '%s'", n.c_str());
    for (const auto& n : r.prune.busy) {
      PSM_LOG(kLogNotice, "psmfs: retention would prune '%s' but it is held; kept", n.c_str());
    }
    for (const auto& e : r.prune.errors) PSM_LOG(kLogWarning, "psmfs: pruning %s", e.c_str());
    if (!r.error.ok()) {
      PSM_LOG(kLogWarning, "psmfs: snapshot schedule: %s", r.error.ToString().c_str());
    }
    int64_t wait = 60;
    if (r.next_due > now) wait = std::min<int64_t>(wait, r.next_due - now);
    l.lock();
    cv_.wait_for(l, std::chrono::seconds(std::max<int64_t>(wait, 1)),
                 [&] { return stop_ || kicked_; });
  }
}

}  // namespace psm
