// Json: the JSON value of the control protocol (fs/control/control_protocol.h), the
// stream header and `psmctl --json`. A thin facade: the text is read and
// written by nlohmann::json (control_json.cc, library psm_json); this class
// is the tree callers build and walk, with the API they have always used
// (Find returns a pointer into the tree, items() a vector), which a wrapper
// around nlohmann's own tree could not give without copying.
//
// What it does and does not do:
//   * Objects keep their members in insertion order (output is stable).
//   * Integers are kept as int64 or uint64, so a block count, an inode number
//     or a nanosecond time survives a round trip exactly; fractions as
//     double, printed with the fewest digits that read back as the same
//     double (nlohmann: always with a fraction or an exponent, "0.0").
//     AsUint/AsInt/AsDouble convert on demand; a non-finite double is 0.
//   * Strings are byte strings. Snapshot names are file names (any bytes but
//     '/' and NUL), not always UTF-8: bytes that are not UTF-8 are written and
//     read raw, as every psmfs has done (see Parse and Dump in control_json.cc
//     for how they pass through nlohmann, which speaks only UTF-8).
//   * Parse() rejects trailing garbage, nesting deeper than kMaxDepth and
//     anything that is not JSON, with a message naming the byte offset; it
//     never throws for bad input. Duplicate member names are kept (Find
//     returns the first): no quadratic work on hostile input.
//
// The header needs no JSON library: programs built against the installed
// client library link libpsm_json.a and nothing else.
//
// Thread safety: a value type; concurrent const use is safe.
#pragma once

#include <cstdint>
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
  Json(T v) : type_(Type::kNumber) {  // NOLINT
    if constexpr (std::is_signed_v<T>) {
      num_ = Num::kInt;
      i_ = v;
    } else {
      num_ = Num::kUint;
      u_ = v;
    }
  }
  Json(double v);                                                    // NOLINT
  Json(const char* s) : type_(Type::kString), str_(s) {}             // NOLINT
  Json(std::string s) : type_(Type::kString), str_(std::move(s)) {}  // NOLINT
  Json(std::string_view s) : type_(Type::kString), str_(s) {}        // NOLINT

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
    return j && j->is_string() ? j->str_ : def;
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
  const std::string& AsString() const { return str_; }  // "" unless a string
  // A number as uint64: integers in range exactly, fractions truncated;
  // `def` for negative, too large or not a number.
  uint64_t AsUint(uint64_t def = 0) const;
  // A number as int64 (as AsUint).
  int64_t AsInt(int64_t def = 0) const;
  double AsDouble(double def = 0) const;

  // Compact text (indent < 0) or pretty text with `indent` spaces per level.
  std::string Dump(int indent = -1) const;

  static Result<Json> Parse(std::string_view text);

 private:
  friend struct JsonCodec;  // control_json.cc: the bridge to nlohmann::json
  enum class Num : uint8_t { kInt, kUint, kDouble };

  Type type_ = Type::kNull;
  Num num_ = Num::kInt;
  bool bool_ = false;
  int64_t i_ = 0;
  uint64_t u_ = 0;
  double d_ = 0;
  std::string str_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace psm
