// RefCounts: inode -> count of the kernel's references (FileSystem::Impl::
// lookups, MountOptions::count_lookups), one entry per inode the kernel
// holds. After a walk of a large tree the kernel holds one per file, so the
// entry size is what matters (issue #16): an std::unordered_map cost ~48
// bytes of heap an entry (a 32-byte node and its bucket) and left the
// allocator's arenas fragmented once the kernel forgot them.
//
// Here an entry is one 8-byte word, (ino << 16) | dir << 15 | recent << 14
// | count, in an
// open-addressing table with linear probing (Fibonacci hashing, load at
// most 4/5, deletion by backward shift, so no tombstones): 8 to 20 bytes an
// entry by load, in one allocation that is given back when the table
// shrinks (below 1/8 full). Inode numbers of 2^48 and up and counts of
// 0x3fff and up (an inode looked up 16,383 times without a FORGET) live in
// an ordinary map beside it; an inode is in one of the two, never both.
// The `dir` bit marks directories, so that the kernel-reference cap
// (FileSystem::ShedKernelRefs) can find the directories the kernel holds
// with CollectDirs; entries of the big map are never reported there.
// The `recent` bit is a clock: Add and Touch set it, CollectDirs clears it
// as it passes, so an entry used since the hand last passed (a directory
// being walked: each LOOKUP in it touches it) is spared one round.
//
// Not thread-safe: FileSystem::Impl guards it with handles_mu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

namespace psm {

class RefCounts {
 public:
  // Adds n (> 0) to ino's count (ino != 0); returns the count before (0:
  // the inode was not referenced). `dir`: ino is a directory (kept once set).
  uint64_t Add(uint64_t ino, uint64_t n = 1, bool dir = false) {
    if (ino >> kInoBits || n >= kCountMax) return AddBig(ino, n);
    if (!big_.empty()) {
      auto b = big_.find(ino);
      if (b != big_.end()) {
        uint64_t before = b->second;
        b->second += n;
        return before;
      }
    }
    if (cap_ == 0 || (size_ + 1) * 5 > cap_ * 4) Resize(cap_ ? cap_ * 2 : kMinCap);
    size_t i = Find(ino);
    uint64_t w = slots_[i];
    uint64_t before = w & kCountMax;
    if (w == 0) ++size_;
    if (before + n >= kCountMax) {  // moves to the big map
      if (w != 0) Erase(i);
      big_.emplace(ino, before + n);
      return before;
    }
    slots_[i] = (ino << kCountBits) | (w & kDirBit) | (dir ? kDirBit : 0) | kRecentBit |
                (before + n);
    return before;
  }

  // Drops n references: nullopt when ino has none; else the count left,
  // the entry removed when that is 0 (n at least the count).
  std::optional<uint64_t> Release(uint64_t ino, uint64_t n) {
    if (!big_.empty()) {
      auto b = big_.find(ino);
      if (b != big_.end()) {
        if (b->second > n) return b->second -= n;  // stays in the big map
        big_.erase(b);
        return 0;
      }
    }
    if (ino >> kInoBits || size_ == 0) return std::nullopt;
    size_t i = Find(ino);
    uint64_t w = slots_[i];
    if (w == 0) return std::nullopt;
    uint64_t count = w & kCountMax;
    if (count > n) {
      slots_[i] = w - n;  // count > n: the subtraction stays in the count bits
      return count - n;
    }
    Erase(i);
    if (cap_ > kMinCap && size_ * 8 < cap_) Resize(cap_ / 2);
    return 0;
  }

  // The inode's count (0: none).
  uint64_t Get(uint64_t ino) const {
    if (!big_.empty()) {
      auto b = big_.find(ino);
      if (b != big_.end()) return b->second;
    }
    if (ino >> kInoBits || size_ == 0) return 0;
    return slots_[Find(ino)] & kCountMax;
  }
  bool Contains(uint64_t ino) const { return Get(ino) != 0; }

  // Marks ino's entry used (no-op when it has none, or is in the big map).
  void Touch(uint64_t ino) {
    if (ino >> kInoBits || size_ == 0) return;
    uint64_t& w = slots_[Find(ino)];
    if (w != 0) w |= kRecentBit;
  }
  // Whether ino's entry was used since CollectDirs last passed it.
  bool Recent(uint64_t ino) const {
    if (ino >> kInoBits || size_ == 0) return false;
    return (slots_[Find(ino)] & kRecentBit) != 0;
  }

  size_t size() const { return size_ + big_.size(); }

  // Appends to `dirs` the directories among the table's slots from
  // *cursor on, looking at most `max_slots` slots and taking at most
  // `max_dirs`, and clears the recent bit of every entry it passes: a
  // directory whose bit was set is passed over, not taken (its second
  // chance). *cursor moves past the slots looked at (wrapping), so that
  // repeated calls visit every slot in turn even while the table changes
  // (a resize may make a call skip or repeat some entries). Returns the
  // number of slots looked at (at least one unless the table is empty).
  size_t CollectDirs(size_t* cursor, size_t max_slots, size_t max_dirs,
                     std::vector<uint64_t>* dirs) {
    if (cap_ == 0) return 0;
    size_t i = *cursor & (cap_ - 1);
    size_t taken = 0, n = 0;
    while (n < max_slots && n < cap_ && taken < max_dirs) {
      const size_t j = i;
      const uint64_t w = slots_[j];
      i = (i + 1) & (cap_ - 1);
      ++n;
      if (w & kRecentBit) {
        slots_[j] = w & ~kRecentBit;
        continue;
      }
      if (w != 0 && (w & kDirBit)) {
        dirs->push_back(w >> kCountBits);
        ++taken;
      }
    }
    *cursor = i;
    return n;
  }
  size_t capacity() const { return cap_; }  // slots in the table
  // Heap held: the table (the big map is empty but in odd cases).
  size_t bytes() const { return cap_ * sizeof(uint64_t) + big_.size() * 48; }

 private:
  static constexpr int kCountBits = 16;
  static constexpr int kInoBits = 64 - kCountBits;
  static constexpr uint64_t kDirBit = uint64_t{1} << (kCountBits - 1);
  static constexpr uint64_t kRecentBit = kDirBit >> 1;
  static constexpr uint64_t kCountMax = kRecentBit - 1;
  static constexpr size_t kMinCap = 1024;

  size_t Home(uint64_t ino) const { return (ino * 0x9E3779B97F4A7C15ull) >> shift_; }

  // The slot holding ino, or the empty slot where it would go.
  size_t Find(uint64_t ino) const {
    const size_t mask = cap_ - 1;
    for (size_t i = Home(ino);; i = (i + 1) & mask) {
      uint64_t w = slots_[i];
      if (w == 0 || (w >> kCountBits) == ino) return i;
    }
  }

  // Empties slot i and moves later entries of its run back (no tombstones).
  void Erase(size_t i) {
    const size_t mask = cap_ - 1;
    --size_;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
      uint64_t w = slots_[j];
      if (w == 0) break;
      size_t home = Home(w >> kCountBits);
      // w may move to i when its home is not cyclically in (i, j].
      if (((j - home) & mask) >= ((j - i) & mask)) {
        slots_[i] = w;
        i = j;
      }
    }
    slots_[i] = 0;
  }

  void Resize(size_t cap) {
    std::unique_ptr<uint64_t[]> old = std::move(slots_);
    size_t old_cap = cap_;
    slots_.reset(new uint64_t[cap]());
    cap_ = cap;
    shift_ = 64 - __builtin_ctzll(cap);
    for (size_t i = 0; i < old_cap; ++i) {
      if (old[i] != 0) slots_[Find(old[i] >> kCountBits)] = old[i];
    }
  }

  uint64_t AddBig(uint64_t ino, uint64_t n) {
    uint64_t before = 0;
    if (!(ino >> kInoBits) && size_ != 0) {
      size_t i = Find(ino);
      if (slots_[i] != 0) {
        before = slots_[i] & kCountMax;
        Erase(i);
      }
    }
    auto [b, added] = big_.emplace(ino, before);
    if (!added) before = b->second;
    b->second += n;
    return before;
  }

  std::unique_ptr<uint64_t[]> slots_;
  size_t cap_ = 0;     // a power of two, or 0
  size_t size_ = 0;    // entries in slots_
  int shift_ = 64;
  std::unordered_map<uint64_t, uint64_t> big_;
};

}  // namespace psm
