// Scanner: see fs/scanner.h and docs/scanner.md.
#include "fs/scanner.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "meta/sync_point.h"

namespace psm {
namespace {

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double MonoSec() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string_view View(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

// Reads the used ranges of `alloc` overlapping [cursor, next), for at most
// `max_records` records after the one covering the cursor; sets *next to the
// start of the first record not read (or `end`). Runs under the allocator
// lock (Allocator::ScanStep), with an iterator created here, so that it sees
// every write applied before the step began.
Status ReadAllocStep(Store* store, uint32_t max_records, BlockNo cursor, BlockNo end,
                     std::vector<Range>* used, BlockNo* next, uint64_t* records) {
  auto it = store->NewIterator(Cf::kAlloc);
  const std::string key = AllocKey(cursor);
  // A record may start below the cursor and reach past it (records are split
  // and rewritten while the scan runs): start from the last record that
  // starts at or before the cursor.
  it->SeekForPrev(key);
  if (!it->Valid()) {
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    it->Seek(key);
  }
  uint32_t n = 0;
  uint64_t counted = 0;
  *next = end;
  for (; it->Valid(); it->Next()) {
    if (it->key().size() != 8) {
      return Status::Corruption("alloc key of " + std::to_string(it->key().size()) + " bytes");
    }
    const BlockNo s = AllocKeyBlock(View(it->key()));
    if (s >= end) break;
    if (s > cursor && n >= max_records) {
      *next = s;
      break;
    }
    AllocRec rec;
    Status ds = DecodeAlloc(View(it->value()), &rec);
    if (!ds.ok()) {
      return Status::Corruption("alloc record at block " + std::to_string(s) + ": " + ds.message());
    }
    ++n;
    // Dead records (death != 0) are still in use: a snapshot sees them.
    if (s + rec.length > cursor && rec.length > 0) {
      used->push_back(Range{s, rec.length});
      ++counted;  // a record wholly below the cursor was counted before
    }
  }
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  *records = counted;
  return Status::Ok();
}

}  // namespace

Scanner::Scanner(Store* store, Allocator* alloc, ScannerOptions opts)
    : store_(store), alloc_(alloc), opts_(opts) {
  if (opts_.records_per_step == 0) opts_.records_per_step = 1;
}

Scanner::~Scanner() { Stop(); }

void Scanner::Start(const std::string& reason) {
  std::lock_guard<std::mutex> l(mu_);
  // Reset now, so that the scan a caller asks for starts from block 0 even if
  // the thread is in the middle of a step (its next step continues from the
  // allocator's cursor, which is the beginning again).
  alloc_->ResetForScan();
  restart_ = true;
  status_.running = true;
  status_.reason = reason;
  status_.percent = 0;
  status_.cursor = alloc_->first();
  status_.ranges_per_sec = 0;
  status_.eta_sec = 0;
  status_.ranges_scanned = 0;
  status_.free_blocks_found = 0;
  status_.started_ns = RealtimeNs();
  status_.last_error.clear();
  if (!thread_.joinable()) {
    stop_ = false;
    thread_ = std::thread([this, g = generation_] { Run(g); });
  }
  cv_.notify_all();
}

void Scanner::Stop() {
  std::thread t;
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    ++generation_;
    t = std::move(thread_);
    status_.running = false;
    restart_ = false;
  }
  cv_.notify_all();
  if (t.joinable()) t.join();
}

bool Scanner::WaitIdle(double timeout_sec) {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, std::chrono::duration<double>(timeout_sec),
                      [&] { return !status_.running && !restart_; });
}

ScanStatus Scanner::GetStatus() const {
  std::lock_guard<std::mutex> l(mu_);
  return status_;
}

void Scanner::Run(uint64_t generation) {
  std::unique_lock<std::mutex> l(mu_);
  auto stopped = [&] { return stop_ || generation != generation_; };
  while (true) {
    cv_.wait(l, [&] { return stopped() || restart_; });
    if (stopped()) return;
    restart_ = false;
    // Start() reset the allocator already; reset again here, so that a step
    // that ran between that reset and now (not counted below) is discarded
    // too and the statistics describe exactly this scan.
    alloc_->ResetForScan();
    const double t0 = MonoSec();
    const BlockNo first = alloc_->first();
    const BlockNo end = alloc_->end();
    double backoff = 0.05;
    bool finished = false;
    while (!stopped() && !restart_) {
      l.unlock();
      BlockNo cursor = first;
      uint64_t records = 0;
      uint64_t gap_blocks = 0;
      BlockNo next = first;
      Status st = alloc_->ScanStep([&](BlockNo c, std::vector<Range>* used, BlockNo* nx) {
        cursor = c;
        Status s = ReadAllocStep(store_, opts_.records_per_step, c, end, used, nx, &records);
        if (s.ok()) {
          next = *nx;
          // Blocks with no record (before in-flight / quarantine exclusion).
          uint64_t used_blocks = 0;
          for (const Range& u : *used) {
            BlockNo us = std::max(u.start, c);
            BlockNo ue = std::min(u.end(), *nx);
            if (ue > us) used_blocks += ue - us;
          }
          gap_blocks = (*nx > c ? *nx - c : 0) - std::min(used_blocks, *nx > c ? *nx - c : 0);
        }
        return s;
      });
      PSM_SYNC_POINT("Scanner::AfterStep");
      const AllocatorStats as = alloc_->Stats();
      l.lock();
      if (restart_) break;  // Start() reset the allocator; begin again
      if (!st.ok()) {
        status_.last_error = st.ToString();
        // Transient RocksDB trouble: retry the same step after a pause.
        cv_.wait_for(l, std::chrono::duration<double>(backoff),
                     [&] { return stopped() || restart_; });
        backoff = std::min(backoff * 2, 5.0);
        continue;
      }
      backoff = 0.05;
      status_.last_error.clear();
      if (next > cursor) {
        status_.ranges_scanned += records;
        status_.free_blocks_found += gap_blocks;
      }
      const double elapsed = std::max(MonoSec() - t0, 1e-9);
      const uint64_t total = end > first ? end - first : 0;
      const uint64_t done = as.cursor > first ? as.cursor - first : 0;
      status_.cursor = as.cursor;
      status_.percent =
          total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
      status_.ranges_per_sec = static_cast<double>(status_.ranges_scanned) / elapsed;
      status_.eta_sec =
          done ? elapsed * static_cast<double>(total - done) / static_cast<double>(done) : 0;
      // The step is published and the status says where the cursor is: a
      // test may act here (delete below / at / above the cursor) while the
      // scanner waits. No lock held.
      l.unlock();
      PSM_SYNC_POINT("Scanner::StepDone");
      l.lock();
      if (restart_ || stopped()) continue;
      if (as.cursor >= end) {
        l.unlock();
        alloc_->MarkScanComplete();
        l.lock();
        if (restart_) break;
        finished = true;
        break;
      }
    }
    if (finished) {
      status_.running = false;
      status_.percent = 100.0;
      status_.cursor = end;
      status_.eta_sec = 0;
      ++status_.scans_completed;
      status_.finished_ns = RealtimeNs();
      status_.last_duration_sec = MonoSec() - t0;
    } else if (stopped()) {
      return;
    }
    cv_.notify_all();
  }
}

}  // namespace psm
