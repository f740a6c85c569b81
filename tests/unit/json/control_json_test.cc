// psm::Json over nlohmann::json (fs/json/control_json.{h,cc}) speaks the wire
// format every psmfs has spoken: texts as the hand-written writer wrote them
// (written out below from its rules, not produced by code) read the same and
// are written back byte for byte; strings carry any bytes, raw; integers are
// exact; doubles read back as the same double; hostile input is refused
// quickly and never throws. Against a server: an old client's raw request
// with a non-UTF-8 name, and garbage, which gets an `invalid` reply.
#include "fs/json/control_json.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fs/control/control_protocol.h"
#include "fs/control/control_server.h"
#include "fs/core/filesystem.h"

using psm::Code;
using psm::Json;
namespace ctl = psm::ctl;

namespace {

Json MustParse(std::string_view text) {
  auto r = Json::Parse(text);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return r.value();
}

// Equal trees: same types, values, members in the same order.
bool Same(const Json& a, const Json& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Json::Type::kNull:
      return true;
    case Json::Type::kBool:
      return a.AsBool() == b.AsBool();
    case Json::Type::kNumber: {
      const double da = a.AsDouble(), db = b.AsDouble();
      return a.AsInt(-7) == b.AsInt(-7) && a.AsUint(7) == b.AsUint(7) &&
             std::memcmp(&da, &db, sizeof(double)) == 0;
    }
    case Json::Type::kString:
      return a.AsString() == b.AsString();
    case Json::Type::kArray:
      if (a.items().size() != b.items().size()) return false;
      for (size_t i = 0; i < a.items().size(); ++i) {
        if (!Same(a.items()[i], b.items()[i])) return false;
      }
      return true;
    case Json::Type::kObject:
      if (a.members().size() != b.members().size()) return false;
      for (size_t i = 0; i < a.members().size(); ++i) {
        if (a.members()[i].first != b.members()[i].first ||
            !Same(a.members()[i].second, b.members()[i].second))
          return false;
      }
      return true;
  }
  return false;
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

TEST_CASE("json: texts of the old writer read the same and are written back byte for byte") {
  // Compact texts by the hand-written writer's rules: members in insertion
  // order, ',' and ':' without spaces, integers as decimal, '"' '\\' and the
  // control characters escaped (\n \r \t \b \f, others \u00XX lowercase),
  // every other byte raw, UTF-8 or not.
  const std::vector<std::string> texts = {
      R"({"v":1,"op":"snapshot.create","name":"nightly-2024-05-01"})",
      R"({"v":1,"ok":true,"snapshot":{"id":3,"name":"nightly","epoch":7,"created_ns":1714560000123456789,"deleting":false,"used_bytes":1048576,"referenced_bytes":73400320}})",
      R"({"v":1,"ok":false,"error":{"code":2,"name":"exists","message":"a snapshot named 'x' already exists"}})",
      R"({"max":18446744073709551615,"min":-9223372036854775808,"zero":0,"neg":-1})",
      R"({"a":[],"b":{},"c":[[],[{}],null,true,false],"d":""})",
      R"({"s":"quote \" back \\ nl \n cr \r tab \t bs \b ff \f one \u0001 us \u001f nul \u0000"})",
      "{\"name\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",  // UTF-8
      "{\"name\":\"caf\xe9 s2-\xe9t\xe9 \xff\xfe\x80 \xc3\"}",     // Latin-1, stray bytes
      "{\"caf\xe9\":\"\xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf\"}",  // surrogate, >U+10FFFF, overlong
      "{\"pua\":\"\xf4\x8f\xba\x80\xf4\x8f\xbb\xbf\"}",            // U+10FE80, U+10FEFF
      "{\"pua\":\"\xf4\x8f\xba\x80 \xff \xf4\x8f\xbb\xbf\"}",      // and a raw byte
      "[\"\xf4\x8f\xba\",\"\xf4\x8f\"]",                           // their prefixes, cut
  };
  for (const std::string& t : texts) {
    INFO(t);
    Json j = MustParse(t);
    const std::string out = j.Dump();
    CHECK(out == t);
    CHECK(Same(MustParse(out), j));
  }
  // Strings come out with the bytes that went in.
  Json j = MustParse(texts[7]);
  CHECK(j.GetString("name") == "caf\xe9 s2-\xe9t\xe9 \xff\xfe\x80 \xc3");
  CHECK(MustParse(texts[8]).GetString("caf\xe9") == "\xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf");
  CHECK(MustParse(texts[9]).GetString("pua") == "\xf4\x8f\xba\x80\xf4\x8f\xbb\xbf");
  CHECK(MustParse(texts[10]).GetString("pua") == "\xf4\x8f\xba\x80 \xff \xf4\x8f\xbb\xbf");
  static constexpr char kEscaped[] =
      "quote \" back \\ nl \n cr \r tab \t bs \b ff \f one \x01 us \x1f nul \0";
  CHECK(MustParse(texts[5]).GetString("s") == std::string(kEscaped, sizeof(kEscaped) - 1));
  CHECK(MustParse(texts[3]).GetUint("max") == std::numeric_limits<uint64_t>::max());
  CHECK(MustParse(texts[3]).GetInt("min") == std::numeric_limits<int64_t>::min());
}

TEST_CASE("json: the pretty form of psmctl --json is unchanged") {
  Json j = Json::Object();
  j.Set("name", "s1").Set("epoch", 7).Set("list", Json::Array().Push(1).Push("x"));
  j.Set("empty_list", Json::Array()).Set("empty_obj", Json::Object());
  j.Set("obj", Json::Object().Set("k", true));
  CHECK(j.Dump(2) ==
        "{\n"
        "  \"name\": \"s1\",\n"
        "  \"epoch\": 7,\n"
        "  \"list\": [\n"
        "    1,\n"
        "    \"x\"\n"
        "  ],\n"
        "  \"empty_list\": [],\n"
        "  \"empty_obj\": {},\n"
        "  \"obj\": {\n"
        "    \"k\": true\n"
        "  }\n"
        "}");
}

TEST_CASE("json: any bytes in keys and values survive a round trip; raw where they were raw") {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 2000; ++round) {
    Json j = Json::Object();
    std::vector<std::string> vals;
    for (int m = 0; m < 3; ++m) {
      std::string k = RandomBytes(rng, rng() % 12);
      std::string v = RandomBytes(rng, rng() % 40);
      j.Set(k, v);
    }
    Json arr = Json::Array().Push(RandomBytes(rng, rng() % 20)).Push(j);
    for (int indent : {-1, 2}) {
      Json back = MustParse(arr.Dump(indent));
      REQUIRE(Same(back, arr));
    }
  }
  // A byte that needs no escape is written as itself, UTF-8 or not.
  for (int b = 0x20; b < 0x100; ++b) {
    if (b == '"' || b == '\\' || b == 0x7f) continue;
    const std::string s(1, static_cast<char>(b));
    CHECK(Json(s).Dump() == "\"" + s + "\"");
    CHECK(MustParse("\"" + s + "\"").AsString() == s);
  }
  // 0x7f: raw now (the old writer wrote \u007f); both read as the byte.
  CHECK(MustParse(Json("\x7f").Dump()).AsString() == "\x7f");
  CHECK(MustParse("\"\\u007f\"").AsString() == "\x7f");
}

TEST_CASE("json: integers are exact, doubles read back as the same double") {
  const uint64_t u[] = {0, 1, 4095, (1ull << 53) + 1, (1ull << 63) + 5, UINT64_MAX};
  for (uint64_t v : u) {
    Json back = MustParse(Json::Array().Push(v).Dump());
    CHECK(back.items()[0].AsUint() == v);
  }
  const int64_t i[] = {-1, -4096, -(1ll << 53) - 1, INT64_MIN, INT64_MAX};
  for (int64_t v : i) CHECK(MustParse(Json(v).Dump()).AsInt() == v);

  std::mt19937_64 rng(7);
  for (int n = 0; n < 20000; ++n) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (!std::isfinite(d)) continue;
    const double back = MustParse(Json(d).Dump()).AsDouble(12345);
    REQUIRE(std::memcmp(&back, &d, sizeof d) == 0);
  }
  for (double d : {0.0, -0.0, 0.1, 42.5, 1.0 / 3, 5e-324, 1.7976931348623157e308, 3.0})
    CHECK(MustParse(Json(d).Dump()).AsDouble(12345) == d);
  // A non-finite double is 0, as before.
  CHECK(MustParse(Json(std::numeric_limits<double>::infinity()).Dump()).AsDouble(1) == 0);

  // Conversions between kinds.
  CHECK(MustParse("3.0").AsUint() == 3);    // a double field read as an integer
  CHECK(MustParse("3").AsDouble() == 3.0);  // the old writer's 3 for a double field
  CHECK(MustParse("1e3").AsInt() == 1000);
  CHECK(MustParse("-5").AsUint(9) == 9);  // negative: not a uint
  CHECK(MustParse("18446744073709551615").AsInt(9) == 9);
  CHECK(MustParse("18446744073709551616").AsUint(9) == 9);  // past uint64
  CHECK(MustParse("18446744073709551616").AsDouble() == 18446744073709551616.0);
  CHECK(MustParse("\"12\"").AsUint(9) == 9);  // a string is not a number
  CHECK(MustParse("12").AsString().empty());
}

TEST_CASE("json: duplicate member names are kept, the first is found") {
  Json j = MustParse(R"({"a":1,"b":2,"a":3})");
  CHECK(j.GetUint("a") == 1);
  CHECK(j.members().size() == 3);
  CHECK(j.Dump() == R"({"a":1,"b":2,"a":3})");
}

TEST_CASE("json: malformed input: an error naming the byte, in the caller's bytes") {
  struct Bad {
    std::string text;
    size_t byte;
  };
  const Bad bad[] = {
      {"[1, x]", 4}, {"[\"\xff\xff\", x]", 7}, {"{\"\xe9\":1,}", 7}, {"tru", 3}, {"{} x", 3}};
  for (const Bad& b : bad) {
    INFO(b.text);
    auto r = Json::Parse(b.text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().Is(Code::kInvalid));
    CHECK(r.status().message().find("malformed JSON at byte " + std::to_string(b.byte) + ":") !=
          std::string::npos);
  }
  // Bytes that are not UTF-8 are fine inside strings only.
  CHECK_FALSE(Json::Parse("[1, \xff]").ok());
  CHECK_FALSE(Json::Parse("\xe9").ok());
  CHECK_FALSE(Json::Parse("{\"a\":1}\xff").ok());
  // Never more than kMaxDepth containers deep.
  std::string at_limit = std::string(Json::kMaxDepth, '[') + std::string(Json::kMaxDepth, ']');
  CHECK(Json::Parse(at_limit).ok());
  std::string over = "[" + at_limit + "]";
  auto r = Json::Parse(over);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("nested deeper than 64") != std::string::npos);
}

TEST_CASE("json: hostile input is cheap: 300k members, a million brackets") {
  std::string many = "{";
  for (int i = 0; i < 300000; ++i) {
    if (i) many += ',';
    many += "\"k" + std::to_string(i) + "\":" + std::to_string(i);
  }
  many += "}";
  auto t0 = std::chrono::steady_clock::now();
  Json j = MustParse(many);
  CHECK(j.members().size() == 300000);
  CHECK(j.GetUint("k299999") == 299999);
  CHECK(j.Dump() == many);
  // Linear: a quadratic reader (a search per member) takes minutes here.
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30));

  t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(Json::Parse(std::string(1000000, '[')).ok());
  CHECK_FALSE(Json::Parse(std::string(1000000, '{')).ok());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

namespace {

struct TempDir {
  std::string path;
  explicit TempDir(const char* tag) {
    std::string t = std::string("/tmp/psm-") + tag + "-XXXXXX";
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

int RawConnect(const std::string& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", socket_path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

// Sends one payload, returns the reply's bytes ("" on EOF).
std::string RawCall(int fd, const std::string& payload) {
  REQUIRE(ctl::WriteFrame(fd, payload).ok());
  std::string reply;
  bool eof = false;
  REQUIRE(ctl::ReadFrame(fd, &reply, &eof).ok());
  return eof ? "" : reply;
}

}  // namespace

TEST_CASE("json on the wire: an old client's raw bytes; garbage gets `invalid` and a hang-up") {
  TempDir rt("rt"), vol("vol"), mnt("mnt");
  ::setenv("PSMFS_RUNTIME_DIR", rt.path.c_str(), 1);
  psm::FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  REQUIRE(psm::Format(vol.path, fo).ok());
  auto fs = psm::FileSystem::Open(vol.path, psm::MountOptions{});
  REQUIRE(fs.ok());
  {
    psm::ControlServer server(fs->get(), vol.path, mnt.path);
    REQUIRE(server.Start().ok());

    // What an old psmctl sends for `snapshot create MNT $'caf\xe9'`: raw.
    const std::string name = "caf\xe9 \xff";
    int fd = RawConnect(server.socket_path());
    const std::string reply =
        RawCall(fd, "{\"op\":\"snapshot.create\",\"name\":\"" + name + "\",\"v\":1}");
    CHECK(reply.find("\"name\":\"" + name + "\"") != std::string::npos);  // raw, as before
    CHECK(ctl::ReplyStatus(MustParse(reply)).ok());
    const auto snaps = (*fs)->ListSnapshots(false);
    REQUIRE(snaps.size() == 1);
    CHECK(snaps[0].name == name);
    const std::string list = RawCall(fd, R"({"op":"snapshot.list","space":false,"v":1})");
    CHECK(list.find("\"name\":\"" + name + "\"") != std::string::npos);
    CHECK(MustParse(list).Find("snapshots")->items()[0].GetString("name") == name);
    ::close(fd);

    // Garbage, each on a connection of its own: an `invalid` reply, then EOF.
    const std::string garbage[] = {
        "not json",
        "{\"op\":\"status\",\"v\":1",  // cut short
        "{\"op\":\xff,\"v\":1}",       // a raw byte outside a string
        std::string(100000, '['),      // too deep
        "{\"op\":\"status\",\"v\":1} trailing",
        "{\"op\":\"status\",\"v\":1,\"x\":\"\\ud800\"}",                    // lone surrogate
        std::string("{\"op\":\"status\",\"v\":1,\"x\":\"") + '\0' + "\"}",  // raw NUL
    };
    for (const std::string& g : garbage) {
      INFO(g.substr(0, 40));
      fd = RawConnect(server.socket_path());
      const std::string r = RawCall(fd, g);
      REQUIRE_FALSE(r.empty());
      Json e = MustParse(r);
      CHECK(ctl::ReplyStatus(e).Is(Code::kInvalid));
      CHECK(e.Find("error")->GetString("name") == "invalid");
      CHECK(e.Find("error")->GetString("message").find("malformed JSON") != std::string::npos);
      std::string rest;
      bool eof = false;
      CHECK(ctl::ReadFrame(fd, &rest, &eof).ok());
      CHECK(eof);
      ::close(fd);
    }
    // And it still serves.
    fd = RawConnect(server.socket_path());
    CHECK(ctl::ReplyStatus(MustParse(RawCall(fd, R"({"op":"status","v":1})"))).ok());
    ::close(fd);
    server.Stop();
  }
  REQUIRE((*fs)->Close().ok());
  ::unsetenv("PSMFS_RUNTIME_DIR");
}
