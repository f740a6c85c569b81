// Group commit and the core's small shared helpers (FairSharedMutex, LockSet).
#include <time.h>

#include <algorithm>
#include <chrono>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "meta/sync_point.h"

namespace psm {

// The kernel's clock for file times: Linux stamps inodes with the coarse
// clock (current_time(), one tick: 4 ms here), and so must the core. With
// the writeback cache the kernel owns a file's mtime/ctime and updates them
// on write(2) only if they differ from its "now"; a file the core created
// in the same tick then has nothing to update, and close(2) sends no
// SETATTR (one round trip less per small file, as for passthrough_ll over
// ext4). Fine-grained times would always differ.
int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void FairSharedMutex::lock() {
  std::unique_lock<std::mutex> l(mu_);
  ++writers_waiting_;
  cv_.wait(l, [&] { return !writer_ && readers_ == 0; });
  --writers_waiting_;
  writer_ = true;
}

void FairSharedMutex::unlock() {
  std::lock_guard<std::mutex> l(mu_);
  writer_ = false;
  cv_.notify_all();
}

void FairSharedMutex::lock_shared() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !writer_ && writers_waiting_ == 0; });
  ++readers_;
}

void FairSharedMutex::unlock_shared() {
  std::lock_guard<std::mutex> l(mu_);
  if (--readers_ == 0) cv_.notify_all();
}

void LockSet::Lock(const InodeId* begin, const InodeId* end) {
  for (const InodeId* i = begin; i != end; ++i) {
    if (*i != 0) stripes_.push_back(FileSystem::Impl::Stripe(*i));
  }
  std::sort(stripes_.begin(), stripes_.end());
  stripes_.erase(std::unique(stripes_.begin(), stripes_.end()), stripes_.end());
  // Readers pass the restore's gate first (writers are kept out of a
  // restore by volume_mu).
  if (!exclusive_) fs_->read_gate.lock_shared();
  for (size_t s : stripes_) {
    if (exclusive_) {
      fs_->ino_mu[s].lock();
    } else {
      fs_->ino_mu[s].lock_shared();
    }
  }
}

bool LockSet::Add(InodeId ino) {
  if (ino == 0) return true;
  const size_t s = FileSystem::Impl::Stripe(ino);
  if (std::find(stripes_.begin(), stripes_.end(), s) != stripes_.end()) return true;
  if (stripes_.empty() || s > stripes_.back()) {
    if (exclusive_) {
      fs_->ino_mu[s].lock();
    } else {
      fs_->ino_mu[s].lock_shared();
    }
  } else if (!(exclusive_ ? fs_->ino_mu[s].try_lock() : fs_->ino_mu[s].try_lock_shared())) {
    return false;
  }
  // Kept sorted: the destructor releases in descending order.
  stripes_.insert(std::upper_bound(stripes_.begin(), stripes_.end(), s), s);
  return true;
}

LockSet::~LockSet() {
  for (auto it = stripes_.rbegin(); it != stripes_.rend(); ++it) {
    if (exclusive_) {
      fs_->ino_mu[*it].unlock();
    } else {
      fs_->ino_mu[*it].unlock_shared();
    }
  }
  if (!exclusive_) fs_->read_gate.unlock_shared();
}

Committer::Committer(TrackedDevice* dev, Store* store, Allocator* alloc, LiveCache* cache)
    : dev_(dev), store_(store), alloc_(alloc), cache_(cache) {}

Committer::~Committer() { Stop(); }

void Committer::Start(uint32_t interval_ms) {
  thread_ = std::thread([this, interval_ms] { Loop(interval_ms); });
}

void Committer::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Committer::Loop(uint32_t interval_ms) {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    // A real interval: cv_ is also notified at the end of every sync cycle
    // (each fsync's), and waking on those would start one background cycle
    // after every fsync instead of one per interval.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
    if (cv_.wait_until(l, deadline, [&] { return stop_; })) break;
    if (tick_) {
      l.unlock();
      tick_();
      l.lock();
    }
    const uint64_t seq = last_seq_.load();
    const uint64_t writes = dev_->WritesCompleted();
    if (seq <= durable_seq_ && writes <= durable_writes_ && (!pending_ || pending_->empty())) {
      continue;
    }
    l.unlock();
    // A failure is recorded and logged once (NoteFailure), here or by
    // SyncTo; every later Apply/SyncAll returns it.
    Status f = Failure();
    if (f.ok()) f = pending_ && !pending_->empty() ? SyncAll() : SyncTo(seq, writes);
    if (!f.ok()) NoteFailure(f);
    l.lock();
  }
}

Status Committer::Failure() const {
  if (!failed()) return Status::Ok();
  {
    std::lock_guard<std::mutex> l(fail_mu_);
    if (!failure_.ok()) return failure_;
  }
  Status s = dev_->Failure();
  if (s.ok()) s = store_->Failure();
  return s;
}

void Committer::NoteFailure(const Status& s) {
  std::lock_guard<std::mutex> l(fail_mu_);
  if (!failure_.ok()) return;
  failure_ = s.Is(Code::kNoSpace) ? s : Status::IOError(s.message());
  failed_.store(true, std::memory_order_release);
  if (!failure_logged_) {
    failure_logged_ = true;
    PSM_LOG(kLogError, "volume failed; writes and fsync now fail with EIO, reads go on: %s",
            failure_.message().c_str());
  }
}

Status Committer::Apply(Txn* txn, const std::vector<Range>& frees,
                        const std::vector<Range>& allocs, uint64_t* seq_out) {
  Status st;
  if (failed()) {
    st = Failure();
    for (const Range& r : allocs) alloc_->Abort(r);
    if (seq_out) *seq_out = last_seq_.load();
    return st;
  }
  uint64_t seq;
  int64_t used = 0;
  for (const Range& r : allocs) used += static_cast<int64_t>(r.len);
  for (const Range& r : frees) used -= static_cast<int64_t>(r.len);
  txn->AddCounter(kVolUsedBlocks, used);
  const int64_t files = txn->CounterDelta(kVolFiles);
  {
    std::shared_lock<std::shared_mutex> g(gate_);
    seq = last_seq_.fetch_add(1) + 1;
    for (const Range& r : frees) alloc_->Free(r, seq);
    PSM_SYNC_POINT("Committer::Apply:BeforeWrite");
    st = txn->Commit();
    if (!st.ok()) {
      for (const Range& r : frees) alloc_->CancelFree(r);
    } else {
      used_blocks_.fetch_add(static_cast<uint64_t>(used), std::memory_order_relaxed);
      files_.fetch_add(static_cast<uint64_t>(files), std::memory_order_relaxed);
    }
  }
  // Even a failed write may have reached the memtable; dropping cached
  // records is always safe.
  if (cache_) cache_->Invalidate(txn->TouchedInodes());
  for (const Range& r : allocs) {
    if (st.ok()) {
      alloc_->Committed(r);
    } else {
      alloc_->Abort(r);
    }
  }
  if (seq_out) *seq_out = seq;
  return st;
}

void Committer::Durable(uint64_t* seq, uint64_t* writes) {
  std::lock_guard<std::mutex> l(mu_);
  *seq = durable_seq_;
  *writes = durable_writes_;
}

Status Committer::SyncAll() {
  // Checksums staged by overwrites in place before this call are committed
  // first, so the cycle below makes them durable.
  if (pending_ && !pending_->empty()) {
    Status st = pending_->Flush();
    if (!st.ok()) {
      NoteFailure(st);
      return Failure();
    }
  }
  // Both marks are read after the caller's commits and writes returned.
  const uint64_t seq = last_seq_.load();
  const uint64_t writes = dev_->WritesCompleted();
  return SyncTo(seq, writes);
}

Status Committer::SyncTo(uint64_t seq, uint64_t writes) {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    if (durable_seq_ >= seq && durable_writes_ >= writes) return Status::Ok();
    if (syncing_) {
      // The running cycle may have read its marks before ours: wait for it
      // and look again.
      cv_.wait(l);
      continue;
    }
    PSM_RETURN_IF_ERROR(Failure());
    syncing_ = true;
    l.unlock();
    PSM_SYNC_POINT("Committer::SyncTo:BeforeTarget");
    uint64_t target;
    {
      // Every commit with a sequence <= target has finished its write.
      std::unique_lock<std::shared_mutex> g(gate_);
      target = last_seq_.load();
    }
    // Staged checksums are committed after the target was read: a block
    // freed by a commit up to the target had its checksum staged before
    // that free (under the file's lock), so it is committed here, before
    // this cycle releases the block for reuse; committed later, it would
    // overwrite the checksum of the block's next contents.
    Status st;
    if (pending_ && !pending_->empty()) st = pending_->Flush();
    PSM_SYNC_POINT("Committer::SyncTo:BeforeImageSync");
    // The image first: metadata must never become durable before the data
    // it points at (the barrier file system enforces the same for RocksDB's
    // own writes).
    uint64_t covered = 0;
    if (st.ok()) st = dev_->SyncIfDirty(&covered);
    PSM_SYNC_POINT("Committer::SyncTo:BeforeWalSync");
    if (st.ok()) st = store_->SyncWal();
    if (st.ok()) {
      alloc_->ReleaseDurable(target);
    } else {
      NoteFailure(st);
    }
    cycles_.fetch_add(1, std::memory_order_relaxed);
    l.lock();
    syncing_ = false;
    if (st.ok()) {
      durable_seq_ = std::max(durable_seq_, target);
      durable_writes_ = std::max(durable_writes_, covered);
    }
    cv_.notify_all();
    if (!st.ok()) return Failure();
  }
}

}  // namespace psm
