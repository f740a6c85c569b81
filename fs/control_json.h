// Json: a tiny JSON value with a writer and a reader, for the control
// protocol (fs/control_protocol.h) and `psmctl --json`. No external
// dependency.
//
// What it does and does not do:
//   * Objects keep their members in insertion order (output is stable).
//   * Numbers are kept as their text, so a uint64 such as a block count or an
//     epoch survives a round trip exactly; AsUint/AsInt/AsDouble convert on
//     demand.
//   * Strings are byte strings. The writer escapes '"', '\\' and control
//     characters and passes every other byte through unchanged (snapshot
//     names are file names: any bytes but '/' and NUL, not always UTF-8);
//     the reader accepts raw bytes and \uXXXX escapes (surrogate pairs become
//     UTF-8).
//   * Parse() rejects trailing garbage, nesting deeper than kMaxDepth and
//     anything that is not JSON, with a message naming the byte offset.
//
// Header-only on purpose: the server (psm_fs) and the client library
// (psm_client, which links only psm_meta) share it.
//
// Thread safety: a value type; concurrent const use is safe.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meta/status.h"

namespace psm {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  static constexpr int kMaxDepth = 64;

  Json() = default;                               // null
  Json(bool b) : type_(Type::kBool), bool_(b) {}  // NOLINT: implicit by design
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Json(T v) : type_(Type::kNumber), text_(std::to_string(v)) {}       // NOLINT
  Json(double v) : type_(Type::kNumber), text_(FormatDouble(v)) {}    // NOLINT
  Json(const char* s) : type_(Type::kString), text_(s) {}             // NOLINT
  Json(std::string s) : type_(Type::kString), text_(std::move(s)) {}  // NOLINT
  Json(std::string_view s) : type_(Type::kString), text_(s) {}        // NOLINT

  static Json Array() {
    Json j;
    j.type_ = Type::kArray;
    return j;
  }
  static Json Object() {
    Json j;
    j.type_ = Type::kObject;
    return j;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // ---- objects ----
  // Sets (or replaces) a member; turns a null into an object. Returns *this.
  Json& Set(std::string_view key, Json value) {
    if (type_ == Type::kNull) type_ = Type::kObject;
    for (auto& m : members_) {
      if (m.first == key) {
        m.second = std::move(value);
        return *this;
      }
    }
    members_.emplace_back(std::string(key), std::move(value));
    return *this;
  }
  // The member named `key`, or null when absent or not an object.
  const Json* Find(std::string_view key) const {
    for (const auto& m : members_) {
      if (m.first == key) return &m.second;
    }
    return nullptr;
  }
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }

  // Typed member getters: `def` when absent or of another type.
  std::string GetString(std::string_view key, std::string def = {}) const {
    const Json* j = Find(key);
    return j && j->is_string() ? j->text_ : def;
  }
  uint64_t GetUint(std::string_view key, uint64_t def = 0) const {
    const Json* j = Find(key);
    return j ? j->AsUint(def) : def;
  }
  int64_t GetInt(std::string_view key, int64_t def = 0) const {
    const Json* j = Find(key);
    return j ? j->AsInt(def) : def;
  }
  double GetDouble(std::string_view key, double def = 0) const {
    const Json* j = Find(key);
    return j ? j->AsDouble(def) : def;
  }
  bool GetBool(std::string_view key, bool def = false) const {
    const Json* j = Find(key);
    return j && j->is_bool() ? j->bool_ : def;
  }

  // ---- arrays ----
  // Appends; turns a null into an array. Returns *this.
  Json& Push(Json value) {
    if (type_ == Type::kNull) type_ = Type::kArray;
    items_.push_back(std::move(value));
    return *this;
  }
  const std::vector<Json>& items() const { return items_; }

  // ---- scalars ----
  bool AsBool(bool def = false) const { return is_bool() ? bool_ : def; }
  const std::string& AsString() const { return text_; }  // "" unless string/number
  uint64_t AsUint(uint64_t def = 0) const {
    if (!is_number()) return def;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
    if (ec == std::errc() && p == text_.data() + text_.size()) return v;
    double d = AsDouble(-1);
    return d >= 0 && d < 18446744073709551616.0 ? static_cast<uint64_t>(d) : def;
  }
  int64_t AsInt(int64_t def = 0) const {
    if (!is_number()) return def;
    int64_t v = 0;
    auto [p, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
    if (ec == std::errc() && p == text_.data() + text_.size()) return v;
    double d = AsDouble(NAN);
    return std::isfinite(d) && std::fabs(d) < 9.2e18 ? static_cast<int64_t>(d) : def;
  }
  double AsDouble(double def = 0) const {
    if (!is_number()) return def;
    double v = 0;
    auto [p, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
    return ec == std::errc() ? v : def;
  }

  // Compact text (indent < 0) or pretty text with `indent` spaces per level.
  std::string Dump(int indent = -1) const {
    std::string out;
    DumpTo(&out, indent, 0);
    return out;
  }

  static Result<Json> Parse(std::string_view text) {
    Parser p{text};
    Json j;
    Status st = p.Value(&j, 0);
    if (!st.ok()) return st;
    p.SkipSpace();
    if (p.pos != text.size()) return p.Error("trailing characters");
    return j;
  }

 private:
  static std::string FormatDouble(double v) {
    if (!std::isfinite(v)) return "0";
    char buf[64];
    auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    return ec == std::errc() ? std::string(buf, p) : "0";
  }

  static void Escape(std::string* out, std::string_view s) {
    out->push_back('"');
    for (unsigned char c : s) {
      switch (c) {
        case '"':
          out->append("\\\"");
          break;
        case '\\':
          out->append("\\\\");
          break;
        case '\n':
          out->append("\\n");
          break;
        case '\r':
          out->append("\\r");
          break;
        case '\t':
          out->append("\\t");
          break;
        case '\b':
          out->append("\\b");
          break;
        case '\f':
          out->append("\\f");
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out->append(buf);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
    }
    out->push_back('"');
  }

  static void Newline(std::string* out, int indent, int level) {
    if (indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent * level), ' ');
  }

  void DumpTo(std::string* out, int indent, int level) const {
    switch (type_) {
      case Type::kNull:
        out->append("null");
        break;
      case Type::kBool:
        out->append(bool_ ? "true" : "false");
        break;
      case Type::kNumber:
        out->append(text_);
        break;
      case Type::kString:
        Escape(out, text_);
        break;
      case Type::kArray:
        out->push_back('[');
        for (size_t i = 0; i < items_.size(); ++i) {
          if (i) out->push_back(',');
          Newline(out, indent, level + 1);
          items_[i].DumpTo(out, indent, level + 1);
        }
        if (!items_.empty()) Newline(out, indent, level);
        out->push_back(']');
        break;
      case Type::kObject:
        out->push_back('{');
        for (size_t i = 0; i < members_.size(); ++i) {
          if (i) out->push_back(',');
          Newline(out, indent, level + 1);
          Escape(out, members_[i].first);
          out->append(indent < 0 ? ":" : ": ");
          members_[i].second.DumpTo(out, indent, level + 1);
        }
        if (!members_.empty()) Newline(out, indent, level);
        out->push_back('}');
        break;
    }
  }

  struct Parser {
    std::string_view s;
    size_t pos = 0;

    Status Error(const char* what) const {
      return Status::Invalid("malformed JSON at byte " + std::to_string(pos) + ": " + what);
    }
    void SkipSpace() {
      while (pos < s.size() &&
             (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r'))
        ++pos;
    }
    bool Literal(std::string_view lit) {
      if (s.substr(pos, lit.size()) != lit) return false;
      pos += lit.size();
      return true;
    }
    Status Value(Json* out, int depth) {
      if (depth > kMaxDepth) return Error("nested too deeply");
      SkipSpace();
      if (pos >= s.size()) return Error("unexpected end");
      char c = s[pos];
      if (c == '{') return ObjectValue(out, depth);
      if (c == '[') return ArrayValue(out, depth);
      if (c == '"') {
        out->type_ = Type::kString;
        return String(&out->text_);
      }
      if (c == 't' && Literal("true")) {
        *out = Json(true);
        return Status::Ok();
      }
      if (c == 'f' && Literal("false")) {
        *out = Json(false);
        return Status::Ok();
      }
      if (c == 'n' && Literal("null")) {
        *out = Json();
        return Status::Ok();
      }
      if (c == '-' || (c >= '0' && c <= '9')) return Number(out);
      return Error("unexpected character");
    }
    Status Number(Json* out) {
      size_t start = pos;
      auto digits = [&] {
        size_t b = pos;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
        return pos > b;
      };
      if (s[pos] == '-') ++pos;
      if (pos < s.size() && s[pos] == '0') {
        ++pos;
      } else if (!digits()) {
        return Error("bad number");
      }
      if (pos < s.size() && s[pos] == '.') {
        ++pos;
        if (!digits()) return Error("bad number");
      }
      if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
        ++pos;
        if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) ++pos;
        if (!digits()) return Error("bad number");
      }
      out->type_ = Type::kNumber;
      out->text_ = std::string(s.substr(start, pos - start));
      return Status::Ok();
    }
    static void AppendUtf8(std::string* out, uint32_t cp) {
      if (cp < 0x80) {
        out->push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else {
        out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
    }
    bool Hex4(uint32_t* v) {
      if (pos + 4 > s.size()) return false;
      *v = 0;
      for (int i = 0; i < 4; ++i) {
        char c = s[pos++];
        *v <<= 4;
        if (c >= '0' && c <= '9')
          *v |= static_cast<uint32_t>(c - '0');
        else if (c >= 'a' && c <= 'f')
          *v |= static_cast<uint32_t>(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
          *v |= static_cast<uint32_t>(c - 'A' + 10);
        else
          return false;
      }
      return true;
    }
    Status String(std::string* out) {
      ++pos;  // opening quote
      out->clear();
      while (true) {
        if (pos >= s.size()) return Error("unterminated string");
        char c = s[pos++];
        if (c == '"') return Status::Ok();
        if (static_cast<unsigned char>(c) < 0x20) return Error("control character in string");
        if (c != '\\') {
          out->push_back(c);
          continue;
        }
        if (pos >= s.size()) return Error("unterminated string");
        char e = s[pos++];
        switch (e) {
          case '"':
            out->push_back('"');
            break;
          case '\\':
            out->push_back('\\');
            break;
          case '/':
            out->push_back('/');
            break;
          case 'b':
            out->push_back('\b');
            break;
          case 'f':
            out->push_back('\f');
            break;
          case 'n':
            out->push_back('\n');
            break;
          case 'r':
            out->push_back('\r');
            break;
          case 't':
            out->push_back('\t');
            break;
          case 'u': {
            uint32_t cp = 0;
            if (!Hex4(&cp)) return Error("bad \\u escape");
            if (cp >= 0xD800 && cp < 0xDC00) {
              uint32_t lo = 0;
              if (!Literal("\\u") || !Hex4(&lo) || lo < 0xDC00 || lo >= 0xE000)
                return Error("unpaired surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
              return Error("unpaired surrogate");
            }
            AppendUtf8(out, cp);
            break;
          }
          default:
            return Error("bad escape");
        }
      }
    }
    Status ArrayValue(Json* out, int depth) {
      ++pos;
      *out = Json::Array();
      SkipSpace();
      if (pos < s.size() && s[pos] == ']') {
        ++pos;
        return Status::Ok();
      }
      while (true) {
        Json item;
        PSM_RETURN_IF_ERROR(Value(&item, depth + 1));
        out->items_.push_back(std::move(item));
        SkipSpace();
        if (pos >= s.size()) return Error("unterminated array");
        if (s[pos] == ',') {
          ++pos;
          continue;
        }
        if (s[pos] == ']') {
          ++pos;
          return Status::Ok();
        }
        return Error("expected ',' or ']'");
      }
    }
    Status ObjectValue(Json* out, int depth) {
      ++pos;
      *out = Json::Object();
      SkipSpace();
      if (pos < s.size() && s[pos] == '}') {
        ++pos;
        return Status::Ok();
      }
      while (true) {
        SkipSpace();
        if (pos >= s.size() || s[pos] != '"') return Error("expected a member name");
        std::string key;
        PSM_RETURN_IF_ERROR(String(&key));
        SkipSpace();
        if (pos >= s.size() || s[pos] != ':') return Error("expected ':'");
        ++pos;
        Json value;
        PSM_RETURN_IF_ERROR(Value(&value, depth + 1));
        // Duplicate names are kept (Find returns the first): no quadratic
        // work on hostile input.
        out->members_.emplace_back(std::move(key), std::move(value));
        SkipSpace();
        if (pos >= s.size()) return Error("unterminated object");
        if (s[pos] == ',') {
          ++pos;
          continue;
        }
        if (s[pos] == '}') {
          ++pos;
          return Status::Ok();
        }
        return Error("expected ',' or '}'");
      }
    }
  };

  Type type_ = Type::kNull;
  bool bool_ = false;
  std::string text_;  // string bytes, or a number's text
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace psm
