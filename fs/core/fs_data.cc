// The data path: file contents as extents in fixed logical chunks.
//
// A chunk's extent list is loaded into a per-block map, changed, and stored
// back as one new version. The rule of DESIGN §3: a block born before the
// live epoch may be seen by a snapshot and is never written again; writes to
// it go to a newly allocated block (redirect-on-write) and the old block is
// killed (KillRange). Blocks born at the live epoch are overwritten in place
// (on a volume with checksums: whole blocks, under a durable write intent,
// fs/core/intent.cc; everything else there is redirected, docs/integrity.md).
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "fs/core/fs_impl.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

struct Slot {
  BlockNo p = 0;  // 0 = hole (block 0 is the superblock, never data)
  Epoch birth = 0;
  uint32_t flags = 0;
};

Status LoadMap(FileSystem::Impl* m, Txn* txn, InodeId ino, uint64_t idx, Epoch e,
               std::vector<Slot>* map) {
  map->assign(m->chunk_blocks, Slot{});
  // An open live file's newest chunk maps may be cached (not for a writer
  // that has written: it must see its own Txn; one that has not reads what
  // the store holds, as any reader).
  if (txn && txn->empty()) txn = nullptr;
  std::vector<Extent> ext;
  bool present = false;
  uint64_t gen = 0;
  const LiveCache::Hit h =
      txn ? LiveCache::Hit::kOff
          : m->AskCache(e, [&] { return m->cache.GetChunk(ino, idx, &present, &ext, &gen); });
  if (h != LiveCache::Hit::kHit) {
    std::string payload;
    std::string prefix = ChunkPrefix(ino, idx);
    Status s = txn ? txn->GetAt(Cf::kChunks, prefix, e, &payload)
                   : GetAt(m->store.get(), Cf::kChunks, prefix, e, &payload);
    if (!s.ok() && !s.Is(Code::kNotFound)) return s;
    present = s.ok();
    if (present) PSM_RETURN_IF_ERROR(DecodeExtents(payload, &ext));
    if (h == LiveCache::Hit::kMiss) m->cache.PutChunk(ino, idx, gen, present, ext);
  }
  if (!present) return Status::Ok();
  for (const Extent& x : ext) {
    if (static_cast<uint64_t>(x.off) + x.len > m->chunk_blocks) {
      return Status::Corruption("extent beyond chunk in inode " + std::to_string(ino));
    }
    for (uint32_t i = 0; i < x.len; ++i) (*map)[x.off + i] = Slot{x.pblock + i, x.birth, x.flags};
  }
  return Status::Ok();
}

Status StoreMap(FileSystem::Impl* m, Txn* txn, InodeId ino, uint64_t idx,
                const std::vector<Slot>& map) {
  std::vector<Extent> ext;
  for (uint32_t b = 0; b < map.size(); ++b) {
    const Slot& s = map[b];
    if (!s.p) continue;
    if (!ext.empty()) {
      Extent& l = ext.back();
      if (l.off + l.len == b && l.pblock + l.len == s.p && l.birth == s.birth &&
          l.flags == s.flags) {
        ++l.len;
        continue;
      }
    }
    ext.push_back(Extent{b, 1, s.p, s.birth, s.flags});
  }
  std::string prefix = ChunkPrefix(ino, idx);
  if (ext.empty()) return PutVersion(txn, Cf::kChunks, prefix, m->live(), std::nullopt, *m);
  std::string enc = EncodeExtents(ext);
  return PutVersion(txn, Cf::kChunks, prefix, m->live(), std::string_view(enc), *m);
}

// Indices of the chunks of `ino` present at epoch e in [c0, c1): for each
// chunk index, the first key with epoch <= e decides (newest sorts first).
Status ChunkIndices(FileSystem::Impl* m, Txn* txn, InodeId ino, Epoch e, uint64_t c0,
                    uint64_t c1, std::vector<uint64_t>* out) {
  auto it = txn ? txn->NewIterator(Cf::kChunks) : m->store->NewIterator(Cf::kChunks);
  const std::string file = ChunkFilePrefix(ino);
  it->Seek(ChunkPrefix(ino, c0));
  while (it->Valid()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 24 || k.substr(0, 8) != file) break;
    InodeId kino;
    uint64_t idx;
    ParseChunkKey(k, &kino, &idx);
    if (idx >= c1) break;
    if (KeyEpoch(k) > e) {  // a version newer than e: jump to e's version
      it->Seek(VersionKey(ChunkPrefix(ino, idx), e));
      if (!it->Valid()) break;
      k = std::string_view(it->key().data(), it->key().size());
      uint64_t idx2;
      if (k.size() != 24 || k.substr(0, 8) != file) break;
      ParseChunkKey(k, &kino, &idx2);
      if (idx2 != idx) continue;  // no version <= e: go on with idx2
    }
    if (!it->value().empty() && it->value()[0] == kTagValue) out->push_back(idx);
    if (idx + 1 == 0) break;
    it->Seek(ChunkPrefix(ino, idx + 1));
  }
  return Status::FromRocks(it->status());
}

// KillRange of a run [p, p+len) that is exactly one whole live `alloc`
// record, found with a point lookup of that record's key instead of
// KillRange's iterator and SeekForPrev: the outcome is KillRange's for a
// record that starts at the run and ends with it (no split). False (and
// nothing written) when the run is not such a record.
Result<bool> KillWholeRecord(FileSystem::Impl* m, Txn* txn, BlockNo p, uint64_t len,
                             std::vector<Range>* frees) {
  std::string v;
  Status g = txn->Get(Cf::kAlloc, AllocKey(p), &v);
  if (g.Is(Code::kNotFound)) return false;
  PSM_RETURN_IF_ERROR(g);
  AllocRec rec;
  if (!DecodeAlloc(v, &rec).ok() || rec.length != len || rec.death != 0) return false;
  const Epoch e = m->live();
  if (m->AnyIn(rec.birth, e)) {
    txn->Put(Cf::kAlloc, AllocKey(p), EncodeAlloc(AllocRec{len, rec.birth, e}));
    txn->Put(Cf::kDead, DeadRangeKey(e, p), EncodeDeadValue(DeadValue{rec.birth, len}));
  } else {
    txn->Delete(Cf::kAlloc, AllocKey(p));
    frees->push_back(Range{p, len});
  }
  return true;
}

// Kills replaced blocks (physical block, birth), merged into runs of
// consecutive blocks of one birth. `whole_records`: the runs are likely
// whole `alloc` records (a destroyed file's blocks), so each is tried with
// a point lookup first (KillWholeRecord); elsewhere that lookup would
// mostly miss (a run cut out of a larger record) and is not made.
Status KillRuns(FileSystem::Impl* m, Txn* txn, std::vector<std::pair<BlockNo, Epoch>>* killed,
                std::vector<Range>* frees, bool whole_records = false) {
  std::sort(killed->begin(), killed->end());
  for (size_t i = 0; i < killed->size();) {
    size_t j = i + 1;
    while (j < killed->size() && (*killed)[j].first == (*killed)[j - 1].first + 1 &&
           (*killed)[j].second == (*killed)[i].second) {
      ++j;
    }
    bool done = false;
    if (whole_records) {
      PSM_ASSIGN_OR_RETURN(done, KillWholeRecord(m, txn, (*killed)[i].first, j - i, frees));
    }
    if (!done) {
      PSM_RETURN_IF_ERROR(
          m->KillRange(txn, (*killed)[i].first, j - i, (*killed)[i].second, frees));
    }
    i = j;
  }
  return Status::Ok();
}

// Sorts extents by offset and merges neighbours that continue each other
// (logically and physically, same birth and flags), as StoreMap writes them.
void NormalizeExtents(std::vector<Extent>* ext) {
  std::sort(ext->begin(), ext->end(),
            [](const Extent& x, const Extent& y) { return x.off < y.off; });
  size_t w = 0;
  for (size_t r = 0; r < ext->size(); ++r) {
    const Extent& x = (*ext)[r];
    if (w > 0) {
      Extent& l = (*ext)[w - 1];
      if (l.off + l.len == x.off && l.pblock + l.len == x.pblock && l.birth == x.birth &&
          l.flags == x.flags) {
        l.len += x.len;
        continue;
      }
    }
    (*ext)[w++] = x;
  }
  ext->resize(w);
}

}  // namespace

Result<Range> FileSystem::Impl::AllocateBlocks(Txn* txn, uint64_t want, BlockNo hint,
                                              std::vector<Range>* allocs) {
  auto got = alloc->Allocate(want, hint);
  for (int i = 0; i < 3 && got.status().Is(Code::kNoSpace) &&
                  alloc->Stats().quarantined_blocks > 0;
       ++i) {
    // Space freed by earlier operations becomes usable once their metadata
    // is durable: commit now instead of failing.
    PSM_RETURN_IF_ERROR(committer->SyncAll());
    got = alloc->Allocate(want, hint);
  }
  PSM_ASSIGN_OR_RETURN(Range r, std::move(got));
  allocs->push_back(r);
  txn->Put(Cf::kAlloc, AllocKey(r.start), EncodeAlloc(AllocRec{r.len, live(), 0}));
  return r;
}

Status FileSystem::Impl::KillRange(Txn* txn, BlockNo p, uint64_t len, Epoch birth,
                                   std::vector<Range>* frees) {
  const Epoch e = live();
  auto it = txn->NewIterator(Cf::kAlloc);
  while (len > 0) {
    std::string key = AllocKey(p);
    it->SeekForPrev(key);
    if (!it->Valid()) {
      PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
      return Status::Corruption("block " + std::to_string(p) + " in use but not in alloc");
    }
    BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    AllocRec rec;
    PSM_RETURN_IF_ERROR(
        DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &rec));
    if (s + rec.length <= p) {
      return Status::Corruption("block " + std::to_string(p) + " in use but not in alloc");
    }
    if (rec.death != 0) {
      return Status::Corruption("block " + std::to_string(p) + " killed twice");
    }
    BlockNo q = std::min(p + len, s + rec.length);
    if (s < p) {
      txn->Put(Cf::kAlloc, AllocKey(s), EncodeAlloc(AllocRec{p - s, rec.birth, 0}));
    }
    if (q < s + rec.length) {
      txn->Put(Cf::kAlloc, AllocKey(q), EncodeAlloc(AllocRec{s + rec.length - q, rec.birth, 0}));
    }
    if (AnyIn(rec.birth, e)) {
      txn->Put(Cf::kAlloc, AllocKey(p), EncodeAlloc(AllocRec{q - p, rec.birth, e}));
      txn->Put(Cf::kDead, DeadRangeKey(e, p), EncodeDeadValue(DeadValue{rec.birth, q - p}));
    } else {
      // A record starts at p only if s == p (records do not overlap);
      // otherwise the Put at s above already ends the record before p, and
      // a Delete would only add a tombstone (one more memtable insert per
      // redirected write, and one more entry every alloc seek skips).
      if (s == p) txn->Delete(Cf::kAlloc, AllocKey(p));
      frees->push_back(Range{p, q - p});
    }
    (void)birth;
    len -= q - p;
    p = q;
  }
  return Status::Ok();
}

Status FileSystem::Impl::WriteData(Txn* txn, InodeId ino, InodeAttr* a, uint64_t off,
                                   const char* buf, size_t n, std::vector<Range>* frees,
                                   std::vector<Range>* allocs) {
  const Epoch e = live();
  const uint64_t chunk_bytes = uint64_t{chunk_blocks} * bs;
  uint64_t pos = off;
  const uint64_t end = off + n;
  std::vector<Slot> map;
  std::vector<BlockNo> newp(chunk_blocks);
  std::vector<char> need(chunk_blocks);
  std::vector<std::pair<BlockNo, Epoch>> killed;
  std::string stage;
  std::string old;
  BlockNo hint = 0;
  while (pos < end) {
    uint64_t idx = pos / chunk_bytes;
    uint64_t cstart = idx * chunk_bytes;
    uint64_t cend = std::min(end, cstart + chunk_bytes);
    PSM_RETURN_IF_ERROR(LoadMap(this, txn, ino, idx, e, &map));
    uint32_t b0 = static_cast<uint32_t>((pos - cstart) / bs);
    uint32_t b1 = static_cast<uint32_t>((cend - cstart + bs - 1) / bs);
    // With checksums every block written goes to a new one: an overwrite in
    // place would leave a durable checksum that the bytes on disk may no
    // longer match after a crash (docs/integrity.md).
    for (uint32_t b = b0; b < b1; ++b) need[b] = checksums || !(map[b].p && map[b].birth == e);
    // Allocate runs of blocks that need new space, near their neighbours.
    for (uint32_t i = b0; i < b1;) {
      if (!need[i]) {
        ++i;
        continue;
      }
      uint32_t j = i;
      while (j < b1 && need[j]) ++j;
      if (i > 0 && map[i - 1].p) hint = map[i - 1].p + 1;
      for (uint32_t k = i; k < j;) {
        PSM_ASSIGN_OR_RETURN(Range r, AllocateBlocks(txn, j - k, hint, allocs));
        for (uint64_t t = 0; t < r.len; ++t) newp[k + t] = r.start + t;
        k += static_cast<uint32_t>(r.len);
        hint = r.end();
      }
      i = j;
    }
    // Write block by block, coalescing physically contiguous whole blocks.
    bool map_changed = false;
    uint32_t run_b = 0, run_n = 0;
    BlockNo run_p = 0;
    stage.clear();
    auto flush_run = [&]() -> Status {
      if (run_n == 0) return Status::Ok();
      Status s = dev->Write(run_p * bs, stage.data(), stage.size());
      if (s.ok()) PutChecksums(txn, run_p, stage.data(), run_n);
      run_n = 0;
      stage.clear();
      return s;
    };
    for (uint32_t b = b0; b < b1; ++b) {
      uint64_t bstart = cstart + uint64_t{b} * bs;
      uint64_t lo = std::max(pos, bstart), hi = std::min(cend, bstart + bs);
      bool full = lo == bstart && hi == bstart + bs;
      const char* src = buf + (lo - off);
      Slot& sl = map[b];
      if (!need[b] && !(sl.flags & kExtentUnwritten) && !full) {
        PSM_RETURN_IF_ERROR(flush_run());
        PSM_RETURN_IF_ERROR(dev->Write(sl.p * bs + (lo - bstart), src, hi - lo));
        continue;
      }
      BlockNo target = need[b] ? newp[b] : sl.p;
      if (run_n && run_p + run_n != target) PSM_RETURN_IF_ERROR(flush_run());
      if (run_n == 0) {
        run_b = b;
        run_p = target;
      }
      (void)run_b;
      size_t at = stage.size();
      if (full) {
        stage.append(src, bs);
      } else {
        // Merge with the old contents (zeros for holes and unwritten blocks).
        stage.resize(at + bs, '\0');
        if (sl.p && !(sl.flags & kExtentUnwritten)) {
          PSM_RETURN_IF_ERROR(
              ReadBlocks(sl.p, 1, stage.data() + at, BlockUse{ino, e, idx * chunk_blocks + b}));
        }
        memcpy(stage.data() + at + (lo - bstart), src, hi - lo);
      }
      ++run_n;
      if (need[b]) {
        if (sl.p) {
          killed.emplace_back(sl.p, sl.birth);
        } else {
          a->blocks++;
        }
        sl = Slot{newp[b], e, 0};
        map_changed = true;
      } else if (sl.flags & kExtentUnwritten) {
        sl.flags &= ~kExtentUnwritten;
        map_changed = true;
      }
    }
    PSM_RETURN_IF_ERROR(flush_run());
    // An overwrite in place of blocks born at the live epoch changes no
    // extent: the chunk's record stays as it is.
    if (map_changed) PSM_RETURN_IF_ERROR(StoreMap(this, txn, ino, idx, map));
    pos = cend;
  }
  return KillRuns(this, txn, &killed, frees);
}

Status FileSystem::Impl::ReadData(InodeId ino, Epoch e, const InodeAttr& a, uint64_t off,
                                  size_t n, char* buf) {
  const uint64_t chunk_bytes = uint64_t{chunk_blocks} * bs;
  std::vector<Slot> map;
  std::string whole;
  std::vector<ReadRun> runs;  // short whole-block runs read, to verify together
  uint64_t batched = 0;       // blocks in runs
  uint64_t pos = off;
  const uint64_t end = off + n;
  while (pos < end) {
    uint64_t idx = pos / chunk_bytes;
    uint64_t cstart = idx * chunk_bytes;
    uint64_t cend = std::min(end, cstart + chunk_bytes);
    PSM_RETURN_IF_ERROR(LoadMap(this, nullptr, ino, idx, e, &map));
    uint32_t b0 = static_cast<uint32_t>((pos - cstart) / bs);
    uint32_t b1 = static_cast<uint32_t>((cend - cstart + bs - 1) / bs);
    for (uint32_t b = b0; b < b1;) {
      uint64_t bstart = cstart + uint64_t{b} * bs;
      uint64_t lo = std::max(pos, bstart);
      const Slot& sl = map[b];
      if (!sl.p || (sl.flags & kExtentUnwritten)) {
        uint64_t hi = std::min(cend, bstart + bs);
        memset(buf + (lo - off), 0, hi - lo);
        ++b;
        continue;
      }
      // Extend over physically contiguous written blocks.
      uint32_t j = b + 1;
      while (j < b1 && map[j].p == sl.p + (j - b) && !(map[j].flags & kExtentUnwritten)) ++j;
      uint64_t hi = std::min(cend, cstart + uint64_t{j} * bs);
      const BlockUse use{ino, e, idx * chunk_blocks + b};
      if (!checksums) {
        PSM_RETURN_IF_ERROR(dev->Read(sl.p * bs + (lo - bstart), buf + (lo - off), hi - lo));
      } else if (lo == bstart && hi == cstart + uint64_t{j} * bs) {
        // Whole blocks: straight into the caller's buffer, verified there;
        // a short run with the other short runs of the request. A mirrored
        // volume reads a short run from one side only (ReadFirst): a run
        // that side cannot read goes through ReadBlocksMirrored, which
        // heals that copy (MirrorDevice::Read would only hand back the
        // other side's bytes), and VerifyRuns sends a mismatch there too.
        Status rd;
        if (j - b <= kBatchedRunBlocks) {
          rd = mirror->mirrored() ? mirror->ReadFirst(sl.p * bs, buf + (lo - off), hi - lo)
                                  : dev->Read(sl.p * bs, buf + (lo - off), hi - lo);
          if (!rd.ok() && !mirror->mirrored()) return rd;
        }
        if (j - b > kBatchedRunBlocks || !rd.ok()) {
          PSM_RETURN_IF_ERROR(ReadBlocks(sl.p, j - b, buf + (lo - off), use));
        } else {
          runs.push_back(ReadRun{sl.p, j - b, buf + (lo - off), use});
          batched += j - b;
          if (batched >= 1024) {
            PSM_RETURN_IF_ERROR(VerifyRuns(&runs));
            batched = 0;
          }
        }
      } else {
        // A partial first or last block: every block is verified whole, so
        // read the run into a buffer of its own and copy the bytes asked.
        whole.resize(uint64_t{j - b} * bs);
        PSM_RETURN_IF_ERROR(ReadBlocks(sl.p, j - b, whole.data(), use));
        memcpy(buf + (lo - off), whole.data() + (lo - bstart), hi - lo);
      }
      b = j;
    }
    pos = cend;
  }
  return VerifyRuns(&runs);
}

Status FileSystem::Impl::UnmapBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t b0,
                                     uint64_t b1, std::vector<Range>* frees) {
  if (b0 >= b1) return Status::Ok();
  const Epoch e = live();
  std::vector<uint64_t> idxs;
  PSM_RETURN_IF_ERROR(ChunkIndices(this, txn, ino, e, b0 / chunk_blocks,
                                   (b1 + chunk_blocks - 1) / chunk_blocks, &idxs));
  std::vector<Slot> map;
  std::vector<std::pair<BlockNo, Epoch>> killed;
  for (uint64_t idx : idxs) {
    PSM_RETURN_IF_ERROR(LoadMap(this, txn, ino, idx, e, &map));
    uint64_t first = idx * chunk_blocks;
    uint64_t lo = std::max(b0, first) - first;
    uint64_t hi = std::min(b1, first + chunk_blocks) - first;
    bool changed = false;
    for (uint64_t b = lo; b < hi; ++b) {
      if (!map[b].p) continue;
      killed.emplace_back(map[b].p, map[b].birth);
      map[b] = Slot{};
      if (a->blocks) a->blocks--;
      changed = true;
    }
    if (changed) PSM_RETURN_IF_ERROR(StoreMap(this, txn, ino, idx, map));
  }
  return KillRuns(this, txn, &killed, frees);
}

Status FileSystem::Impl::MapBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t fblock,
                                   BlockNo p, uint64_t n, std::vector<Range>* frees) {
  const Epoch e = live();
  std::vector<Slot> map;
  std::vector<std::pair<BlockNo, Epoch>> killed;
  while (n > 0) {
    const uint64_t idx = fblock / chunk_blocks;
    const uint64_t b0 = fblock % chunk_blocks;
    const uint64_t k = std::min<uint64_t>(n, chunk_blocks - b0);
    PSM_RETURN_IF_ERROR(LoadMap(this, txn, ino, idx, e, &map));
    for (uint64_t i = 0; i < k; ++i) {
      Slot& sl = map[b0 + i];
      if (sl.p) {
        killed.emplace_back(sl.p, sl.birth);
      } else {
        a->blocks++;
      }
      sl = Slot{p + i, e, 0};
    }
    PSM_RETURN_IF_ERROR(StoreMap(this, txn, ino, idx, map));
    fblock += k;
    p += k;
    n -= k;
  }
  return KillRuns(this, txn, &killed, frees);
}

Status FileSystem::Impl::Truncate(Txn* txn, InodeId ino, InodeAttr* a, uint64_t size,
                                  std::vector<Range>* frees, std::vector<Range>* allocs) {
  if (size < a->size && size % bs != 0) {
    // Zero the tail of the block that now ends the file, if it holds data,
    // so that a later extension reads zeros.
    std::vector<Slot> map;
    uint64_t blk = size / bs;
    PSM_RETURN_IF_ERROR(LoadMap(this, txn, ino, blk / chunk_blocks, live(), &map));
    const Slot& sl = map[blk % chunk_blocks];
    if (sl.p && !(sl.flags & kExtentUnwritten)) {
      std::string zeros((blk + 1) * bs - size, '\0');
      PSM_RETURN_IF_ERROR(WriteData(txn, ino, a, size, zeros.data(), zeros.size(), frees, allocs));
    }
  }
  // Drop every block past the new end (including fallocated ones).
  PSM_RETURN_IF_ERROR(UnmapBlocks(txn, ino, a, (size + bs - 1) / bs, kInoMask, frees));
  a->size = size;
  return Status::Ok();
}

Status FileSystem::Impl::ShiftBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t o,
                                     uint64_t n, bool collapse, std::vector<Range>* frees) {
  const Epoch e = live();
  const uint64_t cb = chunk_blocks;
  const uint64_t max_blocks = (uint64_t{1} << 52) / bs;
  // Every chunk from o's on whose record exists: chunks below it keep
  // theirs, and (sparse files) absent chunks cost nothing.
  std::vector<uint64_t> idxs;
  PSM_RETURN_IF_ERROR(ChunkIndices(this, txn, ino, e, o / cb, UINT64_MAX, &idxs));
  // Blocks below o stay; collapse: [o, o+n) dies; blocks from `from` on move
  // by n. A piece lands in the chunk of its new place, so a shift by a
  // non-multiple of the chunk splits an extent over two new chunk records.
  const uint64_t from = collapse ? o + n : o;
  std::map<uint64_t, std::vector<Extent>> old_ext, new_ext;
  struct Killed {
    BlockNo p;
    uint64_t len;
    Epoch birth;
  };
  std::vector<Killed> killed;
  std::string payload;
  for (const uint64_t idx : idxs) {
    Status s = txn->GetAt(Cf::kChunks, ChunkPrefix(ino, idx), e, &payload);
    if (s.Is(Code::kNotFound)) continue;
    PSM_RETURN_IF_ERROR(s);
    std::vector<Extent>& ext = old_ext[idx];
    PSM_RETURN_IF_ERROR(DecodeExtents(payload, &ext));
    new_ext[idx];  // written back even if nothing stays in it (a tombstone)
    const uint64_t first = idx * cb;
    for (const Extent& x : ext) {
      if (uint64_t{x.off} + x.len > cb) {
        return Status::Corruption("extent beyond chunk in inode " + std::to_string(ino));
      }
      const uint64_t l0 = first + x.off, l1 = l0 + x.len;
      auto piece = [&](uint64_t lo, uint64_t hi, uint64_t at) {
        new_ext[at / cb].push_back(Extent{static_cast<uint32_t>(at % cb),
                                          static_cast<uint32_t>(hi - lo), x.pblock + (lo - l0),
                                          x.birth, x.flags});
      };
      if (l0 < o) piece(l0, std::min(l1, o), l0);
      if (collapse) {
        const uint64_t lo = std::max(l0, o), hi = std::min(l1, o + n);
        if (lo < hi) {
          killed.push_back(Killed{x.pblock + (lo - l0), hi - lo, x.birth});
          a->blocks -= std::min<uint64_t>(a->blocks, hi - lo);
        }
      }
      for (uint64_t lo = std::max(l0, from); lo < l1;) {
        const uint64_t at = collapse ? lo - n : lo + n;
        if (at + (l1 - lo) > max_blocks) {
          return Status::TooBig("insert range would move blocks past the largest file size");
        }
        const uint64_t hi = std::min(l1, lo + (cb - at % cb));
        piece(lo, hi, at);
        lo = hi;
      }
    }
  }
  for (auto& [idx, ext] : new_ext) {
    NormalizeExtents(&ext);
    auto old = old_ext.find(idx);
    if (old != old_ext.end()) {
      NormalizeExtents(&old->second);
      if (old->second == ext) continue;  // this chunk did not change
    }
    const std::string prefix = ChunkPrefix(ino, idx);
    if (ext.empty()) {
      PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kChunks, prefix, e, std::nullopt, *this));
    } else {
      const std::string enc = EncodeExtents(ext);
      PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kChunks, prefix, e, std::string_view(enc), *this));
    }
  }
  // The collapsed blocks die as a punched hole's do: kept for the snapshots
  // that see them, else freed.
  std::sort(killed.begin(), killed.end(),
            [](const Killed& x, const Killed& y) { return x.p < y.p; });
  for (size_t i = 0; i < killed.size();) {
    Killed k = killed[i++];
    while (i < killed.size() && killed[i].p == k.p + k.len && killed[i].birth == k.birth) {
      k.len += killed[i++].len;
    }
    PSM_RETURN_IF_ERROR(KillRange(txn, k.p, k.len, k.birth, frees));
  }
  return Status::Ok();
}

namespace {

// Removes every chunk record of `ino` from the live tree and kills the
// blocks they map (DestroyInode of a regular file): what UnmapBlocks of the
// whole file does, in one pass. UnmapBlocks found the present chunks
// (ChunkIndices: an iterator, a seek per chunk), read each (LoadMap: an
// iterator and a seek) and wrote it back empty (PutVersion: an iterator, a
// seek and a step). Here one iterator walks every version of every chunk
// of the file once, in key order: the first version of a chunk is its
// newest (keys.h), and the key after it tells whether an older one
// remains. For each chunk the decision is PutVersion's for a delete
// (meta/versioned.h): a newest version born at the live epoch E is
// overwritten in place (deleted, or a tombstone when an older version
// remains); an older one that a present snapshot can see stays with a
// `dead` entry and a tombstone at E; one no snapshot can see is removed,
// with a tombstone at E only if an older version remains; a tombstone is
// already absent. The writes are made after the walk: the Txn's iterator
// must not see its batch change under it. The caller holds the inode's
// stripe exclusively and volume_mu shared (E and the snapshot set are
// fixed), as for UnmapBlocks.
Status DestroyChunks(FileSystem::Impl* m, Txn* txn, InodeId ino, InodeAttr* a,
                     std::vector<Range>* frees) {
  const Epoch e = m->live();
  const std::string file = ChunkFilePrefix(ino);
  struct Drop {
    std::string newest_key;  // the chunk's newest version
    bool tomb = false;       // it is a tombstone
    bool older = false;      // an older version remains under it
  };
  std::vector<Drop> drops;
  std::vector<std::pair<BlockNo, Epoch>> killed;
  {
    // An empty Txn reads what the store holds: no batch to merge in.
    auto it = txn->empty() ? m->store->NewIterator(Cf::kChunks) : txn->NewIterator(Cf::kChunks);
    std::vector<Extent> ext;
    it->Seek(file);
    while (it->Valid()) {
      std::string_view k(it->key().data(), it->key().size());
      if (k.size() != 24 || k.substr(0, 8) != file) break;
      Drop d;
      d.newest_key.assign(k);
      const Epoch newest = KeyEpoch(k);
      if (newest > e) return Status::Corruption("record version newer than the live epoch");
      d.tomb = it->value().empty() || it->value()[0] == kTagTombstone;
      if (!d.tomb) {
        PSM_RETURN_IF_ERROR(DecodeExtents(
            std::string_view(it->value().data() + 1, it->value().size() - 1), &ext));
        for (const Extent& x : ext) {
          if (static_cast<uint64_t>(x.off) + x.len > m->chunk_blocks) {
            return Status::Corruption("extent beyond chunk in inode " + std::to_string(ino));
          }
          for (uint32_t i = 0; i < x.len; ++i) {
            killed.emplace_back(x.pblock + i, x.birth);
            if (a->blocks) a->blocks--;
          }
        }
      }
      const std::string_view chunk = KeyPrefix(d.newest_key);
      PSM_ASSIGN_OR_RETURN(d.older, NextIsOlderVersion(it.get(), chunk));
      while (it->Valid() && IsVersionOf(std::string_view(it->key().data(), it->key().size()),
                                        chunk)) {
        it->Next();
      }
      // Nothing to do for a tombstone born before E (already absent), nor
      // for one at E over an older version; a lone one at E goes.
      if (!d.tomb || (newest == e && !d.older)) drops.push_back(std::move(d));
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  }
  for (const Drop& d : drops) {
    DeleteVersionRead(txn, Cf::kChunks, d.newest_key, d.tomb, d.older, e, *m);
  }
  // The killed blocks: a small file's block is usually one whole `alloc`
  // record (one record per allocation), killed with a point lookup.
  return KillRuns(m, txn, &killed, frees, /*whole_records=*/true);
}

}  // namespace

Status FileSystem::Impl::DestroyInode(Txn* txn, InodeId ino, InodeAttr* a,
                                      std::vector<Range>* frees) {
  const Epoch e = live();
  // xattrs: read before the chunks are written, so that the Txn of a
  // FORGET's destroy, still empty, reads the store directly (DestroyChunks)
  std::vector<std::string> names;
  {
    auto it = txn->empty() ? store->NewIterator(Cf::kXattrs) : txn->NewIterator(Cf::kXattrs);
    std::string last;
    PSM_RETURN_IF_ERROR(ForEachPrefix(it.get(), XattrFilePrefix(ino),
                                      [&](std::string_view k, std::string_view v) {
                                        std::string p(KeyPrefix(k));
                                        if (p != last) {
                                          last = p;
                                          if (!v.empty() && v[0] == kTagValue) names.push_back(p);
                                        }
                                        return true;
                                      }));
  }
  if (S_ISREG(a->mode)) PSM_RETURN_IF_ERROR(DestroyChunks(this, txn, ino, a, frees));
  for (const auto& p : names) {
    PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kXattrs, p, e, std::nullopt, *this));
  }
  txn->AddCounter(kVolFiles, -1);
  if (a->version == e && a->sole) {
    // PutVersion's delete, with nothing older under the version born at E
    // known from the read that gave `a` (InodeAttr::sole; the caller holds
    // the stripe since, and reclaim only ever removes versions).
    DeleteVersionRead(txn, Cf::kInodes, VersionKey(InodePrefix(ino), e), /*newest_tomb=*/false,
                      /*older=*/false, e, *this);
    return Status::Ok();
  }
  return PutVersion(txn, Cf::kInodes, InodePrefix(ino), e, std::nullopt, *this);
}

Status FileSystem::Impl::DestroyOrphan(InodeId ino, const InodeAttr* known) {
  Txn txn(store.get());
  InodeAttr a;
  std::vector<Range> frees;
  Status s = Status::Ok();
  if (known) {
    a = *known;
  } else {
    s = LoadAttr(&txn, ino, live(), &a);
  }
  if (s.ok() && a.nlink == 0) {
    PSM_RETURN_IF_ERROR(DestroyInode(&txn, ino, &a, &frees));
  } else if (!s.ok() && !s.Is(Code::kNotFound)) {
    return s;
  }
  txn.Delete(Cf::kVolume, OrphanKey(ino));
  return committer->Apply(&txn, frees, {});
}

// ---- public file operations ----

Result<uint64_t> FileSystem::OpenFile(NodeId node, int flags) {
  Impl* m = impl_.get();
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  if (v.snapdir) return Status::IsDir();
  bool wants_write = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (wants_write) PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttrAt(v.ino, v.epoch, &a));
  PSM_SYNC_POINT("FileSystem::OpenFile:AttrRead");
  if (S_ISDIR(a.mode)) return Status::IsDir();
  // The kernel follows symlinks and opens device nodes and FIFOs itself; a
  // handle on one here could only write data blocks no one would free.
  if (!S_ISREG(a.mode)) return Status::Invalid("not a regular file");
  if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && a.size > 0) {
    LockSet ls(m, {v.ino});
    Txn txn(m->store.get());
    PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, v.ino, v.epoch, &a));
    std::vector<Range> frees, allocs;
    PSM_RETURN_IF_ERROR(m->Truncate(&txn, v.ino, &a, 0, &frees, &allocs));
    a.mtime_ns = a.ctime_ns = NowNs();
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, a));
    PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, frees, allocs));
  }
  std::lock_guard<std::mutex> l(m->handles_mu);
  if (v.snap) {
    std::lock_guard<std::mutex> sl(m->snaps_mu);
    auto it = m->snaps.find(v.snap);
    if (it == m->snaps.end() || it->second.rec.state != SnapState::kActive) {
      return Status::Stale("snapshot was deleted");
    }
    it->second.open_handles++;
  } else if (m->ghosts.count(v.ino) != 0) {
    // Destroyed by an unlink since its attributes were read above.
    return Status::NotFound("the file was removed");
  } else if (m->live_open[v.ino]++ == 0) {
    m->cache.Enable(v.ino);
  }
  uint64_t fh = m->next_fh++;
  m->files[fh] = FileHandle{node, v.snap, v.ino, v.epoch, flags};
  return fh;
}

Result<size_t> FileSystem::Read(uint64_t fh, uint64_t off, size_t size, char* buf) {
  Impl* m = impl_.get();
  FileHandle h;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->files.find(fh);
    if (it == m->files.end()) return Status::BadFd();
    h = it->second;
  }
  Epoch e = h.snap ? h.epoch : m->live();
  // Live reads hold the inode lock shared: a concurrent write cannot free a
  // block this read is about to use.
  std::optional<LockSet> ls;
  if (!h.snap) ls.emplace(m, std::initializer_list<InodeId>{h.ino}, false);
  if (!h.snap) e = m->live();
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttrAt(h.ino, e, &a));
  if (off >= a.size) return size_t{0};
  size_t n = static_cast<size_t>(std::min<uint64_t>(size, a.size - off));
  PSM_RETURN_IF_ERROR(m->ReadData(h.ino, e, a, off, n, buf));
  return n;
}

Result<bool> FileSystem::Impl::WriteInPlaceChecked(InodeId ino, uint64_t off, const char* buf,
                                                   size_t n) {
  // Whole blocks only: a partial block would need its old bytes read and
  // verified under the stripe; it goes the redirected way (WriteData).
  if (off % bs != 0 || n % bs != 0 || n == 0) return false;
  const Epoch e = live();
  const uint64_t chunk_bytes = uint64_t{chunk_blocks} * bs;
  std::vector<BlockNo> phys;  // physical block of each block written, in order
  phys.reserve(n / bs);
  std::vector<Slot> map;
  for (uint64_t pos = off; pos < off + n;) {
    const uint64_t idx = pos / chunk_bytes;
    const uint64_t cstart = idx * chunk_bytes;
    const uint64_t cend = std::min(off + n, cstart + chunk_bytes);
    PSM_RETURN_IF_ERROR(LoadMap(this, nullptr, ino, idx, e, &map));
    for (; pos < cend; pos += bs) {
      const Slot& sl = map[(pos - cstart) / bs];
      if (!sl.p || sl.birth != e || (sl.flags & kExtentUnwritten)) return false;
      phys.push_back(sl.p);
    }
  }
  // A block without a checksum (written before the volume had them) gets
  // its first one here; `scrub --rewrite`, which gives such blocks one,
  // reads and commits under the block's stripe (RewriteChecksums).
  std::vector<uint64_t> regions;
  for (BlockNo p : phys) regions.push_back(IntentRegion(p));
  std::sort(regions.begin(), regions.end());
  regions.erase(std::unique(regions.begin(), regions.end()), regions.end());
  // The intent is durable before any byte goes in place: after a crash,
  // whatever of this write reached the disk is found and re-checksummed
  // (RecoverIntents), never read as damage.
  PSM_RETURN_IF_ERROR(intents->Begin(regions));
  std::vector<uint32_t> crcs(phys.size());
  for (size_t i = 0; i < phys.size(); ++i) crcs[i] = BlockCrc(buf + i * bs, bs);
  uint64_t gen = ~uint64_t{0}, writes = ~uint64_t{0};  // never durable: on failure the intent stays
  Status s;
  {
    // From the first byte in place to the checksums' staging, readers that
    // see a mismatch wait here and look again (RecheckBlocks).
    BlockGuard g(this, phys, /*exclusive=*/true);
    for (size_t i = 0; i < phys.size() && s.ok();) {
      size_t j = i + 1;
      while (j < phys.size() && phys[j] == phys[j - 1] + 1) ++j;
      s = dev->Write(phys[i] * bs, buf + i * bs, (j - i) * bs);
      i = j;
    }
    if (s.ok()) {
      // Committed with the next sync cycle's (PendingChecksums): readers
      // find them staged until then, and the intent covers a crash.
      gen = pending_csums->Stage(phys, crcs);
      writes = dev->WritesCompleted();
    }
  }
  intents->End(regions, gen, writes);
  PSM_RETURN_IF_ERROR(s);
  if (pending_csums->full()) PSM_RETURN_IF_ERROR(pending_csums->Flush());
  return true;
}

Result<bool> FileSystem::Impl::WriteInPlace(InodeId ino, uint64_t off, const char* buf,
                                            size_t n) {
  // Write() asks only when the mount does not redirect every write.
  if (checksums) return WriteInPlaceChecked(ino, off, buf, n);
  const Epoch e = live();
  const uint64_t chunk_bytes = uint64_t{chunk_blocks} * bs;
  // Every block of the range must be mapped, written, and born at the live
  // epoch (no snapshot sees it): then the bytes go in place and no record
  // changes. Check everything before writing anything.
  struct Piece {
    uint64_t dev_off;
    const char* src;
    size_t len;
  };
  std::vector<Piece> pieces;
  std::vector<Slot> map;
  uint64_t pos = off;
  const uint64_t end = off + n;
  while (pos < end) {
    const uint64_t idx = pos / chunk_bytes;
    const uint64_t cstart = idx * chunk_bytes;
    const uint64_t cend = std::min(end, cstart + chunk_bytes);
    PSM_RETURN_IF_ERROR(LoadMap(this, nullptr, ino, idx, e, &map));
    for (uint64_t p = pos; p < cend;) {
      const uint32_t b = static_cast<uint32_t>((p - cstart) / bs);
      const Slot& sl = map[b];
      if (!sl.p || sl.birth != e || (sl.flags & kExtentUnwritten)) return false;
      const uint64_t bstart = cstart + uint64_t{b} * bs;
      const uint64_t hi = std::min(cend, bstart + bs);
      const uint64_t dev_off = sl.p * bs + (p - bstart);
      if (!pieces.empty() && pieces.back().dev_off + pieces.back().len == dev_off) {
        pieces.back().len += hi - p;
      } else {
        pieces.push_back(Piece{dev_off, buf + (p - off), static_cast<size_t>(hi - p)});
      }
      p = hi;
    }
    pos = cend;
  }
  for (const Piece& pc : pieces) PSM_RETURN_IF_ERROR(dev->Write(pc.dev_off, pc.src, pc.len));
  return true;
}

Result<size_t> FileSystem::Write(uint64_t fh, uint64_t off, const char* buf, size_t size,
                                 bool kernel_times) {
  Impl* m = impl_.get();
  FileHandle h;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->files.find(fh);
    if (it == m->files.end()) return Status::BadFd();
    h = it->second;
  }
  if (h.snap || m->opts.read_only) return Status::ReadOnly();
  // A volume whose sync failed takes no more writes, not even in place
  // (docs/crash-consistency.md, "Sync failures").
  if (m->committer->failed()) return m->committer->Failure();
  if (size == 0) return size_t{0};
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  if (kernel_times && !(h.flags & O_APPEND) &&
      (!m->checksums || (!m->opts.redirect_writes && off % m->bs == 0 && size % m->bs == 0))) {
    // The common case of the kernel writing back pages of an existing file:
    // an overwrite in place inside the file changes no record (with
    // checksums: only the blocks' checksums), so it needs only the inode's
    // lock shared (truncate, punch and every metadata change take it
    // exclusively), and writes to one file run in parallel. With checksums
    // only whole blocks go in place (WriteInPlaceChecked).
    LockSet shared(m, {h.ino}, /*exclusive=*/false);
    InodeAttr a;
    PSM_RETURN_IF_ERROR(m->LoadAttr(nullptr, h.ino, m->live(), &a));
    if (off + size >= off && off + size <= a.size) {
      PSM_ASSIGN_OR_RETURN(bool done, m->WriteInPlace(h.ino, off, buf, size));
      if (done) return size;
    }
  }
  LockSet ls(m, {h.ino});
  Txn txn(m->store.get());
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, h.ino, m->live(), &a));
  if (h.flags & O_APPEND) off = a.size;
  if (off + size < off || off + size > (uint64_t{1} << 52)) return Status::TooBig();
  std::vector<Range> frees, allocs;
  // Before WriteData, which counts the blocks it maps into a.blocks.
  const uint64_t old_size = a.size, old_blocks = a.blocks;
  Status s = m->WriteData(&txn, h.ino, &a, off, buf, size, &frees, &allocs);
  if (!s.ok()) {
    for (const Range& r : allocs) m->alloc->Abort(r);
    return s;
  }
  a.size = std::max<uint64_t>(a.size, off + size);
  // With kernel_times the caller (the kernel's writeback cache) keeps the
  // times and sends them with a setattr; the record changes only if the
  // size or the block count did.
  if (!kernel_times) a.mtime_ns = a.ctime_ns = NowNs();
  if (!kernel_times || a.size != old_size || a.blocks != old_blocks) {
    s = m->PutAttr(&txn, h.ino, a);
    if (!s.ok()) {
      for (const Range& r : allocs) m->alloc->Abort(r);
      return s;
    }
  }
  PSM_SYNC_POINT("FileSystem::Write:BeforeCommit");
  // An overwrite in place that changed no record has nothing to commit:
  // the bytes are in the image, made durable by the next sync.
  if (txn.empty() && frees.empty() && allocs.empty()) return size;
  PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, frees, allocs));
  return size;
}

size_t FileSystem::WritableLiveHandles() {
  Impl* m = impl_.get();
  std::lock_guard<std::mutex> l(m->handles_mu);
  size_t n = 0;
  for (const auto& [fh, h] : m->files) {
    if (h.snap == 0 && (h.flags & O_ACCMODE) != O_RDONLY) ++n;
  }
  return n;
}

Status FileSystem::Release(uint64_t fh) {
  Impl* m = impl_.get();
  FileHandle h;
  bool last = false;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->files.find(fh);
    if (it == m->files.end()) return Status::BadFd();
    h = it->second;
    m->files.erase(it);
    if (h.snap) {
      std::lock_guard<std::mutex> sl(m->snaps_mu);
      auto s = m->snaps.find(h.snap);
      if (s != m->snaps.end() && --s->second.open_handles == 0 &&
          s->second.rec.state == SnapState::kDeleting) {
        last = true;
      }
    } else {
      auto o = m->live_open.find(h.ino);
      if (o != m->live_open.end() && --o->second == 0) {
        m->live_open.erase(o);
        m->cache.Disable(h.ino);
        last = !m->lookups.Contains(h.ino) && m->orphans.count(h.ino) != 0;
      }
    }
  }
  if (h.snap) {
    if (last) {
      std::lock_guard<std::mutex> l(m->reclaim_mu);
      m->reclaim_kick = true;
      m->reclaim_cv.notify_all();
    }
    return Status::Ok();
  }
  if (!last) return Status::Ok();
  return m->MaybeDestroy(h.ino);
}

Status FileSystem::Impl::MaybeDestroy(std::span<const InodeId> inos) {
  if (opts.read_only) return Status::Ok();
  // Inodes whose last link went while they were in use: destroy them now.
  std::shared_lock<FairSharedMutex> vl(volume_mu);
  Status first = Status::Ok();
  for (size_t g = 0; g < inos.size(); g += kDestroyGroup) {
    const std::span<const InodeId> group = inos.subspan(g, std::min(kDestroyGroup, inos.size() - g));
    LockSet ls(this, group);
    std::vector<InodeId> unused;
    {
      std::lock_guard<std::mutex> l(handles_mu);
      for (InodeId ino : group) {
        if (InUseLocked(ino)) continue;  // referenced again meanwhile
        // No longer in use: no one can make it an orphan in use again but
        // a new decision, which takes its stripe and inserts it again.
        if (orphans.erase(ino) != 0) unused.push_back(ino);
      }
    }
    std::vector<std::pair<InodeId, InodeAttr>> dead;
    for (InodeId ino : unused) {
      InodeAttr a;
      if (LoadAttrAt(ino, live(), &a).ok() && a.nlink == 0) dead.emplace_back(ino, a);
    }
    Status s;
    if (!dead.empty()) {
      // One Txn and one commit for the group, DestroyOrphan's writes for
      // each; the Txn holds only other inodes' records when one is read.
      Txn txn(store.get());
      std::vector<Range> frees;
      for (const auto& [ino, known] : dead) {
        InodeAttr a = known;
        s = DestroyInode(&txn, ino, &a, &frees);
        if (!s.ok()) break;
        txn.Delete(Cf::kVolume, OrphanKey(ino));
      }
      if (s.ok()) {
        s = committer->Apply(&txn, frees, {});
      } else {
        // One of them cannot be destroyed: the others still are, each alone.
        s = Status::Ok();
        for (const auto& [ino, known] : dead) {
          Status o = DestroyOrphan(ino, &known);
          if (s.ok()) s = o;
        }
      }
    }
    if (first.ok()) first = s;
  }
  return first;
}

// Every commit applied and every image write completed before the call is
// durable when this returns Ok (Committer::SyncAll); with writeback caching
// the kernel has sent this file's dirty pages, and had them answered, before
// it sends FSYNC. fdatasync gets the same: the WAL sync it needs for the
// size is the one fsync pays for the times.
Status FileSystem::Fsync(uint64_t fh, bool datasync) {
  if (impl_->opts.read_only) return Status::Ok();
  return impl_->committer->SyncAll();
}

Status FileSystem::SyncAll() {
  if (impl_->opts.read_only) return Status::Ok();
  return impl_->committer->SyncAll();
}

Status FileSystem::Fallocate(uint64_t fh, int mode, uint64_t off, uint64_t len) {
  Impl* m = impl_.get();
  FileHandle h;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->files.find(fh);
    if (it == m->files.end()) return Status::BadFd();
    h = it->second;
  }
  if (h.snap || m->opts.read_only) return Status::ReadOnly();
  if (len == 0) return Status::Invalid();
  // The mode rules and their order are Linux's (vfs_fallocate, then ext4's
  // collapse/insert checks).
  constexpr int kShift = FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE;
  const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | kShift;
  if (mode & ~known) return Status::NotSupported();
  if ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE)) {
    return Status::NotSupported();
  }
  if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) return Status::NotSupported();
  if ((mode & FALLOC_FL_COLLAPSE_RANGE) && (mode & ~FALLOC_FL_COLLAPSE_RANGE)) {
    return Status::Invalid("collapse range takes no other flag");
  }
  if ((mode & FALLOC_FL_INSERT_RANGE) && (mode & ~FALLOC_FL_INSERT_RANGE)) {
    return Status::Invalid("insert range takes no other flag");
  }
  constexpr uint64_t kMaxSize = uint64_t{1} << 52;
  if (off + len < off || off + len > kMaxSize) return Status::TooBig();
  const uint64_t bs = m->bs;
  if ((mode & kShift) && ((off | len) % bs) != 0) {
    return Status::Invalid("collapse/insert range: offset and length must be block multiples");
  }
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  LockSet ls(m, {h.ino});
  Txn txn(m->store.get());
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, h.ino, m->live(), &a));
  if (!S_ISREG(a.mode)) return Status::NotSupported();
  std::vector<Range> frees, allocs;
  const uint64_t end = off + len;
  Status s;
  if (mode & kShift) {
    const bool collapse = mode & FALLOC_FL_COLLAPSE_RANGE;
    // ext4: a collapse reaching EOF would be a truncate; an insert must
    // start inside the file.
    if (collapse && end >= a.size) return Status::Invalid("collapse range reaches EOF");
    if (!collapse && len > kMaxSize - a.size) return Status::TooBig();
    if (!collapse && off >= a.size) return Status::Invalid("insert range starts at or past EOF");
    PSM_RETURN_IF_ERROR(m->ShiftBlocks(&txn, h.ino, &a, off / bs, len / bs, collapse, &frees));
    a.size = collapse ? a.size - len : a.size + len;
    a.mtime_ns = a.ctime_ns = NowNs();
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, h.ino, a));
    PSM_SYNC_POINT("FileSystem::Fallocate:ShiftBeforeCommit");
    return m->committer->Apply(&txn, frees, allocs);
  }
  if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
    // Zero the partial edge blocks (only where data exists), unmap the rest.
    uint64_t data_end = std::min<uint64_t>(end, a.size);
    uint64_t fb = (off + bs - 1) / bs, lb = end / bs;
    if (fb > lb) {  // inside one block
      if (off < data_end) {
        std::string z(data_end - off, '\0');
        s = m->WriteData(&txn, h.ino, &a, off, z.data(), z.size(), &frees, &allocs);
      }
    } else {
      if (off % bs && off < data_end) {
        std::string z(std::min<uint64_t>(fb * bs, data_end) - off, '\0');
        s = m->WriteData(&txn, h.ino, &a, off, z.data(), z.size(), &frees, &allocs);
      }
      if (s.ok() && end % bs && lb * bs < data_end) {
        std::string z(data_end - lb * bs, '\0');
        s = m->WriteData(&txn, h.ino, &a, lb * bs, z.data(), z.size(), &frees, &allocs);
      }
      if (s.ok()) s = m->UnmapBlocks(&txn, h.ino, &a, fb, lb, &frees);
    }
  } else {
    // Allocate unwritten blocks for the holes in [off, end).
    const uint64_t cb = m->chunk_blocks;
    uint64_t b = off / bs, b1 = (end + bs - 1) / bs;
    std::vector<Slot> map;
    BlockNo hint = 0;
    while (s.ok() && b < b1) {
      uint64_t idx = b / cb;
      s = LoadMap(m, &txn, h.ino, idx, m->live(), &map);
      if (!s.ok()) break;
      uint64_t hi = std::min(b1, (idx + 1) * cb);
      for (uint64_t k = b; k < hi && s.ok();) {
        Slot& sl = map[k - idx * cb];
        if (sl.p) {
          hint = sl.p + 1;
          ++k;
          continue;
        }
        uint64_t j = k;
        while (j < hi && !map[j - idx * cb].p) ++j;
        auto r = m->AllocateBlocks(&txn, j - k, hint, &allocs);
        if (!r.ok()) {
          s = r.status();
          break;
        }
        for (uint64_t t = 0; t < r->len; ++t) {
          map[k + t - idx * cb] = Slot{r->start + t, m->live(), kExtentUnwritten};
        }
        a.blocks += r->len;
        hint = r->end();
        k += r->len;
      }
      if (s.ok()) s = StoreMap(m, &txn, h.ino, idx, map);
      b = hi;
    }
  }
  if (s.ok() && !(mode & FALLOC_FL_KEEP_SIZE) && end > a.size) a.size = end;
  if (s.ok()) {
    a.ctime_ns = NowNs();
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) a.mtime_ns = a.ctime_ns;
    s = m->PutAttr(&txn, h.ino, a);
  }
  if (!s.ok()) {
    for (const Range& r : allocs) m->alloc->Abort(r);
    return s;
  }
  return m->committer->Apply(&txn, frees, allocs);
}

Result<uint64_t> FileSystem::Lseek(uint64_t fh, uint64_t off, int whence) {
  Impl* m = impl_.get();
  FileHandle h;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->files.find(fh);
    if (it == m->files.end()) return Status::BadFd();
    h = it->second;
  }
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return Status::Invalid();
  Epoch e = h.snap ? h.epoch : m->live();
  std::optional<LockSet> ls;
  if (!h.snap) ls.emplace(m, std::initializer_list<InodeId>{h.ino}, false);
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttrAt(h.ino, e, &a));
  if (off >= a.size) return Status::NoData();
  const uint64_t bs = m->bs, cb = m->chunk_blocks;
  uint64_t nblocks = (a.size + bs - 1) / bs;
  uint64_t b = off / bs;
  std::vector<Slot> map;
  uint64_t loaded = UINT64_MAX;
  // Skip absent chunks quickly using the chunk index.
  while (b < nblocks) {
    uint64_t idx = b / cb;
    if (idx != loaded) {
      std::vector<uint64_t> idxs;
      PSM_RETURN_IF_ERROR(ChunkIndices(m, nullptr, h.ino, e, idx, idx + 1, &idxs));
      if (idxs.empty()) {
        if (whence == SEEK_HOLE) return std::max(off, b * bs);
        std::vector<uint64_t> next;
        PSM_RETURN_IF_ERROR(ChunkIndices(m, nullptr, h.ino, e, idx + 1, (nblocks + cb - 1) / cb,
                                         &next));
        if (next.empty()) return Status::NoData();
        b = next.front() * cb;
        continue;
      }
      PSM_RETURN_IF_ERROR(LoadMap(m, nullptr, h.ino, idx, e, &map));
      loaded = idx;
    }
    const Slot& sl = map[b % cb];
    bool data = sl.p && !(sl.flags & kExtentUnwritten);
    if (whence == SEEK_DATA && data) return std::max(off, b * bs);
    if (whence == SEEK_HOLE && !data) return std::max(off, b * bs);
    ++b;
  }
  if (whence == SEEK_HOLE) return a.size;
  return Status::NoData();
}

}  // namespace psm
