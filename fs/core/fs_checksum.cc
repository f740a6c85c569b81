// Data checksums: the CRC-32C of every data block written to the image,
// kept in the `csums` column family by physical block, verified on every
// read of a data block from the image (live and snapshot reads, the old
// contents a partial write merges, send, history). docs/integrity.md says
// why per physical block and how the crash rule holds (a redirected write's
// checksum commits with its extent; an overwrite in place runs under a
// durable write intent, fs/core/intent.cc).
//
// A mismatch is never served: the read fails with kIOError (EIO), the
// volume's error counter goes up, and the daemon logs the volume, inode,
// path(s), snapshot, file offset and physical block.
#include <algorithm>
#include <cstring>
#include <set>

#include "fs/base/crc32c.h"
#include "fs/core/fs_impl.h"
#include "fs/base/log.h"

namespace psm {
namespace {

// Path lookups on the read path are a scan of `dentries`: done for the
// first errors of a mount only, so a program retrying a damaged file
// cannot make every retry a scan.
constexpr uint64_t kErrorsWithPaths = 64;

// The first block of b's checksum group (keys.h CsumKey).
BlockNo GroupFirst(BlockNo b) { return b & ~(kCsumGroupBlocks - 1); }

}  // namespace

uint32_t BlockCrc(const char* data, size_t bs) { return Crc32c(0, data, bs); }

void ChecksumWriter::Add(BlockNo b, uint32_t crc) {
  const BlockNo first = GroupFirst(b);
  if (first != first_) {
    Finish();
    first_ = first;
  }
  g_.Set(static_cast<unsigned>(b - first), crc);
}

void ChecksumWriter::Finish() {
  if (g_.mask == 0) return;
  EncodeCsumGroup(g_, &v_);
  // No read of `csums` goes through a Txn (LoadChecksums reads the store).
  // A whole group replaces what was there; some blocks of one are merged
  // over it (meta/store.cc, psm.CsumMerge).
  if (g_.mask == 0xffff) {
    txn_->PutUnindexed(Cf::kCsums, CsumKey(first_), v_);
  } else {
    txn_->MergeUnindexed(Cf::kCsums, CsumKey(first_), v_);
  }
  txn_->AfterCommit([pending = pending_, first = first_] { pending->DropGroup(first); });
  g_ = CsumGroup{};
}

bool PendingChecksums::CachedGroup(BlockNo first, CsumGroup* g) const {
  const size_t i = CacheIndex(first);
  std::lock_guard<std::mutex> l(cache_mu_[i % kCacheStripes]);
  if (cache_[i].first != first) return false;
  *g = cache_[i].g;
  return true;
}

void PendingChecksums::CacheGroup(BlockNo first, const CsumGroup& g, uint64_t gen) const {
  const size_t i = CacheIndex(first);
  std::lock_guard<std::mutex> l(cache_mu_[i % kCacheStripes]);
  // A drop began since the caller took `gen`: what it read may be older
  // than that commit (DropGroup advances the generation before it locks).
  if (cache_gen_.load() != gen) return;
  cache_[i].first = first;
  cache_[i].g = g;
}

void PendingChecksums::DropGroup(BlockNo first) {
  cache_gen_.fetch_add(1);
  const size_t i = CacheIndex(first);
  std::lock_guard<std::mutex> l(cache_mu_[i % kCacheStripes]);
  if (cache_[i].first == first) cache_[i].first = ~BlockNo{0};
}

void PutChecksum(Txn* txn, PendingChecksums* pending, BlockNo p, uint32_t crc) {
  ChecksumWriter w(txn, pending);
  w.Add(p, crc);
  w.Finish();
}

void FileSystem::Impl::PutChecksums(Txn* txn, BlockNo p, const char* data, uint64_t n) {
  if (!checksums) return;
  ChecksumWriter w(txn, pending_csums.get());
  for (uint64_t i = 0; i < n; ++i) w.Add(p + i, BlockCrc(data + i * bs, bs));
  w.Finish();
}

uint64_t PendingChecksums::Stage(const std::vector<BlockNo>& p, const std::vector<uint32_t>& crc) {
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < p.size(); ++i) {
    auto& c = staged_[p[i] >> kChunkShift];
    if (!c) c = std::make_unique<Chunk>();
    const size_t k = p[i] & ((size_t{1} << kChunkShift) - 1);
    c->crc[k] = crc[i];
    c->present[k / 64] |= uint64_t{1} << (k % 64);
  }
  chunks_.store(staged_.size() + flushing_.size(), std::memory_order_release);
  return gen_;
}

namespace {

// Calls fn(k) for every block k of `c` with a staged checksum, in order.
template <typename Fn>
void ForEachStaged(const PendingChecksums::Chunk& c, Fn fn) {
  for (size_t w = 0; w < std::size(c.present); ++w) {
    for (uint64_t bits = c.present[w]; bits; bits &= bits - 1) {
      fn(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
    }
  }
}

}  // namespace

std::optional<uint32_t> PendingChecksums::Chunk::Get(size_t k) const {
  if (!(present[k / 64] >> (k % 64) & 1)) return std::nullopt;
  return crc[k];
}

std::pair<const PendingChecksums::Chunk*, const PendingChecksums::Chunk*>
PendingChecksums::FindLocked(uint64_t c) const {
  auto s = staged_.find(c);
  auto f = flushing_.find(c);
  return {s == staged_.end() ? nullptr : s->second.get(),
          f == flushing_.end() ? nullptr : f->second.get()};
}

void PendingChecksums::Overlay(BlockNo p, uint64_t n,
                               std::vector<std::optional<uint32_t>>* out) const {
  constexpr uint64_t kMask = (uint64_t{1} << kChunkShift) - 1;
  std::lock_guard<std::mutex> l(mu_);
  // Chunk by chunk: a chunk with nothing staged is skipped whole.
  for (uint64_t b = p; b < p + n; b = (b | kMask) + 1) {
    const auto [staged, flushing] = FindLocked(b >> kChunkShift);
    if (!staged && !flushing) continue;
    const uint64_t end = std::min(p + n, (b | kMask) + 1);
    for (uint64_t q = b; q < end; ++q) {
      std::optional<uint32_t> v = staged ? staged->Get(q & kMask) : std::nullopt;  // the newer
      if (!v && flushing) v = flushing->Get(q & kMask);
      if (v) (*out)[q - p] = v;
    }
  }
}

void PendingChecksums::OverlayOf(const std::vector<BlockNo>& blocks,
                                 std::vector<std::optional<uint32_t>>* out) const {
  constexpr uint64_t kMask = (uint64_t{1} << kChunkShift) - 1;
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto [staged, flushing] = FindLocked(blocks[i] >> kChunkShift);
    std::optional<uint32_t> v = staged ? staged->Get(blocks[i] & kMask) : std::nullopt;
    if (!v && flushing) v = flushing->Get(blocks[i] & kMask);
    if (v) (*out)[i] = v;
  }
}

Status PendingChecksums::Flush() {
  std::lock_guard<std::mutex> f(flush_mu_);
  uint64_t gen;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (staged_.empty() && flushing_.empty()) return Status::Ok();
    // flushing_ is not empty only after a failed commit: those entries go
    // again, under the newer ones.
    for (auto& [c, chunk] : staged_) {
      auto& dst = flushing_[c];
      if (!dst) {
        dst = std::move(chunk);
        continue;
      }
      ForEachStaged(*chunk, [&](size_t k) { dst->crc[k] = chunk->crc[k]; });
      for (size_t w = 0; w < std::size(chunk->present); ++w) dst->present[w] |= chunk->present[w];
    }
    staged_.clear();
    gen = gen_++;
    chunks_.store(flushing_.size(), std::memory_order_release);
  }
  // flushing_ changes only under flush_mu_: read it without mu_ (readers
  // only read it too).
  Txn txn(store_);
  ChecksumWriter w(&txn, this);
  for (const auto& [c, chunk] : flushing_) {
    ForEachStaged(*chunk, [&, c = c, &chunk = chunk](size_t k) {
      w.Add((c << kChunkShift) + k, chunk->crc[k]);
    });
  }
  w.Finish();
  uint64_t seq = 0;
  Status s = committer_->Apply(&txn, {}, {}, &seq);
  if (!s.ok()) return s;  // the entries stay visible; the volume has failed
  std::lock_guard<std::mutex> l(mu_);
  flushing_.clear();
  flushed_[gen] = seq;
  chunks_.store(staged_.size(), std::memory_order_release);
  return Status::Ok();
}

uint64_t PendingChecksums::DurableGen(uint64_t seq) {
  std::lock_guard<std::mutex> l(mu_);
  while (!flushed_.empty() && flushed_.begin()->second <= seq) {
    durable_gen_ = std::max(durable_gen_, flushed_.begin()->first);
    flushed_.erase(flushed_.begin());
  }
  return durable_gen_;
}

namespace {

// Puts the staged checksums (read before *out) over the committed ones.
void OverStaged(const std::vector<std::optional<uint32_t>>& staged,
                std::vector<std::optional<uint32_t>>* out) {
  for (size_t i = 0; i < staged.size(); ++i) {  // empty: nothing staged
    if (staged[i]) (*out)[i] = staged[i];
  }
}

}  // namespace

namespace {

// Metadata format 1's records (keys.h LegacyCsumKey) of [p, p+n) into out.
Status LoadLegacy(Store* store, BlockNo p, uint64_t n, std::vector<std::optional<uint32_t>>* out) {
  auto it = store->NewIterator(Cf::kCsums);
  for (it->Seek(LegacyCsumKey(p)); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 8) break;  // the grouped records sort after
    const BlockNo b = LegacyCsumKeyBlock(k);
    if (b >= p + n) break;
    if (it->value().size() != 4) {
      return Status::Corruption("bad checksum record of block " + std::to_string(b));
    }
    (*out)[b - p] = GetLE32(it->value().data());
  }
  return Status::FromRocks(it->status());
}

// The span of checksums a miss of the group cache reads (LoadChecksumsOf).
constexpr BlockNo kCsumWindowBlocks = BlockNo{1} << 10;

Status BadGroup(BlockNo first) {
  return Status::Corruption("bad checksum record of blocks " + std::to_string(first) + "-" +
                            std::to_string(first + kCsumGroupBlocks - 1));
}

// The grouped records of `csums` whose groups meet blocks [lo, hi), in
// block order, decoded, through `it` (positioned by the Seek here): fn(the
// group's first block, the group).
template <typename Fn>
Status ForEachGroup(rocksdb::Iterator* it, BlockNo lo, BlockNo hi, Fn&& fn) {
  CsumGroup g;
  for (it->Seek(CsumKey(lo)); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 9 || k[0] != kCsumKeyTag) return Status::Corruption("bad key in csums");
    const BlockNo first = CsumKeyBlock(k);
    if (first >= hi) break;
    if (!DecodeCsumGroup(std::string_view(it->value().data(), it->value().size()), &g)) {
      return BadGroup(first);
    }
    fn(first, g);
  }
  return Status::FromRocks(it->status());
}

}  // namespace

bool HasLegacyChecksums(Store* store, Status* s) {
  auto it = store->NewIterator(Cf::kCsums);
  it->SeekToFirst();
  *s = Status::FromRocks(it->status());
  return it->Valid() && it->key().size() == 8;
}

Status LoadChecksums(Store* store, BlockNo p, uint64_t n, std::vector<std::optional<uint32_t>>* out,
                     const PendingChecksums* pending) {
  std::vector<std::optional<uint32_t>> staged;
  if (pending && !pending->empty()) {
    // The staged ones first: one that is not staged now was either never
    // staged or is committed already, and the reads below see it.
    staged.resize(n);
    pending->Overlay(p, n, &staged);
  }
  out->assign(n, std::nullopt);
  if (n == 0) return Status::Ok();
  // Records of metadata format 1 first: a grouped record is always newer.
  if (!pending || pending->legacy()) PSM_RETURN_IF_ERROR(LoadLegacy(store, p, n, out));
  // No read-ahead of our own: a table block of checksums (32 KiB, meta/
  // store.cc) covers ~26 MiB of data and stays in the block cache for the
  // READs after this one. A 64 KiB read-ahead per iterator, as before,
  // copied 64 KiB for nearly every 1 MiB READ (a new iterator each time):
  // 6% of the daemon's samples in a cold sequential read.
  auto it = store->NewIterator(Cf::kCsums);
  PSM_RETURN_IF_ERROR(ForEachGroup(it.get(), p, p + n, [&](BlockNo first, const CsumGroup& g) {
    for (uint16_t m = g.mask; m; m &= static_cast<uint16_t>(m - 1)) {
      const unsigned i = static_cast<unsigned>(__builtin_ctz(m));
      const BlockNo b = first + i;
      if (b >= p && b < p + n) (*out)[b - p] = g.crc[i];
    }
  }));
  OverStaged(staged, out);
  return Status::Ok();
}

Status LoadChecksumsOf(Store* store, const std::vector<BlockNo>& blocks,
                       std::vector<std::optional<uint32_t>>* out,
                       const PendingChecksums* pending) {
  std::vector<std::optional<uint32_t>> staged;
  if (pending && !pending->empty()) {
    staged.resize(blocks.size());
    pending->OverlayOf(blocks, &staged);  // first, as in LoadChecksums
  }
  out->assign(blocks.size(), std::nullopt);
  std::vector<std::string> keys, values;
  std::vector<Status> st;
  if (!pending || pending->legacy()) {
    keys.reserve(blocks.size());
    for (BlockNo b : blocks) keys.push_back(LegacyCsumKey(b));
    store->MultiGet(Cf::kCsums, keys, &values, &st);
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (st[i].Is(Code::kNotFound)) continue;
      PSM_RETURN_IF_ERROR(st[i]);
      if (values[i].size() != 4) {
        return Status::Corruption("bad checksum record of block " + std::to_string(blocks[i]));
      }
      (*out)[i] = GetLE32(values[i].data());
    }
  }
  // One lookup per group (a request's short runs often share some), in
  // the group cache first where there is one (no format-1 records).
  std::vector<BlockNo> groups;
  groups.reserve(blocks.size());
  for (BlockNo b : blocks) groups.push_back(GroupFirst(b));
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  std::vector<CsumGroup> found(groups.size());
  const PendingChecksums* cache = pending && !pending->legacy() ? pending : nullptr;
  std::vector<size_t> missed;  // indexes into groups
  for (size_t j = 0; j < groups.size(); ++j) {
    if (!cache || !cache->CachedGroup(groups[j], &found[j])) missed.push_back(j);
  }
  if (!missed.empty() && cache) {
    // A group the cache lacks is read with its window's other groups
    // (kCsumWindowBlocks, aligned: 64 groups, 4 MiB of data), and all of
    // them are cached: one iterator pass over adjacent records, where a
    // point lookup per group costs nearly as much each (a group written in
    // parts is merge operands in several tables). The random READs of a
    // file whose blocks lie together then miss once per window, not once
    // per group (docs/integrity.md, "The group cache").
    const uint64_t gen = cache->CacheGen();  // before the store read
    std::unique_ptr<rocksdb::Iterator> it;
    std::vector<CsumGroup> window(kCsumWindowBlocks / kCsumGroupBlocks);
    BlockNo loaded = ~BlockNo{0};  // first block of the window in `window`
    for (size_t j : missed) {
      const BlockNo w0 = groups[j] & ~(kCsumWindowBlocks - 1);
      if (w0 != loaded) {
        if (!it) it = store->NewIterator(Cf::kCsums);
        std::fill(window.begin(), window.end(), CsumGroup{});
        PSM_RETURN_IF_ERROR(ForEachGroup(it.get(), w0, w0 + kCsumWindowBlocks,
                                         [&](BlockNo first, const CsumGroup& g) {
                                           window[(first - w0) >> kCsumGroupShift] = g;
                                         }));
        for (size_t w = 0; w < window.size(); ++w) {
          cache->CacheGroup(w0 + (BlockNo{w} << kCsumGroupShift), window[w], gen);
        }
        loaded = w0;
      }
      found[j] = window[(groups[j] - w0) >> kCsumGroupShift];
    }
  } else if (!missed.empty()) {
    keys.clear();
    for (size_t j : missed) keys.push_back(CsumKey(groups[j]));
    store->MultiGet(Cf::kCsums, keys, &values, &st);
    for (size_t m = 0; m < missed.size(); ++m) {
      const size_t j = missed[m];
      if (!st[m].Is(Code::kNotFound)) {
        PSM_RETURN_IF_ERROR(st[m]);
        if (!DecodeCsumGroup(values[m], &found[j])) return BadGroup(groups[j]);
      }
    }
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const BlockNo first = GroupFirst(blocks[i]);
    const size_t j = static_cast<size_t>(std::lower_bound(groups.begin(), groups.end(), first) -
                                         groups.begin());
    const unsigned k = static_cast<unsigned>(blocks[i] - first);
    if (found[j].Has(k)) (*out)[i] = found[j].crc[k];
  }
  OverStaged(staged, out);
  return Status::Ok();
}

BlockGuard::BlockGuard(FileSystem::Impl* fs, const std::vector<BlockNo>& blocks, bool exclusive)
    : fs_(fs), exclusive_(exclusive) {
  for (BlockNo b : blocks) stripes_.push_back(FileSystem::Impl::BlockStripe(b));
  Lock();
}

BlockGuard::BlockGuard(FileSystem::Impl* fs, BlockNo p, uint64_t n, bool exclusive)
    : fs_(fs), exclusive_(exclusive) {
  for (BlockNo b = p; b < p + n; b = (b | 15) + 1) {
    stripes_.push_back(FileSystem::Impl::BlockStripe(b));
  }
  Lock();
}

void BlockGuard::Lock() {
  std::sort(stripes_.begin(), stripes_.end());
  stripes_.erase(std::unique(stripes_.begin(), stripes_.end()), stripes_.end());
  for (size_t s : stripes_) {
    if (exclusive_) {
      fs_->blk_mu[s].lock();
    } else {
      fs_->blk_mu[s].lock_shared();
    }
  }
}

BlockGuard::~BlockGuard() {
  for (auto it = stripes_.rbegin(); it != stripes_.rend(); ++it) {
    if (exclusive_) {
      fs_->blk_mu[*it].unlock();
    } else {
      fs_->blk_mu[*it].unlock_shared();
    }
  }
}

Result<uint64_t> FileSystem::Impl::RecheckBlocks(BlockNo p, uint64_t n, char* buf) {
  std::vector<std::optional<uint32_t>> want;
  PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), p, n, &want, pending_csums.get()));
  for (uint64_t i = 0; i < n; ++i) {
    char* b = buf + i * bs;
    if (!want[i] || *want[i] == BlockCrc(b, bs)) continue;
    // One block at a time: an overwrite in place holds the stripes of its
    // blocks from its write to its checksums' staging.
    BlockGuard g(this, p + i, 1, /*exclusive=*/false);
    PSM_RETURN_IF_ERROR(dev->Read((p + i) * bs, b, bs));
    std::vector<std::optional<uint32_t>> now;
    PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), p + i, 1, &now, pending_csums.get()));
    if (now[0] && *now[0] != BlockCrc(b, bs) && !Unrecovered(p + i)) return i;
  }
  return n;
}

Status FileSystem::Impl::VerifyRuns(std::vector<ReadRun>* runs) {
  if (!checksums || runs->empty()) {
    runs->clear();
    return Status::Ok();
  }
  std::vector<BlockNo> blocks;
  for (const ReadRun& r : *runs) {
    for (uint64_t i = 0; i < r.n; ++i) blocks.push_back(r.p + i);
  }
  std::vector<std::optional<uint32_t>> want;
  Status s = LoadChecksumsOf(store.get(), blocks, &want, pending_csums.get());
  size_t k = 0;
  for (const ReadRun& r : *runs) {
    if (!s.ok()) break;
    uint64_t first_bad = r.n;
    for (uint64_t i = 0; i < r.n; ++i, ++k) {
      if (first_bad == r.n && want[k] && *want[k] != BlockCrc(r.buf + i * bs, bs)) first_bad = i;
    }
    if (first_bad == r.n) continue;
    if (mirror->mirrored()) {
      // The other copy, verified, replaces the bad one (and heals it).
      s = ReadBlocksMirrored(r.p, r.n, r.buf, r.use);
      continue;
    }
    auto again = RecheckBlocks(r.p, r.n, r.buf);
    if (!again.ok()) {
      s = again.status();
    } else if (*again < r.n) {
      first_bad = *again;
      s = ChecksumError(r.p + first_bad, r.use.ino, r.use.epoch,
                        r.use.fblock == kNoFileBlock ? kNoFileBlock : r.use.fblock + first_bad);
    }
  }
  runs->clear();
  return s;
}

Status FileSystem::Impl::VerifyBlocks(BlockNo p, uint64_t n, char* buf, const BlockUse& use) {
  if (!checksums) return Status::Ok();
  std::vector<std::optional<uint32_t>> want;
  PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), p, n, &want, pending_csums.get()));
  bool any = false;
  for (uint64_t i = 0; i < n && !any; ++i) {
    any = want[i] && *want[i] != BlockCrc(buf + i * bs, bs);
  }
  if (!any) return Status::Ok();
  PSM_ASSIGN_OR_RETURN(uint64_t i, RecheckBlocks(p, n, buf));
  if (i == n) return Status::Ok();
  return ChecksumError(p + i, use.ino, use.epoch,
                       use.fblock == kNoFileBlock ? kNoFileBlock : use.fblock + i);
}

Status FileSystem::Impl::ReadBlocks(BlockNo p, uint64_t n, char* buf, const BlockUse& use) {
  if (mirror->mirrored()) return ReadBlocksMirrored(p, n, buf, use);
  PSM_RETURN_IF_ERROR(dev->Read(p * bs, buf, n * bs));
  return VerifyBlocks(p, n, buf, use);
}

Status FileSystem::Impl::ChecksumError(BlockNo p, InodeId ino, Epoch e, uint64_t fblock) {
  const uint64_t nth = checksum_errors.fetch_add(1) + 1;
  std::string where;
  if (ino != 0) {
    where = " of inode " + std::to_string(ino);
    if (nth <= kErrorsWithPaths) {
      std::vector<std::string> paths;
      if (PathsOf(ino, e, &paths).ok() && !paths.empty()) {
        where += " (";
        for (size_t i = 0; i < paths.size(); ++i) where += (i ? ", " : "") + paths[i];
        where += ")";
      }
    }
    if (fblock != kNoFileBlock) where += " at offset " + std::to_string(fblock * bs);
    where += e == live() ? " in the live tree" : " in snapshot " + SnapshotNameAt(e);
  }
  PSM_LOG(kLogError, "volume %s: checksum mismatch in physical block %llu%s: read fails with EIO",
          sb.uuid.c_str(), static_cast<unsigned long long>(p), where.c_str());
  return Status::IOError("checksum mismatch in block " + std::to_string(p) + where);
}

std::string FileSystem::Impl::SnapshotNameAt(Epoch e) {
  std::lock_guard<std::mutex> l(snaps_mu);
  for (const auto& [id, s] : snaps) {
    if (s.rec.epoch == e) return "'" + s.rec.name + "'";
  }
  return "at epoch " + std::to_string(e);
}

// The newest version <= e of every dentry in the range the iterator
// covers from `from`, while keys start with `prefix`: fn(parent, name,
// child) for each present one. Keys of one entry are adjacent, newest
// first.
static Status VisibleEntries(rocksdb::Iterator* it, std::string_view prefix, Epoch e,
                             const std::function<void(InodeId, std::string_view, InodeId)>& fn) {
  std::string cur;  // prefix of the entry decided already
  for (it->Seek(std::string(prefix)); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.substr(0, prefix.size()) != prefix) break;
    if (k.size() < 17) continue;
    std::string_view kp = KeyPrefix(k);
    if (kp == cur || KeyEpoch(k) > e) continue;
    cur.assign(kp);
    std::string_view v(it->value().data(), it->value().size());
    if (v.empty() || v[0] != kTagValue) continue;
    Dentry d;
    if (!DecodeDentry(v.substr(1), &d).ok()) continue;
    InodeId parent;
    std::string_view name;
    ParseDentryKey(k, &parent, &name);
    fn(parent, name, d.ino);
  }
  return Status::FromRocks(it->status());
}

Status FileSystem::Impl::PathsOf(InodeId ino, Epoch e, std::vector<std::string>* out) {
  out->clear();
  std::string top = e == live() ? "" : ".snapshots/";
  if (e != live()) {
    std::string name = SnapshotNameAt(e);
    if (name.size() < 2 || name[0] != '\'') return Status::NotFound("no snapshot at that epoch");
    top += name.substr(1, name.size() - 2) + "/";
  }
  // Every entry naming ino (hard links: several).
  std::vector<std::pair<InodeId, std::string>> links;
  {
    auto it = store->NewIterator(Cf::kDentries);
    PSM_RETURN_IF_ERROR(VisibleEntries(it.get(), "", e,
                                       [&](InodeId parent, std::string_view name, InodeId child) {
                                         if (child == ino) links.emplace_back(parent, name);
                                       }));
  }
  for (auto& [dir, name] : links) {
    std::string path = name;
    InodeId d = dir;
    for (int depth = 0; d != kRootIno && depth < 4096; ++depth) {
      InodeAttr a;
      PSM_RETURN_IF_ERROR(LoadAttrAt(d, e, &a));
      std::string dname;
      auto it = store->NewIterator(Cf::kDentries);
      PSM_RETURN_IF_ERROR(VisibleEntries(
          it.get(), DentryDirPrefix(a.parent), e,
          [&](InodeId, std::string_view n, InodeId child) {
            if (child == d && dname.empty()) dname = n;
          }));
      if (dname.empty()) break;
      path = dname + "/" + path;
      d = a.parent;
    }
    if (d == kRootIno) out->push_back(top + path);
  }
  return Status::Ok();
}

}  // namespace psm
