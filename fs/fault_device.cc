// FaultDevice: see fs/fault_device.h.
#include "fs/fault_device.h"

#include <cerrno>

namespace psm {

Status FaultDevice::Read(uint64_t off, void* buf, size_t n) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (offline_) return Status::FromErrno(EIO, "fault device offline: read");
  }
  return base_->Read(off, buf, n);
}

Status FaultDevice::Write(uint64_t off, const void* buf, size_t n) {
  std::lock_guard<std::mutex> l(mu_);
  if (offline_) {
    ++c_.failed_writes;
    return Status::FromErrno(EIO, "fault device offline: write");
  }
  if (failing_all_writes_) {
    ++c_.failed_writes;
    return Status::FromErrno(EIO, "injected write failure (sticky)");
  }
  if (fail_write_countdown_ > 0 && --fail_write_countdown_ == 0) {
    ++c_.failed_writes;
    failing_all_writes_ = fail_write_sticky_;
    return Status::FromErrno(EIO, "injected write failure");
  }
  if (no_space_) {
    ++c_.failed_writes;
    return Status::FromErrno(ENOSPC, "injected ENOSPC");
  }
  if (off > base_->size() || n > base_->size() - off) {
    ++c_.failed_writes;
    return Status::Invalid("write beyond the end of the fault device");
  }
  size_t land = n;
  bool torn = false;
  if (tear_armed_) {
    tear_armed_ = false;
    if (tear_bytes_ < n) {
      land = tear_bytes_;
      torn = true;
    }
  }
  if (land > 0) {
    PreImage pre{off, std::string(land, '\0')};
    PSM_RETURN_IF_ERROR(base_->Read(off, pre.bytes.data(), land));
    Status s = base_->Write(off, buf, land);
    // Even a failed base write may have landed partly: keep the pre-image.
    unsynced_.push_back(std::move(pre));
    c_.unsynced_writes = unsynced_.size();
    if (!s.ok()) {
      ++c_.failed_writes;
      return s;
    }
    c_.bytes_written += land;
  }
  ++c_.writes;
  if (torn) {
    ++c_.failed_writes;
    return Status::FromErrno(EIO, "injected torn write: " + std::to_string(land) + " of " +
                                      std::to_string(n) + " bytes landed");
  }
  return Status::Ok();
}

Status FaultDevice::Sync() {
  size_t covered;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (offline_) {
      ++c_.failed_syncs;
      return Status::FromErrno(EIO, "fault device offline: sync");
    }
    if (fail_syncs_ > 0) {
      --fail_syncs_;
      ++c_.failed_syncs;
      return Status::FromErrno(EIO, "injected sync failure");
    }
    covered = unsynced_.size();
  }
  Status s = base_->Sync();
  std::lock_guard<std::mutex> l(mu_);
  if (!s.ok()) {
    ++c_.failed_syncs;
    return s;
  }
  // Only the writes that completed before the sync began are durable. A
  // DropUnsynced() in between may have shrunk the log already.
  if (covered > unsynced_.size()) covered = unsynced_.size();
  unsynced_.erase(unsynced_.begin(), unsynced_.begin() + static_cast<ptrdiff_t>(covered));
  c_.unsynced_writes = unsynced_.size();
  ++c_.syncs;
  return Status::Ok();
}

void FaultDevice::FailNthWrite(uint64_t n, bool sticky) {
  std::lock_guard<std::mutex> l(mu_);
  fail_write_countdown_ = n;
  fail_write_sticky_ = sticky;
  if (n == 0) failing_all_writes_ = false;
}

void FaultDevice::SetNoSpace(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  no_space_ = on;
}

void FaultDevice::FailSync(uint64_t count) {
  std::lock_guard<std::mutex> l(mu_);
  fail_syncs_ = count;
}

void FaultDevice::TearNextWrite(size_t k) {
  std::lock_guard<std::mutex> l(mu_);
  tear_armed_ = true;
  tear_bytes_ = k;
}

void FaultDevice::SetOffline(bool offline) {
  std::lock_guard<std::mutex> l(mu_);
  offline_ = offline;
}

void FaultDevice::ClearFaults() {
  std::lock_guard<std::mutex> l(mu_);
  fail_write_countdown_ = 0;
  fail_write_sticky_ = false;
  failing_all_writes_ = false;
  no_space_ = false;
  fail_syncs_ = 0;
  tear_armed_ = false;
  offline_ = false;
}

Status FaultDevice::DropUnsynced() {
  std::lock_guard<std::mutex> l(mu_);
  // Newest first, so overlapping writes unwind to the oldest pre-image.
  for (auto it = unsynced_.rbegin(); it != unsynced_.rend(); ++it) {
    PSM_RETURN_IF_ERROR(base_->Write(it->off, it->bytes.data(), it->bytes.size()));
  }
  unsynced_.clear();
  c_.unsynced_writes = 0;
  return base_->Sync();
}

FaultDeviceCounters FaultDevice::counters() const {
  std::lock_guard<std::mutex> l(mu_);
  return c_;
}

}  // namespace psm
