// FuseAdapter: operation table, INIT negotiation, and the invalidation
// notifier thread. The request handlers are in fs/fuse_ops_*.cc.
#include "fs/fuse/fuse_adapter.h"

#include <pthread.h>
#include <signal.h>

#include <fcntl.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <utility>

#include "fs/fuse/fuse_ops.h"

namespace psm {
namespace {

void InitOp(void* userdata, fuse_conn_info* conn) {
  static_cast<FuseAdapter*>(userdata)->OnInit(conn);
}

// Every request handler runs inside Counted: the time from the handler's
// start to its return (it has sent its one reply by then: decoding, the
// core's work and the reply's write to /dev/fuse) goes to the adapter's
// RequestMetrics (fs/base/request_metrics.h) under `kOp`. The metrics pointer is
// read before the handler runs: the reply frees `req`.
uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

template <RequestOp kOp, auto kHandler>
struct Counted;
template <RequestOp kOp, typename... Args, void (*kHandler)(fuse_req_t, Args...)>
struct Counted<kOp, kHandler> {
  static void Fn(fuse_req_t req, Args... args) {
    RequestMetrics* m = static_cast<FuseAdapter*>(fuse_req_userdata(req))->request_metrics();
    const uint64_t t0 = MonotonicNs();
    kHandler(req, args...);
    m->Record(kOp, MonotonicNs() - t0);
  }
};

fuse_lowlevel_ops MakeOps() {
  namespace f = fuse_ops;
  using Op = RequestOp;
  fuse_lowlevel_ops ops{};
  ops.init = InitOp;
  ops.lookup = Counted<Op::kLookup, f::Lookup>::Fn;
  ops.forget = Counted<Op::kForget, f::Forget>::Fn;
  ops.forget_multi = Counted<Op::kBatchForget, f::ForgetMulti>::Fn;
  ops.getattr = Counted<Op::kGetattr, f::GetAttr>::Fn;
  ops.setattr = Counted<Op::kSetattr, f::SetAttr>::Fn;
  ops.readlink = Counted<Op::kReadlink, f::ReadLink>::Fn;
  ops.mknod = Counted<Op::kMknod, f::MkNod>::Fn;
  ops.mkdir = Counted<Op::kMkdir, f::MkDir>::Fn;
  ops.symlink = Counted<Op::kSymlink, f::Symlink>::Fn;
  ops.link = Counted<Op::kLink, f::Link>::Fn;
  ops.unlink = Counted<Op::kUnlink, f::Unlink>::Fn;
  ops.rmdir = Counted<Op::kRmdir, f::RmDir>::Fn;
  ops.rename = Counted<Op::kRename, f::Rename>::Fn;
  ops.statfs = Counted<Op::kStatfs, f::StatFs>::Fn;
  ops.open = Counted<Op::kOpen, f::Open>::Fn;
  ops.create = Counted<Op::kCreate, f::Create>::Fn;
  ops.read = Counted<Op::kRead, f::Read>::Fn;
  ops.write = Counted<Op::kWrite, f::Write>::Fn;
  ops.release = Counted<Op::kRelease, f::Release>::Fn;
  ops.fsync = Counted<Op::kFsync, f::Fsync>::Fn;
  ops.fallocate = Counted<Op::kFallocate, f::Fallocate>::Fn;
  ops.lseek = Counted<Op::kLseek, f::Lseek>::Fn;
  ops.opendir = Counted<Op::kOpendir, f::OpenDir>::Fn;
  ops.readdir = Counted<Op::kReaddir, f::ReadDir>::Fn;
  ops.readdirplus = Counted<Op::kReaddirplus, f::ReadDirPlus>::Fn;
  ops.releasedir = Counted<Op::kReleasedir, f::ReleaseDir>::Fn;
  ops.fsyncdir = Counted<Op::kFsyncdir, f::FsyncDir>::Fn;
  ops.setxattr = Counted<Op::kSetxattr, f::SetXattr>::Fn;
  ops.getxattr = Counted<Op::kGetxattr, f::GetXattr>::Fn;
  ops.listxattr = Counted<Op::kListxattr, f::ListXattr>::Fn;
  ops.removexattr = Counted<Op::kRemovexattr, f::RemoveXattr>::Fn;
  // Not implemented on purpose: flush (close has nothing to do here: the
  // kernel writes dirty pages back before it would send FLUSH, and their
  // WRITE errors reach close(2) anyway; libfuse answers ENOSYS once and the
  // kernel stops sending FLUSH, one round trip less per close), access
  // (default_permissions: the kernel checks), getlk/setlk/flock (the kernel
  // keeps locks locally), ioctl, poll, bmap, copy_file_range, write_buf (no
  // splice; see docs/fuse-adapter.md).
  return ops;
}

}  // namespace

FuseAdapter::FuseAdapter(FileSystem* fs, FuseAdapterOptions opts)
    : fs_(fs), opts_(opts) {}

FuseAdapter::~FuseAdapter() { Stop(); }

const fuse_lowlevel_ops* FuseAdapter::Ops() {
  static const fuse_lowlevel_ops kOps = MakeOps();
  return &kOps;
}

size_t FuseAdapter::OpsSize() { return sizeof(fuse_lowlevel_ops); }

void FuseAdapter::OnInit(fuse_conn_info* conn) {
  // I/O sizes. libfuse has already lowered max_write to what its receive
  // buffer holds (1 MiB with 4 KiB pages, 128 KiB on kernels without
  // FUSE_MAX_PAGES); it derives max_pages from max_write after this returns.
  conn->max_write = std::min<unsigned>(conn->max_write, opts_.max_io_bytes);
  // The kernel takes min(its bdi limit, this); psmfs_main raises the bdi
  // limit through sysfs after mounting.
  conn->max_readahead = opts_.max_readahead_bytes;
  conn->max_background = opts_.max_background;
  conn->congestion_threshold = opts_.max_background * 3 / 4;
  conn->time_gran = 1;  // the core keeps nanoseconds

  const unsigned cap = conn->capable;
  unsigned want = conn->want;
  auto enable = [&](unsigned flag) {
    if (cap & flag) want |= flag;
  };
  if (opts_.writeback_cache) enable(FUSE_CAP_WRITEBACK_CACHE);
  enable(FUSE_CAP_ASYNC_READ);
  enable(FUSE_CAP_PARALLEL_DIROPS);
  enable(FUSE_CAP_ATOMIC_O_TRUNC);  // OpenFile applies O_TRUNC itself
  enable(FUSE_CAP_ASYNC_DIO);
  enable(FUSE_CAP_AUTO_INVAL_DATA);
  enable(FUSE_CAP_CACHE_SYMLINKS);  // a symlink's target never changes
  if (opts_.posix_acl && (cap & FUSE_CAP_POSIX_ACL) && (cap & FUSE_CAP_DONT_MASK)) {
    want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
  }
  if (opts_.readdirplus) {
    enable(FUSE_CAP_READDIRPLUS);
    enable(FUSE_CAP_READDIRPLUS_AUTO);
  } else {
    want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
  }
  // Off on purpose:
  //  - HANDLE_KILLPRIV: the kernel clears setuid/setgid on write/chown/
  //    truncate itself (through SETATTR) instead of trusting the core to.
  //  - SPLICE_*: replies are built in memory (fuse_reply_buf); splicing would
  //    only add a pipe copy. write_buf is not implemented, so SPLICE_READ
  //    would make libfuse copy every WRITE out of a pipe.
  //  - EXPORT_SUPPORT: no NFS export ("." / ".." lookups are not served).
  if (!opts_.posix_acl) want &= ~(FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK);
  want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_SPLICE_READ |
            FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_EXPORT_SUPPORT);
  conn->want = want;
  writeback_enabled_.store((want & FUSE_CAP_WRITEBACK_CACHE) != 0, std::memory_order_relaxed);
  acl_enabled_.store((want & FUSE_CAP_POSIX_ACL) != 0, std::memory_order_relaxed);
  fuse_log(FUSE_LOG_DEBUG,
           "psmfs: INIT proto %u.%u max_write=%u max_readahead=%u writeback=%d "
           "readdirplus=%d\n",
           conn->proto_major, conn->proto_minor, conn->max_write, conn->max_readahead,
           (want & FUSE_CAP_WRITEBACK_CACHE) ? 1 : 0, (want & FUSE_CAP_READDIRPLUS) ? 1 : 0);
}

Status FuseAdapter::Start(fuse_session* se) {
  if (se == nullptr) return Status::Invalid("FuseAdapter::Start: no session");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (notifier_.joinable() || se_ != nullptr) {
      return Status::Busy("FuseAdapter::Start: already started");
    }
    se_ = se;
    stopping_ = false;
  }
  // The notifier must not take the signals that end the session loop: block
  // them while the thread is created so it inherits the mask.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  notifier_ = std::thread([this] { NotifierLoop(); });
  if (opts_.max_kernel_refs != 0) shedder_ = std::thread([this] { ShedderLoop(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);

  accepting_.store(true, std::memory_order_release);
  fs_->SetInvalidators(
      [this](NodeId parent, std::string_view name) {
        Enqueue(Notice{true, parent, std::string(name)});
      },
      [this](NodeId node) {
        Enqueue(Notice{false, node, {}});
      },
      [this] { (void)Drain(10000); });
  return Status::Ok();
}

void FuseAdapter::Stop() {
  if (!accepting_.exchange(false, std::memory_order_acq_rel) && !notifier_.joinable()) return;
  // The core may still call the old callbacks until it has swapped them;
  // they see accepting_ == false and do nothing.
  fs_->SetInvalidators([](NodeId, std::string_view) {}, [](NodeId) {});
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  done_cv_.notify_all();
  shed_cv_.notify_all();
  if (shedder_.joinable()) shedder_.join();
  if (notifier_.joinable()) notifier_.join();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.notices_dropped += queue_.size();
  queue_.clear();
  se_ = nullptr;
}

FuseAdapterStats FuseAdapter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

uint64_t FuseAdapter::Enqueue(Notice n) {
  if (!accepting_.load(std::memory_order_acquire)) return 0;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return 0;
    seq = n.seq = next_seq_++;
    queue_.push_back(std::move(n));
    ++stats_.notices_queued;
  }
  cv_.notify_one();
  return seq;
}

void FuseAdapter::NoteOpen(NodeId node, int open_flags) {
  if ((open_flags & O_ACCMODE) == O_RDONLY) return;
  std::lock_guard<std::mutex> lock(writers_mu_);
  ++writers_[node];
}

void FuseAdapter::NoteRelease(NodeId node, int open_flags) {
  if ((open_flags & O_ACCMODE) == O_RDONLY) return;
  std::lock_guard<std::mutex> lock(writers_mu_);
  auto it = writers_.find(node);
  if (it != writers_.end() && --it->second <= 0) writers_.erase(it);
}

bool FuseAdapter::WaitDone(uint64_t seq, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return done_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                           [&] { return stopping_ || completed_seq_ >= seq; }) &&
         completed_seq_ >= seq;
}

bool FuseAdapter::Drain(int timeout_ms) {
  uint64_t last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last = next_seq_ - 1;
  }
  return WaitDone(last, timeout_ms);
}

bool FuseAdapter::WriteBackDirty(NodeId node, int timeout_ms) {
  if (!writeback_enabled()) return true;
  {
    std::lock_guard<std::mutex> lock(writers_mu_);
    if (!writers_.count(node)) return true;
  }
  const uint64_t seq = Enqueue(Notice{false, node, {}, 0});
  if (seq == 0) return false;
  return WaitDone(seq, timeout_ms);
}

// The cap on kernel references (docs/architecture.md, "Memory"). The
// kernel sends an inode's FORGET once nothing holds it; an invalidated
// dentry no longer does. So past the cap this asks the core for entries to
// invalidate, queues them for the notifier (in steps of 4,096, each drained
// before the next, so the queue stays small), and stops once it has asked
// for as many as the count was above 3/4 of the cap; the FORGETs arrive on
// the request threads meanwhile. It never waits on a request, and requests
// never wait on it.
void FuseAdapter::ShedderLoop() {
  const uint64_t cap = opts_.max_kernel_refs;
  const uint64_t low = cap - cap / 4;
  bool warned = false;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    shed_cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stopping_; });
    if (stopping_) return;
    lock.unlock();
    const uint64_t refs = fs_->KernelRefs();
    if (refs > cap) {
      const std::string below = opts_.mount_below ? opts_.mount_below() : std::string();
      if (!below.empty()) {
        if (!warned) {
          fuse_log(FUSE_LOG_WARNING,
                   "psmfs: the kernel holds %llu inodes, over max_kernel_refs=%llu, but %s is "
                   "mounted below the mount point and dropping dentries would unmount it: "
                   "not capping while it is there\n",
                   static_cast<unsigned long long>(refs), static_cast<unsigned long long>(cap),
                   below.c_str());
          warned = true;
        }
      } else {
        warned = false;
        auto queue = [this](NodeId parent, std::string_view name) {
          Enqueue(Notice{true, parent, std::string(name)});
        };
        for (uint64_t asked = 0; asked < refs - low;) {
          const size_t n = fs_->ShedKernelRefs(std::min<uint64_t>(refs - low - asked, 4096), queue);
          if (n == 0 || !Drain(10000)) break;
          asked += n;
          std::lock_guard<std::mutex> l(mu_);
          if (stopping_) break;
        }
      }
    }
    lock.lock();
  }
}

void FuseAdapter::NotifierLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Notice n = std::move(queue_.front());
    queue_.pop_front();
    fuse_session* se = se_;
    lock.unlock();
    // May block until the request that caused the change has finished and
    // released the directory lock in the kernel; that is why this thread
    // exists.
    int rc = n.is_entry
                 ? fuse_lowlevel_notify_inval_entry(se, n.node, n.name.c_str(), n.name.size())
                 : fuse_lowlevel_notify_inval_inode(se, n.node, 0, 0);
    if (rc != 0 && rc != -ENOENT) {
      fuse_log(FUSE_LOG_DEBUG, "psmfs: invalidate %s node %llu%s%s: %s\n",
               n.is_entry ? "entry" : "inode", static_cast<unsigned long long>(n.node),
               n.is_entry ? " name " : "", n.name.c_str(), strerror(-rc));
    }
    lock.lock();
    completed_seq_ = n.seq;
    done_cv_.notify_all();
    if (rc == 0) {
      ++stats_.notices_sent;
    } else if (rc == -ENOENT) {
      ++stats_.notices_unknown;
    } else {
      ++stats_.notices_failed;
    }
  }
}

}  // namespace psm
