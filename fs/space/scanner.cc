// Scanner: see fs/space/scanner.h and docs/scanner.md.
#include "fs/space/scanner.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

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
      // Each record is counted by the step that holds its start (one that
      // starts below the cursor was counted before).
      if (s >= cursor) ++counted;
    }
  }
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  *records = counted;
  return Status::Ok();
}

// One piece of `alloc` read ahead, without the allocator lock: the used
// ranges of [a, next), at most records_per_step records, read with an
// iterator created after Allocator::ScanGen() returned `gen`.
struct Piece {
  BlockNo a = 0, next = 0;
  uint64_t gen = 0;
  std::vector<Range> used;
  uint64_t records = 0;
};

// Reads `alloc` ahead of the cursor with a few threads (docs/scanner.md,
// "Reading ahead"). The image is cut into regions of about
// kRegionSteps * records_per_step records (from RocksDB's estimate; the
// first three smaller, so that the first piece comes soon); each
// thread takes the next region, reads it whole with one iterator and cuts
// it into pieces of records_per_step records. The scanner thread takes the
// pieces in order and publishes them through ScanStepPrefetched, which
// refuses a piece whose read may be stale; then the scanner reads that step
// under the lock as it always did. At most kLookahead regions are held.
class Prefetcher {
 public:
  static constexpr int kRegionSteps = 8;
  static constexpr size_t kLookahead = 4;

  Prefetcher(Store* store, Allocator* alloc, uint32_t per_step, int threads, BlockNo first,
             BlockNo end)
      : store_(store), alloc_(alloc), per_step_(per_step) {
    const uint64_t est = std::max<uint64_t>(store->EstimateKeys(Cf::kAlloc), 1);
    const uint64_t want = std::max<uint64_t>(1, est / (uint64_t{per_step} * kRegionSteps));
    const uint64_t regions = std::min<uint64_t>(want, 65536);
    const uint64_t total = end > first ? end - first : 0;
    const uint64_t span = std::max<uint64_t>(1, (total + regions - 1) / std::max<uint64_t>(regions, 1));
    // The first regions are smaller (1, 2, 4 steps' worth, then 8): the
    // first allocations wait for the first piece, not for a whole region.
    uint64_t k = 1;
    for (BlockNo a = first; a < end;) {
      const uint64_t len = std::max<uint64_t>(1, span * k / kRegionSteps);
      Region r;
      r.a = a;
      r.b = std::min<BlockNo>(end, a + len);
      a = r.b;
      regions_.push_back(std::move(r));
      k = std::min<uint64_t>(k * 2, kRegionSteps);
    }
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Reader(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      abort_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // The piece that starts at `cursor`, waiting for it to be read. False
  // when there is none (the cursor is inside a piece after a locked step,
  // a read failed, or `cancelled` says stop): read under the lock instead.
  bool Take(BlockNo cursor, Piece* out, const std::function<bool()>& cancelled) {
    std::unique_lock<std::mutex> l(mu_);
    while (cur_ < regions_.size() && regions_[cur_].b <= cursor) {
      regions_[cur_].pieces.clear();
      regions_[cur_].pieces.shrink_to_fit();
      ++cur_;
      cv_.notify_all();  // a reader may go further ahead
    }
    if (cur_ >= regions_.size()) return false;
    Region& r = regions_[cur_];
    while (!r.done) {
      if (cancelled()) return false;
      cv_.wait_for(l, std::chrono::milliseconds(20));
    }
    if (!r.ok) return false;
    while (!r.pieces.empty() && r.pieces.front().a < cursor) r.pieces.pop_front();
    if (r.pieces.empty() || r.pieces.front().a != cursor) return false;
    *out = std::move(r.pieces.front());
    r.pieces.pop_front();
    return true;
  }

 private:
  struct Region {
    BlockNo a = 0, b = 0;
    bool claimed = false, done = false, ok = false;
    std::deque<Piece> pieces;
  };

  void Reader() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return abort_ || (next_ < regions_.size() && next_ < cur_ + kLookahead); });
      if (abort_ || next_ >= regions_.size()) return;
      const size_t i = next_++;
      const BlockNo a = regions_[i].a, b = regions_[i].b;
      l.unlock();
      std::deque<Piece> pieces;
      const bool ok = ReadRegion(a, b, &pieces);
      l.lock();
      regions_[i].pieces = std::move(pieces);
      regions_[i].ok = ok;
      regions_[i].done = true;
      cv_.notify_all();
    }
  }

  // Every record overlapping [a, b), cut into pieces of per_step_ records.
  // The generation is taken before the iterator: see ScanStepPrefetched.
  bool ReadRegion(BlockNo a, BlockNo b, std::deque<Piece>* out) {
    const uint64_t gen = alloc_->ScanGen();
    auto it = store_->NewIterator(Cf::kAlloc);
    it->SeekForPrev(AllocKey(a));
    if (!it->Valid()) {
      if (!it->status().ok()) return false;
      it->Seek(AllocKey(a));
    }
    Piece p;
    p.a = a;
    p.gen = gen;
    uint32_t n = 0;
    for (; it->Valid(); it->Next()) {
      if (it->key().size() != 8) return false;
      const BlockNo s = AllocKeyBlock(View(it->key()));
      if (s >= b) break;
      AllocRec rec;
      if (!DecodeAlloc(View(it->value()), &rec).ok()) return false;  // reported by the locked read
      if (s + rec.length <= a || rec.length == 0) continue;
      if (s > p.a && n >= per_step_) {
        p.next = s;
        out->push_back(std::move(p));
        p = Piece{};
        p.a = s;
        p.gen = gen;
        n = 0;
      }
      p.used.push_back(Range{s, rec.length});
      ++n;
      if (s >= a) ++p.records;  // one that starts below a: counted before
    }
    if (!it->status().ok()) return false;
    p.next = b;
    out->push_back(std::move(p));
    return true;
  }

  Store* store_;
  Allocator* alloc_;
  const uint32_t per_step_;
  std::mutex mu_;  // a leaf: never held while calling the allocator or RocksDB
  std::condition_variable cv_;
  std::vector<Region> regions_;
  size_t cur_ = 0;   // the region the cursor is in
  size_t next_ = 0;  // the next region to read
  bool abort_ = false;
  std::vector<std::thread> threads_;
};

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
    std::unique_ptr<Prefetcher> ahead;
    if (opts_.prefetch_threads > 0) {
      l.unlock();
      ahead = std::make_unique<Prefetcher>(store_, alloc_, opts_.records_per_step,
                                           opts_.prefetch_threads, first, end);
      l.lock();
    }
    auto cancelled = [&] {
      std::lock_guard<std::mutex> g(mu_);
      return stopped() || restart_;
    };
    while (!stopped() && !restart_) {
      l.unlock();
      BlockNo cursor = first;
      uint64_t records = 0;
      uint64_t gap_blocks = 0;
      BlockNo next = first;
      // Blocks with no record in [c, nx) (before in-flight / quarantine
      // exclusion), for the status.
      auto gaps = [](const std::vector<Range>& used, BlockNo c, BlockNo nx) {
        uint64_t used_blocks = 0;
        for (const Range& u : used) {
          BlockNo us = std::max(u.start, c);
          BlockNo ue = std::min(u.end(), nx);
          if (ue > us) used_blocks += ue - us;
        }
        const uint64_t span = nx > c ? nx - c : 0;
        return span - std::min(used_blocks, span);
      };
      Status st;
      bool taken = false;
      Piece piece;
      const BlockNo at = alloc_->Stats().cursor;
      if (ahead && ahead->Take(at, &piece, cancelled)) {
        PSM_SYNC_POINT("Scanner::Prefetched");
        alloc_->ScanStepPrefetched(piece.a, piece.next, piece.used, piece.gen, &taken);
        if (taken) {
          cursor = piece.a;
          next = piece.next;
          records = piece.records;
          gap_blocks = gaps(piece.used, piece.a, piece.next);
        }
      }
      if (!taken) {
        st = alloc_->ScanStep([&](BlockNo c, std::vector<Range>* used, BlockNo* nx) {
          cursor = c;
          Status s = ReadAllocStep(store_, opts_.records_per_step, c, end, used, nx, &records);
          if (s.ok()) {
            next = *nx;
            gap_blocks = gaps(*used, c, *nx);
          }
          return s;
        });
      }
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
    if (ahead) {
      l.unlock();
      ahead.reset();
      l.lock();
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
