// FaultInjectionFileSystem: a rocksdb::FileSystemWrapper for tests that
// injects I/O errors into the metadata store and cuts its power.
//
// The public-API counterpart of RocksDB's utilities/fault_injection_fs.h,
// reduced to what psmfs needs:
//   * InjectWriteError / InjectSyncError: the next `count` appends (or syncs)
//     of the chosen files fail with IOError or NoSpace and write nothing;
//   * SetActive(false): the machine is off; every write, sync, create,
//     rename and delete fails (tear the store down in this state);
//   * DropUnsyncedData(): for every file written through this wrapper,
//     truncates it back to the size it had at its last successful Sync, and
//     deletes files that were created and never synced. Call it while the
//     store is closed, then SetActive(true) and reopen: what survives is what
//     a power cut would have left.
// Files are tracked by name across RenameFile and DeleteFile. Only appends
// are reverted (a PositionedAppend that overwrites synced bytes is not; RocksDB
// appends at the end). Data written through NewRandomRWFile is not tracked
// (psmfs's store never uses it).
//
// Typical power-cut test:
//   auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
//   ... open a Store with o.fs = ffs, write, SyncWal, write more ...
//   ffs->SetActive(false); store.reset();
//   ffs->DropUnsyncedData(); ffs->SetActive(true);  // reopen and check
//
// Thread safety: thread-safe.
#pragma once

#include <rocksdb/file_system.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace psm {

class FaultInjectionFileSystem : public rocksdb::FileSystemWrapper {
 public:
  enum class Fault { kNone, kIOError, kNoSpace };
  // Which files an injected fault applies to.
  enum class Target { kAll, kWal, kNonWal };

  explicit FaultInjectionFileSystem(std::shared_ptr<rocksdb::FileSystem> base);

  static const char* kClassName() { return "PsmFaultInjectionFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // The next `count` appends to matching files fail with `fault`
  // (count == 0: every one until cleared with Fault::kNone).
  void InjectWriteError(Fault fault, uint64_t count = 0, Target target = Target::kAll);
  // The same for Sync/Fsync/RangeSync.
  void InjectSyncError(Fault fault, uint64_t count = 0, Target target = Target::kAll);
  void SetActive(bool active);
  bool active() const;

  // Reverts every tracked file to its last synced state (see above).
  rocksdb::IOStatus DropUnsyncedData();
  // Forgets all tracking (e.g. after a clean close).
  void ResetState();

  uint64_t appends() const;
  uint64_t syncs() const;
  uint64_t injected_failures() const;
  // Bytes appended to tracked files since their last sync, summed.
  uint64_t UnsyncedBytes() const;

  // ---- used by the wrapped files ----
  struct FileState {
    uint64_t pos = 0;     // bytes written so far
    uint64_t synced = 0;  // bytes durable at the last successful sync
    bool ever_synced = false;
    bool created = false;  // created (or truncated) through this wrapper
  };
  // kNone when the operation may proceed; counts an injected failure.
  rocksdb::IOStatus CheckWrite(const std::string& fname);
  rocksdb::IOStatus CheckSync(const std::string& fname);
  void OnAppend(const std::shared_ptr<FileState>& st, uint64_t n);
  void OnWriteAt(const std::shared_ptr<FileState>& st, uint64_t end);  // PositionedAppend
  void OnTruncate(const std::shared_ptr<FileState>& st, uint64_t size);
  uint64_t PosForSync(const std::shared_ptr<FileState>& st);
  void OnSynced(const std::shared_ptr<FileState>& st, uint64_t pos);

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
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size, const rocksdb::IOOptions& opts,
                             rocksdb::IODebugContext* dbg) override;

 private:
  struct Injection {
    Fault fault = Fault::kNone;
    uint64_t remaining = 0;  // 0 = unlimited
    Target target = Target::kAll;
  };
  rocksdb::IOStatus CheckLocked(Injection* inj, const std::string& fname, const char* what);
  rocksdb::IOStatus Inactive(const char* what, const std::string& fname) const;

  mutable std::mutex mu_;
  bool active_ = true;
  Injection write_inj_;
  Injection sync_inj_;
  std::map<std::string, std::shared_ptr<FileState>> files_;
  uint64_t appends_ = 0;
  uint64_t syncs_ = 0;
  uint64_t injected_ = 0;
};

}  // namespace psm
