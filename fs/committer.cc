// Group commit and the core's small shared helpers (FairSharedMutex, LockSet).
#include <time.h>

#include <algorithm>
#include <chrono>

#include "fs/fs_impl.h"
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
    cv_.wait_for(l, std::chrono::milliseconds(interval_ms));
    if (stop_) break;
    uint64_t target = last_seq_.load();
    if (target > durable_) {
      l.unlock();
      (void)SyncUpTo(target);
      l.lock();
    }
  }
}

Status Committer::Apply(Txn* txn, const std::vector<Range>& frees,
                        const std::vector<Range>& allocs, uint64_t* seq_out) {
  Status st;
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

Status Committer::SyncUpTo(uint64_t seq) {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    if (durable_ >= seq) return Status::Ok();
    if (!syncing_) break;
    cv_.wait(l);
  }
  syncing_ = true;
  l.unlock();
  uint64_t target;
  {
    // Every commit with a sequence <= target has finished its write.
    std::unique_lock<std::shared_mutex> g(gate_);
    target = last_seq_.load();
  }
  Status st = dev_->SyncIfDirty();
  if (st.ok()) st = store_->SyncWal();
  if (st.ok()) alloc_->ReleaseDurable(target);
  l.lock();
  syncing_ = false;
  if (st.ok() && target > durable_) durable_ = target;
  cv_.notify_all();
  if (!st.ok()) return st;
  return durable_ >= seq ? Status::Ok() : Status::IOError("sync did not reach target");
}

}  // namespace psm
