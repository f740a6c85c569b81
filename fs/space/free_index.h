// FreeIndex: the ordered set of free physical ranges behind the Allocator,
// built to cost 17 to 33 bytes per range (docs/scanner.md).
//
// Layout: a flat, two-level B+-tree. Ranges (16 bytes each) live sorted in
// fixed-size leaves of kLeafCap entries that are kept at least half full
// (all but the last; appends at the end fill leaves completely, so an index
// built by the scanner costs about 17 bytes per range);
// three parallel vectors hold, per leaf, its pointer, its first start
// (binary search by offset) and its longest range (skip leaves that cannot
// satisfy a request). A per-power-of-two count of range lengths says at once
// whether any range can hold a request. Stored ranges never overlap and
// never touch: Insert merges neighbours.
//
// Costs (n ranges, L = n / ~100 leaves): Insert/Remove/Take O(log L +
// kLeafCap + L) worst case (the L term is a memmove of three small vectors
// when a leaf splits or merges, or a linear scan of the per-leaf maxima when
// searching for a fit); in practice a few hundred nanoseconds.
//
// Thread safety: none; the Allocator guards it with its mutex.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fs/space/allocator.h"

namespace psm {

class FreeIndex {
 public:
  FreeIndex() = default;
  ~FreeIndex();
  FreeIndex(const FreeIndex&) = delete;
  FreeIndex& operator=(const FreeIndex&) = delete;

  void Clear();
  // Adds r, merging with ranges it touches or overlaps. Returns the number of
  // blocks that were not free before (r.len unless r overlapped the index).
  uint64_t Insert(Range r);
  // Removes whatever part of r is free. Returns the blocks removed.
  uint64_t Remove(Range r);
  // Chooses the first range at or after `hint` (wrapping) with len >= want,
  // else the longest range, and removes min(want, len) blocks from its start.
  // Returns them; len == 0 when the index is empty. REQUIRES: want >= 1.
  Range Take(uint64_t want, BlockNo hint);

  bool Contains(BlockNo b) const;
  size_t ranges() const { return count_; }
  uint64_t blocks() const { return blocks_; }
  uint64_t LongestRange() const;
  // Heap bytes owned by the index (leaves with malloc overhead, vectors).
  size_t MemoryBytes() const;
  std::vector<Range> ToVector() const;
  // Structural self-check (sortedness, no touching ranges, fill factor,
  // summaries, counters). Empty string when sound, else what is wrong.
  std::string CheckInvariants() const;

  static constexpr uint32_t kLeafCap = 127;

 private:
  struct Leaf {
    uint32_t n = 0;
    Range e[kLeafCap];
  };
  struct Pos {
    size_t leaf;
    uint32_t idx;
  };

  static int SizeClass(uint64_t len);
  size_t FindLeaf(BlockNo s) const;
  Pos LowerBound(BlockNo s) const;  // first range with start >= s
  bool Valid(Pos p) const { return p.leaf < leaves_.size() && p.idx < leaves_[p.leaf]->n; }
  bool Prev(Pos* p) const;
  Range& At(Pos p) { return leaves_[p.leaf]->e[p.idx]; }
  void InsertAt(Pos p, Range r);
  void EraseAt(Pos p);
  void Rebalance(size_t leaf);
  void Resummarise(size_t leaf);
  void CountAdd(uint64_t len);
  void CountSub(uint64_t len);
  // Shrinks the range at p to [start + k, end). REQUIRES: 0 < k < len.
  void TrimFront(Pos p, uint64_t k);

  std::vector<std::unique_ptr<Leaf>> leaves_;
  std::vector<BlockNo> first_;  // first_[i] == leaves_[i]->e[0].start
  std::vector<uint64_t> max_;   // max_[i] == longest len in leaves_[i]
  std::array<uint64_t, 64> class_count_{};
  size_t count_ = 0;
  uint64_t blocks_ = 0;
};

}  // namespace psm
