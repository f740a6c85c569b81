// Json's text: nlohmann::json reads (its SAX parser, straight into the Json
// tree) and writes (ordered_json, members in order). What is left here is
// the bridge between nlohmann, which reads and writes only UTF-8, and psmfs
// strings, which may hold any bytes.
//
// Bytes that are not UTF-8. A byte b >= 0x80 that is not part of a UTF-8
// sequence crosses the bridge as the private-use code point U+10FE00 + b
// (U+10FE80..U+10FEFF, UTF-8 F4 8F BA/BB xx): Dump maps such strings to
// UTF-8 before nlohmann writes them and the code points back to the raw
// bytes in its output; Parse maps the raw bytes of the text to the code
// points before nlohmann reads it and back in the strings it gets. So that
// those code points themselves survive, each byte of their own UTF-8 is
// mapped too whenever the mapping is on. It is on only for a text, or a
// tree, that holds a byte that is not UTF-8; everything else passes
// untouched. What it cannot tell apart: in a text that has raw non-UTF-8
// bytes, a \u escape of U+10FE80..U+10FEFF (\udbff\ude80..\udbff\udeff)
// reads as the raw byte.
#include "fs/json/control_json.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace psm {
namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr uint32_t kByteBase = 0x10FE00;  // + b, for b in 0x80..0xFF

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629, the rule
// nlohmann applies), 0 when there is none.
size_t Utf8Len(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0;
  };
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return at(k) >= lo && at(k) <= hi;
  };
  const unsigned c = at(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c >= 0xE1 && c <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// True at the UTF-8 of one of the code points that stand for a byte.
bool IsByteCodePoint(std::string_view s, size_t i) {
  return i + 3 < s.size() && s[i] == '\xF4' && s[i + 1] == '\x8F' &&
         (s[i + 2] == '\xBA' || s[i + 2] == '\xBB') &&
         (static_cast<unsigned char>(s[i + 3]) & 0xC0) == 0x80;
}

bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Any bytes -> UTF-8. `at`, when given, gets the output offset of every
// mapped byte (to give error positions in the caller's bytes).
std::string ToUtf8(std::string_view s, std::vector<size_t>* at = nullptr) {
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Len(s, i);
    if (n > 0 && !IsByteCodePoint(s, i)) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    if (at) at->push_back(out.size());
    const uint32_t cp = kByteBase + static_cast<unsigned char>(s[i++]);
    out.push_back('\xF4');
    out.push_back('\x8F');
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// The inverse: the byte code points of UTF-8 text back to their bytes.
std::string FromUtf8(std::string s) {
  if (s.find('\xF4') == std::string::npos) return s;
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (IsByteCodePoint(s, i)) {
      out.push_back(static_cast<char>(
          0x80 + (((static_cast<unsigned char>(s[i + 2]) & 1) << 6) | (s[i + 3] & 0x3F))));
      i += 4;
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

}  // namespace

// The friend of Json that builds and reads its private tree.
struct JsonCodec {
  static bool AllUtf8(const Json& j) {
    if (j.is_string()) return IsUtf8(j.str_);
    for (const Json& i : j.items_) {
      if (!AllUtf8(i)) return false;
    }
    for (const auto& [k, v] : j.members_) {
      if (!IsUtf8(k) || !AllUtf8(v)) return false;
    }
    return true;
  }

  static OrderedJson ToNlohmann(const Json& j, bool map) {
    switch (j.type_) {
      case Json::Type::kNull:
        return nullptr;
      case Json::Type::kBool:
        return j.bool_;
      case Json::Type::kNumber:
        if (j.num_ == Json::Num::kInt) return j.i_;
        if (j.num_ == Json::Num::kUint) return j.u_;
        return j.d_;
      case Json::Type::kString:
        return map ? ToUtf8(j.str_) : j.str_;
      case Json::Type::kArray: {
        OrderedJson a = OrderedJson::array();
        auto& v = a.get_ref<OrderedJson::array_t&>();
        v.reserve(j.items_.size());
        for (const Json& i : j.items_) v.push_back(ToNlohmann(i, map));
        return a;
      }
      case Json::Type::kObject: {
        OrderedJson o = OrderedJson::object();
        // The ordered_map's vector itself: in order, duplicates kept, no
        // search per member.
        auto& m = o.get_ref<OrderedJson::object_t&>();
        m.reserve(j.members_.size());
        for (const auto& [k, v] : j.members_)
          m.emplace_back(map ? ToUtf8(k) : k, ToNlohmann(v, map));
        return o;
      }
    }
    return nullptr;
  }

  // nlohmann's SAX events, appended to the Json tree as they come.
  struct Sax {
    bool map = false;
    Json* root = nullptr;
    std::vector<Json*> open;    // containers not closed yet, innermost last
    std::string next_key;       // the member name of the value that comes next
    bool syntax_error = false;  // from nlohmann, at error_pos
    size_t error_pos = 0;
    std::string error;

    std::string Text(std::string& s) const { return map ? FromUtf8(std::move(s)) : std::move(s); }
    Json* Place(Json v) {
      if (open.empty()) {
        *root = std::move(v);
        return root;
      }
      Json* c = open.back();
      if (c->type_ == Json::Type::kArray) {
        c->items_.push_back(std::move(v));
        return &c->items_.back();
      }
      c->members_.emplace_back(std::move(next_key), std::move(v));
      return &c->members_.back().second;
    }
    bool Close() {
      open.pop_back();
      return true;
    }
    bool Open(Json v) {
      if (open.size() >= static_cast<size_t>(Json::kMaxDepth)) {
        error = "nested deeper than " + std::to_string(Json::kMaxDepth) + " levels";
        return false;
      }
      // A container's siblings come after it closes, so the pointer stays valid.
      open.push_back(Place(std::move(v)));
      return true;
    }

    bool Value(Json v) {
      Place(std::move(v));
      return true;
    }
    bool null() { return Value(Json()); }
    bool boolean(bool b) { return Value(Json(b)); }
    bool number_integer(int64_t v) { return Value(Json(v)); }
    bool number_unsigned(uint64_t v) { return Value(Json(v)); }
    bool number_float(double v, const std::string&) { return Value(Json(v)); }
    bool string(std::string& s) { return Value(Json(Text(s))); }
    bool binary(nlohmann::json::binary_t&) { return false; }  // not in JSON text
    bool start_object(size_t) { return Open(Json::Object()); }
    bool start_array(size_t) { return Open(Json::Array()); }
    bool key(std::string& k) {
      next_key = Text(k);
      return true;
    }
    bool end_object() { return Close(); }
    bool end_array() { return Close(); }
    bool parse_error(size_t position, const std::string&, const nlohmann::json::exception& ex) {
      syntax_error = true;
      error_pos = position;
      // "[json.exception.parse_error.101] parse error at line 1, column 4: why"
      std::string what = ex.what();
      const size_t p = what.find(": ", what.find("parse error"));
      error = p == std::string::npos ? what : what.substr(p + 2);
      if (map) error = FromUtf8(std::move(error));
      return false;
    }
  };
};

Json::Json(double v) : type_(Type::kNumber), num_(Num::kDouble), d_(std::isfinite(v) ? v : 0) {}

uint64_t Json::AsUint(uint64_t def) const {
  if (!is_number()) return def;
  switch (num_) {
    case Num::kUint:
      return u_;
    case Num::kInt:
      return i_ >= 0 ? static_cast<uint64_t>(i_) : def;
    case Num::kDouble:
      return d_ >= 0 && d_ < 18446744073709551616.0 ? static_cast<uint64_t>(d_) : def;
  }
  return def;
}

int64_t Json::AsInt(int64_t def) const {
  if (!is_number()) return def;
  switch (num_) {
    case Num::kInt:
      return i_;
    case Num::kUint:
      return u_ <= static_cast<uint64_t>(INT64_MAX) ? static_cast<int64_t>(u_) : def;
    case Num::kDouble:
      return std::fabs(d_) < 9.2e18 ? static_cast<int64_t>(d_) : def;
  }
  return def;
}

double Json::AsDouble(double def) const {
  if (!is_number()) return def;
  switch (num_) {
    case Num::kInt:
      return static_cast<double>(i_);
    case Num::kUint:
      return static_cast<double>(u_);
    case Num::kDouble:
      return d_;
  }
  return def;
}

std::string Json::Dump(int indent) const {
  const bool map = !JsonCodec::AllUtf8(*this);
  // ensure_ascii off: UTF-8 goes out as it is, as before. After the mapping
  // every string is UTF-8, so the error handler has nothing to act on.
  std::string out = JsonCodec::ToNlohmann(*this, map)
                        .dump(indent, ' ', false, OrderedJson::error_handler_t::replace);
  return map ? FromUtf8(std::move(out)) : out;
}

Result<Json> Json::Parse(std::string_view text) {
  Json out;
  JsonCodec::Sax sax;
  sax.root = &out;
  sax.map = !IsUtf8(text);
  std::vector<size_t> mapped_at;
  const std::string mapped = sax.map ? ToUtf8(text, &mapped_at) : std::string();
  try {
    if (nlohmann::json::sax_parse(sax.map ? std::string_view(mapped) : text, &sax)) return out;
  } catch (const nlohmann::json::exception& e) {  // none expected: errors come to Sax
    return Status::Invalid(std::string("malformed JSON: ") + e.what());
  }
  if (!sax.syntax_error) return Status::Invalid("malformed JSON: " + sax.error);
  // nlohmann counts characters read; the offset of the last one, in the
  // caller's bytes (a mapped byte is 4 in the text nlohmann read).
  size_t pos = sax.error_pos > 0 ? sax.error_pos - 1 : 0;
  size_t before = 0;
  while (before < mapped_at.size() && mapped_at[before] < pos) ++before;
  pos -= 3 * before;
  return Status::Invalid("malformed JSON at byte " + std::to_string(pos) + ": " + sax.error);
}

}  // namespace psm
