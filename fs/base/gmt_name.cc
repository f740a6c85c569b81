#include "fs/base/gmt_name.h"

#include <cstdio>
#include <ctime>

namespace psm {
namespace {

// Two digits at s[i..i+1].
bool Digits(std::string_view s, size_t i, size_t n, int* out) {
  if (i + n > s.size()) return false;
  int v = 0;
  for (size_t k = i; k < i + n; ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
    v = v * 10 + (s[k] - '0');
  }
  *out = v;
  return true;
}

}  // namespace

std::string GmtToken(int64_t unix_sec) {
  std::time_t tt = static_cast<std::time_t>(unix_sec);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "@GMT-%04d.%02d.%02d-%02d.%02d.%02d", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string ScheduledName(std::string_view prefix, int64_t unix_sec) {
  return std::string(prefix) + GmtToken(unix_sec);
}

bool ParseScheduledName(std::string_view name, std::string_view prefix, int64_t* unix_sec) {
  // PREFIX @GMT-YYYY.MM.DD-HH.MM.SS  (24 bytes after the prefix)
  if (name.size() != prefix.size() + 24 || name.substr(0, prefix.size()) != prefix) return false;
  std::string_view t = name.substr(prefix.size());
  if (t.substr(0, 5) != "@GMT-" || t[9] != '.' || t[12] != '.' || t[15] != '-' || t[18] != '.' ||
      t[21] != '.') {
    return false;
  }
  int y, mo, d, h, mi, s;
  if (!Digits(t, 5, 4, &y) || !Digits(t, 10, 2, &mo) || !Digits(t, 13, 2, &d) ||
      !Digits(t, 16, 2, &h) || !Digits(t, 19, 2, &mi) || !Digits(t, 22, 2, &s)) {
    return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return false;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  *unix_sec = static_cast<int64_t>(::timegm(&tm));
  return GmtToken(*unix_sec) == t;  // rejects 31 February and the like
}

}  // namespace psm
