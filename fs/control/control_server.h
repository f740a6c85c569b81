// ControlServer: the Unix socket through which psmctl and backup programs
// manage one mounted volume (DESIGN §7; protocol in fs/control/control_protocol.h
// and docs/control-protocol.md).
//
// One server per FileSystem. Start() creates, in the runtime directory
// (ctl::ServerRuntimeDir()), the lock `<uuid>.ctl.lock` (held while
// serving; a second server for the same volume gets kBusy naming the
// holder), the socket `<uuid>.ctl.sock` (mode 0666; a stale one left by a
// dead daemon is replaced) and the registry entry `<uuid>.mount`, written
// atomically. Stop() removes all three. Names carry the UUID, so servers of
// different volumes, in one process or many, never share a name or a lock.
//
// Serving: one thread accepts; each connection gets its own thread, at most
// kMaxConnections at once (one more is told kBusy and closed); a connection
// idle for kIdleTimeoutSec is closed. Requests on one connection are served
// in turn; different connections run concurrently and call the FileSystem
// directly (it is thread-safe).
//
// Authorization (SO_PEERCRED): requests that change the volume
// (snapshot.create, snapshot.delete, scan.start, sync, restore, receive)
// and `send` (a stream carries every file, whatever its permissions) need
// root or the owner of the volume directory; everything else is open to all. A denied
// request changes nothing and gets kPermission with a message naming who
// may do it. Authorize() is that rule as a pure function.
//
// Locks: mu_ guards the connection table only; it is a leaf, never held
// while calling the FileSystem or doing socket I/O.
//
// Thread safety: Start/Stop from one thread (the daemon's main); the
// serving threads are internal. The FileSystem must outlive Stop().
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fs/json/control_json.h"
#include "meta/status.h"

namespace psm {

class FileSystem;
class RequestMetrics;
class Scheduler;

// Who is on the other end of a control connection.
struct PeerCred {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

class ControlServer {
 public:
  static constexpr int kMaxConnections = 32;
  static constexpr int kIdleTimeoutSec = 120;

  // `mountpoint` may be empty (a volume served without FUSE, as in tests).
  // Paths are resolved to real paths in Start().
  ControlServer(FileSystem* fs, std::string volume_dir, std::string mountpoint);
  ~ControlServer();  // Stop()s
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Takes the lock, binds the socket, writes the registry entry, starts the
  // accept thread. Errors: kBusy (another live server for this volume),
  // kPermission (runtime directory not ours), kInvalid (socket path too
  // long), I/O errors.
  Status Start();
  // Removes the registry entry and the socket, closes every connection,
  // waits for the serving threads, releases the lock. Idempotent.
  void Stop();

  // The daemon's snapshot scheduler, kicked when the policy changes
  // (schedule.set). Optional; set before Start().
  void SetScheduler(Scheduler* scheduler) { scheduler_ = scheduler; }
  // The FUSE adapter's request counts and latencies, served by "metrics".
  // Optional (without it the reply has no "requests"); set before Start().
  // Must outlive Stop().
  void SetRequestMetrics(const RequestMetrics* metrics) { request_metrics_ = metrics; }

  const std::string& socket_path() const { return socket_path_; }
  const std::string& registry_path() const { return registry_path_; }

  // True for requests that change the volume.
  static bool IsModifying(std::string_view op);
  // The authorization rule: ok, or kPermission "permission denied: <op>
  // requires root or the volume owner (uid N)".
  static Status Authorize(std::string_view op, uid_t peer_uid, uid_t owner_uid);

  // Serves one decoded request (what a connection thread does per frame;
  // public so tests can drive it without a socket).
  Json Handle(const Json& request, const PeerCred& peer);

 private:
  struct Conn {
    int fd = -1;
    std::thread thread;
  };

  void AcceptLoop();
  void Serve(uint64_t id, int fd, PeerCred peer);
  // Version check and authorization of a request (what Handle does first).
  Status Admit(const Json& request, const PeerCred& peer);
  // send / receive: the stream goes over the connection (then closed).
  void ServeStream(int fd, const Json& request, const PeerCred& peer);
  Json Dispatch(std::string_view op, const Json& req);
  Json Metrics(const Json& req);
  Status WriteRegistry();

  FileSystem* fs_;
  Scheduler* scheduler_ = nullptr;
  const RequestMetrics* request_metrics_ = nullptr;
  std::string volume_dir_;
  std::string mountpoint_;
  std::string uuid_;
  uid_t owner_uid_ = 0;
  std::string runtime_dir_;
  std::string socket_path_;
  std::string lock_path_;
  std::string registry_path_;
  std::string since_;       // RFC 3339 time of Start()
  int64_t since_ns_ = 0;    // the same, nanoseconds since the epoch
  std::string sync_point_;  // "ControlServer::Handle:<uuid>"
  int lock_fd_ = -1;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // Stop() writes to [1]; the accept loop polls [0]
  bool started_ = false;
  std::thread accept_thread_;

  std::mutex mu_;
  bool stopping_ = false;              // GUARDED_BY(mu_)
  uint64_t next_conn_ = 0;             // GUARDED_BY(mu_)
  std::map<uint64_t, Conn> conns_;     // GUARDED_BY(mu_)
  std::vector<std::thread> finished_;  // GUARDED_BY(mu_): to be joined
};

}  // namespace psm
