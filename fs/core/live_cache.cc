#include "fs/core/live_cache.h"

namespace psm {

void LiveCache::ResetLocked(Entry* e) {
  e->gen = next_gen_.fetch_add(1, std::memory_order_relaxed);
  e->has_attr = false;
  if (!e->chunks.empty()) {
    uint64_t cost = 0;
    for (const auto& [idx, c] : e->chunks) cost += Cost(c);
    chunks_.fetch_sub(e->chunks.size(), std::memory_order_relaxed);
    bytes_.fetch_sub(cost, std::memory_order_relaxed);
    e->chunks.clear();
  }
}

void LiveCache::Enable(InodeId ino) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto [it, fresh] = s.map.try_emplace(ino);
  if (fresh) ResetLocked(&it->second);
  ++it->second.opens;
}

void LiveCache::Disable(InodeId ino) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end() || --it->second.opens > 0) return;
  ResetLocked(&it->second);
  s.map.erase(it);
}

LiveCache::Hit LiveCache::GetAttr(InodeId ino, InodeAttr* a, uint64_t* gen) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end()) return Hit::kOff;
  if (!it->second.has_attr) {
    *gen = it->second.gen;
    return Hit::kMiss;
  }
  *a = it->second.attr;
  hits_.fetch_add(1, std::memory_order_relaxed);
  return Hit::kHit;
}

void LiveCache::PutAttr(InodeId ino, uint64_t gen, const InodeAttr& a) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end() || it->second.gen != gen) return;  // changed meanwhile
  it->second.attr = a;
  it->second.has_attr = true;
}

void LiveCache::SetAttr(InodeId ino, const InodeAttr& a) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end()) return;
  it->second.attr = a;
  it->second.has_attr = true;
}

LiveCache::Hit LiveCache::GetChunk(InodeId ino, uint64_t idx, bool* present,
                                   std::vector<Extent>* ext, uint64_t* gen) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end()) return Hit::kOff;
  auto c = it->second.chunks.find(idx);
  if (c == it->second.chunks.end()) {
    *gen = it->second.gen;
    return Hit::kMiss;
  }
  *present = c->second.present;
  *ext = c->second.ext;
  hits_.fetch_add(1, std::memory_order_relaxed);
  return Hit::kHit;
}

void LiveCache::PutChunk(InodeId ino, uint64_t idx, uint64_t gen, bool present,
                         const std::vector<Extent>& ext) {
  InsertChunk(ino, idx, &gen, present, ext);
}

void LiveCache::SetChunk(InodeId ino, uint64_t idx, bool present, const std::vector<Extent>& ext) {
  InsertChunk(ino, idx, nullptr, present, ext);
}

void LiveCache::InsertChunk(InodeId ino, uint64_t idx, const uint64_t* gen, bool present,
                            const std::vector<Extent>& ext) {
  const uint64_t add = kChunkOverhead + ext.size() * sizeof(Extent);
  if (bytes_.load(std::memory_order_relaxed) + add > limit_.load(std::memory_order_relaxed)) {
    return;  // full: this read goes to the store, as an uncached one does
  }
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end() || (gen && it->second.gen != *gen)) return;  // changed meanwhile
  auto [c, fresh] = it->second.chunks.try_emplace(idx);
  if (fresh) {
    chunks_.fetch_add(1, std::memory_order_relaxed);
  } else {
    bytes_.fetch_sub(Cost(c->second), std::memory_order_relaxed);
  }
  c->second.present = present;
  c->second.ext = ext;
  bytes_.fetch_add(Cost(c->second), std::memory_order_relaxed);
}

void LiveCache::Invalidate(InodeId ino) {
  Shard& s = ShardOf(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it != s.map.end()) ResetLocked(&it->second);
}

void LiveCache::Invalidate(const std::vector<uint64_t>& inos) {
  InodeId last = 0;
  for (uint64_t ino : inos) {
    if (ino == last) continue;  // runs of one inode are the common case
    last = ino;
    Invalidate(ino);
  }
}

}  // namespace psm
