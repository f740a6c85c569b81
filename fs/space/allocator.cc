// Allocator: see fs/space/allocator.h for the contract and docs/scanner.md for why
// the scan rule is safe.
#include "fs/space/allocator.h"

#include <algorithm>

#include "fs/space/free_index.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

// Approximate heap cost of one std::map / std::multimap node holding two
// 64-bit words (a red-black node of 32 bytes plus the pair, in a 64-byte
// malloc chunk).
constexpr uint64_t kMapNodeBytes = 64;

}  // namespace

Allocator::Allocator(BlockNo first, BlockNo end)
    : first_(first),
      end_(std::max(first, end)),
      cursor_(first),
      free_(std::make_unique<FreeIndex>()) {}

Allocator::~Allocator() = default;

Result<Range> Allocator::Allocate(uint64_t want, BlockNo hint) {
  if (want == 0) return Status::Invalid("allocation of zero blocks");
  if (hint < first_ || hint >= end_) hint = first_;
  Range r;
  {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      if (shutdown_) return Status::Busy("allocator shut down (unmounting)");
      if (free_->ranges() > 0) break;
      if (complete_) {
        std::string msg = "no free blocks in the image";
        if (quarantined_blocks_ > 0) {
          msg += "; " + std::to_string(quarantined_blocks_) +
                 " freed blocks become allocatable after the next commit";
        }
        if (inflight_blocks_ > 0) {
          msg += "; " + std::to_string(inflight_blocks_) + " blocks are being allocated";
        }
        return Status::NoSpace(msg);
      }
      // The scan has not reached free space yet: wait for it.
      cv_.wait(l);
    }
    r = free_->Take(want, hint);
    inflight_.emplace(r.start, r.len);
    inflight_blocks_ += r.len;
  }
  PSM_SYNC_POINT("Allocator::Allocate:Got");
  return r;
}

uint64_t Allocator::RemoveInflightLocked(Range r, std::vector<Range>* removed) {
  if (r.len == 0) return 0;
  const BlockNo s = r.start;
  const BlockNo e = r.end();
  uint64_t n = 0;
  auto it = inflight_.upper_bound(s);
  if (it != inflight_.begin()) --it;
  while (it != inflight_.end() && it->first < e) {
    const BlockNo xs = it->first;
    const BlockNo xe = xs + it->second;
    if (xe <= s) {
      ++it;
      continue;
    }
    const BlockNo os = std::max(xs, s);
    const BlockNo oe = std::min(xe, e);
    n += oe - os;
    if (removed) removed->push_back(Range{os, oe - os});
    it = inflight_.erase(it);
    if (xs < os) inflight_.emplace(xs, os - xs);
    if (oe < xe) it = inflight_.emplace(oe, xe - oe).first;
  }
  inflight_blocks_ -= n;
  return n;
}

uint64_t Allocator::RemoveQuarantineLocked(Range r) {
  if (r.len == 0) return 0;
  const BlockNo s = r.start;
  const BlockNo e = r.end();
  uint64_t n = 0;
  auto drop_seq = [this](uint64_t seq, BlockNo start) {
    auto [a, b] = quarantine_seq_.equal_range(seq);
    for (auto i = a; i != b; ++i) {
      if (i->second == start) {
        quarantine_seq_.erase(i);
        return;
      }
    }
  };
  auto it = quarantine_.upper_bound(s);
  if (it != quarantine_.begin()) --it;
  while (it != quarantine_.end() && it->first < e) {
    const BlockNo xs = it->first;
    const BlockNo xe = xs + it->second.len;
    const uint64_t seq = it->second.seq;
    if (xe <= s) {
      ++it;
      continue;
    }
    const BlockNo os = std::max(xs, s);
    const BlockNo oe = std::min(xe, e);
    n += oe - os;
    drop_seq(seq, xs);
    it = quarantine_.erase(it);
    if (xs < os) {
      quarantine_.emplace(xs, Quarantined{os - xs, seq});
      quarantine_seq_.emplace(seq, xs);
    }
    if (oe < xe) {
      it = quarantine_.emplace(oe, Quarantined{xe - oe, seq}).first;
      quarantine_seq_.emplace(seq, oe);
    }
  }
  quarantined_blocks_ -= n;
  return n;
}

void Allocator::InsertFreeLocked(Range r) {
  // The index holds only what lies below the cursor; the scanner will find
  // the rest.
  const BlockNo s = std::max(r.start, first_);
  const BlockNo e = std::min(r.end(), cursor_);
  if (s < e) free_->Insert(Range{s, e - s});
  // A prefetched read of the part at or above the cursor may predate this
  // free: it must not be published.
  if (r.end() > cursor_ && cursor_ < end_) ++scan_gen_;
}

void Allocator::Committed(const Range& r) {
  std::lock_guard<std::mutex> l(mu_);
  RemoveInflightLocked(r, nullptr);
  // Blocks in flight at or above the cursor (a scan restarted while they
  // were being allocated) now have a record a prefetched read may miss.
  if (r.end() > cursor_ && cursor_ < end_) ++scan_gen_;
}

void Allocator::Abort(const Range& r) {
  std::vector<Range> back;
  {
    std::lock_guard<std::mutex> l(mu_);
    RemoveInflightLocked(r, &back);
    // Only blocks that really were in flight go back: anything else would be
    // a double free.
    for (const Range& x : back) InsertFreeLocked(x);
  }
  if (!back.empty()) cv_.notify_all();
}

void Allocator::Free(const Range& r, uint64_t seq) {
  if (r.len == 0) return;
  std::lock_guard<std::mutex> l(mu_);
  // A range freed again (a caller bug) keeps the later durability point.
  RemoveQuarantineLocked(r);
  // Freed before Committed() (e.g. overwritten at once): quarantine covers it.
  RemoveInflightLocked(r, nullptr);
  quarantine_.emplace(r.start, Quarantined{r.len, seq});
  quarantine_seq_.emplace(seq, r.start);
  quarantined_blocks_ += r.len;
}

void Allocator::CancelFree(const Range& r) {
  std::lock_guard<std::mutex> l(mu_);
  RemoveQuarantineLocked(r);
}

void Allocator::HoldReleases() {
  std::lock_guard<std::mutex> l(mu_);
  ++release_holds_;
}

void Allocator::UnholdReleases() {
  uint64_t seq = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (--release_holds_ > 0) return;
    seq = deferred_release_;
    deferred_release_ = 0;
  }
  if (seq) ReleaseDurable(seq);
}

void Allocator::ReleaseDurable(uint64_t seq) {
  bool released = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (release_holds_ > 0) {
      deferred_release_ = std::max(deferred_release_, seq);
      return;
    }
    auto end = quarantine_seq_.upper_bound(seq);
    for (auto it = quarantine_seq_.begin(); it != end;) {
      auto q = quarantine_.find(it->second);
      if (q != quarantine_.end()) {
        const Range r{q->first, q->second.len};
        quarantined_blocks_ -= r.len;
        quarantine_.erase(q);
        InsertFreeLocked(r);
        released = true;
      }
      it = quarantine_seq_.erase(it);
    }
  }
  if (released) cv_.notify_all();
}

void Allocator::ResetForScan() {
  std::lock_guard<std::mutex> l(mu_);
  free_->Clear();
  cursor_ = first_;
  complete_ = false;
  ++scan_gen_;
}

uint64_t Allocator::ScanGen() const {
  std::lock_guard<std::mutex> l(mu_);
  return scan_gen_;
}

bool Allocator::PublishStepLocked(const std::vector<Range>& used, BlockNo next) {
  const uint64_t before = free_->blocks();
  BlockNo pos = cursor_;
  for (const Range& u : used) {
    const BlockNo us = std::max(u.start, pos);
    const BlockNo ue = std::min(u.end(), next);
    if (ue <= us) continue;
    if (us > pos) PublishGapLocked(pos, us);
    pos = ue;
  }
  if (pos < next) PublishGapLocked(pos, next);
  cursor_ = next;
  return free_->blocks() > before;
}

void Allocator::ScanStepPrefetched(BlockNo a, BlockNo next, const std::vector<Range>& used,
                                   uint64_t gen, bool* taken) {
  bool published = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    PSM_SYNC_POINT("Allocator::ScanStep:Locked");
    *taken = cursor_ == a && gen == scan_gen_ && next > a && next <= end_;
    ++(*taken ? prefetched_taken_ : prefetched_refused_);
    if (!*taken) return;
    published = PublishStepLocked(used, next);
  }
  if (published) cv_.notify_all();
}

void Allocator::PublishGapLocked(BlockNo a, BlockNo b) {
  // Collect the in-flight and quarantined pieces that overlap [a, b).
  std::vector<Range> excl;
  auto it = inflight_.upper_bound(a);
  if (it != inflight_.begin()) --it;
  for (; it != inflight_.end() && it->first < b; ++it) {
    if (it->first + it->second > a) excl.push_back(Range{it->first, it->second});
  }
  auto qt = quarantine_.upper_bound(a);
  if (qt != quarantine_.begin()) --qt;
  for (; qt != quarantine_.end() && qt->first < b; ++qt) {
    if (qt->first + qt->second.len > a) excl.push_back(Range{qt->first, qt->second.len});
  }
  std::sort(excl.begin(), excl.end(),
            [](const Range& x, const Range& y) { return x.start < y.start; });
  BlockNo pos = a;
  for (const Range& x : excl) {
    if (x.start > pos) free_->Insert(Range{pos, std::min(x.start, b) - pos});
    pos = std::max(pos, x.end());
    if (pos >= b) return;
  }
  if (pos < b) free_->Insert(Range{pos, b - pos});
}

Status Allocator::ScanStep(
    const std::function<Status(BlockNo cursor, std::vector<Range>* used, BlockNo* next)>& read) {
  bool published = false;
  Status st;
  {
    std::lock_guard<std::mutex> l(mu_);
    PSM_SYNC_POINT("Allocator::ScanStep:Locked");
    if (cursor_ >= end_) return Status::Ok();
    std::vector<Range> used;
    BlockNo next = end_;
    st = read(cursor_, &used, &next);
    if (!st.ok()) return st;
    if (next > end_) next = end_;
    if (next <= cursor_) {
      return Status::Invalid("scan step made no progress at block " + std::to_string(cursor_));
    }
    published = PublishStepLocked(used, next);
  }
  if (published) cv_.notify_all();
  return st;
}

void Allocator::MarkScanComplete() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cursor_ < end_) return;
    complete_ = true;
  }
  cv_.notify_all();
}

void Allocator::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

AllocatorStats Allocator::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  AllocatorStats s;
  s.free_blocks = free_->blocks();
  s.free_ranges = free_->ranges();
  s.quarantined_blocks = quarantined_blocks_;
  s.inflight_blocks = inflight_blocks_;
  s.index_bytes = free_->MemoryBytes() +
                  kMapNodeBytes * (inflight_.size() + quarantine_.size() + quarantine_seq_.size());
  s.cursor = cursor_;
  s.end = end_;
  s.scan_complete = complete_;
  s.prefetched_taken = prefetched_taken_;
  s.prefetched_refused = prefetched_refused_;
  return s;
}

std::vector<Range> Allocator::FreeRanges() const {
  std::lock_guard<std::mutex> l(mu_);
  return free_->ToVector();
}

}  // namespace psm
