#include "cli/client.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace psm {
namespace {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

// Lexically normalised absolute path ("a/./b/../c" -> "$PWD/a/c").
std::string Lexical(const std::string& p) {
  std::string abs = p;
  if (abs.empty() || abs[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof(cwd)) != nullptr) abs = std::string(cwd) + "/" + p;
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= abs.size()) {
    size_t j = abs.find('/', i);
    if (j == std::string::npos) j = abs.size();
    std::string c = abs.substr(i, j - i);
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& c : parts) out += "/" + c;
  return out.empty() ? "/" : out;
}

// The real path of `p`. A FUSE mount point may refuse stat() to anyone but
// its owner (no allow_other); then resolve the parent and keep the name.
std::string Resolve(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) != nullptr) return buf;
  std::string lex = Lexical(p);
  size_t slash = lex.rfind('/');
  std::string parent = slash == 0 ? "/" : lex.substr(0, slash);
  if (::realpath(parent.c_str(), buf) != nullptr) {
    std::string rp = buf;
    return (rp == "/" ? "" : rp) + lex.substr(slash);
  }
  return lex;
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

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<MountEntry> ListMounts() {
  std::vector<MountEntry> out;
  for (const std::string& dir : ctl::ClientRuntimeDirs()) {
    struct stat dst;
    if (::lstat(dir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) continue;
    if ((dst.st_mode & (S_IWGRP | S_IWOTH)) != 0) continue;  // anyone could plant entries
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) continue;
    while (dirent* de = ::readdir(d)) {
      std::string name = de->d_name;
      if (!EndsWith(name, ".mount")) continue;
      std::string path = dir;
      path.append("/").append(name);
      struct stat fst;
      if (::lstat(path.c_str(), &fst) != 0 || !S_ISREG(fst.st_mode)) continue;
      if (fst.st_uid != dst.st_uid) continue;
      Result<MountEntry> e = ctl::ParseRegistry(ReadSmallFile(path));
      if (!e.ok()) continue;
      e->path = path;
      e->owner = fst.st_uid;
      out.push_back(std::move(e.value()));
    }
    ::closedir(d);
  }
  return out;
}

bool IsAlive(const MountEntry& e) {
  if (e.pid <= 0 || e.host != HostName()) return false;
  if (::kill(static_cast<pid_t>(e.pid), 0) != 0 && errno != EPERM) return false;
  // A killed daemon nobody has reaped yet is a zombie: dead for us.
  std::string stat = ReadSmallFile("/proc/" + std::to_string(e.pid) + "/stat");
  size_t paren = stat.rfind(')');
  return !(paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z');
}

Result<MountEntry> FindMount(const std::string& path) {
  const std::string want = Resolve(path);
  std::vector<MountEntry> all = ListMounts();
  const MountEntry* stale = nullptr;
  for (const MountEntry& e : all) {
    bool match = (!e.mountpoint.empty() && e.mountpoint == want) || e.volume == want;
    if (!match) continue;
    if (IsAlive(e)) return e;
    stale = &e;
  }
  if (stale != nullptr) {
    return Status::NotFound(path + " is not mounted: the daemon that served it (pid " +
                            std::to_string(stale->pid) + " on " + stale->host +
                            ") is gone; stale registry entry " + stale->path);
  }
  std::string dirs;
  for (const std::string& d : ctl::ClientRuntimeDirs()) dirs += (dirs.empty() ? "" : ", ") + d;
  return Status::NotFound(path + " is not a mounted psmfs volume (no registry entry for " + want +
                          " in " + dirs + ")");
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& mountpoint_or_volume,
                                                ClientOptions opts) {
  PSM_ASSIGN_OR_RETURN(MountEntry e, FindMount(mountpoint_or_volume));
  return Connect(e, opts);
}

Result<std::unique_ptr<Client>> Client::Connect(const MountEntry& entry, ClientOptions opts) {
  std::unique_ptr<Client> c(new Client(entry, opts));
  PSM_RETURN_IF_ERROR(c->Hello());
  return c;
}

Client::~Client() {
  for (const Idle& i : idle_) ::close(i.fd);
}

Result<int> Client::Dial() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "control socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (entry_.socket.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return Status::Invalid("control socket path too long: " + entry_.socket);
  }
  std::memcpy(addr.sun_path, entry_.socket.c_str(), entry_.socket.size() + 1);
  while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    ::close(fd);
    if (err == ECONNREFUSED || err == ENOENT) {
      return Status::NotFound("the daemon for " + entry_.volume + " (pid " +
                              std::to_string(entry_.pid) + ") does not answer on " + entry_.socket +
                              ": " + std::strerror(err));
    }
    return Status::FromErrno(err, "connect " + entry_.socket);
  }
  // The server must be who wrote the registry entry (or root).
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "SO_PEERCRED on " + entry_.socket);
  }
  if (cred.uid != entry_.owner && cred.uid != 0) {
    ::close(fd);
    return Status::Permission("socket " + entry_.socket + " is served by uid " +
                              std::to_string(cred.uid) + ", not by the owner of " + entry_.path +
                              "; refusing to talk to it");
  }
  timeval tv{};
  tv.tv_sec = 30;  // a daemon that reads nothing for 30 s is stuck
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

int Client::TakeIdle() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> expired;
  int fd = -1;
  {
    std::lock_guard<std::mutex> l(mu_);
    while (!idle_.empty()) {
      Idle i = idle_.back();
      idle_.pop_back();
      if (now - i.since > opts_.max_idle_age) {
        expired.push_back(i.fd);
        continue;
      }
      fd = i.fd;
      break;
    }
  }
  for (int e : expired) ::close(e);
  return fd;
}

void Client::GiveBack(int fd) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (idle_.size() < opts_.max_idle) {
      idle_.push_back({fd, std::chrono::steady_clock::now()});
      return;
    }
  }
  ::close(fd);
}

Result<Json> Client::Call(Json request, bool idempotent, bool query) {
  request.Set("v", version_);
  const std::string payload = request.Dump();
  for (int attempt = 0;; ++attempt) {
    int fd = TakeIdle();
    const bool pooled = fd >= 0;
    if (!pooled) {
      PSM_ASSIGN_OR_RETURN(fd, Dial());
    }
    Status st = ctl::WriteFrame(fd, payload);
    const bool sent = st.ok();
    std::string reply;
    bool timed_out = false;
    if (sent && query && opts_.query_timeout.count() > 0) {
      pollfd p{fd, POLLIN, 0};
      int r;
      do {
        r = ::poll(&p, 1, static_cast<int>(opts_.query_timeout.count()));
      } while (r < 0 && errno == EINTR);
      timed_out = r == 0;
    }
    if (timed_out) {
      ::close(fd);
      const auto ms = opts_.query_timeout.count();
      return Status::IOError(
          "the daemon for " + entry_.volume + " (pid " + std::to_string(entry_.pid) +
          ") did not answer within " +
          (ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms") +
          ": it may be stopped or stuck (see its log)");
    }
    if (sent) {
      bool eof = false;
      st = ctl::ReadFrame(fd, &reply, &eof);
      if (st.ok() && eof) st = Status::IOError("the daemon closed the connection");
    }
    if (!st.ok()) {
      ::close(fd);
      // A pooled connection may have been closed by the daemon while idle:
      // retry once on a fresh one when that cannot repeat a change.
      if (pooled && attempt == 0 && (!sent || idempotent)) continue;
      if (sent && !idempotent) {
        return Status::IOError(st.message() + "; the request may or may not have been carried out");
      }
      return st;
    }
    Result<Json> j = Json::Parse(reply);
    if (!j.ok()) {
      ::close(fd);
      return Status::IOError("bad reply from the daemon: " + j.status().message());
    }
    GiveBack(fd);
    PSM_RETURN_IF_ERROR(ctl::ReplyStatus(j.value()));
    return j;
  }
}

namespace {

// A stream connection has no send timeout: the daemon reads at the pace of
// the disk, and the stream ends when either side goes away.
void NoTimeouts(int fd) {
  timeval tv{};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

Result<Json> ReadReply(int fd, const char* what) {
  std::string reply;
  bool eof = false;
  Status st = ctl::ReadFrame(fd, &reply, &eof);
  if (st.ok() && eof) {
    st = Status::IOError(std::string("the daemon closed the connection during the ") + what);
  }
  PSM_RETURN_IF_ERROR(st);
  Result<Json> j = Json::Parse(reply);
  if (!j.ok()) return Status::IOError("bad reply from the daemon: " + j.status().message());
  PSM_RETURN_IF_ERROR(ctl::ReplyStatus(j.value()));
  return j;
}

struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

}  // namespace

Result<SendStats> Client::Send(const std::string& name, const std::string& base,
                               const std::function<Status(std::string_view)>& sink,
                               const std::function<void(uint64_t)>& on_size) {
  Json req = ctl::Request(ctl::kOpSend);
  req.Set("snapshot", name).Set("from", base).Set("v", version_);
  PSM_ASSIGN_OR_RETURN(int fd, Dial());
  FdCloser closer{fd};
  NoTimeouts(fd);
  PSM_RETURN_IF_ERROR(ctl::WriteFrame(fd, req.Dump()));
  PSM_ASSIGN_OR_RETURN(Json head, ReadReply(fd, "send"));
  if (on_size) on_size(head.GetUint("size"));
  std::string frame;
  while (true) {
    bool eof = false;
    PSM_RETURN_IF_ERROR(ctl::ReadFrame(fd, &frame, &eof));
    if (eof) return Status::IOError("the daemon closed the connection in the middle of the stream");
    if (frame.empty()) break;
    PSM_RETURN_IF_ERROR(sink(frame));
  }
  PSM_ASSIGN_OR_RETURN(Json fin, ReadReply(fd, "send"));
  const Json* s = fin.Find("send");
  return s ? ctl::SendStatsFromJson(*s) : SendStats{};
}

Result<ReceiveResult> Client::Receive(const std::string& name, bool force,
                                      const std::function<Result<size_t>(char*, size_t)>& source) {
  Json req = ctl::Request(ctl::kOpReceive);
  req.Set("name", name).Set("force", force).Set("v", version_);
  PSM_ASSIGN_OR_RETURN(int fd, Dial());
  FdCloser closer{fd};
  NoTimeouts(fd);
  PSM_RETURN_IF_ERROR(ctl::WriteFrame(fd, req.Dump()));
  PSM_RETURN_IF_ERROR(ReadReply(fd, "receive").status());
  std::string buf(ctl::kStreamFrameBytes, '\0');
  while (true) {
    Result<size_t> n = source(buf.data(), buf.size());
    // A source error: hang up before the end frame, so the daemon abandons
    // the receive, and say what went wrong here.
    if (!n.ok()) return n.status();
    // The daemon may stop reading early (a bad stream): its reply says why.
    if (!ctl::WriteFrame(fd, std::string_view(buf.data(), n.value())).ok()) break;
    if (n.value() == 0) break;
  }
  PSM_ASSIGN_OR_RETURN(Json fin, ReadReply(fd, "receive"));
  const Json* r = fin.Find("receive");
  return r ? ctl::ReceiveFromJson(*r) : ReceiveResult{};
}

Status Client::Hello() {
  PSM_ASSIGN_OR_RETURN(Json r, Call(ctl::Request(ctl::kOpHello), true, /*query=*/true));
  int server_max = static_cast<int>(r.GetInt("version", 0));
  int server_min = static_cast<int>(r.GetInt("min_version", server_max));
  int v = std::min(server_max, ctl::kProtocolVersion);
  if (v < server_min || v < ctl::kMinProtocolVersion) {
    return Status::NotSupported("the daemon speaks control protocol " + std::to_string(server_min) +
                                ".." + std::to_string(server_max) + ", this client " +
                                std::to_string(ctl::kMinProtocolVersion) + ".." +
                                std::to_string(ctl::kProtocolVersion));
  }
  if (r.GetString("uuid") != entry_.uuid) {
    return Status::Stale("socket " + entry_.socket + " serves volume " + r.GetString("uuid") +
                         ", not " + entry_.uuid);
  }
  version_ = v;
  may_modify_ = r.GetBool("may_modify");
  const Json* w = r.Find("writable_files");
  may_have_writers_ = w == nullptr || !w->is_number() || r.GetUint("writable_files") != 0;
  return Status::Ok();
}

Result<VolumeStatus> Client::GetStatus() {
  PSM_ASSIGN_OR_RETURN(Json r, Call(ctl::Request(ctl::kOpStatus), true, /*query=*/true));
  VolumeStatus s;
  if (const Json* j = r.Find("stats")) s.stats = ctl::StatsFromJson(*j);
  if (const Json* j = r.Find("scan")) s.scan = ctl::ScanFromJson(*j);
  if (const Json* j = r.Find("scrub")) s.scrub = ctl::ScrubFromJson(*j);
  s.volume = r.GetString("volume");
  s.mountpoint = r.GetString("mountpoint");
  s.pid = r.GetInt("pid");
  s.since = r.GetString("since");
  return s;
}

Result<SnapshotInfo> Client::CreateSnapshot(const std::string& name) {
  Json req = ctl::Request(ctl::kOpSnapshotCreate);
  req.Set("name", name);
  PSM_ASSIGN_OR_RETURN(Json r, Call(std::move(req), false));
  const Json* s = r.Find("snapshot");
  if (s == nullptr) return Status::IOError("snapshot.create reply without a snapshot");
  return ctl::SnapshotFromJson(*s);
}

Result<RestoreResult> Client::Restore(const std::string& name, bool dry_run) {
  Json req = ctl::Request(ctl::kOpRestore);
  req.Set("snapshot", name).Set("dry_run", dry_run);
  // A dry run changes nothing and may be retried; a restore is not retried
  // (running it twice is harmless, but the second report would say "nothing").
  PSM_ASSIGN_OR_RETURN(Json r, Call(std::move(req), dry_run));
  const Json* j = r.Find("restore");
  if (j == nullptr) return Status::IOError("restore reply without a result");
  return ctl::RestoreFromJson(*j);
}

Result<std::vector<std::string>> Client::DeleteSnapshots(const std::vector<std::string>& names) {
  Json req = ctl::Request(ctl::kOpSnapshotDelete);
  Json list = Json::Array();
  for (const auto& n : names) list.Push(n);
  req.Set("names", std::move(list));
  PSM_ASSIGN_OR_RETURN(Json r, Call(std::move(req), false));
  std::vector<std::string> deleted;
  if (const Json* d = r.Find("deleted")) {
    for (const Json& n : d->items()) deleted.push_back(n.AsString());
  }
  return deleted;
}

Result<std::vector<SnapshotInfo>> Client::ListSnapshots() {
  Json req = ctl::Request(ctl::kOpSnapshotList);
  req.Set("space", true);
  PSM_ASSIGN_OR_RETURN(Json r, Call(std::move(req), true));
  std::vector<SnapshotInfo> out;
  if (const Json* l = r.Find("snapshots")) {
    for (const Json& s : l->items()) out.push_back(ctl::SnapshotFromJson(s));
  }
  return out;
}

Result<ScanStatus> Client::StartScan() {
  // Restarting a scan twice is harmless: idempotent enough to retry.
  PSM_ASSIGN_OR_RETURN(Json r, Call(ctl::Request(ctl::kOpScanStart), true));
  const Json* s = r.Find("scan");
  return s ? ctl::ScanFromJson(*s) : ScanStatus{};
}

Result<ScanStatus> Client::GetScanStatus() {
  PSM_ASSIGN_OR_RETURN(Json r, Call(ctl::Request(ctl::kOpScanStatus), true, /*query=*/true));
  const Json* s = r.Find("scan");
  return s ? ctl::ScanFromJson(*s) : ScanStatus{};
}

Status Client::Sync() {
  Result<Json> r = Call(ctl::Request(ctl::kOpSync), true);
  return r.status();
}

}  // namespace psm
