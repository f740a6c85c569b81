#include "meta/keys.h"

#include <cstring>

namespace psm {

const char* CfName(Cf cf) {
  switch (cf) {
    case Cf::kDefault: return "default";
    case Cf::kInodes: return "inodes";
    case Cf::kDentries: return "dentries";
    case Cf::kChunks: return "chunks";
    case Cf::kXattrs: return "xattrs";
    case Cf::kAlloc: return "alloc";
    case Cf::kDead: return "dead";
    case Cf::kSnapshots: return "snapshots";
    case Cf::kVolume: return "volume";
    case Cf::kCsums: return "csums";
    case Cf::kCount: break;
  }
  return "?";
}

void PutBE64(std::string* dst, uint64_t v) {
  char b[8];
  for (int i = 7; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(b, 8);
}

uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void PutLE64(std::string* dst, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(b, 8);
}

void PutLE32(std::string* dst, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(b, 4);
}

uint64_t GetLE64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

uint32_t GetLE32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string VersionKey(std::string_view prefix, Epoch e) {
  std::string k(prefix);
  PutBE64(&k, ~e);
  return k;
}

Epoch KeyEpoch(std::string_view key) { return ~GetBE64(key.data() + key.size() - 8); }

std::string_view KeyPrefix(std::string_view key) { return key.substr(0, key.size() - 8); }

std::string InodePrefix(InodeId ino) {
  std::string k;
  PutBE64(&k, ino);
  return k;
}

InodeId InodeFromKey(std::string_view key) { return GetBE64(key.data()); }

std::string DentryDirPrefix(InodeId parent) { return InodePrefix(parent); }

std::string DentryPrefix(InodeId parent, std::string_view name) {
  std::string k = InodePrefix(parent);
  k.append(name);
  k.push_back('\0');
  return k;
}

void ParseDentryKey(std::string_view key, InodeId* parent, std::string_view* name) {
  *parent = GetBE64(key.data());
  // name runs from 8 to the NUL that precedes the 8-byte epoch.
  *name = key.substr(8, key.size() - 8 - 1 - 8);
}

std::string ChunkFilePrefix(InodeId ino) { return InodePrefix(ino); }

std::string ChunkPrefix(InodeId ino, uint64_t index) {
  std::string k = InodePrefix(ino);
  PutBE64(&k, index);
  return k;
}

void ParseChunkKey(std::string_view key, InodeId* ino, uint64_t* index) {
  *ino = GetBE64(key.data());
  *index = GetBE64(key.data() + 8);
}

std::string XattrFilePrefix(InodeId ino) { return InodePrefix(ino); }

std::string XattrPrefix(InodeId ino, std::string_view name) { return DentryPrefix(ino, name); }

void ParseXattrKey(std::string_view key, InodeId* ino, std::string_view* name) {
  ParseDentryKey(key, ino, name);
}

std::string AllocKey(BlockNo start) { return InodePrefix(start); }
BlockNo AllocKeyBlock(std::string_view key) { return GetBE64(key.data()); }

std::string CsumKey(BlockNo block) {
  std::string k(1, kCsumKeyTag);
  PutBE64(&k, block >> kCsumGroupShift);
  return k;
}
BlockNo CsumKeyBlock(std::string_view key) { return GetBE64(key.data() + 1) << kCsumGroupShift; }

void EncodeCsumGroup(const CsumGroup& g, std::string* out) {
  out->clear();
  out->reserve(2 + 4 * kCsumGroupBlocks);
  out->push_back(static_cast<char>(g.mask & 0xff));
  out->push_back(static_cast<char>(g.mask >> 8));
  for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
    if (g.Has(i)) PutLE32(out, g.crc[i]);
  }
}

bool DecodeCsumGroup(std::string_view v, CsumGroup* g) {
  if (v.size() < 2) return false;
  g->mask = static_cast<uint16_t>(static_cast<uint8_t>(v[0]) | static_cast<uint8_t>(v[1]) << 8);
  if (v.size() != 2 + 4 * static_cast<size_t>(__builtin_popcount(g->mask))) return false;
  const char* p = v.data() + 2;
  for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
    if (!g->Has(i)) continue;
    g->crc[i] = GetLE32(p);
    p += 4;
  }
  return true;
}

void OverlayCsumGroup(const CsumGroup& newer, CsumGroup* g) {
  for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
    if (newer.Has(i)) g->Set(i, newer.crc[i]);
  }
}

std::string LegacyCsumKey(BlockNo block) { return InodePrefix(block); }
BlockNo LegacyCsumKeyBlock(std::string_view key) { return GetBE64(key.data()); }

std::string SnapshotKey(SnapshotId id) { return InodePrefix(id); }
SnapshotId SnapshotKeyId(std::string_view key) { return GetBE64(key.data()); }

std::string HoldSnapshotPrefix(SnapshotId id) {
  std::string k(kHoldPrefix);
  PutBE64(&k, id);
  return k;
}

std::string SnapGuidKey(SnapshotId id) {
  std::string k(kSnapGuidPrefix);
  PutBE64(&k, id);
  return k;
}

std::string HoldKey(SnapshotId id, std::string_view tag) {
  std::string k = HoldSnapshotPrefix(id);
  k.append(tag);
  return k;
}

bool ParseHoldKey(std::string_view key, SnapshotId* id, std::string_view* tag) {
  if (key.size() < kHoldPrefix.size() + 8 || key.substr(0, kHoldPrefix.size()) != kHoldPrefix) {
    return false;
  }
  *id = GetBE64(key.data() + kHoldPrefix.size());
  *tag = key.substr(kHoldPrefix.size() + 8);
  return true;
}

std::string PropertyKey(std::string_view name) {
  std::string k(kPropPrefix);
  k.append(name);
  return k;
}

std::string DeadEpochPrefix(Epoch death) { return InodePrefix(death); }

std::string DeadVersionKey(Epoch death, Cf cf, std::string_view versioned_key) {
  std::string k = DeadEpochPrefix(death);
  k.push_back(static_cast<char>(DeadKind::kVersion));
  k.push_back(static_cast<char>(cf));
  k.append(versioned_key);
  return k;
}

std::string DeadRangeKey(Epoch death, BlockNo start) {
  std::string k = DeadEpochPrefix(death);
  k.push_back(static_cast<char>(DeadKind::kRange));
  PutBE64(&k, start);
  return k;
}

Status ParseDeadKey(std::string_view key, DeadKey* out) {
  if (key.size() < 9) return Status::Corruption("short dead key");
  out->death = GetBE64(key.data());
  out->kind = static_cast<DeadKind>(key[8]);
  if (out->kind == DeadKind::kVersion) {
    if (key.size() < 10 + 8) return Status::Corruption("short dead version key");
    out->cf = static_cast<Cf>(key[9]);
    if (!IsVersionedCf(out->cf)) return Status::Corruption("dead version in unversioned cf");
    out->versioned_key.assign(key.substr(10));
    return Status::Ok();
  }
  if (out->kind == DeadKind::kRange) {
    if (key.size() != 17) return Status::Corruption("bad dead range key");
    out->start = GetBE64(key.data() + 9);
    return Status::Ok();
  }
  return Status::Corruption("unknown dead kind");
}

std::string EncodeDeadValue(const DeadValue& v) {
  std::string s;
  PutLE64(&s, v.birth);
  PutLE64(&s, v.length);
  return s;
}

Status DecodeDeadValue(std::string_view in, DeadValue* out) {
  if (in.size() != 16) return Status::Corruption("bad dead value");
  out->birth = GetLE64(in.data());
  out->length = GetLE64(in.data() + 8);
  return Status::Ok();
}

std::string OrphanKey(InodeId ino) {
  std::string k(kOrphanPrefix);
  PutBE64(&k, ino);
  return k;
}

// ---- records ----
// Inode layout, STORED (little-endian): mode u32 uid u32 gid u32 nlink u32
// size u64 rdev u64 atime i64 mtime i64 ctime i64 btime i64 blocks u64 flags u32
// parent u64, then inline data (symlink target) to the end of the value.
static constexpr size_t kInodeSize = 4 * 4 + 8 * 2 + 8 * 4 + 8 + 4 + 8;

std::string EncodeInode(const InodeAttr& a) {
  std::string s;
  s.reserve(kInodeSize);
  PutLE32(&s, a.mode);
  PutLE32(&s, a.uid);
  PutLE32(&s, a.gid);
  PutLE32(&s, a.nlink);
  PutLE64(&s, a.size);
  PutLE64(&s, a.rdev);
  PutLE64(&s, static_cast<uint64_t>(a.atime_ns));
  PutLE64(&s, static_cast<uint64_t>(a.mtime_ns));
  PutLE64(&s, static_cast<uint64_t>(a.ctime_ns));
  PutLE64(&s, static_cast<uint64_t>(a.btime_ns));
  PutLE64(&s, a.blocks);
  PutLE32(&s, a.flags);
  PutLE64(&s, a.parent);
  s.append(a.inline_data);
  return s;
}

Status DecodeInode(std::string_view in, InodeAttr* a) {
  if (in.size() < kInodeSize) return Status::Corruption("bad inode record size");
  const char* p = in.data();
  a->mode = GetLE32(p); p += 4;
  a->uid = GetLE32(p); p += 4;
  a->gid = GetLE32(p); p += 4;
  a->nlink = GetLE32(p); p += 4;
  a->size = GetLE64(p); p += 8;
  a->rdev = GetLE64(p); p += 8;
  a->atime_ns = static_cast<int64_t>(GetLE64(p)); p += 8;
  a->mtime_ns = static_cast<int64_t>(GetLE64(p)); p += 8;
  a->ctime_ns = static_cast<int64_t>(GetLE64(p)); p += 8;
  a->btime_ns = static_cast<int64_t>(GetLE64(p)); p += 8;
  a->blocks = GetLE64(p); p += 8;
  a->flags = GetLE32(p); p += 4;
  a->parent = GetLE64(p);
  a->inline_data.assign(in.substr(kInodeSize));
  a->version = 0;  // the caller's to set: the record does not hold it
  a->sole = false;
  return Status::Ok();
}

std::string EncodeDentry(const Dentry& d) {
  std::string s;
  PutLE64(&s, d.ino);
  PutLE32(&s, d.type);
  return s;
}

Status DecodeDentry(std::string_view in, Dentry* d) {
  if (in.size() != 12) return Status::Corruption("bad dentry record");
  d->ino = GetLE64(in.data());
  d->type = GetLE32(in.data() + 8);
  return Status::Ok();
}

// Extent layout, STORED: off u32 len u32 pblock u64 birth u64 flags u32
static constexpr size_t kExtentSize = 4 + 4 + 8 + 8 + 4;

std::string EncodeExtents(const std::vector<Extent>& ext) {
  std::string s;
  s.reserve(ext.size() * kExtentSize);
  for (const Extent& e : ext) {
    PutLE32(&s, e.off);
    PutLE32(&s, e.len);
    PutLE64(&s, e.pblock);
    PutLE64(&s, e.birth);
    PutLE32(&s, e.flags);
  }
  return s;
}

Status DecodeExtents(std::string_view in, std::vector<Extent>* out) {
  if (in.size() % kExtentSize != 0) return Status::Corruption("bad chunk record size");
  out->clear();
  out->reserve(in.size() / kExtentSize);
  for (const char* p = in.data(); p < in.data() + in.size(); p += kExtentSize) {
    Extent e;
    e.off = GetLE32(p);
    e.len = GetLE32(p + 4);
    e.pblock = GetLE64(p + 8);
    e.birth = GetLE64(p + 16);
    e.flags = GetLE32(p + 24);
    out->push_back(e);
  }
  return Status::Ok();
}

std::string EncodeAlloc(const AllocRec& a) {
  std::string s;
  PutLE64(&s, a.length);
  PutLE64(&s, a.birth);
  PutLE64(&s, a.death);
  return s;
}

Status DecodeAlloc(std::string_view in, AllocRec* a) {
  if (in.size() != 24) return Status::Corruption("bad alloc record");
  a->length = GetLE64(in.data());
  a->birth = GetLE64(in.data() + 8);
  a->death = GetLE64(in.data() + 16);
  return Status::Ok();
}

// Snapshot layout, STORED: epoch u64 ctime i64 state u8 holds u32 namelen u32 name
std::string EncodeSnapshot(const SnapshotRec& s) {
  std::string o;
  PutLE64(&o, s.epoch);
  PutLE64(&o, static_cast<uint64_t>(s.ctime_ns));
  o.push_back(static_cast<char>(s.state));
  PutLE32(&o, s.holds);
  PutLE32(&o, static_cast<uint32_t>(s.name.size()));
  o.append(s.name);
  return o;
}

Status DecodeSnapshot(std::string_view in, SnapshotRec* s) {
  if (in.size() < 25) return Status::Corruption("short snapshot record");
  s->epoch = GetLE64(in.data());
  s->ctime_ns = static_cast<int64_t>(GetLE64(in.data() + 8));
  s->state = static_cast<SnapState>(in[16]);
  s->holds = GetLE32(in.data() + 17);
  uint32_t n = GetLE32(in.data() + 21);
  if (in.size() != 25 + n) return Status::Corruption("bad snapshot record");
  s->name.assign(in.substr(25));
  return Status::Ok();
}

std::string Tagged(std::string_view payload) {
  std::string s;
  s.reserve(payload.size() + 1);
  s.push_back(kTagValue);
  s.append(payload);
  return s;
}

}  // namespace psm
