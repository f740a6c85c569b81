#include "fs/device/mirror_device.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "fs/base/log.h"
#include "fs/device/sync_dir.h"

namespace psm {
namespace {

constexpr uint64_t kChunk = 1u << 20;       // one resilver copy step
constexpr uint64_t kSaveBytes = 64u << 20;  // the cursor is stored every 64 MiB
constexpr uint64_t kBlock = 4096;           // per-block retry of a failed chunk read
constexpr char kMagic[] = "psmfs-mirror 1";

std::string SideName(int s) { return s == 0 ? "image" : "mirror"; }

}  // namespace

Status LoadMirrorState(const std::string& file, MirrorState* st) {
  *st = MirrorState();
  std::ifstream in(file);
  if (!in) {
    if (errno == ENOENT) return Status::NotFound("no mirror");
    return Status::FromErrno(errno, "cannot read " + file);
  }
  std::string line;
  if (!std::getline(in, line) || line != kMagic) {
    return Status::Corruption(file + " is not a psmfs mirror state file");
  }
  bool have_path = false;
  while (std::getline(in, line)) {
    const size_t sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string val = sp == std::string::npos ? "" : line.substr(sp + 1);
    try {
      if (key == "path") {
        st->path = val;
        have_path = !val.empty();
      } else if (key == "stale") {
        st->stale = std::stoi(val);
      } else if (key == "cursor") {
        st->cursor = std::stoull(val);
      }
    } catch (const std::exception&) {
      return Status::Corruption(file + ": bad line '" + line + "'");
    }
  }
  if (!have_path || st->stale < -1 || st->stale > 1) {
    return Status::Corruption(file + ": incomplete mirror state");
  }
  return Status::Ok();
}

Status SaveMirrorState(const std::string& file, const MirrorState& st) {
  const std::string tmp = file + ".tmp";
  std::ostringstream o;
  o << kMagic << "\npath " << st.path << "\nstale " << st.stale << "\ncursor " << st.cursor
    << "\n";
  const std::string text = o.str();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "cannot write " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  int e = errno;
  ::close(fd);
  if (!ok) return Status::FromErrno(e, "cannot write " + tmp);
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    return Status::FromErrno(errno, "cannot replace " + file);
  }
  return SyncDirOf(file);
}

MirrorDevice::MirrorDevice(std::unique_ptr<BlockDevice> primary, std::string primary_path,
                           std::string state_file)
    : size_(primary->size()), state_file_(std::move(state_file)) {
  sides_[0].dev = std::move(primary);
  sides_[0].info.path = std::move(primary_path);
  sides_[0].info.health = "online";
}

MirrorDevice::~MirrorDevice() { StopResilver(); }

bool MirrorDevice::Complete(int s) const {
  return sides_[s].dev && !sides_[s].faulted && st_.stale != s;
}

bool MirrorDevice::UsableFor(int s, uint64_t end) const {
  return sides_[s].dev && !sides_[s].faulted && (st_.stale != s || end <= st_.cursor);
}

Status MirrorDevice::Persist() {
  if (state_file_.empty() || read_only_) return Status::Ok();
  if (st_.path.empty()) {
    if (::unlink(state_file_.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "cannot remove " + state_file_);
    }
    return SyncDirOf(state_file_);
  }
  MirrorState d = st_;
  d.cursor = st_.stale >= 0 ? durable_cursor_ : 0;
  return SaveMirrorState(state_file_, d);
}

Status MirrorDevice::SetUp(const MirrorState& st, std::unique_ptr<BlockDevice> mirror,
                           const std::string& missing_reason, bool read_only) {
  std::lock_guard<std::mutex> l(mu_);
  read_only_ = read_only;
  st_ = st;
  durable_cursor_ = st.cursor;
  if (st.path.empty()) return Status::Ok();
  mirrored_.store(true, std::memory_order_release);
  sides_[1].info.path = st.path;
  if (st.stale == 0) {
    sides_[0].info.health = "stale";
    sides_[0].info.reason = "being rebuilt from the mirror";
  }
  if (mirror && mirror->size() < size_) {
    return Status::Invalid("the mirror " + st.path + " is smaller than the image");
  }
  if (!mirror) {
    sides_[1].info.health = "missing";
    sides_[1].info.reason = missing_reason;
    if (st.stale == 0) {
      return Status::IOError("the image is incomplete (a resilver from the mirror " + st.path +
                             " did not finish) and the mirror is missing: " + missing_reason);
    }
    PSM_LOG(kLogError,
            "mirror %s is missing (%s): the volume runs DEGRADED, with a single copy of its "
            "data; it is resilvered when the mirror is back at the next mount",
            st.path.c_str(), missing_reason.c_str());
    if (st_.stale != 1) {
      st_.stale = 1;
      st_.cursor = 0;
      durable_cursor_ = 0;
      PSM_RETURN_IF_ERROR(Persist());
    }
    return Status::Ok();
  }
  sides_[1].dev = std::move(mirror);
  sides_[1].info.health = st.stale == 1 ? "stale" : "online";
  return Status::Ok();
}

int MirrorDevice::fd() const {
  if (mirrored()) return -1;
  return sides_[0].dev->fd();
}

void MirrorDevice::WillNeed(uint64_t off, uint64_t n) {
  std::shared_ptr<BlockDevice> d[2];
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int s : {0, 1}) {
      if (UsableFor(s, off + n)) d[s] = sides_[s].dev;
    }
  }
  for (auto& x : d) {
    if (x) x->WillNeed(off, n);
  }
}

std::vector<int> MirrorDevice::ReadableSides(uint64_t off, uint64_t n) {
  std::vector<int> out;
  std::lock_guard<std::mutex> l(mu_);
  // The primary first: a mirror adds no cost to reads.
  for (int s : {0, 1}) {
    if (UsableFor(s, off + n)) out.push_back(s);
  }
  return out;
}

Status MirrorDevice::ReadSide(int side, uint64_t off, void* buf, size_t n) {
  std::shared_ptr<BlockDevice> d;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!UsableFor(side, off + n)) {
      return Status::IOError("the " + SideName(side) + " cannot serve this range now");
    }
    d = sides_[side].dev;
  }
  Status s = d->Read(off, buf, n);
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    sides_[side].info.read_errors++;
  }
  return s;
}

Status MirrorDevice::ReadFirst(uint64_t off, void* buf, size_t n, int* side) {
  std::shared_ptr<BlockDevice> d;
  int s = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    while (s < 2 && !UsableFor(s, off + n)) ++s;
    if (s == 2) return Status::IOError("no copy of the image can serve this range");
    d = sides_[s].dev;
  }
  if (side) *side = s;
  Status st = d->Read(off, buf, n);
  if (!st.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    sides_[s].info.read_errors++;
  }
  return st;
}

Status MirrorDevice::Read(uint64_t off, void* buf, size_t n) {
  int first = -1;
  Status last = ReadFirst(off, buf, n, &first);
  if (last.ok() || first < 0 || !mirrored()) return last;
  auto warn = [&](int side, const char* next) {
    PSM_LOG(kLogWarning, "mirror: read of %zu bytes at %llu from the %s failed (%s)%s", n,
            static_cast<unsigned long long>(off), SideName(side).c_str(),
            last.ToString().c_str(), next);
  };
  warn(first, first == 0 ? ": trying the mirror" : "");
  for (int s : ReadableSides(off, n)) {
    if (s == first) continue;
    last = ReadSide(s, off, buf, n);
    if (last.ok()) return last;
    warn(s, "");
  }
  return last;
}

void MirrorDevice::NoteChecksumErrors(int side, uint64_t blocks) {
  std::lock_guard<std::mutex> l(mu_);
  sides_[side].info.checksum_errors += blocks;
}

bool MirrorDevice::FaultLocked(int s, const std::string& op, const Status& why) {
  Side& sd = sides_[s];
  sd.info.write_errors++;
  const int other = 1 - s;
  const bool other_complete = Complete(other);
  if (!other_complete) {
    // The only complete copy failed: the I/O fails (and the volume with it,
    // TrackedDevice); nothing is recorded stale, there is no good side.
    PSM_LOG(kLogError, "%s %s failed (%s) and no other complete copy exists",
            SideName(s).c_str(), op.c_str(), why.ToString().c_str());
    return false;
  }
  if (!sd.faulted) {
    PSM_LOG(kLogError,
            "%s %s: %s failed (%s): it gets no more I/O and the volume runs DEGRADED on the "
            "%s; mount again with the disk replaced (or `psmctl mirror detach`/`attach`)",
            SideName(s).c_str(), sd.info.path.c_str(), op.c_str(), why.ToString().c_str(),
            SideName(other).c_str());
  }
  sd.faulted = true;
  sd.info.health = "faulted";
  sd.info.reason = op + " failed: " + why.ToString();
  st_.stale = s;
  st_.cursor = 0;
  durable_cursor_ = 0;
  Status p = Persist();
  if (!p.ok()) {
    PSM_LOG(kLogError, "cannot record the %s stale (%s): failing the I/O", SideName(s).c_str(),
            p.ToString().c_str());
    return false;
  }
  return true;
}

void MirrorDevice::EndWriteLocked(const Span& me) {
  for (size_t i = 0; i < inflight_.size(); ++i) {
    if (inflight_[i].lo == me.lo && inflight_[i].hi == me.hi) {
      inflight_[i] = inflight_.back();
      inflight_.pop_back();
      break;
    }
  }
  cv_.notify_all();  // a resilver may wait for this write to drain
}

Status MirrorDevice::Write(uint64_t off, const void* buf, size_t n) {
  std::shared_ptr<BlockDevice> d[2];
  const Span me{off, off + n};
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return !Overlap(copying_, me); });
    for (int s : {0, 1}) {
      if (sides_[s].dev && !sides_[s].faulted) d[s] = sides_[s].dev;
    }
    inflight_.push_back(me);
  }
  Status r[2];
  for (int s : {0, 1}) {
    if (d[s]) r[s] = d[s]->Write(off, buf, n);
  }
  std::lock_guard<std::mutex> l(mu_);
  EndWriteLocked(me);
  Status fail;
  for (int s : {0, 1}) {
    if (!d[s] || r[s].ok()) continue;
    if (sides_[s].dev != d[s]) continue;  // detached meanwhile
    fail = r[s];
    if (!sides_[s].faulted) FaultLocked(s, "write", r[s]);
  }
  for (int s : {0, 1}) {
    if (d[s] && r[s].ok() && Complete(s)) return Status::Ok();
  }
  return fail.ok() ? Status::IOError("no complete copy of the image took the write") : fail;
}

Status MirrorDevice::Sync() {
  std::shared_ptr<BlockDevice> d[2];
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int s : {0, 1}) {
      if (sides_[s].dev && !sides_[s].faulted) d[s] = sides_[s].dev;
    }
  }
  Status r[2];
  for (int s : {0, 1}) {
    if (d[s]) r[s] = d[s]->Sync();
  }
  std::lock_guard<std::mutex> l(mu_);
  Status fail;
  for (int s : {0, 1}) {
    if (!d[s] || r[s].ok() || sides_[s].dev != d[s]) continue;
    fail = r[s];
    if (!sides_[s].faulted) FaultLocked(s, "sync", r[s]);
  }
  for (int s : {0, 1}) {
    if (d[s] && r[s].ok() && Complete(s)) return Status::Ok();
  }
  return fail.ok() ? Status::IOError("no complete copy of the image could be synced") : fail;
}

Status MirrorDevice::RepairSide(int side, uint64_t off, const void* buf, size_t n) {
  std::shared_ptr<BlockDevice> d;
  const Span me{off, off + n};
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return !Overlap(copying_, me); });
    if (!sides_[side].dev || sides_[side].faulted) {
      return Status::IOError("the " + SideName(side) + " is not online");
    }
    d = sides_[side].dev;
    inflight_.push_back(me);
  }
  Status s = d->Write(off, buf, n);
  std::lock_guard<std::mutex> l(mu_);
  EndWriteLocked(me);
  if (s.ok()) {
    sides_[side].info.repaired_blocks += (n + kBlock - 1) / kBlock;
  } else if (sides_[side].dev == d && !sides_[side].faulted) {
    FaultLocked(side, "repair write", s);
  }
  return s;
}

Status MirrorDevice::Attach(std::unique_ptr<BlockDevice> mirror, const std::string& path) {
  std::lock_guard<std::mutex> c(resilver_ctl_);
  std::lock_guard<std::mutex> l(mu_);
  if (read_only_) return Status::ReadOnly("the volume is mounted read-only");
  if (!st_.path.empty()) {
    return Status::Exists("the volume already has a mirror: " + st_.path +
                          " (detach it first: psmctl mirror detach)");
  }
  if (path.empty() || path.find('\n') != std::string::npos) {
    return Status::Invalid("bad mirror path");
  }
  if (mirror->size() < size_) {
    return Status::Invalid(path + " holds " + std::to_string(mirror->size()) +
                           " bytes; the image needs " + std::to_string(size_));
  }
  sides_[1] = Side();
  sides_[1].dev = std::move(mirror);
  sides_[1].info.path = path;
  sides_[1].info.health = "stale";
  st_ = MirrorState{path, 1, 0};
  durable_cursor_ = 0;
  Status p = Persist();
  if (!p.ok()) {
    sides_[1] = Side();
    st_ = MirrorState();
    return p;
  }
  mirrored_.store(true, std::memory_order_release);
  PSM_LOG(kLogNotice, "mirror %s attached: resilvering", path.c_str());
  return Status::Ok();
}

Status MirrorDevice::Detach() {
  std::lock_guard<std::mutex> c(resilver_ctl_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (read_only_) return Status::ReadOnly("the volume is mounted read-only");
    if (st_.path.empty()) return Status::NotFound("the volume has no mirror");
    if (st_.stale == 0 || sides_[0].faulted) {
      return Status::Busy("the mirror " + st_.path +
                          " holds the only complete copy (the image is being rebuilt from it or "
                          "has failed): it cannot be detached");
    }
    resilver_stop_ = true;
  }
  cv_.notify_all();
  if (resilver_.joinable()) resilver_.join();
  std::lock_guard<std::mutex> l(mu_);
  const std::string path = st_.path;
  MirrorState old = st_;
  const uint64_t old_durable = durable_cursor_;
  st_ = MirrorState();
  Status p = Persist();
  if (!p.ok()) {
    st_ = old;
    durable_cursor_ = old_durable;
    return p;
  }
  sides_[1] = Side();  // writes in flight keep their own reference
  mirrored_.store(false, std::memory_order_release);
  PSM_LOG(kLogNotice, "mirror %s detached", path.c_str());
  return Status::Ok();
}

void MirrorDevice::StartResilver(uint64_t rate_bytes_s) {
  std::lock_guard<std::mutex> c(resilver_ctl_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (resilver_running_ || read_only_) return;
    const int dst = st_.stale;
    if (dst < 0 || !sides_[dst].dev || sides_[dst].faulted || !Complete(1 - dst)) return;
    resilver_stop_ = false;
    resilver_running_ = true;
    resilver_result_ = Status::Ok();
    sides_[dst].info.health = "resilvering";
  }
  if (resilver_.joinable()) resilver_.join();
  resilver_ = std::thread([this, rate_bytes_s] { ResilverLoop(rate_bytes_s); });
}

void MirrorDevice::StopResilver() {
  std::lock_guard<std::mutex> c(resilver_ctl_);
  {
    std::lock_guard<std::mutex> l(mu_);
    resilver_stop_ = true;
  }
  cv_.notify_all();
  if (resilver_.joinable()) resilver_.join();
}

Status MirrorDevice::WaitResilver() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !resilver_running_; });
  return resilver_result_;
}

MirrorInfo MirrorDevice::Info() {
  std::lock_guard<std::mutex> l(mu_);
  MirrorInfo mi;
  mi.mirrored = !st_.path.empty();
  for (int s : {0, 1}) mi.sides[s] = sides_[s].info;
  mi.stale = st_.stale;
  mi.degraded = mi.mirrored && (st_.stale >= 0 || sides_[0].faulted || sides_[1].faulted ||
                                !sides_[1].dev);
  mi.resilvering = resilver_running_;
  mi.resilver_done = st_.stale >= 0 ? st_.cursor : 0;
  mi.resilver_total = size_;
  return mi;
}

Status MirrorDevice::CopyChunk(int src, int dst, uint64_t lo, uint64_t hi, std::string* buf) {
  std::shared_ptr<BlockDevice> from, to;
  {
    std::lock_guard<std::mutex> l(mu_);
    from = sides_[src].dev;
    to = sides_[dst].dev;
  }
  if (!from || !to) return Status::IOError("a side went away");
  // Never-written parts of an image file (holes) hold no block anyone
  // reads: nothing to copy.
  const int fd = from->fd();
  if (fd >= 0) {
    off_t d = ::lseek(fd, static_cast<off_t>(lo), SEEK_DATA);
    if ((d < 0 && errno == ENXIO) || (d >= 0 && static_cast<uint64_t>(d) >= hi)) {
      return Status::Ok();
    }
  }
  buf->resize(hi - lo);
  Status s = from->Read(lo, buf->data(), hi - lo);
  if (s.ok()) return to->Write(lo, buf->data(), hi - lo);
  // A bad sector on the source: block by block; what cannot be read is
  // left as it is (and logged: the scrub reports it if a file reads it).
  for (uint64_t o = lo; o < hi; o += kBlock) {
    const uint64_t len = std::min(kBlock, hi - o);
    Status r = from->Read(o, buf->data(), len);
    if (!r.ok()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        sides_[src].info.read_errors++;
      }
      PSM_LOG(kLogError, "resilver: %zu bytes at %llu of the %s cannot be read (%s): not copied",
              static_cast<size_t>(len), static_cast<unsigned long long>(o),
              SideName(src).c_str(), r.ToString().c_str());
      continue;
    }
    PSM_RETURN_IF_ERROR(to->Write(o, buf->data(), len));
  }
  return Status::Ok();
}

Status MirrorDevice::SyncCopied(int dst) {
  std::shared_ptr<BlockDevice> d;
  {
    std::lock_guard<std::mutex> l(mu_);
    d = sides_[dst].dev;
  }
  Status s = d ? d->Sync() : Status::IOError("detached");
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    if (!sides_[dst].faulted) FaultLocked(dst, "sync", s);
  }
  return s;
}

void MirrorDevice::ResilverLoop(uint64_t rate) {
  std::string buf;
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t copied = 0, since_save = 0;
  Status result;
  bool finished = false;
  int dst = -1;
  std::string dst_path;
  while (true) {
    uint64_t lo, hi;
    int src;
    {
      std::unique_lock<std::mutex> l(mu_);
      if (resilver_stop_) break;
      dst = st_.stale;
      if (dst < 0) break;
      src = 1 - dst;
      dst_path = sides_[dst].info.path;
      if (!Complete(src) || !sides_[dst].dev || sides_[dst].faulted) {
        result = Status::IOError("resilver stopped: a side failed");
        break;
      }
      lo = st_.cursor;
      if (lo >= size_) {
        finished = true;
        break;
      }
      hi = std::min(size_, lo + kChunk);
      copying_ = Span{lo, hi};
      cv_.wait(l, [&] {
        for (const Span& w : inflight_) {
          if (Overlap(w, copying_)) return false;
        }
        return true;
      });
    }
    Status s = CopyChunk(src, dst, lo, hi, &buf);
    {
      std::lock_guard<std::mutex> l(mu_);
      copying_ = Span{0, 0};
      cv_.notify_all();
      if (!s.ok()) {
        if (!sides_[dst].faulted) FaultLocked(dst, "resilver write", s);
        result = s;
        break;
      }
      st_.cursor = hi;
    }
    copied += hi - lo;
    since_save += hi - lo;
    if (since_save >= kSaveBytes) {
      since_save = 0;
      Status ss = SyncCopied(dst);
      std::lock_guard<std::mutex> l(mu_);
      if (!ss.ok()) {
        result = ss;
        break;
      }
      if (st_.stale == dst) {
        durable_cursor_ = hi;
        (void)Persist();
      }
    }
    if (rate > 0) {
      const double want_s = static_cast<double>(copied) / static_cast<double>(rate);
      const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (want_s > took_s) {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::chrono::duration<double>(want_s - took_s),
                     [&] { return resilver_stop_; });
      }
    }
  }
  if (finished) {
    Status ss = SyncCopied(dst);
    std::lock_guard<std::mutex> l(mu_);
    if (!ss.ok()) {
      result = ss;
    } else if (st_.stale == dst) {
      MirrorState old = st_;
      st_.stale = -1;
      st_.cursor = 0;
      durable_cursor_ = 0;
      Status p = Persist();
      if (!p.ok()) {
        st_ = old;
        result = p;
      } else {
        sides_[dst].info.health = "online";
        sides_[dst].info.reason.clear();
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        PSM_LOG(kLogNotice, "resilver of the %s %s finished: %llu MiB copied in %.1f s",
                SideName(dst).c_str(), dst_path.c_str(),
                static_cast<unsigned long long>(copied >> 20), secs);
      }
    }
  } else if (dst >= 0) {
    // Stopped (unmount, detach) or failed: store how far it got.
    std::shared_ptr<BlockDevice> d;
    {
      std::lock_guard<std::mutex> l(mu_);
      d = sides_[dst].faulted ? nullptr : sides_[dst].dev;
    }
    if (d && d->Sync().ok()) {
      std::lock_guard<std::mutex> l(mu_);
      if (st_.stale == dst) {
        durable_cursor_ = st_.cursor;
        (void)Persist();
      }
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  if (dst >= 0 && sides_[dst].info.health == "resilvering") sides_[dst].info.health = "stale";
  resilver_running_ = false;
  resilver_result_ = result;
  cv_.notify_all();
}

}  // namespace psm
