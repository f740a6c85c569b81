#include "fs/base/request_metrics.h"

namespace psm {

std::string_view RequestOpName(RequestOp op) {
  switch (op) {
    case RequestOp::kLookup:
      return "lookup";
    case RequestOp::kForget:
      return "forget";
    case RequestOp::kBatchForget:
      return "batch_forget";
    case RequestOp::kGetattr:
      return "getattr";
    case RequestOp::kSetattr:
      return "setattr";
    case RequestOp::kReadlink:
      return "readlink";
    case RequestOp::kMknod:
      return "mknod";
    case RequestOp::kMkdir:
      return "mkdir";
    case RequestOp::kSymlink:
      return "symlink";
    case RequestOp::kLink:
      return "link";
    case RequestOp::kUnlink:
      return "unlink";
    case RequestOp::kRmdir:
      return "rmdir";
    case RequestOp::kRename:
      return "rename";
    case RequestOp::kStatfs:
      return "statfs";
    case RequestOp::kOpen:
      return "open";
    case RequestOp::kCreate:
      return "create";
    case RequestOp::kRead:
      return "read";
    case RequestOp::kWrite:
      return "write";
    case RequestOp::kRelease:
      return "release";
    case RequestOp::kFsync:
      return "fsync";
    case RequestOp::kFallocate:
      return "fallocate";
    case RequestOp::kLseek:
      return "lseek";
    case RequestOp::kOpendir:
      return "opendir";
    case RequestOp::kReaddir:
      return "readdir";
    case RequestOp::kReaddirplus:
      return "readdirplus";
    case RequestOp::kReleasedir:
      return "releasedir";
    case RequestOp::kFsyncdir:
      return "fsyncdir";
    case RequestOp::kSetxattr:
      return "setxattr";
    case RequestOp::kGetxattr:
      return "getxattr";
    case RequestOp::kListxattr:
      return "listxattr";
    case RequestOp::kRemovexattr:
      return "removexattr";
    case RequestOp::kCount:
      break;
  }
  return "unknown";
}

RequestMetrics::RequestMetrics() : shards_(new Shard[kShards]) {}

RequestMetrics::~RequestMetrics() = default;

size_t RequestMetrics::ShardIndex() noexcept {
  static std::atomic<size_t> next{0};
  thread_local const size_t index = next.fetch_add(1, std::memory_order_relaxed) % kShards;
  return index;
}

RequestFigures RequestMetrics::Snapshot() const {
  RequestFigures f;
  f.bounds_ns.assign(kRequestLatencyBoundsNs.begin(), kRequestLatencyBoundsNs.end());
  f.ops.resize(kRequestOpCount);
  for (size_t op = 0; op < kRequestOpCount; ++op) {
    RequestOpFigures& o = f.ops[op];
    o.op = std::string(RequestOpName(static_cast<RequestOp>(op)));
    o.buckets.assign(kBuckets, 0);
    for (size_t s = 0; s < kShards; ++s) {
      const Cell& c = shards_[s].cells[op];
      o.sum_ns += c.sum_ns.load(std::memory_order_relaxed);
      for (size_t b = 0; b < kBuckets; ++b) {
        o.buckets[b] += c.buckets[b].load(std::memory_order_relaxed);
      }
    }
    for (uint64_t n : o.buckets) o.count += n;
  }
  return f;
}

}  // namespace psm
