// Request counts and latencies of the FUSE adapter, by operation, for
// `psmctl metrics` (docs/monitoring.md).
//
// The adapter (fs/fuse/fuse_adapter.cc) wraps every handler of its operation
// table: it reads the monotonic clock before and after the handler (which
// decodes the request, calls the core and sends the one reply) and calls
// Record(op, nanoseconds). The control server reads Snapshot() when asked
// for "metrics" (fs/control/control_server.cc). This file is FUSE-free on purpose:
// it lives in psm_fs, which the control server and the unit tests link.
//
// Cost: Record is two relaxed atomic additions (the latency's bucket and the
// sum) on a shard that belongs to the calling thread (threads take shards
// round-robin at their first request; with more threads than shards two
// share one), so worker threads do not bounce cache lines and nothing
// locks. The count of an operation is the sum of its buckets, so a reader
// always sees _count equal to the +Inf bucket.
//
// Thread safety: Record from any number of threads; Snapshot from any
// thread at any time (it sums the shards with relaxed loads: a request
// recorded meanwhile may be in one figure and not yet in another, e.g. in
// its bucket but not yet in the sum).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace psm {

// The FUSE requests the adapter serves, one per handler in its operation
// table. Names as the kernel's opcodes, lower case (FUSE_BATCH_FORGET is
// forget_multi in libfuse).
enum class RequestOp : uint8_t {
  kLookup,
  kForget,
  kBatchForget,
  kGetattr,
  kSetattr,
  kReadlink,
  kMknod,
  kMkdir,
  kSymlink,
  kLink,
  kUnlink,
  kRmdir,
  kRename,
  kStatfs,
  kOpen,
  kCreate,
  kRead,
  kWrite,
  kRelease,
  kFsync,
  kFallocate,
  kLseek,
  kOpendir,
  kReaddir,
  kReaddirplus,
  kReleasedir,
  kFsyncdir,
  kSetxattr,
  kGetxattr,
  kListxattr,
  kRemovexattr,
  kCount  // not an operation
};
inline constexpr size_t kRequestOpCount = static_cast<size_t>(RequestOp::kCount);

// "lookup", "batch_forget", "readdirplus", ...
std::string_view RequestOpName(RequestOp op);

// Upper bounds of the latency buckets, nanoseconds, ascending; a last
// bucket (+Inf) takes everything slower. A request of exactly a bound's
// duration falls in that bound's bucket (Prometheus "le").
inline constexpr std::array<uint64_t, 18> kRequestLatencyBoundsNs = {
    10'000,      25'000,      50'000,      100'000,       250'000,       500'000,
    1'000'000,   2'500'000,   5'000'000,   10'000'000,    25'000'000,    50'000'000,
    100'000'000, 250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000, 10'000'000'000};

// What Snapshot() returns, and what the control protocol carries (plain
// data: the client library uses it without the class below).
struct RequestOpFigures {
  std::string op;
  uint64_t count = 0;
  uint64_t sum_ns = 0;
  // Requests per bucket, NOT cumulative: buckets[i] counts the requests
  // slower than bounds_ns[i-1] and no slower than bounds_ns[i]; the last
  // entry (one more than bounds_ns) those slower than every bound.
  std::vector<uint64_t> buckets;
};
struct RequestFigures {
  std::vector<uint64_t> bounds_ns;
  std::vector<RequestOpFigures> ops;  // every operation, in RequestOp order
};

class RequestMetrics {
 public:
  static constexpr size_t kBuckets = kRequestLatencyBoundsNs.size() + 1;
  static constexpr size_t kShards = 16;

  RequestMetrics();
  ~RequestMetrics();
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // One request of `op` that took `ns` nanoseconds.
  void Record(RequestOp op, uint64_t ns) noexcept {
    Cell& c = shards_[ShardIndex()].cells[static_cast<size_t>(op)];
    c.buckets[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
    c.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }

  RequestFigures Snapshot() const;

  // The bucket a duration falls in (0 .. kBuckets-1).
  static size_t BucketOf(uint64_t ns) noexcept {
    size_t i = 0;
    while (i < kRequestLatencyBoundsNs.size() && ns > kRequestLatencyBoundsNs[i]) ++i;
    return i;
  }

 private:
  struct alignas(64) Cell {
    std::atomic<uint64_t> sum_ns{0};
    std::array<std::atomic<uint64_t>, kBuckets> buckets{};
  };
  struct Shard {
    std::array<Cell, kRequestOpCount> cells;
  };
  // This thread's shard: assigned round-robin at the thread's first call.
  static size_t ShardIndex() noexcept;

  std::unique_ptr<Shard[]> shards_;
};

}  // namespace psm
