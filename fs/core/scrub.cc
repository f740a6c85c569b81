// Scrub: reads every allocated block of the image once, walking `alloc` in
// physical order, and verifies each against its checksum (docs/integrity.md).
//
// Safety against everything that runs meanwhile (writes, snapshot create,
// delete and reclaim, restore, the free-space scanner): each step holds the
// allocator's releases (Allocator::HoldReleases) while it reads the `alloc`
// records of its window, the blocks and their checksums. With checksums on
// no block is ever overwritten in place, so a block's bytes change only
// when it is allocated again, and that needs a release: a block that was
// allocated when the step read `alloc` keeps, for the whole step, the bytes
// its checksum describes — even if a snapshot deletion frees it meanwhile
// (the block then stays quarantined). A mismatch is reported only if the
// block is still allocated after the read; its owners are then found from
// the chunk records of the live tree and the active snapshots, with no
// core lock (RocksDB reads only; a snapshot deleted meanwhile is simply
// not named).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

constexpr uint64_t kStepBlocks = 1024;      // blocks per step (4 MiB at 4 KiB)
constexpr uint64_t kSaveEverySteps = 64;    // cursor stored every 64 steps
// The allocated blocks this far ahead of the step being read are asked of
// the device in advance (BlockDevice::WillNeed): the image's reads overlap
// the checksum work, and keep the disk busy as a sequential reader (dd)
// does with the kernel's read-ahead. Without it each step's read waited
// for the disk and the disk waited for the step (a cold scrub ran at a
// third to a half of dd's rate).
constexpr uint64_t kAheadBlocks = 4 * kStepBlocks;
enum : uint64_t { kStateRunning = 1, kStateFinished = 2, kStateStopped = 3 };

const char* StateName(uint64_t s) {
  switch (s) {
    case kStateRunning: return "running";
    case kStateFinished: return "finished";
    case kStateStopped: return "stopped";
  }
  return "";
}

uint64_t StateCode(const std::string& s) {
  if (s == "running") return kStateRunning;
  if (s == "finished") return kStateFinished;
  if (s == "stopped") return kStateStopped;
  return 0;
}

std::string BadKey(BlockNo b) {
  std::string k(kScrubBadPrefix);
  PutBE64(&k, b);
  return k;
}

}  // namespace

Status AllocatedIn(Store* store, BlockNo lo, BlockNo hi, std::vector<Range>* out,
                   const std::function<bool(const AllocRec&)>& keep) {
  out->clear();
  auto it = store->NewIterator(Cf::kAlloc);
  it->SeekForPrev(AllocKey(lo));
  if (!it->Valid()) it->Seek(AllocKey(lo));
  for (; it->Valid(); it->Next()) {
    const BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    if (s >= hi) break;
    AllocRec rec;
    PSM_RETURN_IF_ERROR(
        DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &rec));
    const BlockNo a = std::max(s, lo), b = std::min(s + rec.length, hi);
    if (a < b && (!keep || keep(rec))) out->push_back(Range{a, b - a});
  }
  return Status::FromRocks(it->status());
}

Status FileSystem::Impl::SaveScrub(const ScrubStatus& st, bool damage) {
  Txn txn(store.get());
  std::string v;
  for (uint64_t x : {StateCode(st.state), st.cursor, st.end, st.checked_blocks,
                     st.unverified_blocks, st.damaged_blocks, static_cast<uint64_t>(st.started_ns),
                     static_cast<uint64_t>(st.finished_ns),
                     static_cast<uint64_t>(st.rate_mb_s * 1024), st.repaired_blocks,
                     static_cast<uint64_t>(st.rewrite), st.rewritten_blocks}) {
    PutLE64(&v, x);
  }
  txn.Put(Cf::kVolume, kVolScrub, v);
  if (damage) {
    for (const ScrubDamage& d : st.damage) {
      std::string paths;
      for (const std::string& p : d.paths) paths += (paths.empty() ? "" : "\n") + p;
      txn.Put(Cf::kVolume, BadKey(d.block), paths);
    }
  }
  return txn.Commit();
}

Status FileSystem::Impl::LoadScrub() {
  std::string v;
  Status s = store->Get(Cf::kVolume, kVolScrub, &v);
  if (s.Is(Code::kNotFound)) return Status::Ok();
  PSM_RETURN_IF_ERROR(s);
  if (v.size() < 9 * 8) return Status::Corruption("bad scrub record");
  ScrubStatus st;
  auto at = [&](int i) { return GetLE64(v.data() + 8 * i); };
  st.state = StateName(at(0));
  st.cursor = at(1);
  st.end = at(2);
  st.checked_blocks = at(3);
  st.unverified_blocks = at(4);
  st.damaged_blocks = at(5);
  st.started_ns = static_cast<int64_t>(at(6));
  st.finished_ns = static_cast<int64_t>(at(7));
  st.rate_mb_s = static_cast<double>(at(8)) / 1024;
  if (v.size() >= 10 * 8) st.repaired_blocks = at(9);  // since the mirror
  if (v.size() >= 12 * 8) {                             // since --rewrite
    st.rewrite = at(10) != 0;
    st.rewritten_blocks = at(11);
  }
  auto it = store->NewIterator(Cf::kVolume);
  PSM_RETURN_IF_ERROR(ForEachPrefix(it.get(), kScrubBadPrefix,
                                    [&](std::string_view k, std::string_view val) {
                                      ScrubDamage d;
                                      d.block = GetBE64(k.data() + kScrubBadPrefix.size());
                                      size_t pos = 0;
                                      while (pos < val.size()) {
                                        size_t nl = val.find('\n', pos);
                                        if (nl == std::string_view::npos) nl = val.size();
                                        d.paths.emplace_back(val.substr(pos, nl - pos));
                                        pos = nl + 1;
                                      }
                                      st.damage.push_back(std::move(d));
                                      return true;
                                    }));
  const bool resume = st.state == "running" && !opts.read_only && checksums;
  {
    std::lock_guard<std::mutex> l(scrub_mu);
    scrub = std::move(st);
    scrub_stop = false;
  }
  if (resume) {
    PSM_LOG(kLogNotice, "volume %s: resuming the scrub that was running", sb.uuid.c_str());
    scrub_thread = std::thread([this] { ScrubLoop(); });
  }
  return Status::Ok();
}

void FileSystem::Impl::ShutdownScrub() {
  std::lock_guard<std::mutex> ctl(scrub_ctl_mu);
  scrub_shut = true;
  {
    std::lock_guard<std::mutex> l(scrub_mu);
    scrub_stop = true;
  }
  scrub_cv.notify_all();
  if (scrub_thread.joinable()) scrub_thread.join();
}

Status FileSystem::Impl::BlockPaths(const std::vector<BlockNo>& blocks,
                                    std::map<BlockNo, std::vector<std::string>>* out) {
  // The trees: the live one and every active snapshot.
  std::vector<Epoch> trees{live()};
  {
    std::lock_guard<std::mutex> l(snaps_mu);
    for (const auto& [id, e] : snaps) {
      if (e.rec.state == SnapState::kActive && !e.reclaiming) trees.push_back(e.rec.epoch);
    }
  }
  std::sort(trees.begin(), trees.end());
  // Owners: (ino, tree epoch) -> file block, from each chunk record version
  // a tree reads (the newest version <= its epoch).
  std::map<std::pair<InodeId, Epoch>, std::vector<std::pair<BlockNo, uint64_t>>> owners;
  auto it = store->NewIterator(Cf::kChunks);
  std::string group;
  std::vector<std::pair<Epoch, std::string>> versions;  // newest first
  auto decide = [&]() -> Status {
    if (versions.empty()) return Status::Ok();
    InodeId ino;
    uint64_t idx;
    ParseChunkKey(VersionKey(group, 0), &ino, &idx);
    for (Epoch e : trees) {
      auto v = std::find_if(versions.begin(), versions.end(),
                            [&](const auto& x) { return x.first <= e; });
      if (v == versions.end() || v->second.empty() || v->second[0] != kTagValue) continue;
      std::vector<Extent> ext;
      PSM_RETURN_IF_ERROR(DecodeExtents(std::string_view(v->second).substr(1), &ext));
      for (const Extent& x : ext) {
        if (x.flags & kExtentUnwritten) continue;
        auto b = std::lower_bound(blocks.begin(), blocks.end(), x.pblock);
        for (; b != blocks.end() && *b < x.pblock + x.len; ++b) {
          owners[{ino, e}].emplace_back(*b, idx * chunk_blocks + x.off + (*b - x.pblock));
        }
      }
    }
    versions.clear();
    return Status::Ok();
  };
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 24) continue;
    std::string_view prefix = KeyPrefix(k);
    if (prefix != group) {
      PSM_RETURN_IF_ERROR(decide());
      group.assign(prefix);
    }
    versions.emplace_back(KeyEpoch(k), std::string(it->value().data(), it->value().size()));
  }
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  PSM_RETURN_IF_ERROR(decide());
  for (const auto& [who, hits] : owners) {
    std::vector<std::string> paths;
    if (!PathsOf(who.first, who.second, &paths).ok()) continue;  // a snapshot just deleted
    for (const auto& [b, fblock] : hits) {
      for (const std::string& p : paths) {
        (*out)[b].push_back(p + " (offset " + std::to_string(fblock * bs) + ")");
      }
    }
  }
  return Status::Ok();
}

void FileSystem::Impl::ScrubLoop() {
  ScrubStatus st;
  {
    std::lock_guard<std::mutex> l(scrub_mu);
    st = scrub;
  }
  const BlockNo end = sb.block_count;
  std::vector<Range> used;
  std::vector<std::optional<uint32_t>> want;
  std::string buf;
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t bytes_read = 0;
  uint64_t steps = 0;
  BlockNo c = std::max<BlockNo>(st.cursor, 1);
  BlockNo hinted = c;  // [c, hinted) was asked for ahead
  std::vector<Range> ahead;
  Status failed;
  while (c < end) {
    {
      std::lock_guard<std::mutex> l(scrub_mu);
      if (scrub_stop) break;
    }
    const BlockNo hi = std::min<BlockNo>(end, c + kStepBlocks);
    // Only a hint: what is allocated now, read later under the step's hold
    // (a range freed meanwhile was read for nothing).
    const BlockNo horizon = std::min<BlockNo>(end, hi + kAheadBlocks);
    if (hinted < horizon && AllocatedIn(store.get(), std::max(hinted, c), horizon, &ahead).ok()) {
      for (const Range& r : ahead) dev->WillNeed(r.start * bs, r.len * bs);
      hinted = horizon;
    }
    std::vector<BlockNo> bad;
    uint64_t checked = 0, unverified = 0, rewritten = 0;
    {
      ReleaseHold hold(alloc.get());
      std::vector<BlockNo> rewrite;  // --rewrite: blocks without a checksum, copies agreeing
      Status s = AllocatedIn(store.get(), c, hi, &used);
      for (size_t i = 0; s.ok() && i < used.size(); ++i) {
        const Range& r = used[i];
        if (mirror->mirrored() && mirror->ReadableSides(r.start * bs, r.len * bs).size() > 1) {
          // Both copies, each verified; one bad copy is rewritten from the
          // other (fs_mirror.cc).
          uint64_t repaired = 0;
          PSM_SYNC_POINT("Scrub::AfterBlockRead");
          s = ScrubMirroredRange(r, &bad, &checked, &unverified, &repaired,
                                 st.rewrite ? &rewrite : nullptr);
          bytes_read += 2 * r.len * bs;
          st.repaired_blocks += repaired;
          continue;
        }
        buf.resize(r.len * bs);
        s = dev->Read(r.start * bs, buf.data(), buf.size());
        std::vector<bool> unreadable;
        if (s.Is(Code::kIOError)) {
          // A bad sector: block by block, and a block that cannot be read
          // is damaged as one that fails its checksum.
          unreadable.assign(r.len, false);
          s = Status::Ok();
          for (uint64_t k = 0; k < r.len; ++k) {
            if (!dev->Read((r.start + k) * bs, buf.data() + k * bs, bs).ok()) unreadable[k] = true;
          }
        }
        // Tests free the blocks just read here (a snapshot deleted and
        // reclaimed) and write so as to reuse them: the hold must keep
        // them from being rewritten before their checksums are read.
        PSM_SYNC_POINT("Scrub::AfterBlockRead");
        if (s.ok()) s = LoadChecksums(store.get(), r.start, r.len, &want, pending_csums.get());
        if (!s.ok()) break;
        bytes_read += buf.size();
        for (uint64_t k = 0; k < r.len; ++k) {
          if (!unreadable.empty() && unreadable[k]) {
            ++checked;
            bad.push_back(r.start + k);
          } else if (!want[k] && st.rewrite) {
            // --rewrite: the block gets the checksum of its bytes
            // (RewriteChecksums, below, under the hold).
            rewrite.push_back(r.start + k);
          } else if (!want[k]) {
            ++unverified;
          } else {
            ++checked;
            if (*want[k] != BlockCrc(buf.data() + k * bs, bs)) {
              // Read again under the block's stripe: an overwrite in place
              // may have run between the read and the checksum's lookup.
              auto again = RecheckBlocks(r.start + k, 1, buf.data() + k * bs);
              if (!again.ok()) {
                s = again.status();
                break;
              }
              if (*again == 0) bad.push_back(r.start + k);
            }
          }
        }
      }
      if (s.ok() && !rewrite.empty()) s = RewriteChecksums(rewrite, &rewritten, &unverified);
      if (s.ok() && !bad.empty()) {
        // Only blocks still in use are damage worth a report.
        std::vector<BlockNo> still;
        for (BlockNo b : bad) {
          s = AllocatedIn(store.get(), b, b + 1, &used);
          if (!s.ok()) break;
          if (!used.empty()) still.push_back(b);
        }
        bad.swap(still);
      }
      if (!s.ok()) {
        failed = s;
        break;
      }
    }
    std::map<BlockNo, std::vector<std::string>> paths;
    if (!bad.empty()) {
      checksum_errors.fetch_add(bad.size());
      Status s = BlockPaths(bad, &paths);
      if (!s.ok()) PSM_LOG(kLogWarning, "scrub: cannot name the owners: %s", s.ToString().c_str());
    }
    st.checked_blocks += checked;
    st.unverified_blocks += unverified;
    st.rewritten_blocks += rewritten;
    for (BlockNo b : bad) {
      ScrubDamage d{b, paths[b]};
      std::string list;
      for (const std::string& p : d.paths) list += (list.empty() ? "" : ", ") + p;
      PSM_LOG(kLogError, "volume %s: scrub: physical block %llu fails its checksum: %s",
              sb.uuid.c_str(), static_cast<unsigned long long>(b),
              list.empty() ? "(no path names it now)" : list.c_str());
      st.damage.push_back(std::move(d));
      st.damaged_blocks++;
    }
    c = hi;
    st.cursor = c;
    {
      std::lock_guard<std::mutex> l(scrub_mu);
      scrub.cursor = st.cursor;
      scrub.checked_blocks = st.checked_blocks;
      scrub.unverified_blocks = st.unverified_blocks;
      scrub.damaged_blocks = st.damaged_blocks;
      scrub.repaired_blocks = st.repaired_blocks;
      scrub.rewritten_blocks = st.rewritten_blocks;
      scrub.damage = st.damage;
    }
    if (++steps % kSaveEverySteps == 0 || !bad.empty()) (void)SaveScrub(st, !bad.empty());
    if (st.rate_mb_s > 0) {
      // Sleep until the bytes read fit the rate.
      const double due = static_cast<double>(bytes_read) / (st.rate_mb_s * 1048576.0);
      std::unique_lock<std::mutex> l(scrub_mu);
      scrub_cv.wait_until(l, t0 + std::chrono::duration<double>(due), [&] { return scrub_stop; });
    }
  }
  {
    std::lock_guard<std::mutex> l(scrub_mu);
    if (c >= end || !failed.ok()) {
      st.state = c >= end ? "finished" : "stopped";
      st.finished_ns = NowNs();
    } else if (scrub.state == "stopped") {
      st.state = "stopped";  // StopScrub
      st.finished_ns = NowNs();
    }  // else: unmount; stays "running" and resumes at the next mount
    scrub.state = st.state;
    scrub.finished_ns = st.finished_ns;
  }
  if (!failed.ok()) {
    PSM_LOG(kLogError, "volume %s: scrub stopped at block %llu: %s", sb.uuid.c_str(),
            static_cast<unsigned long long>(c), failed.ToString().c_str());
  } else if (st.state == "finished") {
    PSM_LOG(kLogNotice, "volume %s: scrub finished: %llu blocks verified, %llu damaged",
            sb.uuid.c_str(), static_cast<unsigned long long>(st.checked_blocks),
            static_cast<unsigned long long>(st.damaged_blocks));
  }
  (void)SaveScrub(st, false);
  scrub_cv.notify_all();
}

Status FileSystem::StartScrub(double rate_mb_s, bool rewrite) {
  Impl* m = impl_.get();
  if (m->opts.read_only) return Status::ReadOnly();
  if (!m->checksums) {
    return Status::NotSupported("this volume keeps no checksums (made with --checksum=off)");
  }
  if (rate_mb_s < 0) return Status::Invalid("the scrub rate must not be negative");
  std::lock_guard<std::mutex> ctl(m->scrub_ctl_mu);
  if (m->scrub_shut) return Status::Busy("the volume is being unmounted");
  std::unique_lock<std::mutex> l(m->scrub_mu);
  if (m->scrub.state == "running") return Status::Busy("a scrub is already running");
  if (m->scrub_thread.joinable()) {
    l.unlock();
    m->scrub_thread.join();
    l.lock();
  }
  // Forget the last scrub's damage list.
  std::vector<uint64_t> old;
  for (const ScrubDamage& d : m->scrub.damage) old.push_back(d.block);
  ScrubStatus st;
  st.state = "running";
  st.cursor = 1;
  st.end = m->sb.block_count;
  st.started_ns = NowNs();
  st.rate_mb_s = rate_mb_s;
  st.rewrite = rewrite;
  m->scrub = st;
  m->scrub_stop = false;
  l.unlock();
  {
    Txn txn(m->store.get());
    for (uint64_t b : old) txn.Delete(Cf::kVolume, BadKey(b));
    PSM_RETURN_IF_ERROR(txn.Commit());
  }
  PSM_RETURN_IF_ERROR(m->SaveScrub(st, false));
  PSM_LOG(kLogNotice, "volume %s: scrub started", m->sb.uuid.c_str());
  m->scrub_thread = std::thread([m] { m->ScrubLoop(); });
  return Status::Ok();
}

Status FileSystem::StopScrub() {
  Impl* m = impl_.get();
  std::lock_guard<std::mutex> ctl(m->scrub_ctl_mu);
  {
    std::lock_guard<std::mutex> l(m->scrub_mu);
    if (m->scrub.state != "running") return Status::NotFound("no scrub is running");
    m->scrub.state = "stopped";
    m->scrub_stop = true;
  }
  m->scrub_cv.notify_all();
  if (m->scrub_thread.joinable()) m->scrub_thread.join();
  return Status::Ok();
}

ScrubStatus FileSystem::GetScrubStatus() {
  Impl* m = impl_.get();
  std::lock_guard<std::mutex> l(m->scrub_mu);
  ScrubStatus s = m->scrub;
  if (s.end == 0) s.end = m->sb.block_count;
  return s;
}

bool FileSystem::WaitScrub(double timeout_sec) {
  Impl* m = impl_.get();
  std::unique_lock<std::mutex> l(m->scrub_mu);
  return m->scrub_cv.wait_for(l, std::chrono::duration<double>(timeout_sec),
                              [&] { return m->scrub.state != "running"; });
}

}  // namespace psm
