// FreeIndex: see fs/space/free_index.h.
#include "fs/space/free_index.h"

#include <algorithm>
#include <cstring>

namespace psm {
namespace {

constexpr uint32_t kMinFill = FreeIndex::kLeafCap / 2;

// glibc's malloc chunk for a request of n bytes (8-byte header, 16-aligned).
size_t MallocChunk(size_t n) { return std::max<size_t>(32, (n + 8 + 15) & ~size_t{15}); }

}  // namespace

FreeIndex::~FreeIndex() = default;

int FreeIndex::SizeClass(uint64_t len) { return 63 - __builtin_clzll(len); }

void FreeIndex::CountAdd(uint64_t len) { ++class_count_[SizeClass(len)]; }
void FreeIndex::CountSub(uint64_t len) { --class_count_[SizeClass(len)]; }

void FreeIndex::Clear() {
  leaves_.clear();
  leaves_.shrink_to_fit();
  first_.clear();
  first_.shrink_to_fit();
  max_.clear();
  max_.shrink_to_fit();
  class_count_.fill(0);
  count_ = 0;
  blocks_ = 0;
}

size_t FreeIndex::FindLeaf(BlockNo s) const {
  auto it = std::upper_bound(first_.begin(), first_.end(), s);
  return it == first_.begin() ? 0 : static_cast<size_t>(it - first_.begin()) - 1;
}

FreeIndex::Pos FreeIndex::LowerBound(BlockNo s) const {
  if (leaves_.empty()) return {0, 0};
  size_t i = FindLeaf(s);
  const Leaf& l = *leaves_[i];
  auto* it =
      std::lower_bound(l.e, l.e + l.n, s, [](const Range& r, BlockNo v) { return r.start < v; });
  auto j = static_cast<uint32_t>(it - l.e);
  if (j == l.n && i + 1 < leaves_.size()) return {i + 1, 0};
  return {i, j};
}

bool FreeIndex::Prev(Pos* p) const {
  if (leaves_.empty()) return false;
  if (p->idx > 0) {
    --p->idx;
    return true;
  }
  if (p->leaf == 0) return false;
  --p->leaf;
  p->idx = leaves_[p->leaf]->n - 1;
  return true;
}

void FreeIndex::Resummarise(size_t i) {
  const Leaf& l = *leaves_[i];
  first_[i] = l.e[0].start;
  uint64_t m = 0;
  for (uint32_t j = 0; j < l.n; ++j) m = std::max(m, l.e[j].len);
  max_[i] = m;
}

void FreeIndex::InsertAt(Pos p, Range r) {
  if (leaves_.empty()) {
    leaves_.push_back(std::make_unique<Leaf>());
    first_.push_back(r.start);
    max_.push_back(0);
    p = {0, 0};
  }
  Leaf* l = leaves_[p.leaf].get();
  if (l->n == kLeafCap && p.leaf + 1 == leaves_.size() && p.idx == l->n) {
    // Appending past the last full leaf (the scanner's pattern): start a new
    // leaf instead of splitting, so that a scanned index is packed full.
    leaves_.push_back(std::make_unique<Leaf>());
    first_.push_back(r.start);
    max_.push_back(0);
    p = {p.leaf + 1, 0};
    l = leaves_[p.leaf].get();
  } else if (l->n == kLeafCap) {
    // Split: the upper half moves to a new leaf after this one.
    auto right = std::make_unique<Leaf>();
    const uint32_t keep = kLeafCap / 2;
    right->n = l->n - keep;
    std::memcpy(right->e, l->e + keep, right->n * sizeof(Range));
    l->n = keep;
    leaves_.insert(leaves_.begin() + static_cast<ptrdiff_t>(p.leaf) + 1, std::move(right));
    first_.insert(first_.begin() + static_cast<ptrdiff_t>(p.leaf) + 1, 0);
    max_.insert(max_.begin() + static_cast<ptrdiff_t>(p.leaf) + 1, 0);
    Resummarise(p.leaf);
    Resummarise(p.leaf + 1);
    if (p.idx > keep) p = {p.leaf + 1, p.idx - keep};
    l = leaves_[p.leaf].get();
  }
  std::memmove(l->e + p.idx + 1, l->e + p.idx, (l->n - p.idx) * sizeof(Range));
  l->e[p.idx] = r;
  ++l->n;
  if (p.idx == 0) first_[p.leaf] = r.start;
  max_[p.leaf] = std::max(max_[p.leaf], r.len);
  CountAdd(r.len);
  ++count_;
  blocks_ += r.len;
}

void FreeIndex::EraseAt(Pos p) {
  Leaf* l = leaves_[p.leaf].get();
  const Range x = l->e[p.idx];
  std::memmove(l->e + p.idx, l->e + p.idx + 1, (l->n - p.idx - 1) * sizeof(Range));
  --l->n;
  CountSub(x.len);
  --count_;
  blocks_ -= x.len;
  if (l->n == 0) {
    leaves_.erase(leaves_.begin() + static_cast<ptrdiff_t>(p.leaf));
    first_.erase(first_.begin() + static_cast<ptrdiff_t>(p.leaf));
    max_.erase(max_.begin() + static_cast<ptrdiff_t>(p.leaf));
    return;
  }
  if (p.idx == 0 || x.len == max_[p.leaf]) Resummarise(p.leaf);
  if (l->n < kMinFill && leaves_.size() > 1) Rebalance(p.leaf);
}

void FreeIndex::Rebalance(size_t i) {
  size_t a = i + 1 < leaves_.size() ? i : i - 1;
  size_t b = a + 1;
  Leaf& la = *leaves_[a];
  Leaf& lb = *leaves_[b];
  if (la.n + lb.n <= kLeafCap) {
    std::memcpy(la.e + la.n, lb.e, lb.n * sizeof(Range));
    la.n += lb.n;
    leaves_.erase(leaves_.begin() + static_cast<ptrdiff_t>(b));
    first_.erase(first_.begin() + static_cast<ptrdiff_t>(b));
    max_.erase(max_.begin() + static_cast<ptrdiff_t>(b));
    Resummarise(a);
    return;
  }
  const uint32_t total = la.n + lb.n;
  const uint32_t want_a = total / 2;
  if (la.n < want_a) {
    uint32_t k = want_a - la.n;
    std::memcpy(la.e + la.n, lb.e, k * sizeof(Range));
    std::memmove(lb.e, lb.e + k, (lb.n - k) * sizeof(Range));
    la.n += k;
    lb.n -= k;
  } else {
    uint32_t k = la.n - want_a;
    std::memmove(lb.e + k, lb.e, lb.n * sizeof(Range));
    std::memcpy(lb.e, la.e + want_a, k * sizeof(Range));
    la.n -= k;
    lb.n += k;
  }
  Resummarise(a);
  Resummarise(b);
}

void FreeIndex::TrimFront(Pos p, uint64_t k) {
  Range& x = At(p);
  const uint64_t old_len = x.len;
  CountSub(old_len);
  x.start += k;
  x.len -= k;
  CountAdd(x.len);
  blocks_ -= k;
  if (p.idx == 0) first_[p.leaf] = x.start;
  if (old_len == max_[p.leaf]) Resummarise(p.leaf);
}

uint64_t FreeIndex::Insert(Range r) {
  if (r.len == 0) return 0;
  BlockNo s = r.start;
  BlockNo e = r.end();
  uint64_t absorbed = 0;
  Pos p = LowerBound(s);
  Pos q = p;
  if (Prev(&q) && At(q).end() >= s) {
    s = At(q).start;
    e = std::max(e, At(q).end());
    absorbed += At(q).len;
    EraseAt(q);
  }
  for (p = LowerBound(s); Valid(p) && At(p).start <= e; p = LowerBound(s)) {
    e = std::max(e, At(p).end());
    absorbed += At(p).len;
    EraseAt(p);
  }
  InsertAt(LowerBound(s), Range{s, e - s});
  return (e - s) - absorbed;
}

uint64_t FreeIndex::Remove(Range r) {
  if (r.len == 0) return 0;
  const BlockNo s = r.start;
  const BlockNo e = r.end();
  uint64_t removed = 0;
  Pos q = LowerBound(s);
  if (Prev(&q) && At(q).end() > s) {
    // A range starting before s covers s: keep its parts outside [s, e).
    const Range x = At(q);
    EraseAt(q);
    removed += std::min(x.end(), e) - s;
    InsertAt(LowerBound(x.start), Range{x.start, s - x.start});
    if (x.end() > e) InsertAt(LowerBound(e), Range{e, x.end() - e});
  }
  for (Pos p = LowerBound(s); Valid(p) && At(p).start < e; p = LowerBound(s)) {
    const Range x = At(p);
    EraseAt(p);
    removed += std::min(x.end(), e) - x.start;
    if (x.end() > e) InsertAt(LowerBound(e), Range{e, x.end() - e});
  }
  return removed;
}

Range FreeIndex::Take(uint64_t want, BlockNo hint) {
  if (count_ == 0 || want == 0) return Range{};
  const size_t nl = leaves_.size();
  Pos found{nl, 0};
  bool fit_possible = false;
  for (int c = SizeClass(want); c < 64 && !fit_possible; ++c) fit_possible = class_count_[c] > 0;
  if (fit_possible) {
    Pos p = LowerBound(hint);
    if (!Valid(p)) p = {0, 0};  // nothing at or after hint: wrap
    // Leaves p.leaf (from p.idx), p.leaf+1, ..., wrapping, and finally the
    // part of p.leaf before p.idx.
    for (size_t step = 0; step <= nl && found.leaf == nl; ++step) {
      const size_t i = (p.leaf + step) % nl;
      if (max_[i] < want) continue;
      const Leaf& l = *leaves_[i];
      const uint32_t from = step == 0 ? p.idx : 0;
      const uint32_t to = step == nl ? p.idx : l.n;
      for (uint32_t j = from; j < to; ++j) {
        if (l.e[j].len >= want) {
          found = {i, j};
          break;
        }
      }
    }
  }
  if (found.leaf == nl) {
    // Nothing fits: the longest range (the lowest one among equals).
    size_t best = static_cast<size_t>(std::max_element(max_.begin(), max_.end()) - max_.begin());
    const Leaf& l = *leaves_[best];
    for (uint32_t j = 0; j < l.n; ++j) {
      if (l.e[j].len == max_[best]) {
        found = {best, j};
        break;
      }
    }
  }
  const Range x = At(found);
  const uint64_t k = std::min(want, x.len);
  if (k == x.len) {
    EraseAt(found);
  } else {
    TrimFront(found, k);
  }
  return Range{x.start, k};
}

bool FreeIndex::Contains(BlockNo b) const {
  Pos p = LowerBound(b);
  if (Valid(p) && leaves_[p.leaf]->e[p.idx].start == b) return true;
  if (!Prev(&p)) return false;
  const Range& x = leaves_[p.leaf]->e[p.idx];
  return x.start <= b && b < x.end();
}

uint64_t FreeIndex::LongestRange() const {
  return max_.empty() ? 0 : *std::max_element(max_.begin(), max_.end());
}

size_t FreeIndex::MemoryBytes() const {
  size_t n = leaves_.size() * MallocChunk(sizeof(Leaf));
  if (leaves_.capacity()) n += MallocChunk(leaves_.capacity() * sizeof(leaves_[0]));
  if (first_.capacity()) n += MallocChunk(first_.capacity() * sizeof(BlockNo));
  if (max_.capacity()) n += MallocChunk(max_.capacity() * sizeof(uint64_t));
  return n;
}

std::vector<Range> FreeIndex::ToVector() const {
  std::vector<Range> out;
  out.reserve(count_);
  for (const auto& l : leaves_) out.insert(out.end(), l->e, l->e + l->n);
  return out;
}

std::string FreeIndex::CheckInvariants() const {
  if (leaves_.size() != first_.size() || leaves_.size() != max_.size()) return "summary sizes";
  size_t count = 0;
  uint64_t blocks = 0;
  std::array<uint64_t, 64> classes{};
  bool have_prev = false;
  BlockNo prev_end = 0;
  for (size_t i = 0; i < leaves_.size(); ++i) {
    const Leaf& l = *leaves_[i];
    if (l.n == 0) return "empty leaf " + std::to_string(i);
    if (i + 1 < leaves_.size() && l.n < kMinFill) return "underfull leaf " + std::to_string(i);
    if (first_[i] != l.e[0].start) return "first_ of leaf " + std::to_string(i);
    uint64_t m = 0;
    for (uint32_t j = 0; j < l.n; ++j) {
      const Range& r = l.e[j];
      if (r.len == 0) return "empty range at " + std::to_string(r.start);
      if (have_prev && r.start <= prev_end) {
        return "range " + std::to_string(r.start) + " overlaps or touches its predecessor";
      }
      have_prev = true;
      prev_end = r.end();
      m = std::max(m, r.len);
      ++count;
      blocks += r.len;
      ++classes[SizeClass(r.len)];
    }
    if (m != max_[i]) return "max_ of leaf " + std::to_string(i);
  }
  if (count != count_) return "count";
  if (blocks != blocks_) return "blocks";
  if (classes != class_count_) return "size classes";
  return {};
}

}  // namespace psm
