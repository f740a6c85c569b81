// FuseAdapter: the FUSE low-level front end of psmfs.
//
// What it is for: the kernel speaks the FUSE protocol; psm::FileSystem (the
// FUSE-free core, fs/core/filesystem.h) speaks NodeIds, Credentials and Status.
// This adapter is the only code between the two. Each handler decodes one
// request, makes one call on the core, and sends exactly one reply; a
// Status becomes an errno only through Status::ToErrno(). The handlers live
// in fs/fuse_ops_{namespace,file,dir,xattr}.cc, one file per family; this
// file and fs/fuse/fuse_adapter.cc own the session-wide parts: the operation
// table, the INIT negotiation (capabilities, I/O sizes) and the kernel cache
// invalidation thread. docs/fuse-adapter.md describes the choices.
//
// Kernel cache invalidation: the core reports "entry (parent, name) changed"
// and "inode changed" through FileSystem::SetInvalidators. Those callbacks
// may run inside a FUSE request whose directory lock the kernel still holds,
// and fuse_lowlevel_notify_inval_* would wait for that same lock: a
// deadlock. So the callbacks only queue a notice; a dedicated notifier
// thread sends them to the kernel.
//
// Typical use (fs/psmfs_main.cc):
//   psm::FuseAdapter adapter(fs.get(), opts);
//   fuse_session* se = fuse_session_new(&args, psm::FuseAdapter::Ops(),
//                                       psm::FuseAdapter::OpsSize(), &adapter);
//   fuse_session_mount(se, mnt); adapter.Start(se);
//   fuse_session_loop_mt(se, cfg);
//   adapter.Stop(); fuse_session_unmount(se); fuse_session_destroy(se);
//   fs->Close();
//
// Thread safety: the handlers run concurrently on libfuse's worker threads;
// the adapter keeps no per-request state beyond thread-local buffers, and the
// core is thread-safe. Start() and Stop() are called from one thread (the
// one that owns the session). The invalidation callbacks may be called from
// any thread at any time between Start() and Stop(); outside that window
// they are ignored.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "fs/core/filesystem.h"
#include "fs/base/request_metrics.h"
#include "meta/status.h"

struct fuse_session;
struct fuse_lowlevel_ops;
struct fuse_conn_info;

namespace psm {

// Options of the adapter; each default documented.
struct FuseAdapterOptions {
  // Largest READ/WRITE the kernel sends (bytes). The kernel is also told
  // max_pages accordingly (libfuse derives it from max_write). Capped at what
  // libfuse's receive buffer holds (1 MiB with 4 KiB pages). Default: 1 MiB.
  uint32_t max_io_bytes = 1u << 20;
  // Kernel readahead window (bytes). The kernel uses the smaller of this and
  // its own per-mount limit (psmfs raises that to this). Default: 4 MiB, so
  // a sequential reader keeps several 1 MiB READs in flight and the
  // daemon's per-request work (checksum lookup and CRC) overlaps the disk's:
  // a cold 512 MiB read of a checksummed volume, 3 rounds, ran at 0.52-0.75x
  // of --checksum=off with 1 MiB and 0.87-1.09x with 4 MiB
  // (docs/performance.md).
  uint32_t max_readahead_bytes = 4u << 20;
  // Ask for the kernel writeback cache (buffered writes are collected in the
  // page cache and sent in large WRITEs). Default: true.
  bool writeback_cache = true;
  // POSIX ACLs (FUSE_CAP_POSIX_ACL + FUSE_CAP_DONT_MASK): the kernel
  // enforces them and caches them; the core stores them as the xattrs
  // system.posix_acl_{access,default}, keeps the mode in step and inherits
  // default ACLs (fs/core/acl.h). Implies default_permissions. Default: true.
  bool posix_acl = true;
  // Offer READDIRPLUS (entries come with their attributes, saving one LOOKUP
  // per entry for `ls -l`). Default: true.
  bool readdirplus = true;
  // Kernel limit on outstanding background requests (readahead, writeback).
  // Default: 64 (libfuse's default is 12).
  uint32_t max_background = 64;
  // How long the kernel may cache "no such entry" answers inside snapshot
  // trees, which never change (seconds). Live-tree misses are not cached, so
  // a file or snapshot created behind the kernel's back (psmctl, restore) is
  // seen at once. Default: 86400 (psmfs_main sets it from
  // MountOptions::snapshot_timeout).
  double snapshot_negative_timeout = 86400.0;
  // Negotiate FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it (needs
  // AttachIo): psmfs, not the kernel, then clears set-user-ID and
  // set-group-ID on write, truncate and chown, and the kernel stops asking
  // for security.capability before every write(2). Default: true
  // (`-o nokillpriv_v2` turns it off). docs/fuse-adapter.md.
  bool killpriv_v2 = true;
  // The cap on inodes the kernel holds (MountOptions::max_kernel_refs, via
  // KernelRefsCap): past it the shedder thread asks the core for dentries
  // to invalidate (FileSystem::ShedKernelRefs) until the kernel holds 3/4
  // of it. 0: no cap, no shedder.
  uint64_t max_kernel_refs = 0;
  // A mount strictly below the mount point ("" if none). Invalidating a
  // dentry detaches every mount below it, so the shedder does nothing while
  // one exists (it asks before each pass). Unset: none is assumed.
  std::function<std::string()> mount_below;
};

// Counters for tests and `-d` diagnostics. Monotonic.
struct FuseAdapterStats {
  uint64_t notices_queued = 0;
  uint64_t notices_sent = 0;     // the kernel accepted the notification
  uint64_t notices_unknown = 0;  // -ENOENT: the kernel had nothing cached
  uint64_t notices_failed = 0;   // any other error
  uint64_t notices_dropped = 0;  // still queued at Stop()
};

class FuseAdapter {
 public:
  // `fs` must outlive the adapter (or at least Stop()).
  explicit FuseAdapter(FileSystem* fs, FuseAdapterOptions opts = {});
  ~FuseAdapter();  // Stop()s
  FuseAdapter(const FuseAdapter&) = delete;
  FuseAdapter& operator=(const FuseAdapter&) = delete;

  // The operation table for fuse_session_new(); its userdata must be the
  // FuseAdapter.
  static const fuse_lowlevel_ops* Ops();
  static size_t OpsSize();

  // Binds the adapter to `se` (after fuse_session_new(), before the session
  // loop): installs the core's invalidators and starts the notifier thread.
  // REQUIRES: not started.
  Status Start(fuse_session* se);
  // Uninstalls the invalidators, drops notices still queued and joins the
  // notifier thread. Call after the session loop returned and before
  // fuse_session_unmount()/fuse_session_destroy(). Idempotent.
  void Stop();

  FileSystem* fs() const { return fs_; }
  const FuseAdapterOptions& options() const { return opts_; }
  FuseAdapterStats stats() const;
  // Count and latency of every request served, by operation (`psmctl
  // metrics`): the operation table times each handler (fs/fuse/fuse_adapter.cc).
  RequestMetrics* request_metrics() { return &request_metrics_; }

  // What INIT settled (valid once the kernel sent INIT).
  bool writeback_enabled() const { return writeback_enabled_.load(std::memory_order_relaxed); }
  bool acl_enabled() const { return acl_enabled_.load(std::memory_order_relaxed); }

  // Called by the INIT handler (fs/fuse/fuse_adapter.cc). Not for other callers.
  void OnInit(fuse_conn_info* conn);

  // Puts the adapter's I/O between libfuse and /dev/fuse
  // (fuse_session_custom_io on the mounted descriptor, fs/fuse/fuse_wire.cc), so
  // that it sees what libfuse 3.14 does not pass on and can negotiate
  // FUSE_HANDLE_KILLPRIV_V2. Call after fuse_session_mount(), before the
  // session loop. Without it the mount works as before, without that flag.
  Status AttachIo(fuse_session* se);
  // True once the kernel accepted FUSE_HANDLE_KILLPRIV_V2: the handlers
  // must then clear set-ID bits where the requests ask
  // (fuse_ops::KillPrivBits, fs/fuse/fuse_ops.h).
  bool killpriv_v2() const { return killpriv_v2_.load(std::memory_order_acquire); }
  // fs/fuse/fuse_wire.cc only.
  void NoteKernelInit(uint64_t unique, uint32_t kernel_flags);
  bool IsInitReply(uint64_t unique) const;
  bool TakeKillprivV2();  // the INIT reply goes out: whether to add the flag

  // Writable opens per live node, kept by the open/create/release handlers.
  // With the writeback cache, only a node with a writable open can have
  // dirty pages in the kernel: the kernel writes them all back when the last
  // writable file is released (fuse_release -> write_inode_now).
  void NoteOpen(NodeId node, int open_flags);
  void NoteRelease(NodeId node, int open_flags);

  // Makes the core's view of `node` current before SEEK_DATA/SEEK_HOLE: if
  // the kernel may hold dirty pages of it (writeback cache on and a writable
  // open exists), asks the kernel to write them back (an inode invalidation
  // launders dirty pages through WRITE requests) and waits for that, at most
  // `timeout_ms`. The work is done on the notifier thread, never on the
  // calling worker: the WRITEs need free workers, and a bounded wait means a
  // pool full of waiting seekers cannot deadlock. Returns false on timeout
  // (the caller answers from what the core has).
  bool WriteBackDirty(NodeId node, int timeout_ms = 5000);
  // Waits until every notice queued so far was handed to the kernel (or
  // `timeout_ms` passed: false). Notices go out in order.
  bool Drain(int timeout_ms);

 private:
  struct Notice {
    bool is_entry = false;  // entry (parent=node, name) or inode (node)
    NodeId node = 0;
    std::string name;
    uint64_t seq = 0;  // set by Enqueue; notices complete in order
  };
  uint64_t Enqueue(Notice n);  // returns the notice's sequence number, 0 if dropped
  // Waits until notice `seq` (and every earlier one) went out; false on timeout.
  bool WaitDone(uint64_t seq, int timeout_ms);
  void NotifierLoop();
  // Polls the core's kernel-reference count (every 50 ms) and, past
  // max_kernel_refs, queues the core's dentry invalidations (fuse_adapter.cc).
  void ShedderLoop();

  FileSystem* const fs_;
  const FuseAdapterOptions opts_;
  std::atomic<bool> writeback_enabled_{false};
  std::atomic<bool> acl_enabled_{false};
  std::atomic<bool> accepting_{false};  // between Start() and Stop()
  // INIT as the wire saw it (fs/fuse/fuse_wire.cc).
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> init_replied_{false};
  std::atomic<bool> kernel_offers_killpriv_v2_{false};
  std::atomic<bool> killpriv_v2_{false};

  fuse_session* se_ = nullptr;  // set by Start(), read by the notifier
  std::thread notifier_;
  std::thread shedder_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::condition_variable done_cv_;  // completed_seq_ advanced
  std::condition_variable shed_cv_;  // stopping_ set (the shedder's sleep)
  std::deque<Notice> queue_;
  uint64_t next_seq_ = 1;
  uint64_t completed_seq_ = 0;  // every notice with seq <= this is done
  bool stopping_ = false;
  FuseAdapterStats stats_;

  RequestMetrics request_metrics_;  // thread-safe on its own (no lock)

  std::mutex writers_mu_;  // guards writers_ (leaf lock)
  std::unordered_map<NodeId, int> writers_;
};

}  // namespace psm
