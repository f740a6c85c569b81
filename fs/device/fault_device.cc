// FaultDevice: see fs/device/fault_device.h.
#include "fs/device/fault_device.h"

#include <cerrno>
#include <random>

namespace psm {

Status FaultDevice::Read(uint64_t off, void* buf, size_t n) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (offline_) return Status::FromErrno(EIO, "fault device offline: read");
    if (off < bad_hi_ && bad_lo_ < off + n) {
      return Status::FromErrno(EIO, "fault device: bad sector at " + std::to_string(bad_lo_));
    }
  }
  return base_->Read(off, buf, n);
}

void FaultDevice::SetBadRange(uint64_t lo, uint64_t hi) {
  std::lock_guard<std::mutex> l(mu_);
  bad_lo_ = lo;
  bad_hi_ = hi;
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
  std::function<void()> hook;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (offline_) {
      ++c_.failed_syncs;
      return Status::FromErrno(EIO, "fault device offline: sync");
    }
    covered = unsynced_.size();
    hook = sync_hook_;
  }
  if (hook) hook();
  std::lock_guard<std::mutex> l(mu_);
  if (covered > unsynced_.size()) covered = unsynced_.size();  // a DropUnsynced() in between
  if (offline_ || fail_syncs_ > 0) {
    if (!offline_) --fail_syncs_;
    ++c_.failed_syncs;
    // Linux: the writes this sync should have covered are lost, and the
    // next sync will not report it.
    lost_.insert(lost_.end(), std::make_move_iterator(unsynced_.begin()),
                 std::make_move_iterator(unsynced_.begin() + static_cast<ptrdiff_t>(covered)));
    unsynced_.erase(unsynced_.begin(), unsynced_.begin() + static_cast<ptrdiff_t>(covered));
    c_.unsynced_writes = unsynced_.size();
    c_.lost_writes += covered;
    return Status::FromErrno(EIO, offline_ ? "fault device offline: sync" : "injected sync failure");
  }
  Status s = base_->Sync();
  if (!s.ok()) {
    ++c_.failed_syncs;
    return s;
  }
  // Only the writes that completed before the sync began are durable; the
  // bytes they wrote are durable even where a lost write had been.
  for (size_t k = 0; k < covered && !lost_.empty(); ++k) {
    const uint64_t lo = unsynced_[k].off, hi = lo + unsynced_[k].bytes.size();
    std::vector<PreImage> kept;
    for (PreImage& p : lost_) {
      const uint64_t plo = p.off, phi = p.off + p.bytes.size();
      if (phi <= lo || plo >= hi) {
        kept.push_back(std::move(p));
        continue;
      }
      if (plo < lo) kept.push_back(PreImage{plo, p.bytes.substr(0, lo - plo)});
      if (phi > hi) kept.push_back(PreImage{hi, p.bytes.substr(hi - plo)});
    }
    lost_ = std::move(kept);
  }
  unsynced_.erase(unsynced_.begin(), unsynced_.begin() + static_cast<ptrdiff_t>(covered));
  c_.unsynced_writes = unsynced_.size();
  ++c_.syncs;
  return Status::Ok();
}

void FaultDevice::SetSyncHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> l(mu_);
  sync_hook_ = std::move(hook);
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
  bad_lo_ = bad_hi_ = 0;
}

Status FaultDevice::DropUnsynced() {
  std::lock_guard<std::mutex> l(mu_);
  // Newest first, so overlapping writes unwind to the oldest pre-image:
  // the unsynced writes, then the older ones a failed sync lost.
  for (auto it = unsynced_.rbegin(); it != unsynced_.rend(); ++it) {
    PSM_RETURN_IF_ERROR(base_->Write(it->off, it->bytes.data(), it->bytes.size()));
  }
  for (auto it = lost_.rbegin(); it != lost_.rend(); ++it) {
    PSM_RETURN_IF_ERROR(base_->Write(it->off, it->bytes.data(), it->bytes.size()));
  }
  unsynced_.clear();
  lost_.clear();
  c_.unsynced_writes = 0;
  return base_->Sync();
}

Status FaultDevice::DropSomeUnsynced(uint64_t seed) {
  std::lock_guard<std::mutex> l(mu_);
  std::mt19937_64 rng(seed);
  std::vector<std::pair<uint64_t, uint64_t>> kept;  // [lo, hi) of kept writes
  auto revert_or_keep = [&](const PreImage& p) -> Status {
    const uint64_t lo = p.off, hi = p.off + p.bytes.size();
    bool under_kept = false;
    for (const auto& [klo, khi] : kept) under_kept |= lo < khi && klo < hi;
    if (under_kept || rng() % 2 == 0) {
      kept.emplace_back(lo, hi);
      return Status::Ok();
    }
    return base_->Write(p.off, p.bytes.data(), p.bytes.size());
  };
  // Newest first, as DropUnsynced.
  for (auto it = unsynced_.rbegin(); it != unsynced_.rend(); ++it) {
    PSM_RETURN_IF_ERROR(revert_or_keep(*it));
  }
  for (auto it = lost_.rbegin(); it != lost_.rend(); ++it) PSM_RETURN_IF_ERROR(revert_or_keep(*it));
  unsynced_.clear();
  lost_.clear();
  c_.unsynced_writes = 0;
  return base_->Sync();
}

FaultDeviceCounters FaultDevice::counters() const {
  std::lock_guard<std::mutex> l(mu_);
  return c_;
}

}  // namespace psm
