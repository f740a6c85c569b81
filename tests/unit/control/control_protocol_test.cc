// The control protocol's pieces without a server: frames (whole, split,
// truncated, oversized, over a real socket), the JSON reader/writer, error
// codes on the wire, typed records and the registry format.
#include "fs/control/control_protocol.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <string>
#include <thread>

#include "fs/json/control_json.h"

using psm::Code;
using psm::Json;
namespace ctl = psm::ctl;

namespace {

struct SocketPair {
  int fd[2] = {-1, -1};
  SocketPair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
  ~SocketPair() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  void CloseWriter() {
    ::close(fd[1]);
    fd[1] = -1;
  }
  void Send(const std::string& bytes) {
    REQUIRE(::send(fd[1], bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
};

}  // namespace

TEST_CASE("frame: encode then decode, whole and byte by byte") {
  const std::string payload = R"({"v":1,"op":"status"})";
  std::string frame = ctl::EncodeFrame(payload);
  REQUIRE(frame.size() == payload.size() + 4);
  CHECK(static_cast<unsigned char>(frame[0]) == payload.size());
  CHECK(frame[1] == 0);

  auto whole = ctl::DecodeWholeFrame(frame);
  REQUIRE(whole.ok());
  CHECK(whole.value() == payload);

  // Fed one byte at a time, the decoder asks for more until the last byte.
  std::string buf, out;
  for (size_t i = 0; i < frame.size(); ++i) {
    buf.push_back(frame[i]);
    size_t consumed = 0;
    REQUIRE(ctl::DecodeFrame(buf, &out, &consumed).ok());
    if (i + 1 < frame.size())
      CHECK(consumed == 0);
    else
      CHECK(consumed == frame.size());
  }
  CHECK(out == payload);

  // Two frames back to back, and an empty payload.
  std::string two = ctl::EncodeFrame("a") + ctl::EncodeFrame("");
  size_t consumed = 0;
  REQUIRE(ctl::DecodeFrame(two, &out, &consumed).ok());
  CHECK(out == "a");
  CHECK(consumed == 5);
  REQUIRE(ctl::DecodeFrame(std::string_view(two).substr(consumed), &out, &consumed).ok());
  CHECK(out.empty());
  CHECK(consumed == 4);
}

TEST_CASE("frame: truncated, trailing and oversized frames are rejected") {
  std::string frame = ctl::EncodeFrame("hello world");
  for (size_t cut = 0; cut < frame.size(); ++cut) {
    auto r = ctl::DecodeWholeFrame(std::string_view(frame).substr(0, cut));
    CHECK_FALSE(r.ok());
    CHECK(r.status().Is(Code::kInvalid));
    CHECK(r.status().message().find("truncated") != std::string::npos);
  }
  CHECK_FALSE(ctl::DecodeWholeFrame(frame + "x").ok());

  // A length above the limit is an error, not a request to wait for 4 GiB.
  std::string huge =
      "\xff\xff\xff\xff"
      "abc";
  std::string out;
  size_t consumed = 0;
  psm::Status st = ctl::DecodeFrame(huge, &out, &consumed);
  CHECK(st.Is(Code::kInvalid));
  CHECK(consumed == 0);
  std::string just_over = ctl::EncodeFrame("");
  uint32_t n = ctl::kMaxFrameBytes + 1;
  for (int i = 0; i < 4; ++i)
    just_over[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  CHECK(ctl::DecodeFrame(just_over, &out, &consumed).Is(Code::kInvalid));
}

TEST_CASE("frame: over a socket: whole, clean EOF, truncated header and payload") {
  std::string payload;
  bool eof = false;
  {
    SocketPair sp;
    REQUIRE(ctl::WriteFrame(sp.fd[1], "first").ok());
    REQUIRE(ctl::WriteFrame(sp.fd[1], std::string(100000, 'x')).ok());
    sp.CloseWriter();
    REQUIRE(ctl::ReadFrame(sp.fd[0], &payload, &eof).ok());
    CHECK_FALSE(eof);
    CHECK(payload == "first");
    REQUIRE(ctl::ReadFrame(sp.fd[0], &payload, &eof).ok());
    CHECK(payload.size() == 100000);
    REQUIRE(ctl::ReadFrame(sp.fd[0], &payload, &eof).ok());
    CHECK(eof);
  }
  {
    SocketPair sp;
    sp.Send(std::string("\x05\x00", 2));  // half a header
    sp.CloseWriter();
    psm::Status st = ctl::ReadFrame(sp.fd[0], &payload, &eof);
    CHECK(st.Is(Code::kIOError));
    CHECK(st.message().find("truncated") != std::string::npos);
  }
  {
    SocketPair sp;
    sp.Send(ctl::EncodeFrame("0123456789").substr(0, 9));  // header + 5 of 10 bytes
    sp.CloseWriter();
    psm::Status st = ctl::ReadFrame(sp.fd[0], &payload, &eof);
    CHECK(st.Is(Code::kIOError));
    CHECK(st.message().find("5 of 10") != std::string::npos);
  }
  {
    SocketPair sp;
    sp.Send("\xff\xff\xff\x7f");
    CHECK(ctl::ReadFrame(sp.fd[0], &payload, &eof).Is(Code::kInvalid));
  }
  {
    // Writing to a closed peer is an error, not SIGPIPE.
    SocketPair sp;
    ::close(sp.fd[0]);
    sp.fd[0] = -1;
    CHECK_FALSE(ctl::WriteFrame(sp.fd[1], "x").ok());
  }
}

TEST_CASE("json: round trip of every type, exact 64-bit integers") {
  Json j = Json::Object();
  Json arr = Json::Array();
  arr.Push(1).Push("two").Push(3.5).Push(true).Push(Json()).Push(Json::Object());
  j.Set("u64", std::numeric_limits<uint64_t>::max())
      .Set("i64", std::numeric_limits<int64_t>::min())
      .Set("neg", -42)
      .Set("dbl", 0.1)
      .Set("str", "a \"quoted\" \\ back\nslash\t\x01")
      .Set("bytes", std::string("\xff\xfe non-utf8 \xc3\xa9"))
      .Set("arr", arr)
      .Set("empty", Json::Array());
  for (int indent : {-1, 2}) {
    auto r = Json::Parse(j.Dump(indent));
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    const Json& p = r.value();
    CHECK(p.GetUint("u64") == std::numeric_limits<uint64_t>::max());
    CHECK(p.GetInt("i64") == std::numeric_limits<int64_t>::min());
    CHECK(p.GetInt("neg") == -42);
    CHECK(p.GetDouble("dbl") == 0.1);
    CHECK(p.GetString("str") == "a \"quoted\" \\ back\nslash\t\x01");
    CHECK(p.GetString("bytes") == std::string("\xff\xfe non-utf8 \xc3\xa9"));
    REQUIRE(p.Find("arr") != nullptr);
    REQUIRE(p.Find("arr")->items().size() == 6);
    CHECK(p.Find("arr")->items()[1].AsString() == "two");
    CHECK(p.Find("arr")->items()[4].is_null());
    CHECK(p.Find("empty")->is_array());
    CHECK(p.Dump() == j.Dump());
  }
  // Member order is kept; Set replaces.
  Json o = Json::Object();
  o.Set("b", 1).Set("a", 2).Set("b", 3);
  CHECK(o.Dump() == R"({"b":3,"a":2})");
  // Typed getters fall back on absent members or other types.
  CHECK(o.GetString("a", "def") == "def");
  CHECK(o.GetUint("zz", 7) == 7);
}

TEST_CASE("json: escapes and unicode") {
  auto r = Json::Parse(R"(["\u00e9\u20ac", "\ud83d\ude00", "\/\b\f\n\r\t"])");
  REQUIRE(r.ok());
  CHECK(r->items()[0].AsString() == "\xc3\xa9\xe2\x82\xac");
  CHECK(r->items()[1].AsString() == "\xf0\x9f\x98\x80");
  CHECK(r->items()[2].AsString() == "/\b\f\n\r\t");
}

TEST_CASE("json: malformed input is rejected with a position") {
  const char* bad[] = {"",     "{",           "[1,]",        "{\"a\" 1}", "{\"a\":}", "tru",
                       "01",   "1.",          "-",           "\"abc",     "\"\\x\"",  "[1 2]",
                       "{} x", "\"\\ud800\"", "\"\\udc00\"", "{1:2}",     "\"a\nb\"", "nul"};
  for (const char* b : bad) {
    auto r = Json::Parse(b);
    CHECK_MESSAGE(!r.ok(), b);
    if (!r.ok()) CHECK(r.status().message().find("byte") != std::string::npos);
  }
  std::string deep(Json::kMaxDepth + 5, '[');
  deep += std::string(Json::kMaxDepth + 5, ']');
  CHECK_FALSE(Json::Parse(deep).ok());
  std::string ok_depth(10, '[');
  ok_depth += std::string(10, ']');
  CHECK(Json::Parse(ok_depth).ok());
}

TEST_CASE("codes: every psm::Code survives the wire with its message") {
  for (int i = 1; i <= ctl::kLastCode; ++i) {
    Code c = static_cast<Code>(i);
    psm::Status st = ctl::MakeStatus(c, "message " + std::to_string(i));
    REQUIRE(st.code() == c);
    auto parsed = Json::Parse(ctl::ErrorReply(st).Dump());
    REQUIRE(parsed.ok());
    CHECK(parsed->GetBool("ok", true) == false);
    CHECK(parsed->Find("error")->GetString("name") == ctl::CodeName(c));
    psm::Status back = ctl::ReplyStatus(parsed.value());
    CHECK(back.code() == c);
    CHECK(back.message() == "message " + std::to_string(i));
  }
  // Names win over numbers; unknown names fall back on the number, then on I/O error.
  CHECK(ctl::CodeFromWire("exists", 1) == Code::kExists);
  CHECK(ctl::CodeFromWire("future_code", static_cast<int>(Code::kBusy)) == Code::kBusy);
  CHECK(ctl::CodeFromWire("future_code", 9999) == Code::kIOError);
  CHECK(ctl::ReplyStatus(ctl::OkReply()).ok());
  CHECK(ctl::ReplyStatus(Json(3)).Is(Code::kIOError));
  CHECK(ctl::ReplyStatus(Json::Object()).Is(Code::kIOError));
}

TEST_CASE("records: snapshot, stats and scan status round trip") {
  psm::SnapshotInfo s;
  s.id = 7;
  s.name = "nightly \"2024\"";
  s.epoch = (uint64_t{1} << 63) + 5;
  s.ctime_ns = 1714560000123456789;
  s.deleting = true;
  s.used_bytes = 123456789012345;
  s.referenced_bytes = 98765;
  auto sj = Json::Parse(ctl::ToJson(s).Dump());
  REQUIRE(sj.ok());
  psm::SnapshotInfo s2 = ctl::SnapshotFromJson(sj.value());
  CHECK(s2.id == s.id);
  CHECK(s2.name == s.name);
  CHECK(s2.epoch == s.epoch);
  CHECK(s2.ctime_ns == s.ctime_ns);
  CHECK(s2.deleting);
  CHECK(s2.used_bytes == s.used_bytes);
  CHECK(s2.referenced_bytes == s.referenced_bytes);

  psm::VolumeStats v;
  v.uuid = "3edec94a-c390-4759-926e-af248407d7bb";
  v.block_size = 4096;
  v.total_blocks = 1ull << 40;
  v.used_blocks = 3;
  v.free_blocks = (1ull << 40) - 3;
  v.files = 11;
  v.snapshots = 2;
  v.epoch = 9;
  v.mount_generation = 4;
  v.pending_reclaim = 1;
  psm::VolumeStats v2 = ctl::StatsFromJson(Json::Parse(ctl::ToJson(v).Dump()).value());
  CHECK(v2.uuid == v.uuid);
  CHECK(v2.block_size == v.block_size);
  CHECK(v2.total_blocks == v.total_blocks);
  CHECK(v2.used_blocks == v.used_blocks);
  CHECK(v2.free_blocks == v.free_blocks);
  CHECK(v2.files == v.files);
  CHECK(v2.snapshots == v.snapshots);
  CHECK(v2.epoch == v.epoch);
  CHECK(v2.mount_generation == v.mount_generation);
  CHECK(v2.pending_reclaim == v.pending_reclaim);

  psm::ScanStatus c;
  c.running = true;
  c.reason = "failover";
  c.percent = 42.5;
  c.ranges_per_sec = 12345.25;
  c.eta_sec = 3.75;
  c.ranges_scanned = 1000;
  c.free_blocks_found = 77;
  c.scans_completed = 3;
  c.started_ns = 1714560000000000001;
  c.finished_ns = 0;
  c.last_duration_sec = 1.5;
  c.last_error = "I/O error: metadata store: retrying";
  psm::ScanStatus c2 = ctl::ScanFromJson(Json::Parse(ctl::ToJson(c).Dump()).value());
  CHECK(c2.running);
  CHECK(c2.reason == "failover");
  CHECK(c2.percent == 42.5);
  CHECK(c2.ranges_per_sec == 12345.25);
  CHECK(c2.eta_sec == 3.75);
  CHECK(c2.ranges_scanned == 1000);
  CHECK(c2.free_blocks_found == 77);
  CHECK(c2.scans_completed == 3);
  CHECK(c2.started_ns == c.started_ns);
  CHECK(c2.last_duration_sec == 1.5);
  CHECK(c2.last_error == c.last_error);
}

TEST_CASE("registry: names carry the UUID; entries round trip") {
  const std::string uuid = "0f0e0d0c-0000-4000-8000-000000000001";
  CHECK(ctl::SocketPath("/run/psmfs", uuid) == "/run/psmfs/" + uuid + ".ctl.sock");
  CHECK(ctl::LockPath("/run/psmfs", uuid) == "/run/psmfs/" + uuid + ".ctl.lock");
  CHECK(ctl::RegistryPath("/run/psmfs", uuid) == "/run/psmfs/" + uuid + ".mount");

  ctl::MountEntry e;
  e.uuid = uuid;
  e.volume = "/srv/vol one";
  e.mountpoint = "/mnt/vol=1";
  e.pid = 4242;
  e.socket = ctl::SocketPath("/run/psmfs", uuid);
  e.host = "nas1";
  e.since = "2024-05-01T12:00:00Z";
  e.protocol = 1;
  auto r = ctl::ParseRegistry(ctl::EncodeRegistry(e) + "future_key=whatever\n");
  REQUIRE(r.ok());
  CHECK(r->uuid == e.uuid);
  CHECK(r->volume == e.volume);
  CHECK(r->mountpoint == e.mountpoint);  // '=' in a value survives
  CHECK(r->pid == 4242);
  CHECK(r->socket == e.socket);
  CHECK(r->host == "nas1");
  CHECK(r->since == e.since);
  CHECK(r->protocol == 1);
  CHECK_FALSE(ctl::ParseRegistry("volume=/x\n").ok());
}

TEST_CASE("runtime dir: PSMFS_RUNTIME_DIR wins for server and client") {
  ::setenv("PSMFS_RUNTIME_DIR", "/tmp/psm-rt-test", 1);
  CHECK(ctl::ServerRuntimeDir() == "/tmp/psm-rt-test");
  auto dirs = ctl::ClientRuntimeDirs();
  REQUIRE(dirs.size() == 1);
  CHECK(dirs[0] == "/tmp/psm-rt-test");
  ::unsetenv("PSMFS_RUNTIME_DIR");
  if (::geteuid() == 0) {
    CHECK(ctl::ServerRuntimeDir() == "/run/psmfs");
  } else {
    CHECK(ctl::ServerRuntimeDir().find("/psmfs-" + std::to_string(::geteuid())) !=
          std::string::npos);
  }
  CHECK(ctl::ClientRuntimeDirs().front() == "/run/psmfs");
}
