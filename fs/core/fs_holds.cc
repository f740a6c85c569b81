// Snapshot holds and volume properties (filesystem.h, "file-server
// features").
//
// A hold is a key `hold/<id><tag>` in the volume column family plus the
// count in the snapshot record (SnapshotRec::holds), written in one Txn.
// DeleteSnapshot refuses a snapshot whose count is not zero. Hold and
// release take volume_mu exclusively, DeleteSnapshot takes it shared: a
// hold and a delete of the same snapshot never interleave.
#include <algorithm>

#include "fs/core/fs_impl.h"

namespace psm {
namespace {

using Impl = FileSystem::Impl;

constexpr size_t kMaxTag = 128;
constexpr size_t kMaxPropertyName = 64;
constexpr size_t kMaxPropertyValue = 64 * 1024;

Status ValidateTag(std::string_view tag) {
  if (tag.empty()) return Status::Invalid("hold tag is empty");
  if (tag.size() > kMaxTag) return Status::Invalid("hold tag longer than 128 bytes");
  for (unsigned char c : tag) {
    if (c < 0x20 || c == 0x7f) return Status::Invalid("hold tag contains a control character");
  }
  return Status::Ok();
}

// REQUIRES volume_mu held. The active snapshot called `name`.
Status FindActive(Impl* m, std::string_view name, SnapshotId* id, SnapshotRec* rec) {
  std::lock_guard<std::mutex> l(m->snaps_mu);
  for (const auto& [sid, s] : m->snaps) {
    if (s.rec.state == SnapState::kActive && s.rec.name == name) {
      *id = sid;
      *rec = s.rec;
      return Status::Ok();
    }
  }
  return Status::NotFound("no snapshot named '" + std::string(name) + "'");
}

std::string LE64(uint64_t v) {
  std::string s;
  PutLE64(&s, v);
  return s;
}

// Adds (delta = +1) or removes (-1) hold `tag` on snapshot `name`.
Status ChangeHold(Impl* m, std::string_view name, std::string_view tag, int delta) {
  PSM_RETURN_IF_ERROR(ValidateTag(tag));
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  {
    std::unique_lock<FairSharedMutex> vl(m->volume_mu);
    SnapshotId id = 0;
    SnapshotRec rec;
    PSM_RETURN_IF_ERROR(FindActive(m, name, &id, &rec));
    Txn txn(m->store.get());
    const std::string key = HoldKey(id, tag);
    std::string v;
    Status g = txn.Get(Cf::kVolume, key, &v);
    if (!g.ok() && !g.Is(Code::kNotFound)) return g;
    if (delta > 0) {
      if (g.ok()) {
        return Status::Exists("snapshot '" + std::string(name) + "' already has the hold '" +
                              std::string(tag) + "'");
      }
      rec.holds++;
      txn.Put(Cf::kVolume, key, LE64(static_cast<uint64_t>(NowNs())));
    } else {
      if (!g.ok()) {
        return Status::NotFound("snapshot '" + std::string(name) + "' has no hold '" +
                                std::string(tag) + "'");
      }
      if (rec.holds) rec.holds--;
      txn.Delete(Cf::kVolume, key);
    }
    txn.Put(Cf::kSnapshots, SnapshotKey(id), EncodeSnapshot(rec));
    PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, {}, {}));
    std::lock_guard<std::mutex> l(m->snaps_mu);
    auto it = m->snaps.find(id);
    if (it != m->snaps.end()) it->second.rec.holds = rec.holds;
  }
  return m->committer->SyncAll();
}

}  // namespace

Status FileSystem::HoldSnapshot(std::string_view name, std::string_view tag) {
  return ChangeHold(impl_.get(), name, tag, +1);
}

Status FileSystem::ReleaseSnapshot(std::string_view name, std::string_view tag) {
  return ChangeHold(impl_.get(), name, tag, -1);
}

std::vector<SnapshotHold> FileSystem::ListHolds() {
  Impl* m = impl_.get();
  std::map<SnapshotId, std::string> names;
  {
    std::lock_guard<std::mutex> l(m->snaps_mu);
    for (const auto& [id, s] : m->snaps) names[id] = s.rec.name;
  }
  std::vector<SnapshotHold> out;
  auto it = m->store->NewIterator(Cf::kVolume);
  (void)ForEachPrefix(it.get(), kHoldPrefix, [&](std::string_view k, std::string_view v) {
    SnapshotId id;
    std::string_view tag;
    if (!ParseHoldKey(k, &id, &tag)) return true;
    auto n = names.find(id);
    if (n == names.end()) return true;
    SnapshotHold h;
    h.snapshot = n->second;
    h.tag.assign(tag);
    if (v.size() >= 8) h.since_ns = static_cast<int64_t>(GetLE64(v.data()));
    out.push_back(std::move(h));
    return true;
  });
  return out;  // key order: snapshot id (creation order), then tag
}

std::string FileSystem::Impl::HoldTags(SnapshotId id) {
  std::string out;
  auto it = store->NewIterator(Cf::kVolume);
  (void)ForEachPrefix(it.get(), HoldSnapshotPrefix(id), [&](std::string_view k, std::string_view) {
    SnapshotId sid;
    std::string_view tag;
    if (ParseHoldKey(k, &sid, &tag)) {
      out += (out.empty() ? "hold '" : ", hold '") + std::string(tag) + "'";
    }
    return true;
  });
  return out.empty() ? "a hold" : out;
}

Result<std::string> FileSystem::GetProperty(std::string_view name) {
  std::string v;
  Status s = impl_->store->Get(Cf::kVolume, PropertyKey(name), &v);
  if (s.Is(Code::kNotFound)) {
    return Status::NotFound("volume property '" + std::string(name) + "' is not set");
  }
  PSM_RETURN_IF_ERROR(s);
  return v;
}

Status FileSystem::SetProperty(std::string_view name, std::string_view value) {
  Impl* m = impl_.get();
  if (name.empty() || name.size() > kMaxPropertyName) {
    return Status::Invalid("property name must be 1..64 bytes");
  }
  if (value.size() > kMaxPropertyValue) return Status::Invalid("property value too large");
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  Txn txn(m->store.get());
  if (value.empty()) {
    txn.Delete(Cf::kVolume, PropertyKey(name));
  } else {
    txn.Put(Cf::kVolume, PropertyKey(name), value);
  }
  PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, {}, {}));
  return m->committer->SyncAll();
}

}  // namespace psm
