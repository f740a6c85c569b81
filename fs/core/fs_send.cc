// Send and receive streams (DESIGN §7, docs/send-receive.md).
//
// Send. A stream describes the tree of snapshot S (epoch es) relative to a
// base B (epoch eb < es), or to nothing (eb = 0: a full stream). What
// differs is found as a restore finds it (fs_restore.cc): every record B
// sees that S no longer sees has a dead entry with death in (eb, es]; new
// records are reached from the directories whose entries changed. For each
// such inode the sender compares its records at eb and at es and writes
// what S has: attributes, xattrs, directory entries, and the blocks whose
// physical location changed (DATA) or went (PUNCH). A full stream is the
// same walk from the root with nothing at eb, so it describes every inode
// reachable in S. Both snapshots are pinned for the whole send (a delete is
// refused) and never change, so the sender takes no volume lock; it reads
// the store and the image directly. It walks twice: once to count (the
// header carries the exact stream size, for progress), once to write.
//
// Receive. The stream is read and verified record by record while its data
// is written to newly allocated blocks (not yet in alloc: a crash or an
// error gives them back). Metadata is kept in memory. Only after END is
// the volume changed: with reclaim_run_mu and volume_mu exclusive, one Txn
// rolls the live tree back to the base if needed (Impl::RestoreInto),
// applies the stream, records the staged blocks in alloc and takes the
// snapshot; the commit is one write, so a crash leaves the volume as it was
// or with the snapshot complete.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <unordered_set>

#include "fs/json/control_json.h"
#include "fs/core/fs_impl.h"
#include "fs/core/record_versions.h"
#include "fs/stream/send_stream.h"
#include "fs/base/sha256.h"
#include "meta/sync_point.h"

namespace psm {
using Impl = FileSystem::Impl;
using stream::Type;

namespace {

constexpr std::string_view kFormatName = "psmfs-send";

struct VerPair {
  Ver old, cur;  // at the base epoch, at the snapshot epoch
};

// Every record under `file_prefix` of versioned family `cf` as seen at
// epochs eo and en (eo < en; eo = 0: nothing is old). Newer versions sort
// first, so per record the first key <= en is the new version and the
// first key <= eo the old one.
Status ListPair(Store* store, Cf cf, std::string_view file_prefix, Epoch eo, Epoch en,
                std::map<std::string, VerPair>* out) {
  auto it = store->NewIterator(cf);
  std::string cur;
  VerPair* vp = nullptr;
  bool have_new = false, have_old = false, started = false;
  return ForEachPrefix(it.get(), file_prefix, [&](std::string_view k, std::string_view v) {
    if (k.size() < file_prefix.size() + 8) return true;
    std::string_view p = KeyPrefix(k);
    if (!started || p != cur) {
      started = true;
      cur.assign(p);
      vp = nullptr;
      have_new = have_old = false;
    }
    const Epoch e = KeyEpoch(k);
    if (!have_new && e <= en) {
      have_new = true;
      if (vp == nullptr) vp = &(*out)[cur];
      SetVer(&vp->cur, e, v);
    }
    if (!have_old && e <= eo) {
      have_old = true;
      if (vp == nullptr) vp = &(*out)[cur];
      SetVer(&vp->old, e, v);
    }
    return true;
  });
}

struct Slot {
  BlockNo p = 0;
  Epoch birth = 0;
  bool data() const { return p != 0; }
};

Status DecodeSlots(const Ver& v, uint32_t chunk_blocks, InodeId ino, std::vector<Slot>* map) {
  map->assign(chunk_blocks, Slot{});
  if (!v.has) return Status::Ok();
  std::vector<Extent> ext;
  PSM_RETURN_IF_ERROR(DecodeExtents(v.payload, &ext));
  for (const Extent& x : ext) {
    if (uint64_t{x.off} + x.len > chunk_blocks) {
      return Status::Corruption("extent beyond chunk in inode " + std::to_string(ino));
    }
    if (x.flags & kExtentUnwritten) continue;  // reads as zeros: a hole in the stream
    for (uint32_t i = 0; i < x.len; ++i) (*map)[x.off + i] = Slot{x.pblock + i, x.birth};
  }
  return Status::Ok();
}

struct Attr {
  bool has = false;
  Epoch ver = 0;
  InodeAttr a;
};

Status LoadAt(Store* store, InodeId ino, Epoch e, Attr* out) {
  out->has = false;
  if (e == 0) return Status::Ok();
  std::string payload;
  Status s = GetAt(store, Cf::kInodes, InodePrefix(ino), e, &payload, &out->ver);
  if (s.Is(Code::kNotFound)) return Status::Ok();
  PSM_RETURN_IF_ERROR(s);
  PSM_RETURN_IF_ERROR(DecodeInode(payload, &out->a));
  // Unlinked but open at that epoch: no entry of that tree reaches it.
  out->has = out->a.nlink != 0 || ino == kRootIno;
  return Status::Ok();
}

std::string InodePayload(InodeId ino, const InodeAttr& a) {
  std::string p;
  stream::Put64(&p, ino);
  stream::Put32(&p, a.mode);
  stream::Put32(&p, a.uid);
  stream::Put32(&p, a.gid);
  stream::Put32(&p, a.nlink);
  stream::Put64(&p, a.size);
  stream::Put64(&p, a.rdev);
  for (int64_t t : {a.atime_ns, a.mtime_ns, a.ctime_ns, a.btime_ns}) {
    stream::Put64(&p, static_cast<uint64_t>(t));
  }
  stream::Put64(&p, a.parent);
  p.append(a.inline_data);
  return p;
}

// ------------------------------------------------------------------ send

class Sender {
 public:
  Sender(Impl* m, Epoch eo, Epoch en, stream::StreamWriter* w, SendStats* st)
      : m_(m), eo_(eo), en_(en), w_(w), st_(st), counting_(false) {}
  void SetCounting() { counting_ = true; }

  Status Run() {
    if (eo_ > 0) PSM_RETURN_IF_ERROR(Collect());
    Push(kRootIno);
    while (!queue_.empty()) {
      InodeId ino = queue_.front();
      queue_.pop_front();
      PSM_RETURN_IF_ERROR(One(ino));
      PSM_SYNC_POINT("Send:Inode");
    }
    return Status::Ok();
  }
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  void Push(InodeId ino) {
    if (ino != kRootIno && (ino < kFirstIno || ino > kInoMask)) return;
    if (seen_.insert(ino).second) queue_.push_back(ino);
  }

  // Inodes with a record that died between the two epochs.
  Status Collect() {
    auto it = m_->store->NewIterator(Cf::kDead);
    for (it->Seek(DeadEpochPrefix(eo_ + 1)); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      DeadKey dk;
      PSM_RETURN_IF_ERROR(ParseDeadKey(k, &dk));
      if (dk.death > en_) break;
      ++st_->dead_entries_read;
      if (dk.kind != DeadKind::kVersion) continue;
      const std::string_view vk = dk.versioned_key;
      InodeId ino = 0;
      std::string_view name;
      uint64_t idx;
      switch (dk.cf) {
        case Cf::kInodes: ino = InodeFromKey(vk); break;
        case Cf::kDentries: ParseDentryKey(vk, &ino, &name); break;
        case Cf::kChunks:
          ParseChunkKey(vk, &ino, &idx);
          force_.insert(ino);
          break;
        case Cf::kXattrs:
          ParseXattrKey(vk, &ino, &name);
          force_.insert(ino);
          break;
        default: continue;
      }
      Push(ino);
    }
    return Status::FromRocks(it->status());
  }

  Status Add(Type t, std::string_view head, std::string_view tail = {}) {
    return w_->Add(t, head, tail);
  }

  Status One(InodeId ino) {
    Attr o, n;
    PSM_RETURN_IF_ERROR(LoadAt(m_->store.get(), ino, eo_, &o));
    PSM_RETURN_IF_ERROR(LoadAt(m_->store.get(), ino, en_, &n));
    if (!o.has && !n.has) return Status::Ok();
    if (o.has && (!n.has || (o.a.mode & S_IFMT) != (n.a.mode & S_IFMT))) {
      std::string p;
      stream::Put64(&p, ino);
      PSM_RETURN_IF_ERROR(Add(Type::kDestroy, p));
      if (S_ISDIR(o.a.mode)) {
        // Its children were unlinked or moved: visit them.
        std::map<std::string, VerPair> ents;
        PSM_RETURN_IF_ERROR(
            ListPair(m_->store.get(), Cf::kDentries, DentryDirPrefix(ino), eo_, en_, &ents));
        for (auto& [prefix, vp] : ents) {
          Dentry d;
          if (vp.old.has && DecodeDentry(vp.old.payload, &d).ok()) Push(d.ino);
        }
      }
      if (!n.has) return Status::Ok();
      o.has = false;  // re-created with another type: everything is new
    }
    if (o.has && o.ver == n.ver && !force_.count(ino)) return Status::Ok();
    ++st_->inodes;
    const Epoch eo = o.has ? eo_ : 0;
    if (!o.has || !(o.a == n.a)) PSM_RETURN_IF_ERROR(Add(Type::kInode, InodePayload(ino, n.a)));
    PSM_RETURN_IF_ERROR(Xattrs(ino, eo));
    if (S_ISREG(n.a.mode)) PSM_RETURN_IF_ERROR(Data(ino, n.a, eo));
    if (S_ISDIR(n.a.mode)) PSM_RETURN_IF_ERROR(Entries(ino, eo));
    return Status::Ok();
  }

  Status Xattrs(InodeId ino, Epoch eo) {
    std::map<std::string, VerPair> recs;
    PSM_RETURN_IF_ERROR(ListPair(m_->store.get(), Cf::kXattrs, XattrFilePrefix(ino), eo, en_, &recs));
    for (auto& [prefix, vp] : recs) {
      if (vp.old.SameAs(vp.cur)) continue;
      std::string_view name = NameOfPrefix(prefix);
      std::string p;
      stream::Put64(&p, ino);
      if (vp.cur.has) {
        stream::Put32(&p, static_cast<uint32_t>(name.size()));
        p.append(name);
        PSM_RETURN_IF_ERROR(Add(Type::kXattr, p, vp.cur.payload));
      } else {
        p.append(name);
        PSM_RETURN_IF_ERROR(Add(Type::kXattrDel, p));
      }
    }
    return Status::Ok();
  }

  Status Entries(InodeId dir, Epoch eo) {
    std::map<std::string, VerPair> ents;
    PSM_RETURN_IF_ERROR(ListPair(m_->store.get(), Cf::kDentries, DentryDirPrefix(dir), eo, en_, &ents));
    for (auto& [prefix, vp] : ents) {
      if (vp.old.SameAs(vp.cur)) continue;
      std::string_view name = NameOfPrefix(prefix);
      Dentry d;
      if (vp.old.has) {
        PSM_RETURN_IF_ERROR(DecodeDentry(vp.old.payload, &d));
        Push(d.ino);
      }
      std::string p;
      stream::Put64(&p, dir);
      if (vp.cur.has) {
        PSM_RETURN_IF_ERROR(DecodeDentry(vp.cur.payload, &d));
        Push(d.ino);
        stream::Put64(&p, d.ino);
        stream::Put32(&p, d.type);
        p.append(name);
        PSM_RETURN_IF_ERROR(Add(Type::kDentry, p));
      } else {
        p.append(name);
        PSM_RETURN_IF_ERROR(Add(Type::kUnlink, p));
      }
    }
    return Status::Ok();
  }

  // The blocks of a file whose contents differ between the two epochs.
  Status Data(InodeId ino, const InodeAttr& a, Epoch eo) {
    std::map<std::string, VerPair> chunks;
    PSM_RETURN_IF_ERROR(ListPair(m_->store.get(), Cf::kChunks, ChunkFilePrefix(ino), eo, en_, &chunks));
    const uint32_t cb = m_->chunk_blocks;
    const uint64_t bs = m_->bs;
    const uint64_t eof_block = (a.size + bs - 1) / bs;
    std::vector<Slot> om, nm;
    for (auto& [prefix, vp] : chunks) {
      if (vp.old.SameAs(vp.cur)) continue;
      const uint64_t idx = GetBE64(prefix.data() + 8);
      PSM_RETURN_IF_ERROR(DecodeSlots(vp.old, cb, ino, &om));
      PSM_RETURN_IF_ERROR(DecodeSlots(vp.cur, cb, ino, &nm));
      const uint64_t first = idx * cb;
      // Runs of blocks: kind 1 = data to send, 2 = hole to punch.
      uint32_t b = 0;
      while (b < cb) {
        auto kind = [&](uint32_t i) {
          const bool nd = nm[i].data() && first + i < eof_block;
          const bool od = om[i].data();
          if (nd && (!od || om[i].p != nm[i].p || om[i].birth != nm[i].birth)) return 1;
          if (!nd && od) return 2;
          return 0;
        };
        const int k = kind(b);
        if (k == 0) {
          ++b;
          continue;
        }
        uint32_t e = b + 1;
        if (k == 1) {
          // Physically contiguous data, at most one DATA record.
          while (e < cb && kind(e) == 1 && nm[e].p == nm[e - 1].p + 1 &&
                 (e - b) * bs < stream::kMaxData) {
            ++e;
          }
          PSM_RETURN_IF_ERROR(SendData(ino, a, first + b, nm[b].p, e - b));
        } else {
          while (e < cb && kind(e) == 2) ++e;
          std::string p;
          stream::Put64(&p, ino);
          stream::Put64(&p, (first + b) * bs);
          stream::Put64(&p, uint64_t{e - b} * bs);
          PSM_RETURN_IF_ERROR(Add(Type::kPunch, p));
        }
        b = e;
      }
    }
    return Status::Ok();
  }

  Status SendData(InodeId ino, const InodeAttr& a, uint64_t fblock, BlockNo p, uint64_t n) {
    const uint64_t bs = m_->bs;
    const uint64_t len = n * bs;
    const uint64_t off = fblock * bs;
    std::string head;
    stream::Put64(&head, ino);
    stream::Put64(&head, off);
    data_bytes_ += len;  // whole blocks, as in the DATA records
    if (counting_) {
      if (zeros_.size() < len) zeros_.assign(len, '\0');
      return Add(Type::kData, head, std::string_view(zeros_.data(), len));
    }
    buf_.resize(len);
    // Verified: a damaged block fails the send (naming the path), never
    // goes into a stream whose CRC would vouch for it.
    PSM_RETURN_IF_ERROR(m_->ReadBlocks(p, n, buf_.data(), Impl::BlockUse{ino, en_, fblock}));
    // Past the end of the file the stream carries zeros, whatever the
    // block holds.
    if (off + len > a.size) std::memset(buf_.data() + (a.size - off), 0, off + len - a.size);
    return Add(Type::kData, head, buf_);
  }

  Impl* m_;
  Epoch eo_, en_;
  stream::StreamWriter* w_;
  SendStats* st_;
  bool counting_;
  std::deque<InodeId> queue_;
  std::unordered_set<InodeId> seen_;
  std::unordered_set<InodeId> force_;
  uint64_t data_bytes_ = 0;
  std::string buf_, zeros_;
};

// A snapshot pinned against deletion for the duration of a send.
class SendPin {
 public:
  SendPin() = default;
  SendPin(const SendPin&) = delete;
  SendPin& operator=(const SendPin&) = delete;
  ~SendPin() {
    if (m_ == nullptr) return;
    std::lock_guard<std::mutex> l(m_->snaps_mu);
    auto it = m_->snaps.find(id_);
    if (it != m_->snaps.end()) it->second.senders--;
  }
  Status Take(Impl* m, std::string_view name, SnapshotId* id, SnapshotRec* rec) {
    std::lock_guard<std::mutex> l(m->snaps_mu);
    for (auto& [sid, e] : m->snaps) {
      if (e.rec.state != SnapState::kActive || e.rec.name != name) continue;
      if (e.delete_pending || e.reclaiming) {
        return Status::Busy("snapshot '" + std::string(name) + "' is being deleted");
      }
      e.senders++;
      m_ = m;
      id_ = sid;
      *id = sid;
      *rec = e.rec;
      return Status::Ok();
    }
    return Status::NotFound("no snapshot named '" + std::string(name) + "'");
  }

 private:
  Impl* m_ = nullptr;
  SnapshotId id_ = 0;
};

std::string HeaderPayload(const Json& j) {
  std::string p(stream::kMagic);
  stream::Put32(&p, stream::kVersion);
  p.append(j.Dump());
  return p;
}

}  // namespace

std::string Impl::SnapshotGuid(SnapshotId id, const SnapshotRec& rec) {
  std::string v;
  if (store->Get(Cf::kVolume, SnapGuidKey(id), &v).ok() && v.size() == 32) return v;
  return Sha256Hex(sb.uuid + "/" + std::to_string(id) + "/" + std::to_string(rec.epoch) + "/" +
                   std::to_string(rec.ctime_ns))
      .substr(0, 32);
}

Result<SendStats> FileSystem::Send(const SendOptions& o,
                                   const std::function<Status(std::string_view)>& sink,
                                   const std::function<void(uint64_t)>& on_size) {
  Impl* m = impl_.get();
  const auto t0 = std::chrono::steady_clock::now();
  SendPin pin_s, pin_b;
  SnapshotId ids = 0, idb = 0;
  SnapshotRec rs, rb;
  PSM_RETURN_IF_ERROR(pin_s.Take(m, o.snapshot, &ids, &rs));
  if (!o.base.empty()) {
    PSM_RETURN_IF_ERROR(pin_b.Take(m, o.base, &idb, &rb));
    if (rb.epoch >= rs.epoch) {
      return Status::Invalid("base snapshot '" + o.base + "' is not older than '" + o.snapshot +
                             "': an incremental stream goes from an older snapshot to a newer one");
    }
  }
  PSM_SYNC_POINT("Send:Pinned");
  SendStats st;
  st.snapshot = rs.name;
  st.base = o.base;
  st.guid = m->SnapshotGuid(ids, rs);
  const Epoch eo = o.base.empty() ? 0 : rb.epoch;

  // Pass 1: the exact size.
  uint64_t body = 0;
  {
    SendStats scratch;
    stream::StreamWriter counter(nullptr);
    Sender s(m, eo, rs.epoch, &counter, &scratch);
    s.SetCounting();
    PSM_RETURN_IF_ERROR(s.Run());
    PSM_RETURN_IF_ERROR(counter.Finish(s.data_bytes()));
    body = counter.bytes();
  }
  Json snap = Json::Object();
  snap.Set("name", rs.name).Set("guid", st.guid).Set("ctime_ns", rs.ctime_ns);
  Json h = Json::Object();
  h.Set("format", std::string(kFormatName))
      .Set("version", static_cast<uint64_t>(stream::kVersion))
      .Set("kind", o.base.empty() ? "full" : "incremental")
      .Set("snapshot", std::move(snap));
  if (!o.base.empty()) {
    Json base = Json::Object();
    base.Set("name", rb.name).Set("guid", m->SnapshotGuid(idb, rb));
    h.Set("base", std::move(base));
  }
  Json src = Json::Object();
  src.Set("uuid", m->sb.uuid)
      .Set("block_size", static_cast<uint64_t>(m->bs))
      .Set("chunk_blocks", static_cast<uint64_t>(m->chunk_blocks));
  h.Set("source", std::move(src))
      .Set("body_bytes", body)
      .Set("software", "psmfs");
  const std::string hp = HeaderPayload(h);
  if (on_size) on_size(stream::kRecordHeader + hp.size() + stream::kRecordTrailer + body);

  // Pass 2: the stream.
  stream::StreamWriter w(sink);
  PSM_RETURN_IF_ERROR(w.Add(Type::kHeader, hp));
  Sender s(m, eo, rs.epoch, &w, &st);
  PSM_RETURN_IF_ERROR(s.Run());
  PSM_RETURN_IF_ERROR(w.Finish(s.data_bytes()));
  st.bytes = w.bytes();
  st.records = w.records();
  st.data_bytes = s.data_bytes();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

// ---------------------------------------------------------------- receive

namespace {

struct RInode {
  bool destroy = false;
  bool has_attr = false;
  InodeAttr a;
  std::map<std::string, std::optional<std::string>> xattrs;
  std::vector<std::pair<uint64_t, uint64_t>> punches;  // byte offset, length
  struct Run {
    uint64_t fblock;
    BlockNo p;
    uint64_t n;
  };
  std::vector<Run> runs;
};

class Receiver {
 public:
  Receiver(Impl* m, const ReceiveOptions& o, ReceiveResult* out) : m_(m), o_(o), out_(out) {}
  ~Receiver() {
    if (!committed_) {
      for (const Range& r : allocs_) m_->alloc->Abort(r);
    }
  }

  Status Read(stream::StreamReader* rd) {
    stream::Record rec;
    PSM_RETURN_IF_ERROR(rd->Next(&rec));
    PSM_RETURN_IF_ERROR(Header(rec.payload));
    PSM_RETURN_IF_ERROR(CheckTarget(nullptr));
    while (true) {
      PSM_RETURN_IF_ERROR(rd->Next(&rec));
      if (rec.type == Type::kEnd) {
        stream::Parser p(rec.payload);
        uint64_t n = 0, data = 0;
        (void)p.U64(&n);
        if (!p.U64(&data) || data != data_bytes_) {
          return Status::Corruption("END record says " + std::to_string(data) +
                                    " data bytes, the stream carried " +
                                    std::to_string(data_bytes_));
        }
        break;
      }
      Status s = One(rec);
      if (!s.ok()) {
        return Status::FromCode(s.code(), std::string(stream::TypeName(rec.type)) + " record " +
                                        std::to_string(rec.seq) + ": " + s.message());
      }
      PSM_SYNC_POINT("Receive:Record");
    }
    out_->records = rec.seq + 1;
    // Nothing may follow END.
    if (Status s = rd->Next(&rec); s.Is(Code::kCorruption)) return s;
    out_->bytes = rd->bytes();
    out_->data_bytes = data_bytes_;
    return Status::Ok();
  }

  Status Commit() {
    std::vector<Impl::Invalidation> inval;
    SnapshotInfo info;
    {
      std::lock_guard<std::mutex> run(m_->reclaim_run_mu);
      std::unique_lock<FairSharedMutex> vl(m_->volume_mu);
      PSM_SYNC_POINT("Receive:Locked");
      Epoch eb = 0;
      PSM_RETURN_IF_ERROR(CheckTarget(&eb));
      Txn txn(m_->store.get());
      std::vector<Range> frees;
      if (incremental_) {
        RestoreResult rr;
        Status rs = m_->RestoreInto(&txn, eb, &rr, &inval, &frees);
        m_->restore_done.store(0);  // RestoreInto counts; no restore runs
        m_->restore_total.store(0);
        PSM_RETURN_IF_ERROR(rs);
        const uint64_t changed = rr.created + rr.changed + rr.removed;
        if (changed > 0 && !o_.force) {
          return Status::Busy(
              "the live tree of this volume changed since snapshot '" + base_name_ + "' (" +
              std::to_string(changed) +
              " inodes); receiving would discard those changes: take a snapshot of them if "
              "they matter, then receive with --force");
        }
        out_->discarded = changed;
      } else {
        PSM_RETURN_IF_ERROR(CheckEmpty(&txn));
      }
      PSM_RETURN_IF_ERROR(Apply(&txn, &frees, &inval));
      SnapshotRec rec;
      rec.name = name_;
      rec.ctime_ns = ctime_ns_;
      PSM_SYNC_POINT("Receive:BeforeCommit");
      std::unique_lock<FairSharedMutex> gate(m_->read_gate);
      PSM_RETURN_IF_ERROR(m_->CommitSnapshotLocked(&txn, rec, guid_, frees, allocs_, &info));
      committed_ = true;
      gate.unlock();
      m_->ReviveGhosts();  // still under volume_mu exclusive
    }
    PSM_RETURN_IF_ERROR(m_->committer->SyncAll());
    inval.push_back({kSnapDirNode, name_});
    inval.push_back({kSnapDirNode, {}});
    m_->Deliver(inval);
    out_->snapshot = name_;
    out_->base = base_name_;
    out_->guid = guid_;
    out_->incremental = incremental_;
    out_->inodes = inodes_.size();
    return Status::Ok();
  }

 private:
  Status Header(std::string_view payload) {
    if (payload.substr(0, stream::kMagic.size()) != stream::kMagic) {
      return Status::Invalid("not a psmfs send stream (bad magic)");
    }
    stream::Parser p(payload.substr(stream::kMagic.size()));
    uint32_t version = 0;
    if (!p.U32(&version)) return Status::Invalid("stream header too short");
    if (version != stream::kVersion) {
      return Status::NotSupported("stream format version " + std::to_string(version) +
                                  " is not supported; this psmfs reads version " +
                                  std::to_string(stream::kVersion));
    }
    Result<Json> j = Json::Parse(p.Rest());
    if (!j.ok() || !j.value().is_object()) return Status::Corruption("stream header is not JSON");
    const Json& h = j.value();
    if (h.GetString("format") != kFormatName || h.GetUint("version") != stream::kVersion) {
      return Status::Corruption("stream header does not describe a psmfs stream of version 1");
    }
    const std::string kind = h.GetString("kind");
    if (kind != "full" && kind != "incremental") {
      return Status::Corruption("stream kind '" + kind + "' is unknown");
    }
    incremental_ = kind == "incremental";
    const Json* snap = h.Find("snapshot");
    if (snap == nullptr || !snap->is_object()) return Status::Corruption("stream names no snapshot");
    guid_ = snap->GetString("guid");
    ctime_ns_ = snap->GetInt("ctime_ns", NowNs());
    name_ = o_.name.empty() ? snap->GetString("name") : o_.name;
    if (guid_.size() != 32) return Status::Corruption("stream snapshot identity is malformed");
    if (incremental_) {
      const Json* base = h.Find("base");
      if (base == nullptr || !base->is_object()) return Status::Corruption("incremental stream names no base");
      base_guid_ = base->GetString("guid");
      base_name_ = base->GetString("name");
    }
    const Json* src = h.Find("source");
    src_bs_ = src ? static_cast<uint32_t>(src->GetUint("block_size")) : 0;
    if (src_bs_ == 0 || src_bs_ % m_->bs != 0) {
      return Status::NotSupported("the stream's block size " + std::to_string(src_bs_) +
                                  " is not a multiple of this volume's " + std::to_string(m_->bs) +
                                  "; receive it into a volume with a smaller block size");
    }
    return Status::Ok();
  }

  // The target can take this stream: name free, identity new, base present.
  // With `eb`, also returns the base's epoch (REQUIRES volume_mu).
  Status CheckTarget(Epoch* eb) {
    if (m_->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
    std::vector<std::pair<SnapshotId, SnapshotRec>> snaps;
    {
      std::lock_guard<std::mutex> l(m_->snaps_mu);
      for (const auto& [id, e] : m_->snaps) {
        if (e.rec.state == SnapState::kActive) snaps.emplace_back(id, e.rec);
      }
    }
    bool have_base = false;
    for (const auto& [id, rec] : snaps) {
      if (rec.name == name_) {
        return Status::Exists("a snapshot named '" + name_ +
                              "' already exists here; receive with --name NEWNAME");
      }
      const std::string g = m_->SnapshotGuid(id, rec);
      if (g == guid_) {
        return Status::Exists("this volume already has the stream's snapshot (as '" + rec.name +
                              "')");
      }
      if (incremental_ && g == base_guid_) {
        have_base = true;
        if (eb) *eb = rec.epoch;
      }
    }
    if (incremental_ && !have_base) {
      return Status::NotFound("this volume has no snapshot '" + base_name_ + "' (stream identity " +
                              base_guid_ +
                              "), the base of this incremental stream: receive the stream of '" +
                              base_name_ + "' first");
    }
    return Status::Ok();
  }

  // A full stream goes into an empty live tree only.
  Status CheckEmpty(Txn* txn) {
    std::map<std::string, bool> newest;
    PSM_RETURN_IF_ERROR(NewestEntries(txn, kRootIno, &newest));
    for (const auto& [p, live] : newest) {
      if (!live) continue;
      return Status::Busy(
          "a full stream is received into an empty volume, and this one's live tree has files "
          "(e.g. '" +
          std::string(NameOfPrefix(p)) +
          "'): use a freshly formatted volume, or send incrementally from a snapshot both "
          "volumes have");
    }
    return Status::Ok();
  }

  // Entry prefix -> whether its newest version is a value (a live entry).
  static Status NewestEntries(Txn* txn, InodeId dir, std::map<std::string, bool>* newest) {
    auto it = txn->NewIterator(Cf::kDentries);
    return ForEachPrefix(it.get(), DentryDirPrefix(dir),
                         [&](std::string_view k, std::string_view v) {
                           newest->try_emplace(std::string(KeyPrefix(k)),
                                               !v.empty() && v[0] == kTagValue);
                           return true;
                         });
  }

  static Status CheckIno(InodeId ino) {
    if (ino != kRootIno && (ino < kFirstIno || ino > kInoMask)) {
      return Status::Corruption("inode number " + std::to_string(ino) + " is out of range");
    }
    return Status::Ok();
  }

  Status One(const stream::Record& rec) {
    stream::Parser p(rec.payload);
    uint64_t ino = 0;
    if (rec.type != Type::kDentry && rec.type != Type::kUnlink) {
      if (!p.U64(&ino)) return Status::Corruption("record too short");
      PSM_RETURN_IF_ERROR(CheckIno(ino));
      if (inodes_.size() >= kInoMask) return Status::Corruption("too many inodes");
    }
    switch (rec.type) {
      case Type::kInode: {
        RInode& r = inodes_[ino];
        if (r.has_attr) return Status::Corruption("inode " + std::to_string(ino) + " described twice");
        InodeAttr& a = r.a;
        bool ok = p.U32(&a.mode) && p.U32(&a.uid) && p.U32(&a.gid) && p.U32(&a.nlink) &&
                  p.U64(&a.size) && p.U64(&a.rdev) && p.I64(&a.atime_ns) && p.I64(&a.mtime_ns) &&
                  p.I64(&a.ctime_ns) && p.I64(&a.btime_ns) && p.U64(&a.parent);
        if (!ok) return Status::Corruption("INODE record too short");
        a.inline_data.assign(p.Rest());
        const uint32_t t = a.mode & S_IFMT;
        if (t != S_IFREG && t != S_IFDIR && t != S_IFLNK && t != S_IFCHR && t != S_IFBLK &&
            t != S_IFIFO && t != S_IFSOCK) {
          return Status::Corruption("inode " + std::to_string(ino) + " has an unknown type");
        }
        if (ino == kRootIno && t != S_IFDIR) return Status::Corruption("the root is not a directory");
        if (t != S_IFLNK && !a.inline_data.empty()) return Status::Corruption("stray inline data");
        r.has_attr = true;
        return Status::Ok();
      }
      case Type::kDestroy: {
        RInode& r = inodes_[ino];
        if (r.has_attr || r.destroy) return Status::Corruption("DESTROY out of order");
        r.destroy = true;
        return Status::Ok();
      }
      case Type::kXattr: {
        uint32_t nl = 0;
        std::string_view name;
        if (!p.U32(&nl) || !p.Bytes(nl, &name) || name.empty() || name.find('\0') != name.npos) {
          return Status::Corruption("bad XATTR record");
        }
        inodes_[ino].xattrs[std::string(name)] = std::string(p.Rest());
        return Status::Ok();
      }
      case Type::kXattrDel: {
        std::string_view name = p.Rest();
        if (name.empty() || name.find('\0') != name.npos) return Status::Corruption("bad name");
        inodes_[ino].xattrs[std::string(name)] = std::nullopt;
        return Status::Ok();
      }
      case Type::kPunch: {
        uint64_t off = 0, len = 0;
        if (!p.U64(&off) || !p.U64(&len) || off % src_bs_ || len % src_bs_ || len == 0 ||
            off + len < off) {
          return Status::Corruption("bad PUNCH record");
        }
        inodes_[ino].punches.emplace_back(off, len);
        return Status::Ok();
      }
      case Type::kData: return DataRec(ino, &p);
      case Type::kDentry:
      case Type::kUnlink: {
        uint64_t parent = 0;
        if (!p.U64(&parent)) return Status::Corruption("record too short");
        PSM_RETURN_IF_ERROR(CheckIno(parent));
        std::optional<Dentry> d;
        if (rec.type == Type::kDentry) {
          Dentry e;
          if (!p.U64(&e.ino) || !p.U32(&e.type)) return Status::Corruption("DENTRY too short");
          PSM_RETURN_IF_ERROR(CheckIno(e.ino));
          if (e.ino == kRootIno) return Status::Corruption("an entry names the root");
          d = e;
        }
        std::string_view name = p.Rest();
        if (!ValidateName(name).ok() || name == "." || name == "..") {
          return Status::Corruption("bad entry name");
        }
        if (parent == kRootIno && name == kSnapDirName) {
          return Status::Corruption("an entry named .snapshots in the root");
        }
        auto [it, fresh] = ents_.try_emplace({parent, std::string(name)}, d);
        if (!fresh) return Status::Corruption("entry '" + std::string(name) + "' given twice");
        return Status::Ok();
      }
      default: return Status::Corruption("unexpected record");
    }
  }

  Status DataRec(InodeId ino, stream::Parser* p) {
    uint64_t off = 0;
    if (!p->U64(&off)) return Status::Corruption("DATA record too short");
    std::string_view bytes = p->Rest();
    if (off % src_bs_ != 0 || bytes.empty() || bytes.size() % src_bs_ != 0 ||
        off + bytes.size() < off || (off + bytes.size()) / m_->bs > kInoMask) {
      return Status::Corruption("DATA record is not whole blocks");
    }
    data_bytes_ += bytes.size();
    const uint64_t bs = m_->bs;
    uint64_t fblock = off / bs;
    uint64_t left = bytes.size() / bs;
    const char* src = bytes.data();
    RInode& r = inodes_[ino];
    while (left > 0) {
      auto got = m_->alloc->Allocate(left, hint_);
      for (int i = 0; i < 3 && got.status().Is(Code::kNoSpace) &&
                      m_->alloc->Stats().quarantined_blocks > 0;
           ++i) {
        PSM_RETURN_IF_ERROR(m_->committer->SyncAll());
        got = m_->alloc->Allocate(left, hint_);
      }
      if (!got.ok()) {
        return Status::FromCode(got.status().code(),
                          "the stream does not fit on this volume: " + got.status().message());
      }
      const Range rg = got.value();
      allocs_.push_back(rg);
      PSM_RETURN_IF_ERROR(m_->dev->Write(rg.start * bs, src, rg.len * bs));
      for (uint64_t i = 0; i < rg.len; ++i) {
        staged_crcs_.emplace_back(rg.start + i, BlockCrc(src + i * bs, bs));
      }
      r.runs.push_back(RInode::Run{fblock, rg.start, rg.len});
      hint_ = rg.end();
      src += rg.len * bs;
      fblock += rg.len;
      left -= rg.len;
    }
    return Status::Ok();
  }

  // Everything the stream says, into `txn` at the live epoch.
  Status Apply(Txn* txn, std::vector<Range>* frees, std::vector<Impl::Invalidation>* inval) {
    const Epoch L = m_->live();
    for (const Range& r : allocs_) {
      txn->Put(Cf::kAlloc, AllocKey(r.start), EncodeAlloc(AllocRec{r.len, L, 0}));
    }
    // The staged blocks' checksums, of the bytes as written.
    if (m_->checksums) {
      ChecksumWriter w(txn, m_->pending_csums.get());
      for (const auto& [b, crc] : staged_crcs_) w.Add(b, crc);
      w.Finish();
    }
    auto inv_inode = [&](InodeId ino) { inval->push_back({MakeNode(0, ino), {}}); };
    // 1. Entries that go.
    for (const auto& [key, d] : ents_) {
      if (d) continue;
      std::string v;
      const std::string prefix = DentryPrefix(key.first, key.second);
      if (!txn->GetAt(Cf::kDentries, prefix, L, &v).ok()) {
        return Status::Corruption("the stream removes entry '" + key.second +
                                  "', which the base does not have: wrong base?");
      }
      PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kDentries, prefix, L, std::nullopt, *m_));
      inval->push_back({MakeNode(0, key.first), key.second});
    }
    // 2. Inodes that go.
    std::map<InodeId, InodeAttr> cur;  // the new attributes of every inode touched
    for (auto& [ino, r] : inodes_) {
      if (!r.destroy) continue;
      InodeAttr a;
      Status s = m_->LoadAttr(txn, ino, L, &a);
      if (s.Is(Code::kNotFound)) {
        return Status::Corruption("the stream removes inode " + std::to_string(ino) +
                                  ", which the base does not have: wrong base?");
      }
      PSM_RETURN_IF_ERROR(s);
      if (ino == kRootIno) return Status::Corruption("the stream removes the root");
      if (S_ISDIR(a.mode)) PSM_RETURN_IF_ERROR(DropEntries(txn, ino, L, inval));
      bool in_use;
      {
        std::lock_guard<std::mutex> hl(m_->handles_mu);
        in_use = m_->KeepsOrphanLocked(ino);  // a superset: a refusal below leaves it in
      }
      if (in_use && r.has_attr) {
        return Status::Busy("inode " + std::to_string(ino) +
                            " is still open here and the stream re-creates it; close it and "
                            "receive again");
      }
      if (in_use) {
        a.nlink = 0;
        a.ctime_ns = NowNs();
        PSM_RETURN_IF_ERROR(m_->PutAttr(txn, ino, a));
        txn->Put(Cf::kVolume, OrphanKey(ino), "");
      } else {
        a.nlink = 0;
        PSM_RETURN_IF_ERROR(m_->DestroyInode(txn, ino, &a, frees));
      }
      inv_inode(ino);
    }
    // 3. Attributes, data, xattrs.
    InodeId max_ino = 0;
    for (auto& [ino, r] : inodes_) {
      max_ino = std::max(max_ino, ino);
      if (r.destroy && !r.has_attr) continue;  // gone, and not re-created
      InodeAttr live;
      Status s = m_->LoadAttr(txn, ino, L, &live);
      if (!s.ok() && !s.Is(Code::kNotFound)) return s;
      if (s.ok() && live.nlink == 0 && ino != kRootIno) {
        // An orphan (unlinked, still open here) holds the number.
        return Status::Busy("inode " + std::to_string(ino) +
                            " is still in use here (an open, unlinked file); close it and "
                            "receive again");
      }
      const bool exists = s.ok();
      if (!r.has_attr && !exists) {
        return Status::Corruption("the stream changes inode " + std::to_string(ino) +
                                  ", which the base does not have: wrong base?");
      }
      InodeAttr a = r.has_attr ? r.a : live;
      if (exists) {
        if ((live.mode & S_IFMT) != (a.mode & S_IFMT)) {
          return Status::Corruption("inode " + std::to_string(ino) +
                                    " changes type without being re-created: wrong base?");
        }
        a.blocks = live.blocks;
        a.flags = live.flags;
      } else {
        a.blocks = 0;
        a.flags = 0;
        bool in_use;
        {
          std::lock_guard<std::mutex> hl(m_->handles_mu);
          in_use = m_->InUseLocked(ino);
        }
        if (in_use) {
          return Status::Busy("inode " + std::to_string(ino) +
                              " is still in use here (an open, unlinked file); close it and "
                              "receive again");
        }
        txn->AddCounter(kVolFiles, 1);
      }
      if ((!r.punches.empty() || !r.runs.empty()) && !S_ISREG(a.mode)) {
        return Status::Corruption("data for inode " + std::to_string(ino) +
                                  ", which is not a regular file");
      }
      const uint64_t bs = m_->bs;
      for (const auto& [off, len] : r.punches) {
        PSM_RETURN_IF_ERROR(m_->UnmapBlocks(txn, ino, &a, off / bs, (off + len) / bs, frees));
      }
      for (const RInode::Run& run : r.runs) {
        PSM_RETURN_IF_ERROR(m_->MapBlocks(txn, ino, &a, run.fblock, run.p, run.n, frees));
      }
      for (const auto& [name, val] : r.xattrs) {
        std::optional<std::string_view> v;
        if (val) v = *val;
        if (val) m_->NoteXattrName(txn, name);
        PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kXattrs, XattrPrefix(ino, name), L, v, *m_));
      }
      if (exists && S_ISREG(a.mode)) {
        std::lock_guard<std::mutex> hl(m_->handles_mu);
        if (m_->InUseLocked(ino)) {
          known_by_dir_[live.parent].insert(ino);
          known_by_dir_[a.parent].insert(ino);
        }
      }
      cur[ino] = a;
      inv_inode(ino);
    }
    // 4. Entries that come.
    for (const auto& [key, d] : ents_) {
      if (!d) continue;
      auto type_of = [&](InodeId ino, uint32_t* t) -> Status {
        auto it = cur.find(ino);
        if (it != cur.end()) {
          *t = it->second.mode & S_IFMT;
          return Status::Ok();
        }
        auto rit = inodes_.find(ino);
        InodeAttr a;
        if ((rit != inodes_.end() && rit->second.destroy) || !m_->LoadAttr(txn, ino, L, &a).ok()) {
          return Status::Corruption("entry '" + key.second + "' names inode " +
                                    std::to_string(ino) +
                                    ", which neither the stream nor the base has: wrong base?");
        }
        *t = a.mode & S_IFMT;
        return Status::Ok();
      };
      uint32_t pt = 0, ct = 0;
      PSM_RETURN_IF_ERROR(type_of(key.first, &pt));
      if (pt != S_IFDIR) return Status::Corruption("an entry in a non-directory");
      PSM_RETURN_IF_ERROR(type_of(d->ino, &ct));
      if (ct != (d->type & S_IFMT)) {
        return Status::Corruption("entry '" + key.second + "' has the wrong type");
      }
      PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kDentries, DentryPrefix(key.first, key.second), L,
                                     std::string_view(EncodeDentry(*d)), *m_));
      inval->push_back({MakeNode(0, key.first), key.second});
    }
    if (!cur.count(kRootIno)) {
      InodeAttr root;
      if (!m_->LoadAttr(txn, kRootIno, L, &root).ok()) return Status::Corruption("no root");
    }
    // A directory whose entries change gets a new attribute version even
    // when the stream has no attributes for it (two entry changes in one
    // tick of the coarse clock leave them equal): restore and send take a
    // directory whose attribute version did not move for unchanged.
    for (const auto& [key, d] : ents_) {
      if (cur.count(key.first)) continue;
      auto rit = inodes_.find(key.first);
      if (rit != inodes_.end() && rit->second.destroy && !rit->second.has_attr) continue;
      InodeAttr a;
      Status s = m_->LoadAttr(txn, key.first, L, &a);
      if (!s.ok()) {
        return s.Is(Code::kNotFound) ? Status::Corruption("an entry in a missing directory") : s;
      }
      cur[key.first] = a;
    }
    for (const auto& [ino, a] : cur) PSM_RETURN_IF_ERROR(m_->PutAttr(txn, ino, a));
    PSM_RETURN_IF_ERROR(NameInvalidations(txn, inval));
    // 5. Inode numbers: this volume hands out numbers above the stream's.
    {
      std::lock_guard<std::mutex> l(m_->ino_alloc_mu);
      if (max_ino >= m_->next_ino) {
        m_->next_ino = max_ino + 1;
        if (m_->next_ino >= m_->ino_reserved) {
          m_->ino_reserved = m_->next_ino + 4096;
          txn->Put(Cf::kVolume, kVolNextIno, LE64(m_->ino_reserved));
        }
      }
    }
    return Status::Ok();
  }

  // With the writeback cache the kernel trusts its own size and mtime of a
  // regular file it has cached (fs_restore.cc says more): every entry that
  // names a changed file the kernel knows is invalidated, so that it drops
  // the inode and reads the received attributes. The names come from the
  // file's parent hints.
  Status NameInvalidations(Txn* txn, std::vector<Impl::Invalidation>* inval) {
    for (const auto& [dir, inos] : known_by_dir_) {
      auto it = txn->NewIterator(Cf::kDentries);
      std::string last;
      PSM_RETURN_IF_ERROR(ForEachPrefix(it.get(), DentryDirPrefix(dir),
                                        [&](std::string_view k, std::string_view v) {
                                          std::string_view p = KeyPrefix(k);
                                          if (p == last) return true;
                                          last.assign(p);
                                          Dentry d;
                                          if (!v.empty() && v[0] == kTagValue &&
                                              DecodeDentry(v.substr(1), &d).ok() &&
                                              inos.count(d.ino)) {
                                            inval->push_back({MakeNode(0, dir),
                                                              std::string(NameOfPrefix(p))});
                                          }
                                          return true;
                                        }));
    }
    return Status::Ok();
  }

  // Removes every live entry of directory `dir` (it is being destroyed).
  Status DropEntries(Txn* txn, InodeId dir, Epoch L, std::vector<Impl::Invalidation>* inval) {
    std::map<std::string, bool> newest;
    PSM_RETURN_IF_ERROR(NewestEntries(txn, dir, &newest));
    for (const auto& [prefix, live] : newest) {
      if (!live) continue;
      PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kDentries, prefix, L, std::nullopt, *m_));
      inval->push_back({MakeNode(0, dir), std::string(NameOfPrefix(prefix))});
    }
    return Status::Ok();
  }

  Impl* m_;
  ReceiveOptions o_;
  ReceiveResult* out_;
  bool incremental_ = false;
  std::string name_, guid_, base_guid_, base_name_;
  int64_t ctime_ns_ = 0;
  uint32_t src_bs_ = 0;
  std::map<InodeId, RInode> inodes_;
  std::map<std::pair<InodeId, std::string>, std::optional<Dentry>> ents_;
  std::vector<Range> allocs_;
  std::vector<std::pair<BlockNo, uint32_t>> staged_crcs_;  // staged blocks' CRC-32C
  std::map<InodeId, std::set<InodeId>> known_by_dir_;  // see NameInvalidations
  BlockNo hint_ = 0;
  uint64_t data_bytes_ = 0;
  bool committed_ = false;
};

}  // namespace

Result<ReceiveResult> FileSystem::Receive(
    const ReceiveOptions& o, const std::function<Result<size_t>(char*, size_t)>& source) {
  Impl* m = impl_.get();
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  if (!o.name.empty()) {
    if (o.name.size() > kNameMax) return Status::NameTooLong("snapshot name longer than 255 bytes");
    if (o.name == "." || o.name == ".." || o.name.find('/') != std::string::npos ||
        o.name.find('\0') != std::string::npos) {
      return Status::Invalid("bad snapshot name '" + o.name + "'");
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  ReceiveResult out;
  Receiver r(m, o, &out);
  stream::StreamReader rd(source);
  PSM_RETURN_IF_ERROR(r.Read(&rd));
  PSM_RETURN_IF_ERROR(r.Commit());
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace psm
