// ControlServer + psm::Client over a real psm::FileSystem, without FUSE:
// the runtime directory is a temporary one (PSMFS_RUNTIME_DIR), the volume
// is formatted in a temporary directory and opened with default options.
//
// What is proven here:
//   * Start/Stop create and remove the socket (0666), registry and lock,
//     whose names carry the UUID; a stale socket is replaced; a second
//     server for the same volume is refused, naming the holder.
//   * Two Clients used from many threads at once create, list and delete
//     snapshots and read status; errors from the core (duplicate, bad name,
//     missing) arrive with their code and message; a delete list with one
//     bad name deletes nothing.
//   * Authorization as a pure function, and through Handle(): a denied
//     request changes nothing.
//   * Two servers for two volumes in one process have distinct names and do
//     not block each other: while one server's handler is held on its
//     sync point, the other answers.
//   * Malformed traffic gets an error reply, never a crash.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/client.h"
#include "fs/control/control_protocol.h"
#include "fs/control/control_server.h"
#include "fs/core/filesystem.h"
#include "meta/sync_point.h"

using psm::Code;
using psm::Json;
namespace ctl = psm::ctl;
namespace fsys = std::filesystem;

namespace {

std::string MakeTempDir(const char* tag) {
  std::string t = std::string("/tmp/psm-") + tag + "-XXXXXX";
  char* p = ::mkdtemp(t.data());
  REQUIRE(p != nullptr);
  return t;
}

// A runtime directory of our own for the duration of a test.
struct RuntimeDir {
  std::string dir = MakeTempDir("rt");
  RuntimeDir() { ::setenv("PSMFS_RUNTIME_DIR", dir.c_str(), 1); }
  ~RuntimeDir() {
    ::unsetenv("PSMFS_RUNTIME_DIR");
    std::error_code ec;
    fsys::remove_all(dir, ec);
  }
  std::set<std::string> Files() const {
    std::set<std::string> out;
    for (const auto& e : fsys::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
  }
};

// A formatted volume opened with default MountOptions, plus a plain
// directory standing in for its mount point.
struct Volume {
  std::string dir = MakeTempDir("vol");
  std::string mnt = MakeTempDir("mnt");
  std::unique_ptr<psm::FileSystem> fs;
  Volume() {
    psm::FormatOptions fo;
    fo.size_bytes = 64ull << 20;
    psm::Status st = psm::Format(dir, fo);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    auto r = psm::FileSystem::Open(dir, psm::MountOptions{});
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  ~Volume() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::error_code ec;
    fsys::remove_all(dir, ec);
    fsys::remove_all(mnt, ec);
  }
  std::set<std::string> SnapshotNames() {
    std::set<std::string> out;
    for (const auto& s : fs->ListSnapshots(false)) {
      if (!s.deleting) out.insert(s.name);
    }
    return out;
  }
};

std::unique_ptr<psm::Client> MustConnect(const std::string& path) {
  auto c = psm::Client::Connect(path);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  return std::move(c).value();
}

// A raw connection for sending what no Client would.
int RawConnect(const std::string& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", socket_path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

Json RawCall(int fd, const std::string& payload) {
  REQUIRE(ctl::WriteFrame(fd, payload).ok());
  std::string reply;
  bool eof = false;
  REQUIRE(ctl::ReadFrame(fd, &reply, &eof).ok());
  REQUIRE_FALSE(eof);
  auto j = Json::Parse(reply);
  REQUIRE(j.ok());
  return j.value();
}

#ifdef PSM_SYNC_POINTS
// Holds every request handler of one volume's server on its sync point
// until Release() (or destruction).
struct HeldHandlers {
  std::mutex mu;
  std::condition_variable cv;
  bool released = false;
  std::atomic<int> held{0};
  explicit HeldHandlers(const std::string& uuid) {
    psm::SyncPoint::SetCallback("ControlServer::Handle:" + uuid, [this] {
      ++held;
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [this] { return released; });
    });
    psm::SyncPoint::Enable();
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(mu);
      released = true;
    }
    cv.notify_all();
  }
  ~HeldHandlers() {
    Release();
    psm::SyncPoint::Disable();
    psm::SyncPoint::ClearAll();
  }
};
#endif

}  // namespace

TEST_CASE("server: names carry the UUID; socket 0666; files removed at Stop") {
  RuntimeDir rt;
  Volume vol;
  const std::string uuid = vol.fs->uuid();
  psm::ControlServer server(vol.fs.get(), vol.dir, vol.mnt);
  REQUIRE(server.Start().ok());
  CHECK(rt.Files() ==
        std::set<std::string>{uuid + ".ctl.sock", uuid + ".ctl.lock", uuid + ".mount"});
  struct stat st;
  REQUIRE(::stat(server.socket_path().c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0666);

  auto entry = ctl::ParseRegistry([&] {
    std::string s;
    std::FILE* f = std::fopen(server.registry_path().c_str(), "r");
    REQUIRE(f != nullptr);
    char buf[4096];
    size_t n = std::fread(buf, 1, sizeof(buf), f);
    std::fclose(f);
    s.assign(buf, n);
    return s;
  }());
  REQUIRE(entry.ok());
  CHECK(entry->uuid == uuid);
  CHECK(entry->volume == fsys::canonical(vol.dir).string());
  CHECK(entry->mountpoint == fsys::canonical(vol.mnt).string());
  CHECK(entry->pid == ::getpid());
  CHECK(entry->socket == server.socket_path());
  CHECK(entry->protocol == ctl::kProtocolVersion);
  CHECK_FALSE(entry->host.empty());
  CHECK_FALSE(entry->since.empty());

  // Found by volume and by mount point, with a trailing slash or a "..".
  for (const std::string& p : {vol.dir, vol.mnt, vol.mnt + "/",
                               vol.dir + "/../" + fsys::path(vol.dir).filename().string()}) {
    auto m = psm::FindMount(p);
    REQUIRE_MESSAGE(m.ok(), p);
    CHECK(m->uuid == uuid);
  }
  CHECK(psm::FindMount("/nonexistent/psm").status().Is(Code::kNotFound));

  server.Stop();
  CHECK(rt.Files().empty());
  auto gone = psm::Client::Connect(vol.dir);
  CHECK(gone.status().Is(Code::kNotFound));
  server.Stop();  // idempotent
}

TEST_CASE("server: a stale socket is replaced; a second live server is refused") {
  RuntimeDir rt;
  Volume vol;
  const std::string sock = ctl::SocketPath(rt.dir, vol.fs->uuid());
  {
    // What a killed daemon leaves: a bound socket file nobody listens on.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    ::close(fd);
  }
  psm::ControlServer first(vol.fs.get(), vol.dir, "");
  psm::Status st = first.Start();
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  auto c = MustConnect(vol.dir);
  CHECK(c->GetStatus().ok());

  psm::ControlServer second(vol.fs.get(), vol.dir, "");
  psm::Status busy = second.Start();
  CHECK(busy.Is(Code::kBusy));
  CHECK(busy.message().find("pid " + std::to_string(::getpid())) != std::string::npos);
  CHECK(c->GetStatus().ok());  // the refused one disturbed nothing

  first.Stop();
  REQUIRE(second.Start().ok());  // the lock is free again
  auto c2 = MustConnect(vol.dir);
  CHECK(c2->GetStatus().ok());
  second.Stop();
}

TEST_CASE("client: two clients from many threads create, list and delete snapshots") {
  RuntimeDir rt;
  Volume vol;
  psm::ControlServer server(vol.fs.get(), vol.dir, vol.mnt);
  REQUIRE(server.Start().ok());
  auto by_volume = MustConnect(vol.dir);
  auto by_mount = MustConnect(vol.mnt);
  CHECK(by_volume->mount().uuid == vol.fs->uuid());
  CHECK(by_volume->may_modify());  // we own the volume directory

  constexpr int kThreads = 8;
  constexpr int kPerThread = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      psm::Client* c = (t % 2 == 0) ? by_volume.get() : by_mount.get();
      for (int i = 0; i < kPerThread; ++i) {
        std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto s = c->CreateSnapshot(name);
        if (!s.ok() || s->name != name) ++failures;
        auto list = c->ListSnapshots();
        if (!list.ok()) ++failures;
        auto status = c->GetStatus();
        if (!status.ok() || status->stats.uuid != vol.fs->uuid()) ++failures;
        if (i % 2 == 1) {
          // Delete the previous one again from this thread.
          std::string prev = "t" + std::to_string(t) + "-" + std::to_string(i - 1);
          auto d = c->DeleteSnapshots({prev});
          if (!d.ok() || d->size() != 1) ++failures;
        }
        if (!c->GetScanStatus().ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);

  // What is left: the odd-numbered snapshot of each pair.
  std::set<std::string> expect;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 1; i < kPerThread; i += 2)
      expect.insert("t" + std::to_string(t) + "-" + std::to_string(i));
  }
  auto list = by_mount->ListSnapshots();
  REQUIRE(list.ok());
  std::set<std::string> got;
  for (const auto& s : list.value()) {
    if (!s.deleting) got.insert(s.name);
  }
  CHECK(got == expect);
  CHECK(vol.SnapshotNames() == expect);
  auto status = by_volume->GetStatus();
  REQUIRE(status.ok());
  CHECK(status->stats.snapshots == expect.size());
  CHECK(status->volume == fsys::canonical(vol.dir).string());

  // Errors arrive with the core's code and message.
  auto dup = by_volume->CreateSnapshot("t0-1");
  CHECK(dup.status().Is(Code::kExists));
  CHECK(dup.status().message().find("t0-1") != std::string::npos);
  CHECK(by_volume->CreateSnapshot("a/b").status().Is(Code::kInvalid));
  CHECK(by_volume->CreateSnapshot("").status().Is(Code::kInvalid));

  // A delete list with one missing or repeated name deletes nothing.
  auto missing = by_volume->DeleteSnapshots({"t0-1", "no-such-snapshot"});
  CHECK(missing.status().Is(Code::kNotFound));
  CHECK(missing.status().message().find("no-such-snapshot") != std::string::npos);
  auto twice = by_volume->DeleteSnapshots({"t1-1", "t1-1"});
  CHECK(twice.status().Is(Code::kInvalid));
  CHECK(vol.SnapshotNames() == expect);

  std::vector<std::string> all(expect.begin(), expect.end());
  auto deleted = by_mount->DeleteSnapshots(all);
  REQUIRE_MESSAGE(deleted.ok(), deleted.status().ToString());
  CHECK(deleted->size() == all.size());
  CHECK(vol.SnapshotNames().empty());
  CHECK(by_volume->Sync().ok());
  auto scan = by_volume->StartScan();
  CHECK(scan.ok());
  server.Stop();
}

TEST_CASE("authorization: root and the owner may modify, others may only look") {
  using S = psm::ControlServer;
  for (auto op : {ctl::kOpSnapshotCreate, ctl::kOpSnapshotDelete, ctl::kOpScanStart,
                  ctl::kOpSync, ctl::kOpRestore, ctl::kOpReceive, ctl::kOpSend}) {
    CHECK(S::IsModifying(op) == (op != ctl::kOpSend));  // send changes nothing, but reads all
    CHECK(S::Authorize(op, 0, 1000).ok());
    CHECK(S::Authorize(op, 1000, 1000).ok());
    psm::Status denied = S::Authorize(op, 1001, 1000);
    CHECK(denied.Is(Code::kPermission));
    CHECK(denied.message() ==
          "permission denied: " + std::string(op) +
              " requires root or the volume owner (uid 1000); you are uid 1001");
  }
  for (auto op : {ctl::kOpHello, ctl::kOpStatus, ctl::kOpSnapshotList, ctl::kOpScanStatus}) {
    CHECK_FALSE(S::IsModifying(op));
    CHECK(S::Authorize(op, 1001, 1000).ok());
  }

  // Through the request path: a stranger's requests are refused and change nothing.
  RuntimeDir rt;
  Volume vol;
  REQUIRE(vol.fs->CreateSnapshot("keep").ok());
  psm::ControlServer server(vol.fs.get(), vol.dir, "");
  REQUIRE(server.Start().ok());
  struct stat st;
  REQUIRE(::stat(vol.dir.c_str(), &st) == 0);
  psm::PeerCred stranger{st.st_uid + 4321, 100, 1};
  REQUIRE(stranger.uid != 0);
  // The mount's own scan must be over, or its end looks like a scan the
  // stranger started (seen under ASan, where it takes longer).
  REQUIRE(vol.fs->WaitScan(60));
  const uint64_t scans_before = vol.fs->GetScanStatus().scans_completed;

  auto call = [&](Json req) { return server.Handle(req, stranger); };
  Json create = ctl::Request(ctl::kOpSnapshotCreate);
  create.Set("name", "intruder");
  Json del = ctl::Request(ctl::kOpSnapshotDelete);
  del.Set("names", Json::Array().Push("keep"));
  for (const Json& req :
       {create, del, ctl::Request(ctl::kOpScanStart), ctl::Request(ctl::kOpSync)}) {
    Json reply = call(req);
    psm::Status s = ctl::ReplyStatus(reply);
    CHECK(s.Is(Code::kPermission));
    CHECK(s.message().find("requires root or the volume owner (uid " + std::to_string(st.st_uid) +
                           ")") != std::string::npos);
  }
  CHECK(vol.SnapshotNames() == std::set<std::string>{"keep"});
  CHECK(vol.fs->GetScanStatus().scans_completed == scans_before);
  // Looking is allowed.
  CHECK(ctl::ReplyStatus(call(ctl::Request(ctl::kOpStatus))).ok());
  Json list = call(ctl::Request(ctl::kOpSnapshotList));
  REQUIRE(ctl::ReplyStatus(list).ok());
  CHECK(list.Find("snapshots")->items().size() == 1);
  Json hello = call(ctl::Request(ctl::kOpHello));
  CHECK(hello.GetBool("may_modify", true) == false);
  server.Stop();
}

TEST_CASE("two volumes in one process: distinct names, no waiting on each other") {
  RuntimeDir rt;
  Volume a, b;
  REQUIRE(a.fs->uuid() != b.fs->uuid());
  psm::ControlServer sa(a.fs.get(), a.dir, a.mnt);
  psm::ControlServer sb(b.fs.get(), b.dir, b.mnt);
  REQUIRE(sa.Start().ok());
  REQUIRE(sb.Start().ok());
  CHECK(sa.socket_path() != sb.socket_path());
  CHECK(sa.registry_path() != sb.registry_path());
  CHECK(sa.socket_path().find(a.fs->uuid()) != std::string::npos);
  CHECK(sb.socket_path().find(b.fs->uuid()) != std::string::npos);
  CHECK(rt.Files().size() == 6);

  auto ca = MustConnect(a.mnt);
  auto cb = MustConnect(b.mnt);
  CHECK(ca->mount().uuid == a.fs->uuid());
  CHECK(cb->mount().uuid == b.fs->uuid());

#ifdef PSM_SYNC_POINTS
  {
    // Hold every handler of volume A on its sync point.
    HeldHandlers hold(a.fs->uuid());
    std::atomic<int>& held = hold.held;
    auto blocked = std::async(std::launch::async, [&] { return ca->CreateSnapshot("a-snap"); });
    const auto held_by = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (held.load() == 0) {
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < held_by,
                      "A's request never reached the server's handler (60 s)");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    // Volume B answers everything, from several threads, while A is held.
    std::vector<std::future<bool>> bs;
    for (int t = 0; t < 4; ++t) {
      bs.push_back(std::async(std::launch::async, [&, t] {
        std::string n = "b-snap-" + std::to_string(t);
        return cb->CreateSnapshot(n).ok() && cb->ListSnapshots().ok() && cb->GetStatus().ok() &&
               cb->DeleteSnapshots({n}).ok() && cb->Sync().ok();
      }));
    }
    for (auto& f : bs) {
      REQUIRE(f.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
      CHECK(f.get());
    }
    // A is still held: its request has not been carried out.
    CHECK(blocked.wait_for(std::chrono::milliseconds(50)) == std::future_status::timeout);
    CHECK(a.SnapshotNames().empty());
    hold.Release();
    auto r = blocked.get();
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(a.SnapshotNames() == std::set<std::string>{"a-snap"});
    CHECK(b.SnapshotNames().empty());
  }  // sync points off again before the servers stop
#endif
  sa.Stop();
  CHECK(cb->GetStatus().ok());  // B is unaffected by A's server stopping
  sb.Stop();
  CHECK(rt.Files().empty());
}

TEST_CASE("client: a query to a daemon that does not answer fails in time; a change waits") {
  // ClientOptions::query_timeout: hello, status and scan status give up on
  // a daemon that does not answer (stopped, wedged), naming it; requests
  // that change something wait as long as the daemon takes.
  RuntimeDir rt;
  Volume vol;
  psm::ControlServer server(vol.fs.get(), vol.dir, vol.mnt);
  REQUIRE(server.Start().ok());
  psm::ClientOptions opts;
  opts.query_timeout = std::chrono::milliseconds(1000);
  auto c = psm::Client::Connect(vol.mnt, opts);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  REQUIRE(c.value()->GetStatus().ok());
#ifdef PSM_SYNC_POINTS
  HeldHandlers hold(vol.fs->uuid());
  // A change, held: it must still be waiting after the queries time out.
  auto change = std::async(std::launch::async, [&] { return c.value()->CreateSnapshot("s1"); });
  auto status = std::async(std::launch::async, [&] { return c.value()->GetStatus(); });
  REQUIRE(status.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  auto st = status.get();
  CHECK_FALSE(st.ok());
  CHECK(st.status().Is(Code::kIOError));
  CHECK_MESSAGE(st.status().message().find("did not answer within 1 s") != std::string::npos,
                st.status().ToString());
  CHECK_MESSAGE(st.status().message().find(std::to_string(::getpid())) != std::string::npos,
                st.status().ToString());
  // A new client's hello times out the same way.
  auto c2 = psm::Client::Connect(vol.mnt, opts);
  CHECK_FALSE(c2.ok());
  CHECK(c2.status().message().find("did not answer") != std::string::npos);
  CHECK(change.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);
  CHECK(hold.held.load() >= 2);
  hold.Release();
  auto made = change.get();
  CHECK_MESSAGE(made.ok(), made.status().ToString());
  CHECK(vol.SnapshotNames() == std::set<std::string>{"s1"});
  // Answered again: a fresh connection replaces the abandoned one.
  CHECK(c.value()->GetStatus().ok());
#endif
  server.Stop();
}

TEST_CASE("server: malformed traffic gets an error reply") {
  RuntimeDir rt;
  Volume vol;
  psm::ControlServer server(vol.fs.get(), vol.dir, "");
  REQUIRE(server.Start().ok());

  int fd = RawConnect(server.socket_path());
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"v":1,"op":"no.such.op"})")).Is(Code::kNotSupported));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"v":99,"op":"status"})")).Is(Code::kNotSupported));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"op":"status"})")).Is(Code::kNotSupported));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"([1,2])")).Is(Code::kInvalid));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"v":1,"op":"snapshot.create"})")).Is(Code::kInvalid));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"v":1,"op":"snapshot.delete","names":[]})"))
            .Is(Code::kInvalid));
  CHECK(ctl::ReplyStatus(RawCall(fd, R"({"v":1,"op":"snapshot.delete","names":[1]})"))
            .Is(Code::kInvalid));
  // A newer client's hello is answered, so it can fall back to our version.
  Json hello = RawCall(fd, R"({"v":99,"op":"hello"})");
  CHECK(ctl::ReplyStatus(hello).ok());
  CHECK(hello.GetInt("version") == ctl::kProtocolVersion);
  // Not JSON: an error reply, then the server hangs up.
  CHECK(ctl::ReplyStatus(RawCall(fd, "not json")).Is(Code::kInvalid));
  std::string rest;
  bool eof = false;
  CHECK(ctl::ReadFrame(fd, &rest, &eof).ok());
  CHECK(eof);
  ::close(fd);

  // An oversized frame header: an error reply, then the server hangs up.
  fd = RawConnect(server.socket_path());
  REQUIRE(::send(fd, "\xff\xff\xff\x7f", 4, MSG_NOSIGNAL) == 4);
  std::string reply;
  REQUIRE(ctl::ReadFrame(fd, &reply, &eof).ok());
  CHECK(ctl::ReplyStatus(Json::Parse(reply).value()).Is(Code::kInvalid));
  ::close(fd);

  // A truncated frame followed by a hang-up does not disturb the server.
  fd = RawConnect(server.socket_path());
  REQUIRE(::send(fd, "\x10\x00\x00\x00{\"v\"", 8, MSG_NOSIGNAL) == 8);
  ::close(fd);
  auto c = MustConnect(vol.dir);
  CHECK(c->GetStatus().ok());
  server.Stop();
}

TEST_CASE("server: connection limit, and Stop with clients connected") {
  RuntimeDir rt;
  Volume vol;
  psm::ControlServer server(vol.fs.get(), vol.dir, "");
  REQUIRE(server.Start().ok());
  std::vector<int> fds;
  for (int i = 0; i < psm::ControlServer::kMaxConnections; ++i) {
    fds.push_back(RawConnect(server.socket_path()));
    // A round trip makes sure the server has registered the connection.
    CHECK(ctl::ReplyStatus(RawCall(fds.back(), R"({"v":1,"op":"scan.status"})")).ok());
  }
  int extra = RawConnect(server.socket_path());
  std::string reply;
  bool eof = false;
  REQUIRE(ctl::ReadFrame(extra, &reply, &eof).ok());
  REQUIRE_FALSE(eof);
  psm::Status busy = ctl::ReplyStatus(Json::Parse(reply).value());
  CHECK(busy.Is(Code::kBusy));
  CHECK(busy.message().find("too many") != std::string::npos);
  ::close(extra);

  // Stop returns although 32 connections are open and idle (a liveness
  // check: 60 s is a deadline, not a measure; past it the clients hang up
  // so that a stuck Stop cannot hang the test too).
  auto stopped = std::async(std::launch::async, [&] { server.Stop(); });
  if (stopped.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
    FAIL("ControlServer::Stop did not return within 60 s with idle clients connected");
  }
  for (int fd : fds) {
    CHECK(ctl::ReadFrame(fd, &reply, &eof).ok());
    CHECK(eof);
    ::close(fd);
  }
}
