#include "fs/control/control_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <set>
#include <utility>

#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"
#include "fs/core/filesystem.h"
#include "fs/base/request_metrics.h"
#include "fs/space/scanner.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

// Real path of a directory.
Result<std::string> RealPath(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) return Status::FromErrno(errno, "realpath " + p);
  return std::string(buf);
}

// Real path of a mount point without stat()ing the mount point itself: the
// daemon may be the FUSE server behind it, and a lookup on it could wait
// for our own session loop. libfuse already hands us a resolved path; this
// resolves the parent and keeps the last component.
Result<std::string> MountpointPath(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.empty()) return std::string();
  size_t slash = p.rfind('/');
  std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  PSM_ASSIGN_OR_RETURN(std::string real_parent, RealPath(parent));
  if (base.empty() || base == "." || base == "..") return RealPath(p);
  return real_parent == "/" ? "/" + base : real_parent + "/" + base;
}

// mkdir -p with mode 0755 for what it creates; then the directory must be a
// real directory owned by us (or root) and not writable by others, so that
// nobody else can replace our socket or registry entry.
Status EnsureRuntimeDir(const std::string& dir) {
  if (dir.empty() || dir[0] != '/')
    return Status::Invalid("runtime directory must be absolute: " + dir);
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      std::string part = dir.substr(0, i);
      if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
        return Status::FromErrno(errno, "create runtime directory " + part);
      }
    }
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, "runtime directory " + dir);
  if (!S_ISDIR(st.st_mode))
    return Status::NotDir("runtime directory " + dir + " is not a directory");
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return Status::Permission("runtime directory " + dir + " belongs to uid " +
                              std::to_string(st.st_uid) + ", not to us; refusing to use it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Status::Permission("runtime directory " + dir +
                              " is writable by others; refusing to use it");
  }
  return Status::Ok();
}

std::string ReadSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return {};
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0 && s.size() < 65536)
    s.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return s;
}

Status WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t w = ::write(fd, s.data() + off, s.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write");
    }
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

std::string NowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

int64_t RealtimeNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void SetTimeout(int fd, int opt, int sec) {
  timeval tv{};
  tv.tv_sec = sec;
  (void)::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

}  // namespace

ControlServer::ControlServer(FileSystem* fs, std::string volume_dir, std::string mountpoint)
    : fs_(fs), volume_dir_(std::move(volume_dir)), mountpoint_(std::move(mountpoint)) {}

ControlServer::~ControlServer() { Stop(); }

bool ControlServer::IsModifying(std::string_view op) {
  return op == ctl::kOpSnapshotCreate || op == ctl::kOpSnapshotDelete || op == ctl::kOpScanStart ||
         op == ctl::kOpSync || op == ctl::kOpRestore || op == ctl::kOpReceive ||
         op == ctl::kOpScrub || op == ctl::kOpMirror ||
         ctl::IsFileServerModifying(op);
}

Status ControlServer::Authorize(std::string_view op, uid_t peer_uid, uid_t owner_uid) {
  const bool restricted =
      IsModifying(op) || op == ctl::kOpSend || ctl::IsFileServerPrivileged(op);
  if (!restricted || peer_uid == 0 || peer_uid == owner_uid) return Status::Ok();
  return Status::Permission("permission denied: " + std::string(op) +
                            " requires root or the volume owner (uid " + std::to_string(owner_uid) +
                            "); you are uid " + std::to_string(peer_uid));
}

Status ControlServer::Start() {
  if (started_) return Status::Ok();
  uuid_ = fs_->uuid();
  if (uuid_.empty()) return Status::Invalid("volume has no UUID");
  PSM_ASSIGN_OR_RETURN(volume_dir_, RealPath(volume_dir_));
  PSM_ASSIGN_OR_RETURN(mountpoint_, MountpointPath(mountpoint_));
  struct stat vst;
  if (::stat(volume_dir_.c_str(), &vst) != 0)
    return Status::FromErrno(errno, "stat " + volume_dir_);
  owner_uid_ = vst.st_uid;

  runtime_dir_ = ctl::ServerRuntimeDir();
  PSM_RETURN_IF_ERROR(EnsureRuntimeDir(runtime_dir_));
  socket_path_ = ctl::SocketPath(runtime_dir_, uuid_);
  lock_path_ = ctl::LockPath(runtime_dir_, uuid_);
  registry_path_ = ctl::RegistryPath(runtime_dir_, uuid_);
  sync_point_ = "ControlServer::Handle:" + uuid_;
  const std::string pid = std::to_string(::getpid());
  const std::string tmp_sock = socket_path_ + ".tmp-" + pid;
  if (tmp_sock.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::Invalid("control socket path " + tmp_sock + " is too long for a Unix socket (" +
                           std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                           " bytes max); set PSMFS_RUNTIME_DIR to a shorter directory");
  }

  // 1. The per-volume lock: whoever holds it owns the socket name, so any
  //    socket file we find afterwards is stale. Re-check the inode after
  //    locking: a Stop() may have unlinked the file we opened. Mode 0600:
  //    nobody else can open it, so nobody else can hold it.
  while (true) {
    int fd = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return Status::FromErrno(errno, "open control lock " + lock_path_);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd);
      if (err != EWOULDBLOCK) return Status::FromErrno(err, "lock " + lock_path_);
      std::string holder = ReadSmallFile(lock_path_);
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      return Status::Busy("volume " + uuid_ + " already has a control server (pid " +
                          (holder.empty() ? std::string("unknown") : holder) + ", socket " +
                          socket_path_ + ")");
    }
    struct stat a, b;
    if (::fstat(fd, &a) == 0 && ::stat(lock_path_.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
        a.st_dev == b.st_dev) {
      lock_fd_ = fd;
      break;
    }
    ::close(fd);
  }
  if (::ftruncate(lock_fd_, 0) == 0) (void)WriteAll(lock_fd_, pid + "\n");

  auto fail = [&](Status st) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(tmp_sock.c_str());
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
    return st;
  };

  // 2. The socket, bound under a temporary name, made 0666, then renamed
  //    over whatever stale socket a dead daemon left.
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return fail(Status::FromErrno(errno, "control socket"));
  ::unlink(tmp_sock.c_str());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, tmp_sock.c_str(), tmp_sock.size() + 1);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return fail(Status::FromErrno(errno, "bind " + tmp_sock));
  }
  if (::chmod(tmp_sock.c_str(), 0666) != 0)
    return fail(Status::FromErrno(errno, "chmod " + tmp_sock));
  if (::listen(listen_fd_, 64) != 0) return fail(Status::FromErrno(errno, "listen " + tmp_sock));
  if (::rename(tmp_sock.c_str(), socket_path_.c_str()) != 0) {
    return fail(Status::FromErrno(errno, "rename " + tmp_sock + " to " + socket_path_));
  }

  // 3. The registry entry, once the socket accepts connections.
  since_ = NowRfc3339();
  since_ns_ = RealtimeNs();
  if (Status st = WriteRegistry(); !st.ok()) {
    ::unlink(socket_path_.c_str());
    return fail(st);
  }

  // 4. The accept thread.
  if (::pipe2(wake_fds_, O_CLOEXEC) != 0) {
    ::unlink(registry_path_.c_str());
    ::unlink(socket_path_.c_str());
    return fail(Status::FromErrno(errno, "pipe"));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = false;
  }
  accept_thread_ = std::thread(&ControlServer::AcceptLoop, this);
  started_ = true;
  return Status::Ok();
}

Status ControlServer::WriteRegistry() {
  ctl::MountEntry e;
  e.uuid = uuid_;
  e.volume = volume_dir_;
  e.mountpoint = mountpoint_;
  e.pid = ::getpid();
  e.socket = socket_path_;
  e.host = HostName();
  e.since = since_;
  e.protocol = ctl::kProtocolVersion;
  const std::string tmp = registry_path_ + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  Status st = WriteAll(fd, ctl::EncodeRegistry(e));
  if (st.ok() && ::fsync(fd) != 0) st = Status::FromErrno(errno, "fsync " + tmp);
  ::close(fd);
  if (st.ok() && ::rename(tmp.c_str(), registry_path_.c_str()) != 0) {
    st = Status::FromErrno(errno, "rename " + tmp + " to " + registry_path_);
  }
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

void ControlServer::Stop() {
  if (!started_) return;
  started_ = false;
  // Clients stop finding us first; then no new connections; then the open
  // ones are shut down (a handler inside the FileSystem finishes its call).
  ::unlink(registry_path_.c_str());
  char c = 'x';
  while (::write(wake_fds_[1], &c, 1) < 0 && errno == EINTR) {
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  ::unlink(socket_path_.c_str());
  ::close(listen_fd_);
  listen_fd_ = -1;

  std::vector<std::thread> to_join;
  {
    std::unique_lock<std::mutex> l(mu_);
    stopping_ = true;
    for (auto& [id, conn] : conns_) ::shutdown(conn.fd, SHUT_RDWR);
  }
  // Serving threads move themselves to finished_ as they end.
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& t : finished_) to_join.push_back(std::move(t));
      finished_.clear();
      if (conns_.empty()) break;
    }
    for (auto& t : to_join) t.join();
    to_join.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& t : to_join) t.join();

  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
  wake_fds_[0] = wake_fds_[1] = -1;
  // Unlink while still holding the lock (Start re-checks the inode).
  ::unlink(lock_path_.c_str());
  ::close(lock_fd_);
  lock_fd_ = -1;
}

void ControlServer::AcceptLoop() {
  while (true) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      ::close(fd);
      continue;
    }
    PeerCred peer{cred.uid, cred.gid, cred.pid};
    SetTimeout(fd, SO_RCVTIMEO, kIdleTimeoutSec);
    SetTimeout(fd, SO_SNDTIMEO, kIdleTimeoutSec);

    std::vector<std::thread> to_join;
    Status refused;
    {
      std::lock_guard<std::mutex> l(mu_);
      to_join.swap(finished_);
      if (stopping_) {
        refused = Status::Busy("the daemon is shutting down");
      } else if (conns_.size() >= static_cast<size_t>(kMaxConnections)) {
        refused = Status::Busy("too many control connections (" + std::to_string(kMaxConnections) +
                               "); try again later");
      } else {
        uint64_t id = next_conn_++;
        Conn& conn = conns_[id];
        conn.fd = fd;
        conn.thread = std::thread(&ControlServer::Serve, this, id, fd, peer);
      }
    }
    for (auto& t : to_join) t.join();
    if (!refused.ok()) {
      SetTimeout(fd, SO_SNDTIMEO, 1);
      (void)ctl::WriteFrame(fd, ctl::ErrorReply(refused).Dump());
      ::close(fd);
    }
  }
}

void ControlServer::Serve(uint64_t id, int fd, PeerCred peer) {
  std::string payload;
  while (true) {
    bool eof = false;
    Status st = ctl::ReadFrame(fd, &payload, &eof);
    if (!st.ok() || eof) {
      // An oversized frame gets an answer before we hang up.
      if (st.Is(Code::kInvalid)) (void)ctl::WriteFrame(fd, ctl::ErrorReply(st).Dump());
      break;
    }
    Result<Json> req = Json::Parse(payload);
    if (req.ok() && req.value().is_object()) {
      const std::string op = req.value().GetString("op");
      if (op == ctl::kOpSend || op == ctl::kOpReceive) {
        ServeStream(fd, req.value(), peer);
        break;  // a stream connection ends with its stream
      }
    }
    Json reply = req.ok() ? Handle(req.value(), peer) : ctl::ErrorReply(req.status());
    if (!ctl::WriteFrame(fd, reply.Dump()).ok()) break;
    if (!req.ok()) break;  // a stream that sends garbage is not trusted further
  }
  std::lock_guard<std::mutex> l(mu_);
  auto it = conns_.find(id);
  if (it != conns_.end()) {
    finished_.push_back(std::move(it->second.thread));
    conns_.erase(it);
  }
  ::close(fd);
}

Status ControlServer::Admit(const Json& request, const PeerCred& peer) {
  if (!request.is_object()) return Status::Invalid("request is not a JSON object");
  int64_t v = request.GetInt("v", -1);
  std::string op = request.GetString("op");
  if (v < ctl::kMinProtocolVersion || (v > ctl::kProtocolVersion && op != ctl::kOpHello)) {
    return Status::NotSupported(
        "protocol version " + std::to_string(v) + " not supported; this daemon speaks versions " +
        std::to_string(ctl::kMinProtocolVersion) + " to " + std::to_string(ctl::kProtocolVersion));
  }
  PSM_SYNC_POINT(sync_point_.c_str());
  return Authorize(op, peer.uid, owner_uid_);
}

void ControlServer::ServeStream(int fd, const Json& req, const PeerCred& peer) {
  if (Status st = Admit(req, peer); !st.ok()) {
    (void)ctl::WriteFrame(fd, ctl::ErrorReply(st).Dump());
    return;
  }
  // A stream may wait on a slow reader or writer at the other end for as
  // long as it likes; a peer that goes away ends it (EPIPE / EOF).
  SetTimeout(fd, SO_RCVTIMEO, 0);
  SetTimeout(fd, SO_SNDTIMEO, 0);
  if (req.GetString("op") == ctl::kOpSend) {
    SendOptions o;
    o.snapshot = req.GetString("snapshot");
    o.base = req.GetString("from");
    bool started = false;
    Status wire;  // the first socket error: the client went away
    auto r = fs_->Send(
        o,
        [&](std::string_view piece) {
          while (!piece.empty()) {
            const size_t n = std::min(piece.size(), ctl::kStreamFrameBytes);
            wire = ctl::WriteFrame(fd, piece.substr(0, n));
            if (!wire.ok()) return wire;
            piece.remove_prefix(n);
          }
          return Status::Ok();
        },
        [&](uint64_t size) {
          started = true;
          wire = ctl::WriteFrame(fd, ctl::OkReply().Set("size", size).Dump());
        });
    if (!started) {
      (void)ctl::WriteFrame(fd, ctl::ErrorReply(r.status()).Dump());
      return;
    }
    if (!wire.ok()) return;  // nobody to tell
    if (!ctl::WriteFrame(fd, "").ok()) return;
    Json fin = r.ok() ? ctl::OkReply().Set("send", ctl::ToJson(r.value()))
                      : ctl::ErrorReply(r.status());
    (void)ctl::WriteFrame(fd, fin.Dump());
    return;
  }
  ReceiveOptions o;
  o.name = req.GetString("name");
  o.force = req.GetBool("force");
  if (!ctl::WriteFrame(fd, ctl::OkReply().Set("ready", true).Dump()).ok()) return;
  std::string frame;
  size_t used = 0;
  bool ended = false;
  auto r = fs_->Receive(o, [&](char* buf, size_t n) -> Result<size_t> {
    if (used == frame.size()) {
      if (ended) return size_t{0};
      bool eof = false;
      PSM_RETURN_IF_ERROR(ctl::ReadFrame(fd, &frame, &eof));
      if (eof) {
        return Status::IOError(
            "truncated stream: the sender went away before the end of its input");
      }
      used = 0;
      if (frame.empty()) {
        ended = true;
        return size_t{0};
      }
    }
    const size_t k = std::min(n, frame.size() - used);
    std::memcpy(buf, frame.data() + used, k);
    used += k;
    return k;
  });
  Json fin = r.ok() ? ctl::OkReply().Set("receive", ctl::ToJson(r.value()))
                    : ctl::ErrorReply(r.status());
  (void)ctl::WriteFrame(fd, fin.Dump());
}

Json ControlServer::Handle(const Json& request, const PeerCred& peer) {
  if (Status st = Admit(request, peer); !st.ok()) return ctl::ErrorReply(st);
  const std::string op = request.GetString("op");
  if (op == ctl::kOpMirror && request.GetString("action") == "attach" && peer.uid != 0) {
    // The daemon opens (and may create or overwrite) the path: only a
    // caller who could do that himself, root, may name it.
    return ctl::ErrorReply(Status::Permission(
        "permission denied: mirror attach requires root (the daemon opens and overwrites the "
        "path you name); you are uid " + std::to_string(peer.uid)));
  }
  Json reply = Dispatch(op, request);
  if (op == ctl::kOpHello && reply.GetBool("ok")) {
    reply.Set("peer_uid", static_cast<uint64_t>(peer.uid))
        .Set("may_modify", Authorize(ctl::kOpSync, peer.uid, owner_uid_).ok());
  }
  return reply;
}

Json ControlServer::Dispatch(std::string_view op, const Json& req) {
  Json reply = ctl::OkReply();
  if (op == ctl::kOpHello) {
    reply.Set("version", ctl::kProtocolVersion)
        .Set("min_version", ctl::kMinProtocolVersion)
        .Set("server", "psmfs " + std::string(ctl::kSoftwareVersion))
        .Set("uuid", uuid_)
        .Set("volume", volume_dir_)
        .Set("mountpoint", mountpoint_)
        .Set("pid", static_cast<int64_t>(::getpid()))
        .Set("owner_uid", static_cast<uint64_t>(owner_uid_))
        .Set("writable_files", static_cast<uint64_t>(fs_->WritableLiveHandles()));
    return reply;
  }
  if (op == ctl::kOpStatus) {
    reply.Set("stats", ctl::ToJson(fs_->Stats()))
        .Set("scan", ctl::ToJson(fs_->GetScanStatus()))
        .Set("scrub", ctl::ToJson(fs_->GetScrubStatus()))
        .Set("volume", volume_dir_)
        .Set("mountpoint", mountpoint_)
        .Set("pid", static_cast<int64_t>(::getpid()))
        .Set("since", since_);
    return reply;
  }
  if (op == ctl::kOpMetrics) return Metrics(req);
  if (op == ctl::kOpSnapshotCreate) {
    const Json* name = req.Find("name");
    if (name == nullptr || !name->is_string()) {
      return ctl::ErrorReply(Status::Invalid("snapshot.create needs a \"name\" string"));
    }
    Result<SnapshotInfo> r = fs_->CreateSnapshot(name->AsString());
    if (!r.ok()) return ctl::ErrorReply(r.status());
    reply.Set("snapshot", ctl::ToJson(r.value()));
    return reply;
  }
  if (op == ctl::kOpSnapshotDelete) {
    const Json* names = req.Find("names");
    if (names == nullptr || !names->is_array() || names->items().empty()) {
      return ctl::ErrorReply(Status::Invalid("snapshot.delete needs a non-empty \"names\" array"));
    }
    // Check every name before deleting any: a typo in the list changes nothing.
    std::set<std::string> live;
    for (const SnapshotInfo& s : fs_->ListSnapshots(false)) {
      if (!s.deleting) live.insert(s.name);
    }
    std::set<std::string> seen;
    std::vector<std::string> todo;
    for (const Json& n : names->items()) {
      if (!n.is_string()) return ctl::ErrorReply(Status::Invalid("snapshot names must be strings"));
      const std::string& s = n.AsString();
      if (!seen.insert(s).second) {
        return ctl::ErrorReply(
            Status::Invalid("snapshot '" + s + "' is named twice; nothing deleted"));
      }
      if (!live.count(s)) {
        return ctl::ErrorReply(Status::NotFound("no snapshot named '" + s + "'; nothing deleted"));
      }
      todo.push_back(s);
    }
    Json deleted = Json::Array();
    std::string done;
    for (const std::string& s : todo) {
      Status st = fs_->DeleteSnapshot(s);
      if (!st.ok()) {
        std::string msg = "deleting '" + s + "': " + st.message();
        if (!done.empty()) msg += " (already deleted: " + done + ")";
        Json err = ctl::ErrorReply(ctl::MakeStatus(st.code(), msg));
        err.Set("deleted", std::move(deleted));
        return err;
      }
      deleted.Push(s);
      done += (done.empty() ? "" : ", ") + s;
    }
    reply.Set("deleted", std::move(deleted));
    return reply;
  }
  if (op == ctl::kOpSnapshotList) {
    Json list = Json::Array();
    for (const SnapshotInfo& s : fs_->ListSnapshots(req.GetBool("space", true))) {
      list.Push(ctl::ToJson(s));
    }
    reply.Set("snapshots", std::move(list));
    return reply;
  }
  if (op == ctl::kOpScanStart) {
    fs_->StartScan("request");
    reply.Set("scan", ctl::ToJson(fs_->GetScanStatus()));
    return reply;
  }
  if (op == ctl::kOpScanStatus) {
    reply.Set("scan", ctl::ToJson(fs_->GetScanStatus()));
    return reply;
  }
  if (op == ctl::kOpScrub) {
    const std::string action = req.GetString("action", "status");
    Status st;
    if (action == "start") {
      st = fs_->StartScrub(req.GetDouble("rate_mb_s", 0), req.GetBool("rewrite", false));
    } else if (action == "stop") {
      st = fs_->StopScrub();
    } else if (action != "status") {
      st = Status::Invalid("scrub action must be start, stop or status, not '" + action + "'");
    }
    if (!st.ok()) return ctl::ErrorReply(st);
    reply.Set("scrub", ctl::ToJson(fs_->GetScrubStatus()));
    return reply;
  }
  if (op == ctl::kOpMirror) {
    const std::string action = req.GetString("action", "status");
    Status st;
    if (action == "attach") {
      // Root only (checked in Handle).
      st = fs_->MirrorAttach(req.GetString("path"), req.GetBool("force", false));
    } else if (action == "detach") {
      st = fs_->MirrorDetach();
    } else if (action != "status") {
      st = Status::Invalid("mirror action must be attach, detach or status, not '" + action + "'");
    }
    if (!st.ok()) return ctl::ErrorReply(st);
    reply.Set("mirror", ctl::ToJson(fs_->Stats().mirror));
    return reply;
  }
  if (op == ctl::kOpSync) {
    Status st = fs_->SyncAll();
    return st.ok() ? reply : ctl::ErrorReply(st);
  }
  if (op == ctl::kOpRestore) {
    const Json* name = req.Find("snapshot");
    if (name == nullptr || !name->is_string()) {
      return ctl::ErrorReply(Status::Invalid("restore needs a \"snapshot\" string"));
    }
    Result<RestoreResult> r = fs_->Restore(name->AsString(), req.GetBool("dry_run", false));
    if (!r.ok()) return ctl::ErrorReply(r.status());
    reply.Set("restore", ctl::ToJson(r.value()));
    return reply;
  }
  // Holds, schedule, prune, history, diff (fs/control/control_fileserver.cc).
  if (HandleFileServerOp(fs_, scheduler_, op, req, &reply)) return reply;
  return ctl::ErrorReply(Status::NotSupported("unknown request '" + std::string(op) + "'"));
}

Json ControlServer::Metrics(const Json& req) {
  Json reply = ctl::OkReply();
  const VolumeStats stats = fs_->Stats();
  reply.Set("uuid", uuid_)
      .Set("volume", volume_dir_)
      .Set("mountpoint", mountpoint_)
      .Set("pid", static_cast<int64_t>(::getpid()))
      .Set("since", since_)
      .Set("since_ns", since_ns_)
      .Set("stats", ctl::ToJson(stats))
      .Set("scan", ctl::ToJson(fs_->GetScanStatus()))
      .Set("scrub", ctl::ToJson(fs_->GetScrubStatus()));
  // Per-snapshot space costs one pass over the alloc records; "space":
  // false skips it (the snapshots then come without used/referenced).
  const bool space = req.GetBool("space", true);
  Json list = Json::Array();
  for (const SnapshotInfo& s : fs_->ListSnapshots(space)) list.Push(ctl::ToJson(s));
  reply.Set("space", space).Set("snapshots", std::move(list));
  // RSS, the budget and the caches' sizes are in stats.
  Json memory = Json::Object();
  memory.Set("store", ctl::ToJson(fs_->StoreMemory()))
      .Set("live_cache_chunk_maps", stats.cached_chunk_maps);
  reply.Set("memory", std::move(memory));
  if (request_metrics_ != nullptr) reply.Set("requests", ctl::ToJson(request_metrics_->Snapshot()));
  return reply;
}

}  // namespace psm
