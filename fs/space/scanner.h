// Scanner: rebuilds the allocator's free-extent index from the `alloc`
// column family, in physical order, while the volume serves.
//
// It runs on mount, after restore-to-snapshot, after failover and on demand
// (`psmctl scan`). Each step reads up to ScannerOptions::records_per_step
// alloc records and publishes their gaps through Allocator::ScanStep (under
// the allocator lock; see fs/space/allocator.h for the rule that makes this safe).
// Start() while a scan runs restarts it from block 0; Stop() (unmount)
// returns promptly.
//
// Thread safety: all methods are thread-safe. One background thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "fs/space/allocator.h"
#include "meta/store.h"

namespace psm {

struct ScannerOptions {
  // alloc records read per locked step. Default: 4096.
  uint32_t records_per_step = 4096;
  // Threads that read `alloc` ahead of the cursor, without the allocator
  // lock (docs/scanner.md, "Reading ahead"); 0 = every step reads under the
  // lock. Default: 2.
  int prefetch_threads = 2;
};

struct ScanStatus {
  bool running = false;
  std::string reason;             // "mount", "restore", "failover", "request"
  double percent = 0;             // cursor / image blocks
  uint64_t cursor = 0;            // first block the scan has not covered
  double ranges_per_sec = 0;      // alloc records scanned per second
  double eta_sec = 0;
  uint64_t ranges_scanned = 0;
  uint64_t free_blocks_found = 0;
  uint64_t scans_completed = 0;
  int64_t started_ns = 0;         // CLOCK_REALTIME
  int64_t finished_ns = 0;
  double last_duration_sec = 0;
  std::string last_error;         // the last failed step's error ("" when fine)
};

class Scanner {
 public:
  Scanner(Store* store, Allocator* alloc, ScannerOptions opts = {});
  ~Scanner();  // Stop()s
  // Starts a scan (or restarts the running one from the beginning).
  void Start(const std::string& reason);
  // Stops the thread; the index keeps what was found.
  void Stop();
  // Waits until no scan is running. Returns false on timeout.
  bool WaitIdle(double timeout_sec);
  ScanStatus GetStatus() const;

 private:
  // The thread's loop; it exits when stop_ is set or generation_ moves on.
  void Run(uint64_t generation);
  Store* store_;
  Allocator* alloc_;
  ScannerOptions opts_;
  mutable std::mutex mu_;  // before Allocator::mu_ (Start resets the allocator)
  std::condition_variable cv_;
  std::thread thread_;
  bool stop_ = false;
  bool restart_ = false;   // a Start() arrived
  uint64_t generation_ = 0;  // bumped by Stop(): retires the current thread
  ScanStatus status_;
};

}  // namespace psm
