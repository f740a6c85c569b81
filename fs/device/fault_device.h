// FaultDevice: a BlockDevice decorator that injects the failures crash and
// fault-injection tests need: fail the Nth write with EIO, answer ENOSPC to
// every write after a switch, fail Sync, tear a write (only its first K bytes
// land), take the device offline, and cut the power.
//
// Power cut: every write since the last successful Sync keeps the pre-image
// of the bytes it overwrote. DropUnsynced() puts those pre-images back, newest
// first, so the base holds exactly what was durable at the last Sync, as if
// the machine had lost power. This works over any base (file or memory).
// A Sync covers the writes that completed before it started; a write racing
// with a Sync stays unsynced (the conservative reading).
//
// A failed Sync behaves as Linux's fdatasync after a writeback error: the
// writes it should have made durable are lost for good (the kernel marked
// their pages clean without writing them), and the next Sync reports
// success without making them durable. They stay readable until the power
// cut, which reverts them; only a later write over the same bytes that a
// Sync covers makes those bytes durable again.
//
// Typical crash test:
//   auto fault = std::make_unique<FaultDevice>(NewMemDevice(n));
//   ... run, then at the chosen instant:
//   fault->SetOffline(true);   // every further I/O fails: the machine is off
//   ... tear the volume down ...
//   fault->DropUnsynced(); fault->SetOffline(false);  // power back on; remount
//
// Thread safety: all methods are thread-safe. Writes are serialised (the
// pre-image and the write are one step), which is fine for tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fs/device/block_device.h"

namespace psm {

struct FaultDeviceCounters {
  uint64_t writes = 0;         // Write() calls that reached the base (incl. torn)
  uint64_t failed_writes = 0;  // Write() calls that returned an error
  uint64_t bytes_written = 0;  // bytes that reached the base
  uint64_t syncs = 0;          // successful Sync() calls
  uint64_t failed_syncs = 0;
  uint64_t unsynced_writes = 0;  // writes a power cut would revert now
  uint64_t lost_writes = 0;      // writes a failed sync lost (still reverted by a cut)
};

class FaultDevice : public BlockDevice {
 public:
  explicit FaultDevice(std::unique_ptr<BlockDevice> base) : base_(std::move(base)) {}

  Status Read(uint64_t off, void* buf, size_t n) override;
  Status Write(uint64_t off, const void* buf, size_t n) override;
  Status Sync() override;
  uint64_t size() const override { return base_->size(); }
  // -1: the descriptor would bypass the injected faults.
  int fd() const override { return -1; }

  // ---- fault switches ----
  // The n-th Write() from now (n >= 1) fails with EIO and writes nothing.
  // With sticky, that write and every later one fail. n == 0 disarms.
  void FailNthWrite(uint64_t n, bool sticky = false);
  // While on, every Write() fails with ENOSPC and writes nothing.
  void SetNoSpace(bool on);
  // The next `count` Sync() calls fail with EIO; the writes each should
  // have covered are lost (see above).
  void FailSync(uint64_t count = 1);
  // Called by every Sync() after it has fixed which writes it covers and
  // before it syncs the base (tests hold a sync there to race writes with
  // it). Null: none.
  void SetSyncHook(std::function<void()> hook);
  // The next Write() lands only its first `k` bytes (k < n) and fails with
  // EIO, as a write cut by a crash would.
  void TearNextWrite(size_t k);
  // While offline, every Read/Write/Sync fails with EIO (the machine is off).
  void SetOffline(bool offline);
  // Bad sectors: every Read() that meets [lo, hi) fails with EIO (the bytes
  // stay as they are; a write over them is taken). lo == hi: none.
  void SetBadRange(uint64_t lo, uint64_t hi);
  // Disarms every switch (does not touch unsynced data).
  void ClearFaults();

  // ---- power cut ----
  // Reverts every byte written since the last successful Sync.
  Status DropUnsynced();
  // A power cut after the kernel wrote back some of the unsynced writes:
  // each is reverted or kept at random (from `seed`), except that one
  // overlapping a newer kept write is kept (a disk block shows the bytes
  // of some prefix of its writes, never an older one's over a newer one's).
  Status DropSomeUnsynced(uint64_t seed);

  FaultDeviceCounters counters() const;
  BlockDevice* base() { return base_.get(); }

 private:
  struct PreImage {
    uint64_t off;
    std::string bytes;
  };

  std::unique_ptr<BlockDevice> base_;
  mutable std::mutex mu_;
  // Writes that complete hold mu_ for the pre-image read and the write.
  std::vector<PreImage> unsynced_;
  // Pre-images of writes a failed Sync lost, oldest first, minus the bytes
  // a later successful Sync made durable again.
  std::vector<PreImage> lost_;
  std::function<void()> sync_hook_;
  uint64_t fail_write_countdown_ = 0;  // 0 = off
  bool fail_write_sticky_ = false;
  bool failing_all_writes_ = false;
  bool no_space_ = false;
  uint64_t fail_syncs_ = 0;
  bool tear_armed_ = false;
  size_t tear_bytes_ = 0;
  bool offline_ = false;
  uint64_t bad_lo_ = 0, bad_hi_ = 0;
  FaultDeviceCounters c_;
};

}  // namespace psm
