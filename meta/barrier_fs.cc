// BarrierFileSystem: see meta/barrier_fs.h.
#include "meta/barrier_fs.h"

#include "meta/tsan_rocksdb.h"

namespace psm {
namespace {

using rocksdb::DataVerificationInfo;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

class BarrierWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  BarrierWritableFile(std::unique_ptr<rocksdb::FSWritableFile> base, BarrierFileSystem* fs,
                      std::string fname)
      : FSWritableFileOwnerWrapper(std::move(base)),
        fs_(fs),
        fname_(std::move(fname)),
        wal_(BarrierFileSystem::IsWalFile(fname_)) {}

  IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* dbg) override {
    if (wal_) {
      IOStatus s = fs_->RunBarrier("append", fname_);
      if (!s.ok()) return s;
    }
    return FSWritableFileOwnerWrapper::Append(data, o, dbg);
  }
  IOStatus Append(const Slice& data, const IOOptions& o, const DataVerificationInfo& v,
                  IODebugContext* dbg) override {
    if (wal_) {
      IOStatus s = fs_->RunBarrier("append", fname_);
      if (!s.ok()) return s;
    }
    return FSWritableFileOwnerWrapper::Append(data, o, v, dbg);
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o,
                            IODebugContext* dbg) override {
    if (wal_) {
      IOStatus s = fs_->RunBarrier("append", fname_);
      if (!s.ok()) return s;
    }
    return FSWritableFileOwnerWrapper::PositionedAppend(data, off, o, dbg);
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o,
                            const DataVerificationInfo& v, IODebugContext* dbg) override {
    if (wal_) {
      IOStatus s = fs_->RunBarrier("append", fname_);
      if (!s.ok()) return s;
    }
    return FSWritableFileOwnerWrapper::PositionedAppend(data, off, o, v, dbg);
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("sync", fname_);
    if (!s.ok()) return s;
    return FSWritableFileOwnerWrapper::Sync(o, dbg);
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("fsync", fname_);
    if (!s.ok()) return s;
    return FSWritableFileOwnerWrapper::Fsync(o, dbg);
  }
  IOStatus RangeSync(uint64_t off, uint64_t n, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("range sync", fname_);
    if (!s.ok()) return s;
    return FSWritableFileOwnerWrapper::RangeSync(off, n, o, dbg);
  }
  IOStatus Close(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("close", fname_);
    if (!s.ok()) return s;
    return FSWritableFileOwnerWrapper::Close(o, dbg);
  }

 private:
  BarrierFileSystem* const fs_;
  const std::string fname_;
  const bool wal_;
};

class BarrierRandomRWFile final : public rocksdb::FSRandomRWFileOwnerWrapper {
 public:
  BarrierRandomRWFile(std::unique_ptr<rocksdb::FSRandomRWFile> base, BarrierFileSystem* fs,
                      std::string fname)
      : FSRandomRWFileOwnerWrapper(std::move(base)), fs_(fs), fname_(std::move(fname)) {}

  IOStatus Write(uint64_t off, const Slice& data, const IOOptions& o,
                 IODebugContext* dbg) override {
    if (BarrierFileSystem::IsWalFile(fname_)) {
      IOStatus s = fs_->RunBarrier("write", fname_);
      if (!s.ok()) return s;
    }
    return FSRandomRWFileOwnerWrapper::Write(off, data, o, dbg);
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("sync", fname_);
    if (!s.ok()) return s;
    return FSRandomRWFileOwnerWrapper::Sync(o, dbg);
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("fsync", fname_);
    if (!s.ok()) return s;
    return FSRandomRWFileOwnerWrapper::Fsync(o, dbg);
  }
  IOStatus Close(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->RunBarrier("close", fname_);
    if (!s.ok()) return s;
    return FSRandomRWFileOwnerWrapper::Close(o, dbg);
  }

 private:
  BarrierFileSystem* const fs_;
  const std::string fname_;
};

}  // namespace

BarrierFileSystem::BarrierFileSystem(std::shared_ptr<rocksdb::FileSystem> base, Barrier barrier)
    : FileSystemWrapper(std::move(base)) {
  SetBarrier(std::move(barrier));
}

void BarrierFileSystem::SetBarrier(Barrier barrier) {
  auto b = barrier ? std::make_shared<const Barrier>(std::move(barrier)) : nullptr;
  std::lock_guard<std::mutex> l(mu_);
  barrier_ = std::move(b);
}

bool BarrierFileSystem::IsWalFile(const std::string& fname) {
  static constexpr std::string_view kSuffix = ".log";
  return fname.size() > kSuffix.size() &&
         std::string_view(fname).substr(fname.size() - kSuffix.size()) == kSuffix;
}

IOStatus BarrierFileSystem::RunBarrier(const char* what, const std::string& fname) {
  // RocksDB calls this from inside Store::Write too: psmfs code, checked.
  tsan::PsmCallbackScope checked;
  std::shared_ptr<const Barrier> b;
  {
    std::lock_guard<std::mutex> l(mu_);
    b = barrier_;
  }
  calls_.fetch_add(1, std::memory_order_relaxed);
  if (!b) return IOStatus::OK();
  Status s = (*b)();
  if (s.ok()) return IOStatus::OK();
  failures_.fetch_add(1, std::memory_order_relaxed);
  return IOStatus::IOError("image sync barrier failed before " + std::string(what) + " of " +
                           fname + ": " + s.ToString());
}

IOStatus BarrierFileSystem::NewWritableFile(const std::string& fname,
                                            const rocksdb::FileOptions& opts,
                                            std::unique_ptr<rocksdb::FSWritableFile>* result,
                                            IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->NewWritableFile(fname, opts, &f, dbg);
  if (s.ok()) result->reset(new BarrierWritableFile(std::move(f), this, fname));
  return s;
}

IOStatus BarrierFileSystem::ReopenWritableFile(const std::string& fname,
                                               const rocksdb::FileOptions& opts,
                                               std::unique_ptr<rocksdb::FSWritableFile>* result,
                                               IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->ReopenWritableFile(fname, opts, &f, dbg);
  if (s.ok()) result->reset(new BarrierWritableFile(std::move(f), this, fname));
  return s;
}

IOStatus BarrierFileSystem::ReuseWritableFile(const std::string& fname,
                                              const std::string& old_fname,
                                              const rocksdb::FileOptions& opts,
                                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                                              IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->ReuseWritableFile(fname, old_fname, opts, &f, dbg);
  if (s.ok()) result->reset(new BarrierWritableFile(std::move(f), this, fname));
  return s;
}

IOStatus BarrierFileSystem::NewRandomRWFile(const std::string& fname,
                                            const rocksdb::FileOptions& opts,
                                            std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                            IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSRandomRWFile> f;
  IOStatus s = target()->NewRandomRWFile(fname, opts, &f, dbg);
  if (s.ok()) result->reset(new BarrierRandomRWFile(std::move(f), this, fname));
  return s;
}

}  // namespace psm
