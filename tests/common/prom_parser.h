// A strict parser of the Prometheus text exposition format (version 0.0.4),
// written for the tests from the format's description, independent of
// psmfs's renderer (cli/client_metrics.cc). Used by the unit test
// (tests/unit/control/metrics_test.cc) and the mount test
// (tests/integration/metrics_fuse_test.cc) of `psmctl metrics`.
//
// Stricter than Prometheus on purpose, in what psmfs promises:
//   - every line ends with '\n'; no empty lines; no timestamps;
//   - a line is a comment ("# ..."), "# HELP name text", "# TYPE name type"
//     or a sample "name{label="value",...} value";
//   - names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
//     [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__"; no label twice;
//   - label values escape only backslash, double quote and line feed
//     (\\ \" \n) and are valid UTF-8;
//   - every family has one HELP and one TYPE, both before its first
//     sample; its lines are contiguous (no family appears twice);
//   - every sample belongs to a family with a TYPE (a histogram family X
//     owns X_bucket, X_sum and X_count); no series appears twice;
//   - counters are named *_total and are >= 0;
//   - histograms: every series has buckets with ascending "le", the last
//     one "+Inf", cumulative (non-decreasing) counts, the +Inf bucket equal
//     to _count, and a _sum.
// Parse() returns "" and fills the output, or the first violation with its
// line number.
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace psm::promtest {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string type;
  std::string help;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, Family> families;

  // Samples named `name` whose labels include every pair of `want`.
  std::vector<const Sample*> Find(const std::string& name,
                                  const std::map<std::string, std::string>& want = {}) const {
    std::vector<const Sample*> out;
    for (const Sample& s : samples) {
      if (s.name != name) continue;
      bool ok = true;
      for (const auto& [k, v] : want) {
        auto it = s.labels.find(k);
        ok = ok && it != s.labels.end() && it->second == v;
      }
      if (ok) out.push_back(&s);
    }
    return out;
  }
  // The value of the one sample that matches; NaN when none or several do.
  double Value(const std::string& name, const std::map<std::string, std::string>& want = {}) const {
    auto v = Find(name, want);
    return v.size() == 1 ? v[0]->value : std::nan("");
  }
};

namespace detail {

inline bool NameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
inline bool NameChar(char c) { return NameStart(c) || (c >= '0' && c <= '9'); }

inline bool ValidMetricName(std::string_view n) {
  if (n.empty() || !NameStart(n[0])) return false;
  for (char c : n) {
    if (!NameChar(c)) return false;
  }
  return true;
}

inline bool ValidLabelName(std::string_view n) {
  if (n.empty() || n[0] == ':' || !NameStart(n[0]) || n.substr(0, 2) == "__") return false;
  for (char c : n) {
    if (c == ':' || !NameChar(c)) return false;
  }
  return true;
}

// Strict UTF-8: shortest forms, no surrogates, at most U+10FFFF.
inline bool ValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

inline bool ParseValue(std::string_view t, double* out) {
  if (t == "NaN") return *out = std::nan(""), true;
  if (t == "+Inf") return *out = INFINITY, true;
  if (t == "-Inf") return *out = -INFINITY, true;
  if (t.empty()) return false;
  for (char c : t) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')) {
      return false;
    }
  }
  std::string s(t);
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

}  // namespace detail

inline std::string Parse(const std::string& text, Exposition* out) {
  using namespace detail;
  *out = Exposition{};
  if (!text.empty() && text.back() != '\n') return "the text does not end with a line feed";
  std::set<std::string> helped, typed, closed;
  std::set<std::string> series;
  std::string current;  // the family whose lines come now
  // Enter family `f`: it must not have been left before.
  auto enter = [&](const std::string& f) -> bool {
    if (f == current) return true;
    if (!current.empty()) closed.insert(current);
    if (closed.count(f)) return false;
    current = f;
    return true;
  };
  // Histogram bookkeeping, by family and label set without "le".
  struct Hist {
    std::vector<std::pair<double, double>> buckets;  // le, count
    bool has_sum = false, has_count = false;
    double count = 0;
  };
  std::map<std::string, Hist> hists;

  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    auto fail = [&](const std::string& why) {
      return "line " + std::to_string(line_no) + " (" + line + "): " + why;
    };
    if (line.empty()) return fail("empty line");
    if (line[0] == '#') {
      if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
        const bool help = line[2] == 'H';
        const std::string rest = line.substr(7);
        const size_t sp = rest.find(' ');
        if (sp == std::string::npos) return fail("HELP/TYPE without a name and text");
        const std::string name = rest.substr(0, sp);
        const std::string arg = rest.substr(sp + 1);
        if (!ValidMetricName(name)) return fail("bad metric name");
        if (!enter(name)) return fail("family " + name + " appears twice");
        if (help) {
          if (!helped.insert(name).second) return fail("second HELP");
          if (arg.empty()) return fail("empty HELP");
          for (size_t i = 0; i < arg.size(); ++i) {
            if (arg[i] == '\\' &&
                (i + 1 == arg.size() || (arg[i + 1] != '\\' && arg[i + 1] != 'n'))) {
              return fail("bad escape in HELP");
            }
            if (arg[i] == '\\') ++i;
          }
          out->families[name].help = arg;
        } else {
          if (!typed.insert(name).second) return fail("second TYPE");
          if (arg != "counter" && arg != "gauge" && arg != "histogram" && arg != "summary" &&
              arg != "untyped") {
            return fail("unknown type '" + arg + "'");
          }
          out->families[name].type = arg;
        }
      } else if (line.rfind("# ", 0) != 0 && line != "#") {
        return fail("comment without a space after '#'");
      }
      continue;
    }
    // A sample.
    size_t i = 0;
    while (i < line.size() && NameChar(line[i])) ++i;
    Sample s;
    s.name = line.substr(0, i);
    if (!ValidMetricName(s.name)) return fail("bad metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      bool first = true;
      while (true) {
        if (i >= line.size()) return fail("unterminated labels");
        if (line[i] == '}') {
          if (!first) return fail("trailing comma in labels");  // we never write one
          ++i;
          break;
        }
        size_t j = i;
        while (j < line.size() && line[j] != '=') ++j;
        const std::string lname = line.substr(i, j - i);
        if (!ValidLabelName(lname)) return fail("bad label name '" + lname + "'");
        if (j + 1 >= line.size() || line[j + 1] != '"') return fail("label value not quoted");
        j += 2;
        std::string value;
        bool closed_quote = false;
        while (j < line.size()) {
          const char c = line[j];
          if (c == '"') {
            closed_quote = true;
            ++j;
            break;
          }
          if (c == '\\') {
            if (j + 1 >= line.size()) return fail("backslash at the end of a label value");
            const char e = line[j + 1];
            if (e == '\\') {
              value += '\\';
            } else if (e == '"') {
              value += '"';
            } else if (e == 'n') {
              value += '\n';
            } else {
              return fail(std::string("bad escape \\") + e + " in a label value");
            }
            j += 2;
            continue;
          }
          value += c;
          ++j;
        }
        if (!closed_quote) return fail("unterminated label value");
        if (!ValidUtf8(value)) return fail("label value is not UTF-8");
        if (!s.labels.emplace(lname, value).second) return fail("label " + lname + " twice");
        first = false;
        if (j < line.size() && line[j] == ',') {
          ++j;
          if (j < line.size() && line[j] == '}') return fail("trailing comma in labels");
        } else if (j >= line.size() || line[j] != '}') {
          return fail("expected ',' or '}' after a label");
        }
        i = j;
        if (line[i] == '}') {
          ++i;
          break;
        }
      }
    }
    if (i >= line.size() || line[i] != ' ') return fail("no space before the value");
    const std::string value_text = line.substr(i + 1);
    if (value_text.find(' ') != std::string::npos) return fail("a timestamp or trailing text");
    if (!ParseValue(value_text, &s.value)) return fail("bad value '" + value_text + "'");

    // Its family.
    std::string family = s.name;
    std::string part;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sx = suffix;
      if (s.name.size() > sx.size() &&
          s.name.compare(s.name.size() - sx.size(), sx.size(), sx) == 0) {
        const std::string base = s.name.substr(0, s.name.size() - sx.size());
        auto f = out->families.find(base);
        if (f != out->families.end() && f->second.type == "histogram") {
          family = base;
          part = sx;
        }
      }
    }
    if (!typed.count(family)) return fail("sample before (or without) the TYPE of " + family);
    if (!helped.count(family)) return fail("sample before (or without) the HELP of " + family);
    if (!enter(family)) return fail("family " + family + " appears twice");
    const std::string type = out->families[family].type;
    if (type == "histogram" && part.empty()) return fail("histogram sample without a suffix");
    if (type == "counter") {
      if (family.size() < 6 || family.compare(family.size() - 6, 6, "_total") != 0) {
        return fail("counter not named *_total");
      }
      if (!(s.value >= 0)) return fail("negative or NaN counter");
    }
    std::string key = s.name;
    for (const auto& [k, v] : s.labels) key += "\x1f" + k + "=" + v;
    if (!series.insert(key).second) return fail("series appears twice");
    if (type == "histogram") {
      std::map<std::string, std::string> rest = s.labels;
      std::string le;
      if (part == "_bucket") {
        auto it = rest.find("le");
        if (it == rest.end()) return fail("bucket without le");
        le = it->second;
        rest.erase(it);
      } else if (s.labels.count("le")) {
        return fail("le on " + part);
      }
      std::string hkey = family;
      for (const auto& [k, v] : rest) hkey += "\x1f" + k + "=" + v;
      Hist& h = hists[hkey];
      if (part == "_bucket") {
        double bound;
        if (!ParseValue(le, &bound)) return fail("bad le '" + le + "'");
        if (h.has_sum || h.has_count) return fail("bucket after _sum/_count");
        if (!h.buckets.empty()) {
          if (!(bound > h.buckets.back().first)) return fail("le not ascending");
          if (s.value < h.buckets.back().second) return fail("buckets not cumulative");
        }
        h.buckets.emplace_back(bound, s.value);
      } else if (part == "_sum") {
        h.has_sum = true;
      } else {
        h.has_count = true;
        h.count = s.value;
      }
    }
    out->samples.push_back(std::move(s));
  }
  for (const auto& [key, h] : hists) {
    const std::string name = key.substr(0, key.find('\x1f'));
    if (h.buckets.empty() || !std::isinf(h.buckets.back().first)) {
      return "histogram " + name + ": no +Inf bucket";
    }
    if (!h.has_sum || !h.has_count) return "histogram " + name + ": no _sum or _count";
    if (h.buckets.back().second != h.count) {
      return "histogram " + name + ": +Inf bucket differs from _count";
    }
  }
  for (const std::string& f : helped) {
    if (!typed.count(f)) return "family " + f + " has HELP but no TYPE";
  }
  return "";
}

}  // namespace psm::promtest
