// BlockDevice: every byte of file data goes through this interface.
//
// Implementations: a POSIX file or block device (the backing image), an
// in-memory device (unit tests), and FaultDevice, a decorator that injects
// failures (fail the Nth write, ENOSPC, torn writes, dropping unsynced data)
// for crash and fault-injection tests.
//
// Offsets and lengths are in bytes. Read/Write transfer all bytes or fail.
// Thread safety: all methods may be called concurrently from many threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "meta/status.h"

namespace psm {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual Status Read(uint64_t offset, void* buf, size_t n) = 0;
  virtual Status Write(uint64_t offset, const void* buf, size_t n) = 0;
  // Makes every completed Write durable.
  virtual Status Sync() = 0;
  virtual uint64_t size() const = 0;
  // The file descriptor behind the device, or -1 (zero-copy reads).
  virtual int fd() const { return -1; }
  // A hint: [offset, offset + n) will be read soon; start reading it in
  // the background (an image file: posix_fadvise WILLNEED). Never fails,
  // never blocks for the reads; devices without a cache ignore it.
  virtual void WillNeed(uint64_t offset, uint64_t n) { (void)offset, (void)n; }
};

// Opens (or, with create=true, creates with `size` bytes, sparse) the image
// at `path`. A block device's size is its capacity.
Result<std::unique_ptr<BlockDevice>> OpenPosixDevice(const std::string& path, bool create,
                                                     uint64_t size);

std::unique_ptr<BlockDevice> NewMemDevice(uint64_t size);

// TrackedDevice: the image as the committer sees it. It numbers completed
// writes and remembers how many of them a finished sync covered, so that
// "durable" can be asked of the device as of the metadata (fs/core/fs_impl.h
// Committer), and it makes the first sync failure sticky.
//
// Counting: Write() increments written_ after the base write returned (a
// failed write counts too: part of it may have landed). A sync covers the
// writes counted before it called the base Sync (`covered`); a write that
// completes while a sync runs is not covered by it. So a caller that read
// WritesCompleted() == w after its writes returned knows they are durable
// once SyncedWrites() >= w.
//
// Sticky failure (Linux's fsync semantics, PostgreSQL's "fsyncgate"): after
// a failed fdatasync the kernel reports the error once, marks the failed
// pages clean, and the next fdatasync returns 0 with the data still not on
// the disk. So the first failed Sync() fails the device for good: every
// later Write, Sync and SyncIfDirty returns that error (reads still work),
// and only a remount, which replays from the last durable state, clears it.
//
// Thread safety: all methods may be called concurrently.
class TrackedDevice : public BlockDevice {
 public:
  explicit TrackedDevice(std::unique_ptr<BlockDevice> base) : base_(std::move(base)) {}
  Status Read(uint64_t off, void* buf, size_t n) override { return base_->Read(off, buf, n); }
  // Fails with the sticky error once the device has failed.
  Status Write(uint64_t off, const void* buf, size_t n) override;
  // Syncs the base; on success every write counted before the call is
  // durable. The first failure is sticky.
  Status Sync() override { return SyncCovering(nullptr); }
  uint64_t size() const override { return base_->size(); }
  int fd() const override { return base_->fd(); }
  void WillNeed(uint64_t off, uint64_t n) override { base_->WillNeed(off, n); }
  // Syncs only when some write completed since the last successful sync.
  // On success *covered (if given) is a write count that is now durable:
  // at least every write completed before the call.
  Status SyncIfDirty(uint64_t* covered = nullptr);
  // Writes completed so far (monotonic).
  uint64_t WritesCompleted() const { return written_.load(std::memory_order_acquire); }
  // The sticky failure: Ok while the device is healthy.
  Status Failure() const;
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  BlockDevice* base() { return base_.get(); }

 private:
  Status SyncCovering(uint64_t* covered);
  void Fail(const Status& s);
  std::unique_ptr<BlockDevice> base_;
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> synced_{0};
  std::atomic<bool> failed_{false};
  mutable std::mutex fail_mu_;  // a leaf
  Status failure_;              // GUARDED_BY(fail_mu_)
};

}  // namespace psm
