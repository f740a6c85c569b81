// BarrierFileSystem: the RocksDB file system under the metadata store that
// keeps metadata from becoming durable before the image data it points to
// (DESIGN §3, docs/crash-consistency.md).
//
// It wraps every writable file RocksDB creates and calls `barrier` (the
// image's TrackedDevice::SyncIfDirty) before
//   * any Append/PositionedAppend of a WAL file ("*.log"): once WAL bytes
//     reach the OS they may become durable at any moment (write-back), so the
//     image must be durable first;
//   * any Sync/Fsync/RangeSync/Close of any file.
// SST and MANIFEST contents come from memtables whose every record went
// through the WAL first, so their appends were already preceded by a barrier.
// If the barrier fails the operation fails with an IOError and nothing is
// written; RocksDB then stops accepting writes (background error) until the
// volume is remounted, which is what we want after an image I/O error.
//
// Usage:
//   auto fs = std::make_shared<BarrierFileSystem>(
//       rocksdb::FileSystem::Default(), [dev] { return dev->SyncIfDirty(); });
//   StoreOptions o; o.fs = fs;
//
// Thread safety: thread-safe; the barrier is called from any RocksDB thread,
// possibly concurrently, and must itself be thread-safe.
#pragma once

#include <rocksdb/file_system.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "meta/status.h"

namespace psm {

class BarrierFileSystem : public rocksdb::FileSystemWrapper {
 public:
  using Barrier = std::function<Status()>;

  // A null barrier does nothing (until SetBarrier).
  BarrierFileSystem(std::shared_ptr<rocksdb::FileSystem> base, Barrier barrier);

  static const char* kClassName() { return "PsmBarrierFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // Replaces the barrier (e.g. when the image is opened after the store).
  void SetBarrier(Barrier barrier);

  // Runs the barrier; an IOError naming `what` and `fname` on failure.
  rocksdb::IOStatus RunBarrier(const char* what, const std::string& fname);

  // Calls so far, and how many failed.
  uint64_t barrier_calls() const { return calls_.load(std::memory_order_relaxed); }
  uint64_t barrier_failures() const { return failures_.load(std::memory_order_relaxed); }

  // True for the names RocksDB gives WAL files ("000123.log").
  static bool IsWalFile(const std::string& fname);

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override;

 private:
  std::mutex mu_;  // guards barrier_ (copied out; never called under mu_)
  std::shared_ptr<const Barrier> barrier_;
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace psm
