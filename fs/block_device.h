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
};

// Opens (or, with create=true, creates with `size` bytes, sparse) the image
// at `path`. A block device's size is its capacity.
Result<std::unique_ptr<BlockDevice>> OpenPosixDevice(const std::string& path, bool create,
                                                     uint64_t size);

std::unique_ptr<BlockDevice> NewMemDevice(uint64_t size);

// SyncTracker: counts completed image writes so that a barrier (meta/barrier_fs)
// syncs the image only when something was written since the last sync.
// Wraps a device; all writes go through it.
class TrackedDevice : public BlockDevice {
 public:
  explicit TrackedDevice(std::unique_ptr<BlockDevice> base) : base_(std::move(base)) {}
  Status Read(uint64_t off, void* buf, size_t n) override { return base_->Read(off, buf, n); }
  Status Write(uint64_t off, const void* buf, size_t n) override;
  Status Sync() override;
  uint64_t size() const override { return base_->size(); }
  int fd() const override { return base_->fd(); }
  // Sync only when some write completed since the last successful sync.
  Status SyncIfDirty();
  BlockDevice* base() { return base_.get(); }

 private:
  std::unique_ptr<BlockDevice> base_;
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> synced_{0};
};

}  // namespace psm
