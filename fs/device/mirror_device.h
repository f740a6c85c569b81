// MirrorDevice: the volume's image and, optionally, a mirror: a second
// image (a file or a block device, normally on another disk) that holds the
// same blocks (docs/integrity.md, "Mirror").
//
// Every volume's image is opened through a MirrorDevice, with or without a
// mirror, so that a mirror can be attached to a mounted volume.
//
//   * Write goes to every side that is not faulted (a side being resilvered
//     included). A side whose write or sync fails is faulted: it gets no
//     more I/O, the state file records it stale, and the volume goes on
//     with the other side ("degraded"). The write fails only when no
//     complete side took it.
//   * Read is served by the first side that can serve the range (the
//     primary unless it is stale); an EIO there is retried on the other.
//     The core verifies checksums itself and, on a mismatch, reads the
//     other side (ReadSide) and rewrites the bad copy (RepairSide):
//     fs/core/fs_mirror.cc.
//   * Sync syncs every side that is not faulted; it fails only when no
//     complete side synced.
//   * Resilver copies a stale side from the complete one, from the cursor
//     of the state file to the end, while the volume serves: each chunk is
//     copied with writes to that chunk held back (and writes in flight to
//     it drained first), so no write can land between the copy's read and
//     its write; writes elsewhere go to both sides as always. The cursor is
//     stored (after a sync of the copied side) every kSaveBytes, so a
//     resilver killed at any point resumes there and loses nothing.
//
// The state (which side is stale and up to where it is good) lives in a
// small text file next to the image, VOLUME/mirror, replaced atomically
// (write, fsync, rename, fsync of the directory). A side is recorded stale
// before any write that it misses is acknowledged by a sync.
//
// Thread safety: every method may be called from many threads. mu_ is a
// leaf lock (no call into a side device is made while holding it, except
// the state file's own write, which takes no other lock).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/device/block_device.h"
#include "fs/device/mirror_info.h"
#include "meta/status.h"

namespace psm {

// The file VOLUME/mirror.
struct MirrorState {
  std::string path;    // the mirror's path; "" = no mirror
  int stale = -1;      // -1: both sides hold every block; 0 or 1: that side
                       // holds good blocks only below `cursor`
  uint64_t cursor = 0; // bytes
};

// kNotFound when there is no file (no mirror).
Status LoadMirrorState(const std::string& file, MirrorState* st);
// Atomic and durable.
Status SaveMirrorState(const std::string& file, const MirrorState& st);

class MirrorDevice : public BlockDevice {
 public:
  // `state_file` "" keeps the state in memory only (unit tests).
  MirrorDevice(std::unique_ptr<BlockDevice> primary, std::string primary_path,
               std::string state_file);
  ~MirrorDevice() override;

  // At open: the state read from the file and the mirror opened from
  // st.path (nullptr when it could not be: `missing_reason` says why).
  // A missing mirror makes the volume degraded and (unless `read_only`) is
  // recorded stale. Fails when the only complete side is missing.
  Status SetUp(const MirrorState& st, std::unique_ptr<BlockDevice> mirror,
               const std::string& missing_reason, bool read_only);

  Status Read(uint64_t off, void* buf, size_t n) override;
  Status Write(uint64_t off, const void* buf, size_t n) override;
  Status Sync() override;
  uint64_t size() const override { return size_; }
  int fd() const override;
  // Read-ahead hint to every side that can serve the range (scrub reads both).
  void WillNeed(uint64_t off, uint64_t n) override;

  bool mirrored() const { return mirrored_.load(std::memory_order_acquire); }
  // The primary image (before SetUp only: the mount's superblock checks).
  BlockDevice* Side0() { return sides_[0].dev.get(); }
  // Sides that may serve [off, off+n), preferred first (0 to 2 of them).
  std::vector<int> ReadableSides(uint64_t off, uint64_t n);
  Status ReadSide(int side, uint64_t off, void* buf, size_t n);
  // Reads from the preferred side that can serve the range, with no retry
  // on the other (one lock): the fast path of a read whose caller heals
  // a failure itself (ReadBlocksMirrored). Sets *side to the side read.
  Status ReadFirst(uint64_t off, void* buf, size_t n, int* side = nullptr);
  // Rewrites a bad copy on `side` with bytes read (and verified) from the
  // other; counted and logged by the caller.
  Status RepairSide(int side, uint64_t off, const void* buf, size_t n);
  void NoteChecksumErrors(int side, uint64_t blocks);

  // A new mirror (its path is stored); it is stale until resilvered.
  Status Attach(std::unique_ptr<BlockDevice> mirror, const std::string& path);
  // Stops a resilver, forgets the mirror. Refused while the primary is the
  // stale side (it is being rebuilt from the mirror).
  Status Detach();
  // Starts (or resumes) the resilver of a stale side that is online; a
  // no-op when there is none. `rate_bytes_s` 0: as fast as the disks go.
  void StartResilver(uint64_t rate_bytes_s = 0);
  // Stops it and stores its cursor; safe to call twice.
  void StopResilver();
  MirrorInfo Info();
  // Waits until no resilver runs (tests and offline attach).
  Status WaitResilver();

 private:
  struct Side {
    std::shared_ptr<BlockDevice> dev;  // null: missing or detached
    MirrorSideInfo info;
    bool faulted = false;
  };
  struct Span {
    uint64_t lo, hi;
  };
  static bool Overlap(const Span& a, const Span& b) { return a.lo < b.hi && b.lo < a.hi; }
  // A write in flight ended: unregisters it and wakes a waiting resilver.
  // mu_ held.
  void EndWriteLocked(const Span& me);
  bool Complete(int s) const;              // mu_ held
  bool UsableFor(int s, uint64_t end) const;  // mu_ held
  Status Persist();                        // mu_ held
  // Marks `s` faulted after `why`; false when it was the only complete
  // side (the I/O then fails). mu_ held.
  bool FaultLocked(int s, const std::string& op, const Status& why);
  void ResilverLoop(uint64_t rate);
  // Syncs the side being resilvered; a failure faults it. Takes mu_.
  Status SyncCopied(int dst);
  Status CopyChunk(int src, int dst, uint64_t lo, uint64_t hi, std::string* buf);

  const uint64_t size_;
  const std::string state_file_;
  std::atomic<bool> mirrored_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  Side sides_[2];            // GUARDED_BY(mu_)
  MirrorState st_;           // GUARDED_BY(mu_); cursor: copied so far
  uint64_t durable_cursor_ = 0;  // copied and synced; what Persist stores
  bool read_only_ = false;   // GUARDED_BY(mu_)
  std::vector<Span> inflight_;  // writes in flight; GUARDED_BY(mu_)
  Span copying_{0, 0};          // the chunk a resilver copies; GUARDED_BY(mu_)
  bool resilver_stop_ = false;  // GUARDED_BY(mu_)
  bool resilver_running_ = false;  // GUARDED_BY(mu_)
  Status resilver_result_;         // GUARDED_BY(mu_)
  std::thread resilver_;        // started/joined under resilver_ctl_
  std::mutex resilver_ctl_;     // above mu_; serialises Start/Stop/Detach
};

}  // namespace psm
