// Allocator: the in-memory free-extent index, and the scan cursor that says
// how much of the image it knows about.
//
// The truth about free space is the gaps of the `alloc` column family; this
// index is a cache of it, rebuilt by the Scanner (fs/space/scanner.h) every time a
// volume comes up. The rule that makes scans safe against every concurrent
// change (DESIGN §5, docs/scanner.md):
//   * the scanner reads each piece of `alloc` and publishes its gaps while
//     holding the allocator lock, then advances the cursor past that piece;
//   * Allocate() takes only from the index, which holds only ranges below
//     the cursor;
//   * a range being allocated stays "in flight" from Allocate() until its
//     alloc record is committed (Committed()) or it is given back (Abort());
//     the scanner never publishes an in-flight block;
//   * a freed range is "quarantined" from Free() until the metadata that
//     freed it is durable (ReleaseDurable()); the scanner never publishes a
//     quarantined block; on release, the part below the cursor enters the
//     index, the part at or above it is left for the scanner to find.
//
// Lock order: the allocator mutex is a leaf except that the scanner reads
// RocksDB while holding it (RocksDB's internal locks are below ours).
// Thread safety: all methods are thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "meta/keys.h"
#include "meta/status.h"

namespace psm {

class FreeIndex;  // fs/space/free_index.h

struct Range {
  BlockNo start = 0;
  uint64_t len = 0;
  BlockNo end() const { return start + len; }
  bool operator==(const Range&) const = default;
};

struct AllocatorStats {
  uint64_t free_blocks = 0;         // in the index (below the cursor)
  uint64_t free_ranges = 0;
  uint64_t quarantined_blocks = 0;  // freed, waiting for durability
  uint64_t inflight_blocks = 0;
  uint64_t index_bytes = 0;         // heap bytes of the free index plus the
                                    // in-flight and quarantine maps, approximate
  BlockNo cursor = 0;
  BlockNo end = 0;
  bool scan_complete = false;
  // Pieces read ahead (ScanStepPrefetched): published, and refused as
  // possibly stale (then read again under the lock). Since construction.
  uint64_t prefetched_taken = 0;
  uint64_t prefetched_refused = 0;
};

class Allocator {
 public:
  // Blocks [first, end) are allocatable (block 0 holds the superblock).
  Allocator(BlockNo first, BlockNo end);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Allocates one contiguous range of 1..want blocks, as long as possible,
  // preferring the range that starts at or after `hint` (locality for
  // sequential writes). Waits while the index has nothing and the scan is not
  // complete; kNoSpace when the scan is complete and nothing is free; kBusy
  // when the allocator was shut down. The range is in flight until
  // Committed() or Abort().
  Result<Range> Allocate(uint64_t want, BlockNo hint);
  void Committed(const Range& r);
  void Abort(const Range& r);

  // Quarantines `r` (its alloc record is being deleted by a write that will
  // be durable at commit sequence `seq`). REQUIRES: called before that
  // write is applied.
  void Free(const Range& r, uint64_t seq);
  // The write that would have freed `r` failed: forget the quarantine.
  void CancelFree(const Range& r);
  // Everything freed at sequence <= seq is durable: release it (deferred
  // while a hold is active, see HoldReleases).
  void ReleaseDurable(uint64_t seq);
  // Scrub (fs/core/scrub.cc): while at least one hold is active, no quarantined
  // range is released, so no block that was allocated when the hold began
  // can be allocated again and rewritten: a block read under the hold keeps
  // the contents its checksum describes. UnholdReleases() of the last hold
  // releases what was deferred. Holds are short (one scrub step).
  void HoldReleases();
  void UnholdReleases();

  // ---- used by the Scanner ----
  // Resets the index and cursor to `first` (a new scan).
  void ResetForScan();
  // Under the allocator lock: calls read(cursor, &used, &next) which must
  // append the used ranges in [cursor, next) in order and set next > cursor
  // (next == end means the image is done); then publishes the gaps in
  // [cursor, next) minus in-flight and quarantined blocks and moves the
  // cursor to next. Returns read's status.
  Status ScanStep(const std::function<Status(BlockNo cursor, std::vector<Range>* used,
                                             BlockNo* next)>& read);
  // Prefetched scanning (docs/scanner.md, "Reading ahead"): the scanner may
  // read a piece [a, next) of `alloc` without the lock, with an iterator
  // created after ScanGen() returned `gen`, and publish it later with
  // ScanStepPrefetched. The piece is taken only if the cursor is still `a`
  // and nothing that could make the read stale happened since `gen`: a
  // release or abort that met blocks at or above the cursor (the index
  // drops those; the scan must see them free), a Committed() of blocks at
  // or above the cursor (possible after ResetForScan), or a reset. Else
  // *taken is false and nothing changes (the caller reads under the lock).
  uint64_t ScanGen() const;
  void ScanStepPrefetched(BlockNo a, BlockNo next, const std::vector<Range>& used, uint64_t gen,
                          bool* taken);
  // Marks the scan complete. No effect unless the cursor is at the end (a
  // concurrent ResetForScan won the race).
  void MarkScanComplete();
  // Wakes waiters with kBusy (unmount).
  void Shutdown();

  AllocatorStats Stats() const;
  // The free ranges in the index, in order (tests, fsck comparison).
  std::vector<Range> FreeRanges() const;
  BlockNo first() const { return first_; }
  BlockNo end() const { return end_; }

 private:
  struct Quarantined {
    uint64_t len;
    uint64_t seq;
  };
  // Adds the part of r below the cursor to the index. REQUIRES: mu_ held.
  void InsertFreeLocked(Range r);
  // Publishes [a, b) minus in-flight and quarantined blocks. REQUIRES: mu_.
  void PublishGapLocked(BlockNo a, BlockNo b);
  // Publishes the gaps of `used` in [cursor_, next) and moves the cursor to
  // next. Returns whether anything was added. REQUIRES: mu_ held.
  bool PublishStepLocked(const std::vector<Range>& used, BlockNo next);
  // Removes r from the in-flight map; appends the pieces that were in flight
  // to *removed (if given). Returns the blocks removed. REQUIRES: mu_ held.
  uint64_t RemoveInflightLocked(Range r, std::vector<Range>* removed);
  uint64_t RemoveQuarantineLocked(Range r);

  const BlockNo first_;
  const BlockNo end_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  BlockNo cursor_;
  bool complete_ = false;
  bool shutdown_ = false;
  std::unique_ptr<FreeIndex> free_;                  // free, below cursor_
  std::map<BlockNo, uint64_t> inflight_;             // start -> len
  std::map<BlockNo, Quarantined> quarantine_;        // start -> len, seq
  std::multimap<uint64_t, BlockNo> quarantine_seq_;  // seq -> start
  uint64_t quarantined_blocks_ = 0;
  uint64_t inflight_blocks_ = 0;
  int release_holds_ = 0;           // HoldReleases() active
  uint64_t deferred_release_ = 0;   // highest seq ReleaseDurable was asked while held
  // Bumped by every change a prefetched read cannot have seen (ScanGen).
  uint64_t scan_gen_ = 0;
  uint64_t prefetched_taken_ = 0, prefetched_refused_ = 0;
};

// RAII for Allocator::HoldReleases (scrub steps, mirror repairs).
class ReleaseHold {
 public:
  explicit ReleaseHold(Allocator* a) : a_(a) { a_->HoldReleases(); }
  ~ReleaseHold() { a_->UnholdReleases(); }
  ReleaseHold(const ReleaseHold&) = delete;
  ReleaseHold& operator=(const ReleaseHold&) = delete;

 private:
  Allocator* a_;
};

}  // namespace psm
