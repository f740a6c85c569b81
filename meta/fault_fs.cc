// FaultInjectionFileSystem: see meta/fault_fs.h.
#include "meta/fault_fs.h"

#include <algorithm>
#include <string_view>
#include <vector>

namespace psm {
namespace {

using rocksdb::DataVerificationInfo;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;
using FileState = FaultInjectionFileSystem::FileState;

bool IsWal(const std::string& fname) {
  constexpr std::string_view kSuffix = ".log";
  return fname.size() > kSuffix.size() &&
         std::string_view(fname).substr(fname.size() - kSuffix.size()) == kSuffix;
}

class FaultWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(std::unique_ptr<rocksdb::FSWritableFile> base, FaultInjectionFileSystem* fs,
                    std::string fname, std::shared_ptr<FileState> st)
      : FSWritableFileOwnerWrapper(std::move(base)),
        fs_(fs),
        fname_(std::move(fname)),
        st_(std::move(st)) {}

  IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckWrite(fname_);
    if (!s.ok()) return s;
    s = FSWritableFileOwnerWrapper::Append(data, o, dbg);
    if (s.ok()) fs_->OnAppend(st_, data.size());
    return s;
  }
  IOStatus Append(const Slice& data, const IOOptions& o, const DataVerificationInfo& v,
                  IODebugContext* dbg) override {
    IOStatus s = fs_->CheckWrite(fname_);
    if (!s.ok()) return s;
    s = FSWritableFileOwnerWrapper::Append(data, o, v, dbg);
    if (s.ok()) fs_->OnAppend(st_, data.size());
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o,
                            IODebugContext* dbg) override {
    IOStatus s = fs_->CheckWrite(fname_);
    if (!s.ok()) return s;
    s = FSWritableFileOwnerWrapper::PositionedAppend(data, off, o, dbg);
    if (s.ok()) fs_->OnWriteAt(st_, off + data.size());
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o,
                            const DataVerificationInfo& v, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckWrite(fname_);
    if (!s.ok()) return s;
    s = FSWritableFileOwnerWrapper::PositionedAppend(data, off, o, v, dbg);
    if (s.ok()) fs_->OnWriteAt(st_, off + data.size());
    return s;
  }
  IOStatus Truncate(uint64_t size, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckWrite(fname_);
    if (!s.ok()) return s;
    s = FSWritableFileOwnerWrapper::Truncate(size, o, dbg);
    if (s.ok()) fs_->OnTruncate(st_, size);
    return s;
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckSync(fname_);
    if (!s.ok()) return s;
    uint64_t pos = fs_->PosForSync(st_);
    s = FSWritableFileOwnerWrapper::Sync(o, dbg);
    if (s.ok()) fs_->OnSynced(st_, pos);
    return s;
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckSync(fname_);
    if (!s.ok()) return s;
    uint64_t pos = fs_->PosForSync(st_);
    s = FSWritableFileOwnerWrapper::Fsync(o, dbg);
    if (s.ok()) fs_->OnSynced(st_, pos);
    return s;
  }
  // sync_file_range is a write-back hint, not a durability promise: it can
  // fail by injection but never counts as a sync.
  IOStatus RangeSync(uint64_t off, uint64_t n, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckSync(fname_);
    if (!s.ok()) return s;
    return FSWritableFileOwnerWrapper::RangeSync(off, n, o, dbg);
  }
  IOStatus Close(const IOOptions& o, IODebugContext* dbg) override {
    // Closing writes nothing; release the descriptor even when "off".
    IOStatus s = FSWritableFileOwnerWrapper::Close(o, dbg);
    if (!fs_->active()) return IOStatus::IOError("power is off: close " + fname_);
    return s;
  }

 private:
  FaultInjectionFileSystem* const fs_;
  const std::string fname_;
  const std::shared_ptr<FileState> st_;
};

// Cuts `fname` back to `size` bytes through `fs`. The default POSIX file
// system of RocksDB 7.x does not implement Truncate, so fall back to copying
// the prefix into a new file and renaming it over the old one.
IOStatus TruncateFile(rocksdb::FileSystem* fs, const std::string& fname, uint64_t size) {
  IOOptions io;
  IOStatus s = fs->Truncate(fname, size, io, nullptr);
  if (!s.IsNotSupported()) return s;
  std::unique_ptr<rocksdb::FSSequentialFile> in;
  s = fs->NewSequentialFile(fname, rocksdb::FileOptions(), &in, nullptr);
  if (!s.ok()) return s;
  const std::string tmp = fname + ".psm-truncate";
  std::unique_ptr<rocksdb::FSWritableFile> out;
  s = fs->NewWritableFile(tmp, rocksdb::FileOptions(), &out, nullptr);
  if (!s.ok()) return s;
  std::string buf(1 << 16, '\0');
  uint64_t left = size;
  while (left > 0 && s.ok()) {
    Slice got;
    s = in->Read(std::min<uint64_t>(left, buf.size()), io, &got, buf.data(), nullptr);
    if (!s.ok()) break;
    if (got.empty()) break;  // shorter than `size`: keep what there is
    s = out->Append(got, io, nullptr);
    left -= got.size();
  }
  if (s.ok()) s = out->Sync(io, nullptr);
  IOStatus c = out->Close(io, nullptr);
  if (s.ok()) s = c;
  if (s.ok()) s = fs->RenameFile(tmp, fname, io, nullptr);
  if (!s.ok()) (void)fs->DeleteFile(tmp, io, nullptr);
  return s;
}

}  // namespace

FaultInjectionFileSystem::FaultInjectionFileSystem(std::shared_ptr<rocksdb::FileSystem> base)
    : FileSystemWrapper(std::move(base)) {}

void FaultInjectionFileSystem::InjectWriteError(Fault fault, uint64_t count, Target target) {
  std::lock_guard<std::mutex> l(mu_);
  write_inj_ = {fault, count, target};
}

void FaultInjectionFileSystem::InjectSyncError(Fault fault, uint64_t count, Target target) {
  std::lock_guard<std::mutex> l(mu_);
  sync_inj_ = {fault, count, target};
}

void FaultInjectionFileSystem::SetActive(bool active) {
  std::lock_guard<std::mutex> l(mu_);
  active_ = active;
}

bool FaultInjectionFileSystem::active() const {
  std::lock_guard<std::mutex> l(mu_);
  return active_;
}

IOStatus FaultInjectionFileSystem::Inactive(const char* what, const std::string& fname) const {
  return IOStatus::IOError(std::string("power is off: ") + what + " " + fname);
}

IOStatus FaultInjectionFileSystem::CheckLocked(Injection* inj, const std::string& fname,
                                               const char* what) {
  if (!active_) return Inactive(what, fname);
  if (inj->fault == Fault::kNone) return IOStatus::OK();
  bool wal = IsWal(fname);
  if ((inj->target == Target::kWal && !wal) || (inj->target == Target::kNonWal && wal)) {
    return IOStatus::OK();
  }
  Fault f = inj->fault;
  if (inj->remaining > 0 && --inj->remaining == 0) inj->fault = Fault::kNone;
  ++injected_;
  std::string msg = std::string("injected ") + what + " failure: " + fname;
  return f == Fault::kNoSpace ? IOStatus::NoSpace(msg) : IOStatus::IOError(msg);
}

IOStatus FaultInjectionFileSystem::CheckWrite(const std::string& fname) {
  std::lock_guard<std::mutex> l(mu_);
  return CheckLocked(&write_inj_, fname, "write");
}

IOStatus FaultInjectionFileSystem::CheckSync(const std::string& fname) {
  std::lock_guard<std::mutex> l(mu_);
  return CheckLocked(&sync_inj_, fname, "sync");
}

void FaultInjectionFileSystem::OnAppend(const std::shared_ptr<FileState>& st, uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  st->pos += n;
  ++appends_;
}

void FaultInjectionFileSystem::OnWriteAt(const std::shared_ptr<FileState>& st, uint64_t end) {
  std::lock_guard<std::mutex> l(mu_);
  if (end > st->pos) st->pos = end;
  ++appends_;
}

void FaultInjectionFileSystem::OnTruncate(const std::shared_ptr<FileState>& st, uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  st->pos = size;
  if (st->synced > size) st->synced = size;
}

uint64_t FaultInjectionFileSystem::PosForSync(const std::shared_ptr<FileState>& st) {
  std::lock_guard<std::mutex> l(mu_);
  return st->pos;
}

void FaultInjectionFileSystem::OnSynced(const std::shared_ptr<FileState>& st, uint64_t pos) {
  std::lock_guard<std::mutex> l(mu_);
  if (pos > st->synced) st->synced = pos;
  st->ever_synced = true;
  ++syncs_;
}

IOStatus FaultInjectionFileSystem::DropUnsyncedData() {
  std::lock_guard<std::mutex> l(mu_);
  IOOptions io;
  IOStatus first_error;
  std::vector<std::string> gone;
  for (auto& [name, st] : files_) {
    IOStatus s;
    if (st->created && !st->ever_synced) {
      s = target()->DeleteFile(name, io, nullptr);
      if (s.IsNotFound() || s.IsPathNotFound()) s = IOStatus::OK();
      gone.push_back(name);
    } else if (st->pos > st->synced) {
      s = TruncateFile(target(), name, st->synced);
      st->pos = st->synced;
    }
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  for (const auto& n : gone) files_.erase(n);
  return first_error;
}

void FaultInjectionFileSystem::ResetState() {
  std::lock_guard<std::mutex> l(mu_);
  files_.clear();
}

uint64_t FaultInjectionFileSystem::appends() const {
  std::lock_guard<std::mutex> l(mu_);
  return appends_;
}

uint64_t FaultInjectionFileSystem::syncs() const {
  std::lock_guard<std::mutex> l(mu_);
  return syncs_;
}

uint64_t FaultInjectionFileSystem::injected_failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

uint64_t FaultInjectionFileSystem::UnsyncedBytes() const {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t n = 0;
  for (const auto& [name, st] : files_) n += st->pos > st->synced ? st->pos - st->synced : 0;
  return n;
}

IOStatus FaultInjectionFileSystem::NewWritableFile(const std::string& fname,
                                                   const rocksdb::FileOptions& opts,
                                                   std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                   IODebugContext* dbg) {
  if (!active()) return Inactive("create", fname);
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->NewWritableFile(fname, opts, &f, dbg);
  if (!s.ok()) return s;
  auto st = std::make_shared<FileState>();
  st->created = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    files_[fname] = st;
  }
  result->reset(new FaultWritableFile(std::move(f), this, fname, std::move(st)));
  return s;
}

IOStatus FaultInjectionFileSystem::ReopenWritableFile(
    const std::string& fname, const rocksdb::FileOptions& opts,
    std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  if (!active()) return Inactive("reopen", fname);
  uint64_t existing = 0;
  bool existed = target()->GetFileSize(fname, IOOptions(), &existing, nullptr).ok();
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->ReopenWritableFile(fname, opts, &f, dbg);
  if (!s.ok()) return s;
  std::shared_ptr<FileState> st;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(fname);
    if (it != files_.end()) {
      st = it->second;
    } else {
      // Written before we knew about it: assume its bytes are durable.
      st = std::make_shared<FileState>();
      st->pos = st->synced = existing;
      st->ever_synced = existed;
      st->created = !existed;
      files_[fname] = st;
    }
  }
  result->reset(new FaultWritableFile(std::move(f), this, fname, std::move(st)));
  return s;
}

IOStatus FaultInjectionFileSystem::ReuseWritableFile(
    const std::string& fname, const std::string& old_fname, const rocksdb::FileOptions& opts,
    std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  if (!active()) return Inactive("reuse", fname);
  std::unique_ptr<rocksdb::FSWritableFile> f;
  IOStatus s = target()->ReuseWritableFile(fname, old_fname, opts, &f, dbg);
  if (!s.ok()) return s;
  auto st = std::make_shared<FileState>();
  st->created = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    files_.erase(old_fname);
    files_[fname] = st;
  }
  result->reset(new FaultWritableFile(std::move(f), this, fname, std::move(st)));
  return s;
}

IOStatus FaultInjectionFileSystem::NewRandomRWFile(const std::string& fname,
                                                   const rocksdb::FileOptions& opts,
                                                   std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                                   IODebugContext* dbg) {
  if (!active()) return Inactive("open", fname);
  return target()->NewRandomRWFile(fname, opts, result, dbg);
}

IOStatus FaultInjectionFileSystem::RenameFile(const std::string& src, const std::string& dst,
                                              const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return Inactive("rename", src);
  IOStatus s = target()->RenameFile(src, dst, opts, dbg);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(src);
  if (it != files_.end()) {
    files_[dst] = it->second;
    files_.erase(it);
  } else {
    files_.erase(dst);  // dst is now an untracked (durable) file
  }
  return s;
}

IOStatus FaultInjectionFileSystem::LinkFile(const std::string& src, const std::string& dst,
                                            const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return Inactive("link", src);
  IOStatus s = target()->LinkFile(src, dst, opts, dbg);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(src);
  if (it != files_.end()) files_[dst] = it->second;
  return s;
}

IOStatus FaultInjectionFileSystem::DeleteFile(const std::string& fname, const IOOptions& opts,
                                              IODebugContext* dbg) {
  if (!active()) return Inactive("delete", fname);
  IOStatus s = target()->DeleteFile(fname, opts, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    files_.erase(fname);
  }
  return s;
}

IOStatus FaultInjectionFileSystem::Truncate(const std::string& fname, size_t size,
                                            const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return Inactive("truncate", fname);
  IOStatus s = target()->Truncate(fname, size, opts, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(fname);
    if (it != files_.end()) {
      it->second->pos = size;
      if (it->second->synced > size) it->second->synced = size;
    }
  }
  return s;
}

}  // namespace psm
