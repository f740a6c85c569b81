// Write intents: overwrites in place on a checksummed volume
// (docs/integrity.md, "Overwrites in place").
//
// An overwrite in place puts new bytes where a durable checksum describes
// the old ones; the kernel may write those bytes to the disk at any moment
// after pwrite, long before the new checksum is durable. So before the
// first overwrite in place in a region of 2^kIntentShift blocks, a record
// "intent/REGION" is made durable (a commit and a sync); after an unclean
// shutdown every block of such a region that can have been overwritten in
// place (born at the live epoch, not dead) gets the checksum of the bytes
// the disk holds (RecoverIntents), so a cut between the bytes and their
// checksum reads the old or the new bytes, never a false checksum error.
// The record goes once the region's overwrites are durable and it has been
// idle for a while (DropIdle, from the committer's tick), so a crash
// re-checks only the regions written in the last seconds. dm-integrity's
// bitmap mode and md's write-intent bitmap make the same trade.
#include <algorithm>
#include <chrono>

#include "fs/base/log.h"
#include "fs/core/fs_impl.h"

namespace psm {
namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string IntentKey(uint64_t region) {
  std::string k(kIntentPrefix);
  PutBE64(&k, region);
  return k;
}

Status IntentMap::Begin(const std::vector<uint64_t>& regions) {
  std::vector<uint64_t> mine;  // regions whose record this call writes
  std::unique_lock<std::mutex> l(mu_);
  if (!failure_.ok()) return failure_;
  for (uint64_t r : regions) {
    auto [it, inserted] = regions_.try_emplace(r);
    if (inserted) mine.push_back(r);
    ++it->second.inflight;  // keeps DropIdle away
  }
  if (!mine.empty()) {
    // The other regions of a new region's group come with it, in the same
    // commit and sync: writes at random over a file meet them soon, and
    // each would cost a sync cycle of its own (an image sync while the
    // kernel writes back). Unused, they go at the next DropIdle.
    const size_t n = mine.size();
    const int64_t now = SteadyNs();
    for (size_t i = 0; i < n; ++i) {
      const uint64_t g = mine[i] & ~uint64_t{kIntentGroup - 1};
      for (uint64_t r = g; r < std::min(g + kIntentGroup, image_regions_); ++r) {
        auto [it, inserted] = regions_.try_emplace(r);
        if (inserted) {
          mine.push_back(r);
          it->second.last_ns = now;
        }
      }
    }
  }
  auto undo = [&] {
    for (uint64_t r : regions) --regions_[r].inflight;
  };
  if (!mine.empty()) {
    l.unlock();
    Txn txn(store_);
    for (uint64_t r : mine) txn.Put(Cf::kVolume, IntentKey(r), "");
    Status s = committer_->Apply(&txn, {}, {});
    if (s.ok()) s = committer_->SyncAll();
    l.lock();
    if (s.ok()) {
      for (uint64_t r : mine) regions_[r].durable = true;
    } else if (failure_.ok()) {
      // The volume has failed (Apply and SyncAll fail only then): no
      // overwrite in place goes on.
      failure_ = s;
    }
    cv_.notify_all();
  }
  // Regions another write is making durable.
  cv_.wait(l, [&] {
    if (!failure_.ok()) return true;
    for (uint64_t r : regions) {
      if (!regions_[r].durable) return false;
    }
    return true;
  });
  if (!failure_.ok()) {
    undo();
    return failure_;
  }
  return Status::Ok();
}

void IntentMap::End(const std::vector<uint64_t>& regions, uint64_t gen, uint64_t writes) {
  const int64_t now = SteadyNs();
  std::lock_guard<std::mutex> l(mu_);
  for (uint64_t r : regions) {
    Region& g = regions_[r];
    --g.inflight;
    g.gen = std::max(g.gen, gen);
    g.writes = std::max(g.writes, writes);
    g.last_ns = now;
  }
}

void IntentMap::DropIdle(int64_t idle_ns) {
  uint64_t dseq = 0, dwrites = 0;
  committer_->Durable(&dseq, &dwrites);
  // The overwrites' checksums are durable once the commit of their
  // generation is.
  const uint64_t dgen = pending_->DurableGen(dseq);
  const int64_t now = SteadyNs();
  // Under mu_ to the commit: a Begin that finds the region gone writes its
  // record after this delete, never before it.
  std::lock_guard<std::mutex> l(mu_);
  std::vector<uint64_t> gone;
  for (const auto& [r, g] : regions_) {
    if (g.durable && g.inflight == 0 && g.gen <= dgen && g.writes <= dwrites &&
        now - g.last_ns >= idle_ns) {
      gone.push_back(r);
    }
  }
  if (gone.empty()) return;
  Txn txn(store_);
  for (uint64_t r : gone) txn.Delete(Cf::kVolume, IntentKey(r));
  // Durable with the next cycle; lost in a crash, the region is only
  // checked once more at the next mount.
  if (!committer_->Apply(&txn, {}, {}).ok()) return;
  for (uint64_t r : gone) regions_.erase(r);
}

size_t IntentMap::size() {
  std::lock_guard<std::mutex> l(mu_);
  return regions_.size();
}

Status FileSystem::Impl::RecoverIntents() {
  std::vector<uint64_t> regions;
  {
    auto it = store->NewIterator(Cf::kVolume);
    PSM_RETURN_IF_ERROR(
        ForEachPrefix(it.get(), kIntentPrefix, [&](std::string_view k, std::string_view) {
          if (k.size() == kIntentPrefix.size() + 8) {
            regions.push_back(GetBE64(k.data() + kIntentPrefix.size()));
          }
          return true;
        }));
  }
  if (regions.empty()) return Status::Ok();
  if (opts.read_only) {
    unrecovered_regions.insert(regions.begin(), regions.end());
    PSM_LOG(kLogWarning,
            "volume %s: %zu regions were being overwritten in place when the volume last "
            "stopped uncleanly; read-only, their checksums cannot be recomputed: a block there "
            "that fails its checksum is served as the disk holds it until a read-write mount",
            sb.uuid.c_str(), regions.size());
    return Status::Ok();
  }
  const Epoch e = live();
  uint64_t looked = 0, changed = 0, copied = 0;
  Txn txn(store.get());
  ChecksumWriter csums(&txn, pending_csums.get());
  std::string data, other;
  for (uint64_t r : regions) {
    const BlockNo lo = std::max<BlockNo>(1, r << kIntentShift);
    const BlockNo hi = std::min<BlockNo>(sb.block_count, (r + 1) << kIntentShift);
    if (lo >= hi) continue;
    // The ranges of the region that can have been overwritten in place:
    // born at the live epoch and not dead.
    std::vector<Range> cand;
    PSM_RETURN_IF_ERROR(AllocatedIn(store.get(), lo, hi, &cand, [e](const AllocRec& rec) {
      return rec.birth == e && rec.death == 0;
    }));
    for (const Range& c : cand) {
      const std::vector<int> sides = mirror->ReadableSides(c.start * bs, c.len * bs);
      if (sides.empty()) {
        return Status::IOError("no copy of the image can serve blocks " +
                               std::to_string(c.start) + ".." + std::to_string(c.end() - 1));
      }
      data.resize(c.len * bs);
      // The first readable side is the truth: any other gets its bytes.
      PSM_RETURN_IF_ERROR(mirror->ReadSide(sides[0], c.start * bs, data.data(), data.size()));
      std::vector<std::optional<uint32_t>> want;
      PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), c.start, c.len, &want, pending_csums.get()));
      for (uint64_t k = 0; k < c.len; ++k) {
        if (!want[k]) continue;  // never checksummed: never overwritten in place
        ++looked;
        const uint32_t crc = BlockCrc(data.data() + k * bs, bs);
        if (crc != *want[k]) {
          csums.Add(c.start + k, crc);
          ++changed;
        }
      }
      for (size_t i = 1; i < sides.size(); ++i) {
        other.resize(data.size());
        const bool readable = mirror->ReadSide(sides[i], c.start * bs, other.data(), other.size()).ok();
        for (uint64_t k = 0; k < c.len; ++k) {
          if (readable && other.compare(k * bs, bs, data, k * bs, bs) == 0) continue;
          PSM_RETURN_IF_ERROR(
              mirror->RepairSide(sides[i], (c.start + k) * bs, data.data() + k * bs, bs));
          ++copied;
        }
      }
    }
  }
  csums.Finish();
  for (uint64_t r : regions) txn.Delete(Cf::kVolume, IntentKey(r));
  // The bytes the checksums now describe are durable before the checksums
  // are (and a mirror holds them).
  PSM_RETURN_IF_ERROR(dev->Sync());
  PSM_RETURN_IF_ERROR(committer->Apply(&txn, {}, {}));
  PSM_RETURN_IF_ERROR(committer->SyncAll());
  intent_recovered_blocks = changed;
  Logf(changed || copied ? kLogWarning : kLogInfo,
          "volume %s: unclean shutdown during overwrites in place: %llu blocks of %zu regions "
          "checked, %llu re-checksummed (their new bytes reached the disk before their "
          "checksums), %llu copied to the mirror",
          sb.uuid.c_str(), static_cast<unsigned long long>(looked), regions.size(),
          static_cast<unsigned long long>(changed), static_cast<unsigned long long>(copied));
  return Status::Ok();
}

}  // namespace psm
