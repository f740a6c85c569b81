// Retention as a pure function (snapper timeline / sanoid semantics: the
// newest snapshot of each of the newest N hours/days/weeks/months), the
// @GMT name format, policy encoding, and mount(8) helper arguments.
#include <doctest/doctest.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "fs/daemon/mount_args.h"
#include "fs/control/scheduler.h"

using namespace psm;

namespace {

int64_t Utc(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<int64_t>(timegm(&tm));
}

SchedulePolicy Only(uint32_t last, uint32_t h, uint32_t d, uint32_t w, uint32_t m, uint32_t y = 0) {
  SchedulePolicy p;
  p.keep_last = last;
  p.keep_hourly = h;
  p.keep_daily = d;
  p.keep_weekly = w;
  p.keep_monthly = m;
  p.keep_yearly = y;
  return p;
}

std::set<std::string> Names(const std::vector<RetentionItem>& v) {
  std::set<std::string> s;
  for (const auto& i : v) s.insert(i.name);
  return s;
}

// Snapshots every `step` seconds in [from, to).
std::vector<RetentionItem> Series(int64_t from, int64_t to, int64_t step) {
  std::vector<RetentionItem> v;
  for (int64_t t = from; t < to; t += step) v.push_back({ScheduledName("", t), t});
  return v;
}

}  // namespace

TEST_CASE("GMT tokens are what Samba's vfs_shadow_copy2 expects and parse back") {
  const int64_t t = Utc(2024, 5, 6, 2, 3, 4);
  CHECK(GmtToken(t) == "@GMT-2024.05.06-02.03.04");
  CHECK(ScheduledName("auto-", t) == "auto-@GMT-2024.05.06-02.03.04");
  int64_t back = 0;
  CHECK(ParseScheduledName("auto-@GMT-2024.05.06-02.03.04", "auto-", &back));
  CHECK(back == t);
  CHECK(ParseScheduledName("@GMT-2024.05.06-02.03.04", "", &back));
  CHECK_FALSE(ParseScheduledName("@GMT-2024.05.06-02.03.04", "auto-", &back));
  CHECK_FALSE(ParseScheduledName("auto-@GMT-2024.02.31-02.03.04", "auto-", &back));
  CHECK_FALSE(ParseScheduledName("auto-@GMT-2024.05.06-02.03.04x", "auto-", &back));
  CHECK_FALSE(ParseScheduledName("monday", "", &back));
  CHECK_FALSE(ParseScheduledName("@GMT-2024.05.06 02.03.04", "", &back));
}

TEST_CASE("hourly retention keeps the newest snapshot of each of the last N hours") {
  // Every 15 minutes for 10 hours.
  const int64_t t0 = Utc(2024, 3, 1, 0, 0);
  auto items = Series(t0, t0 + 10 * 3600, 900);
  REQUIRE(items.size() == 40);
  RetentionPlan plan = Retain(items, Only(0, 4, 0, 0, 0));
  // Kept: the :45 snapshot of hours 9, 8, 7, 6.
  std::set<std::string> want;
  for (int h = 6; h <= 9; ++h) want.insert(ScheduledName("", t0 + h * 3600 + 2700));
  CHECK(Names(plan.keep) == want);
  CHECK(plan.prune.size() == 36);
  // keep_last adds the newest N on top.
  plan = Retain(items, Only(3, 4, 0, 0, 0));
  want.insert(ScheduledName("", t0 + 9 * 3600 + 1800));
  want.insert(ScheduledName("", t0 + 9 * 3600 + 900));
  CHECK(Names(plan.keep) == want);
}

TEST_CASE("daily, weekly and monthly buckets follow the UTC calendar") {
  // One snapshot at 06:00 and 18:00 every day from 2024-01-01 (a Monday)
  // for 70 days.
  std::vector<RetentionItem> items;
  for (int d = 0; d < 70; ++d) {
    for (int h : {6, 18}) {
      int64_t t = Utc(2024, 1, 1) + d * 86400 + h * 3600;
      items.push_back({ScheduledName("", t), t});
    }
  }
  const int64_t last_day = Utc(2024, 1, 1) + 69 * 86400;  // 2024-03-10, a Sunday
  SUBCASE("daily") {
    RetentionPlan plan = Retain(items, Only(0, 0, 3, 0, 0));
    std::set<std::string> want;
    for (int d = 0; d < 3; ++d) want.insert(ScheduledName("", last_day - d * 86400 + 18 * 3600));
    CHECK(Names(plan.keep) == want);
  }
  SUBCASE("weekly: the newest of each ISO week (Monday..Sunday)") {
    RetentionPlan plan = Retain(items, Only(0, 0, 0, 2, 0));
    // Week of 2024-03-04..03-10 -> Sunday 03-10 18:00; week before -> 03-03 18:00.
    std::set<std::string> want = {ScheduledName("", Utc(2024, 3, 10, 18)),
                                  ScheduledName("", Utc(2024, 3, 3, 18))};
    CHECK(Names(plan.keep) == want);
  }
  SUBCASE("monthly: the newest of each month") {
    RetentionPlan plan = Retain(items, Only(0, 0, 0, 0, 12));
    std::set<std::string> want = {ScheduledName("", Utc(2024, 3, 10, 18)),
                                  ScheduledName("", Utc(2024, 2, 29, 18)),
                                  ScheduledName("", Utc(2024, 1, 31, 18))};
    CHECK(Names(plan.keep) == want);  // only 3 months exist: all kept
    CHECK(plan.keep.size() + plan.prune.size() == items.size());
  }
  SUBCASE("kinds combine as a union") {
    RetentionPlan plan = Retain(items, Only(0, 0, 2, 2, 2));
    std::set<std::string> want = {ScheduledName("", Utc(2024, 3, 10, 18)),
                                  ScheduledName("", Utc(2024, 3, 9, 18)),
                                  ScheduledName("", Utc(2024, 3, 3, 18)),
                                  ScheduledName("", Utc(2024, 2, 29, 18))};
    CHECK(Names(plan.keep) == want);
  }
}

TEST_CASE("retention is independent of input order and never keeps or prunes twice") {
  const int64_t t0 = Utc(2023, 12, 30, 22);
  auto items = Series(t0, t0 + 3 * 86400, 1800);
  auto shuffled = items;
  std::reverse(shuffled.begin(), shuffled.end());
  std::rotate(shuffled.begin(), shuffled.begin() + 7, shuffled.end());
  SchedulePolicy p = Only(2, 5, 2, 1, 1, 1);
  RetentionPlan a = Retain(items, p), b = Retain(shuffled, p);
  CHECK(Names(a.keep) == Names(b.keep));
  CHECK(a.keep.size() + a.prune.size() == items.size());
  std::set<std::string> all = Names(a.keep);
  for (const auto& x : a.prune) CHECK(all.insert(x.name).second);
  // Yearly across new year: the newest of 2024 and the newest of 2023.
  RetentionPlan y = Retain(items, Only(0, 0, 0, 0, 0, 2));
  CHECK(Names(y.keep) == std::set<std::string>{items.back().name,
                                               ScheduledName("", Utc(2023, 12, 31, 23, 30))});
}

TEST_CASE("policies validate, encode and decode") {
  SchedulePolicy p;
  p.interval_sec = 900;
  p.prefix = "auto-";
  p.keep_last = 3;
  p.enabled = false;
  auto d = DecodePolicy(EncodePolicy(p));
  REQUIRE(d.ok());
  CHECK(d.value() == p);
  CHECK(ValidatePolicy(p).ok());
  SchedulePolicy bad = p;
  bad.interval_sec = 30;
  CHECK(ValidatePolicy(bad).Is(Code::kInvalid));
  bad = p;
  bad.prefix = "a/b";
  CHECK(ValidatePolicy(bad).Is(Code::kInvalid));
  bad = Only(0, 0, 0, 0, 0);
  CHECK(ValidatePolicy(bad).Is(Code::kInvalid));
  CHECK(ParseInterval("15m").value() == 900);
  CHECK(ParseInterval("1h").value() == 3600);
  CHECK(ParseInterval("2d").value() == 172800);
  CHECK(ParseInterval("90").value() == 90);
  CHECK_FALSE(ParseInterval("0h").ok());
  CHECK_FALSE(ParseInterval("h").ok());
  CHECK_FALSE(ParseInterval("1y").ok());
  CHECK(FormatInterval(3600) == "1h");
  CHECK(FormatInterval(900) == "15m");
}

TEST_CASE("mount(8) helper arguments and fstab-only options") {
  CHECK(IsMountHelperName("/sbin/mount.fuse.psmfs"));
  CHECK(IsMountHelperName("mount.psmfs"));
  CHECK_FALSE(IsMountHelperName("/usr/bin/psmfs"));
  auto c = MountHelperArgs({"/srv/vol", "/mnt/vol", "-o", "rw,allow_other", "-t", "fuse.psmfs"});
  REQUIRE(c.ok());
  CHECK(c.value().psmfs_args ==
        std::vector<std::string>{"/srv/vol", "/mnt/vol", "-o", "rw,allow_other"});
  CHECK_FALSE(c.value().fake);
  c = MountHelperArgs({"-snv", "/srv/vol", "/mnt/vol", "-oro"});
  REQUIRE(c.ok());
  CHECK(c.value().verbose);
  CHECK(c.value().psmfs_args == std::vector<std::string>{"/srv/vol", "/mnt/vol", "-o", "ro"});
  CHECK(MountHelperArgs({"-f", "/srv/vol", "/mnt/vol"}).value().fake);
  CHECK(MountHelperArgs({"/srv/vol"}).status().Is(Code::kInvalid));
  CHECK(MountHelperArgs({"/srv/vol", "/mnt", "-t", "ext4"}).status().Is(Code::kInvalid));
  CHECK(MountHelperArgs({"/srv/vol", "/mnt", "-N", "/proc/1/ns/mnt"}).status().Is(Code::kInvalid));
  for (const char* o : {"defaults", "noauto", "auto", "nofail", "_netdev", "user", "users",
                        "nouser", "x-systemd.automount", "x-systemd.requires=foo.service",
                        "comment=systemd.automount"}) {
    CHECK_MESSAGE(IsFstabOnlyOption(o), o);
  }
  for (const char* o : {"allow_other", "default_permissions", "snapdir=hidden", "ro", "rw",
                        "nosuid", "userspace"}) {
    CHECK_MESSAGE(!IsFstabOnlyOption(o), o);
  }
}
