// Per-file history and snapshot diff from the versioned metadata
// (filesystem.h, "file-server features"; docs/user-guide.md).
//
// History(path): for each snapshot (oldest first) and the live tree, resolve
// the path at that epoch and read the inode record *with the epoch it was
// written at*. Points that see the same (inode, record version) see the same
// file: every change to a file's bytes or attributes writes a new record
// version once a snapshot has been taken since the last one. Cost: a path
// lookup per snapshot, and with checksums one read of each distinct version.
//
// Diff(a, b): every record that a snapshot at epoch a can see and that was
// replaced or removed before epoch b left a `dead` entry with death in
// (a, b] (meta/versioned.h: a present snapshot can see it). One range scan
// of the dead index therefore yields the inodes whose records changed and
// the directories whose entries changed; created files show up as changed
// directories (their parent's record changed). Only those directories are
// listed at both epochs. Paths are rebuilt upwards through InodeAttr::parent
// (directories: their parent; other files: the directory of their newest
// name, a hint checked against that directory's entries): the names wanted
// from one directory are found in one pass over its entries that stops at
// the last of them, so an unchanged ancestor (the root of a wide tree) is
// not listed whole. Each inode record is read once per epoch, through one
// iterator (PathFinder).
//
// Snapshots read here are pinned (SnapEntry::open_handles) so a concurrent
// delete cannot reclaim their blocks mid-read; live reads hold the inode
// lock shared, as Read does.
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "fs/core/fs_impl.h"
#include "fs/base/sha256.h"

namespace psm {
namespace {

using Impl = FileSystem::Impl;

struct Point {
  SnapshotId id = 0;  // 0: live
  std::string name;   // "" for live
  Epoch epoch = 0;
};

// Keeps a snapshot's blocks from being reclaimed while we read it.
class SnapPin {
 public:
  SnapPin(Impl* m, SnapshotId id) : m_(m), id_(id) {
    std::lock_guard<std::mutex> l(m_->snaps_mu);
    auto it = m_->snaps.find(id_);
    ok_ = it != m_->snaps.end() && it->second.rec.state == SnapState::kActive;
    if (ok_) it->second.open_handles++;
  }
  ~SnapPin() {
    if (!ok_) return;
    bool kick = false;
    {
      std::lock_guard<std::mutex> l(m_->snaps_mu);
      auto it = m_->snaps.find(id_);
      if (it != m_->snaps.end() && --it->second.open_handles == 0 &&
          it->second.rec.state == SnapState::kDeleting) {
        kick = true;
      }
    }
    if (kick) {
      {
        std::lock_guard<std::mutex> l(m_->reclaim_mu);
        m_->reclaim_kick = true;
      }
      m_->reclaim_cv.notify_all();
    }
  }
  bool ok() const { return ok_; }
  SnapPin(const SnapPin&) = delete;
  SnapPin& operator=(const SnapPin&) = delete;

 private:
  Impl* m_;
  SnapshotId id_;
  bool ok_ = false;
};

std::vector<Point> ActiveSnapshots(Impl* m) {
  std::vector<Point> out;
  std::lock_guard<std::mutex> l(m->snaps_mu);
  for (const auto& [id, s] : m->snaps) {
    if (s.rec.state == SnapState::kActive) out.push_back(Point{id, s.rec.name, s.rec.epoch});
  }
  std::sort(out.begin(), out.end(), [](const Point& x, const Point& y) { return x.epoch < y.epoch; });
  return out;
}

Result<std::vector<std::string>> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view c = path.substr(i, j - i);
    if (c == "." || c == "..") return Status::Invalid("path may not contain '.' or '..'");
    if (c.size() > kNameMax) return Status::NameTooLong("path component longer than 255 bytes");
    if (!c.empty()) parts.emplace_back(c);
    i = j + 1;
  }
  if (parts.empty()) return Status::Invalid("path names the root directory; give a file");
  if (parts[0] == kSnapDirName) {
    return Status::Invalid("give the file's path in the live tree, not inside .snapshots");
  }
  return parts;
}

Status GetDentryAt(Impl* m, InodeId parent, std::string_view name, Epoch e, Dentry* d) {
  std::string payload;
  PSM_RETURN_IF_ERROR(GetAt(m->store.get(), Cf::kDentries, DentryPrefix(parent, name), e, &payload));
  return DecodeDentry(payload, d);
}

Status GetAttrAt(Impl* m, InodeId ino, Epoch e, InodeAttr* a, Epoch* version) {
  std::string payload;
  PSM_RETURN_IF_ERROR(GetAt(m->store.get(), Cf::kInodes, InodePrefix(ino), e, &payload, version));
  return DecodeInode(payload, a);
}

// The inode at `parts` at epoch e; kNotFound when absent.
Status ResolveAt(Impl* m, const std::vector<std::string>& parts, Epoch e, InodeId* ino) {
  InodeId cur = kRootIno;
  for (const std::string& p : parts) {
    Dentry d;
    PSM_RETURN_IF_ERROR(GetDentryAt(m, cur, p, e, &d));
    cur = d.ino;
  }
  *ino = cur;
  return Status::Ok();
}

// SHA-256 of the content of `ino` as seen at `pt`.
Result<std::string> Checksum(Impl* m, const Point& pt, InodeId ino) {
  constexpr size_t kPiece = 1 << 20;
  std::string buf(kPiece, '\0');
  Sha256 h;
  for (uint64_t off = 0;;) {
    std::optional<LockSet> ls;
    Epoch e = pt.epoch;
    if (pt.id == 0) {
      ls.emplace(m, std::initializer_list<InodeId>{ino}, false);
      e = m->live();
    }
    InodeAttr a;
    PSM_RETURN_IF_ERROR(m->LoadAttrAt(ino, e, &a));
    if (off >= a.size) break;
    size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, a.size - off));
    PSM_RETURN_IF_ERROR(m->ReadData(ino, e, a, off, n, buf.data()));
    h.Update(buf.data(), n);
    off += n;
  }
  return h.HexDigest();
}

// ---- diff helpers ----

struct Listing {
  std::map<std::string, Dentry> ents;
};

// Calls fn(name, value, &stop) for every name under `prefix` in `cf` that
// is present at epoch e, in name order (a name's key ends in a NUL, so the
// keys sort by name), in one pass over the versions; fn sets stop to end
// the pass early. `name_of` takes a key to its name part.
template <typename NameOf, typename Fn>
Status ForEachNameAt(Impl* m, Cf cf, const std::string& prefix, Epoch e, NameOf name_of, Fn fn) {
  auto it = m->store->NewIterator(cf);
  std::string last;
  bool have_last = false;
  bool stop = false;
  for (it->Seek(prefix); it->Valid() && !stop; it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.substr(0, prefix.size()) != prefix) break;
    if (KeyEpoch(k) > e) continue;
    std::string_view name = name_of(k);
    if (have_last && name == last) continue;  // an older version of a name already decided
    last.assign(name);
    have_last = true;
    std::string_view v(it->value().data(), it->value().size());
    if (v.empty() || v[0] != kTagValue) continue;  // tombstone: absent at e
    PSM_RETURN_IF_ERROR(fn(name, v.substr(1), &stop));
  }
  return Status::FromRocks(it->status());
}

std::string_view DentryName(std::string_view k) {
  InodeId parent;
  std::string_view name;
  ParseDentryKey(k, &parent, &name);
  return name;
}

// The entries of directory `dir` at epoch e.
Status ListDirAt(Impl* m, InodeId dir, Epoch e, Listing* out) {
  return ForEachNameAt(m, Cf::kDentries, DentryDirPrefix(dir), e, DentryName,
                       [&](std::string_view name, std::string_view v, bool*) {
                         Dentry d;
                         PSM_RETURN_IF_ERROR(DecodeDentry(v, &d));
                         out->ents.emplace(std::string(name), d);
                         return Status::Ok();
                       });
}

// The extended attributes of `ino` at epoch e, name -> value.
Status XattrsAt(Impl* m, InodeId ino, Epoch e, std::map<std::string, std::string>* out) {
  return ForEachNameAt(
      m, Cf::kXattrs, XattrFilePrefix(ino), e,
      [](std::string_view k) {
        InodeId owner;
        std::string_view name;
        ParseXattrKey(k, &owner, &name);
        return name;
      },
      [&](std::string_view name, std::string_view v, bool*) {
        out->emplace(std::string(name), std::string(v));
        return Status::Ok();
      });
}

// Attributes and paths at one epoch. What it reads follows the change,
// not the volume (issue #16): attributes through one iterator, each read
// once; a name by reading its directory's entries in name order only up to
// the names wanted from it, every name wanted from one directory in one
// pass (Prepare), never the whole listing of an ancestor such as the root.
class PathFinder {
 public:
  PathFinder(Impl* m, Epoch e) : m_(m), e_(e), it_(m->store->NewVersionIterator(Cf::kInodes)) {}

  // The inode's record at this epoch (kNotFound when absent) and the epoch
  // it was written at.
  Status Attr(InodeId ino, InodeAttr* a, Epoch* version = nullptr) {
    auto c = attrs_.find(ino);
    if (c == attrs_.end()) {
      Got g;
      std::string payload;
      g.s = GetAtIter(it_.get(), InodePrefix(ino), e_, &payload, &g.version);
      if (g.s.ok()) g.s = DecodeInode(payload, &g.a);
      c = attrs_.emplace(ino, std::move(g)).first;
    }
    if (!c->second.s.ok()) return c->second.s;
    *a = c->second.a;
    if (version) *version = c->second.version;
    return Status::Ok();
  }

  // Every entry of `dir` at this epoch (a diff compares them).
  const Listing* List(InodeId dir) {
    auto it = cache_.find(dir);
    if (it != cache_.end()) return &it->second;
    Listing l;
    if (!ListDirAt(m_, dir, e_, &l).ok()) l.ents.clear();
    return &cache_.emplace(dir, std::move(l)).first->second;
  }

  // Finds the names of `inos` and of their ancestors, level by level, each
  // directory read once per level for all the names wanted from it.
  void Prepare(const std::vector<InodeId>& inos) {
    std::vector<InodeId> level(inos.begin(), inos.end());
    while (!level.empty()) {
      std::map<InodeId, std::set<InodeId>> wanted;  // directory -> inodes to name in it
      for (InodeId ino : level) {
        if (ino == kRootIno || links_.count(ino)) continue;
        Link& l = links_[ino];
        InodeAttr a;
        if (Attr(ino, &a).ok() && a.parent != 0) {
          l.parent = a.parent;
          wanted[a.parent].insert(ino);
        }
      }
      level.clear();
      for (auto& [dir, want] : wanted) {
        // An inode's path is through the first entry (in name order) that
        // names it: the first one this pass meets.
        if (FindNames(dir, want) && dir != kRootIno) level.push_back(dir);
      }
    }
  }

  // "/a/b" for `ino` at this epoch; "" when it cannot be named.
  std::string PathOf(InodeId ino) {
    if (ino == kRootIno) return "";
    if (!links_.count(ino)) Prepare({ino});
    return Compose(ino, 0);
  }

 private:
  struct Got {
    Status s;
    InodeAttr a;
    Epoch version = 0;
  };
  struct Link {
    InodeId parent = 0;  // 0: no parent, or not named in it
    std::string name;
    bool named = false;
  };

  // Names the inodes of `want` from the entries of `dir`, stopping once
  // each has its first name; true when any was named. A directory whose
  // entries cannot be read names none.
  bool FindNames(InodeId dir, const std::set<InodeId>& want) {
    std::map<InodeId, std::string> found;
    auto c = cache_.find(dir);
    if (c != cache_.end()) {
      for (const auto& [name, d] : c->second.ents) {
        if (want.count(d.ino)) found.emplace(d.ino, name);
        if (found.size() == want.size()) break;
      }
    } else {
      Status s = ForEachNameAt(m_, Cf::kDentries, DentryDirPrefix(dir), e_, DentryName,
                               [&](std::string_view name, std::string_view v, bool* stop) {
                                 Dentry d;
                                 PSM_RETURN_IF_ERROR(DecodeDentry(v, &d));
                                 if (want.count(d.ino)) found.emplace(d.ino, std::string(name));
                                 *stop = found.size() == want.size();
                                 return Status::Ok();
                               });
      if (!s.ok()) found.clear();
    }
    for (auto& [ino, name] : found) {
      Link& l = links_[ino];
      l.name = std::move(name);
      l.named = true;
    }
    return !found.empty();
  }

  std::string Compose(InodeId ino, int depth) {
    if (ino == kRootIno) return "";
    if (depth > 4096) return {};
    auto c = paths_.find(ino);
    if (c != paths_.end()) return c->second;
    std::string out;
    auto l = links_.find(ino);
    if (l != links_.end() && l->second.named) {
      const InodeId parent = l->second.parent;
      std::string up = parent == kRootIno ? "" : Compose(parent, depth + 1);
      if (parent == kRootIno || !up.empty()) out = up + "/" + l->second.name;
    }
    paths_[ino] = out;
    return out;
  }

  Impl* m_;
  Epoch e_;
  std::unique_ptr<rocksdb::Iterator> it_;  // version iterator over inodes
  std::map<InodeId, Got> attrs_;
  std::map<InodeId, Listing> cache_;
  std::map<InodeId, Link> links_;
  std::map<InodeId, std::string> paths_;
};

bool SameButAtime(const InodeAttr& x, const InodeAttr& y) {
  InodeAttr a = x, b = y;
  a.atime_ns = b.atime_ns = 0;
  return a == b;
}

}  // namespace

Result<std::vector<FileVersion>> FileSystem::History(std::string_view path, bool checksums) {
  Impl* m = impl_.get();
  PSM_ASSIGN_OR_RETURN(std::vector<std::string> parts, SplitPath(path));
  std::vector<Point> points = ActiveSnapshots(m);
  points.push_back(Point{0, "", 0});
  std::vector<FileVersion> out;
  std::vector<Point> first_point;  // where each entry of `out` was first seen
  bool prev_present = false;
  for (const Point& p0 : points) {
    Point pt = p0;
    std::optional<SnapPin> pin;
    if (pt.id) {
      pin.emplace(m, pt.id);
      if (!pin->ok()) continue;  // deleted meanwhile
    } else {
      pt.epoch = m->live();
    }
    InodeId ino = 0;
    InodeAttr a;
    Epoch version = 0;
    Status s = ResolveAt(m, parts, pt.epoch, &ino);
    if (s.ok()) s = GetAttrAt(m, ino, pt.epoch, &a, &version);
    if (s.Is(Code::kNotFound)) {
      prev_present = false;
      continue;
    }
    PSM_RETURN_IF_ERROR(s);
    if (prev_present && out.back().ino == ino && out.back().version == version) {
      if (pt.id) {
        out.back().snapshots.push_back(pt.name);
      } else {
        out.back().live = true;
      }
      continue;
    }
    prev_present = true;
    FileVersion v;
    v.ino = ino;
    v.version = version;
    v.mode = a.mode;
    v.size = a.size;
    v.mtime_ns = a.mtime_ns;
    v.ctime_ns = a.ctime_ns;
    if (pt.id) {
      v.snapshots.push_back(pt.name);
    } else {
      v.live = true;
    }
    if (checksums && S_ISREG(a.mode)) {
      PSM_ASSIGN_OR_RETURN(v.sha256, Checksum(m, pt, ino));
    }
    out.push_back(std::move(v));
  }
  if (out.empty()) {
    return Status::NotFound("'" + std::string(path) + "' exists in no snapshot and not in the live tree");
  }
  return out;
}

Result<DiffResult> FileSystem::Diff(std::string_view from, std::string_view to) {
  Impl* m = impl_.get();
  std::vector<Point> snaps = ActiveSnapshots(m);
  auto find = [&](std::string_view name) -> Result<Point> {
    for (const Point& p : snaps) {
      if (p.name == name) return p;
    }
    return Status::NotFound("no snapshot named '" + std::string(name) + "'");
  };
  PSM_ASSIGN_OR_RETURN(Point a, find(from));
  Point b;
  if (!to.empty()) {
    PSM_ASSIGN_OR_RETURN(b, find(to));
    if (b.epoch < a.epoch) std::swap(a, b);
  }
  SnapPin pin_a(m, a.id);
  if (!pin_a.ok()) return Status::NotFound("snapshot '" + a.name + "' was deleted");
  std::optional<SnapPin> pin_b;
  if (b.id) {
    pin_b.emplace(m, b.id);
    if (!pin_b->ok()) return Status::NotFound("snapshot '" + b.name + "' was deleted");
  } else {
    b.epoch = m->live();
  }
  DiffResult r;
  r.from = a.name;
  r.to = b.name;

  // 1. The dead index, deaths in (a, b].
  // Timestamps alone cannot tell a change: two changes in one clock tick
  // leave mtime and ctime as they were. So a replaced chunk or xattr record,
  // or a directory whose entries differ, counts as a modification by itself.
  std::set<InodeId> changed;  // inodes with a record replaced in between
  std::set<InodeId> content;  // ... of which a chunk or an xattr record
  std::set<InodeId> dirs;     // directories whose entries changed
  {
    auto it = m->store->NewIterator(Cf::kDead);
    for (it->Seek(DeadEpochPrefix(a.epoch + 1)); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      DeadKey dk;
      PSM_RETURN_IF_ERROR(ParseDeadKey(k, &dk));
      if (dk.death > b.epoch) break;
      ++r.dead_entries_read;
      if (dk.kind != DeadKind::kVersion) continue;
      const std::string_view vk = dk.versioned_key;
      if (dk.cf == Cf::kDentries) {
        InodeId parent;
        std::string_view name;
        ParseDentryKey(vk, &parent, &name);
        dirs.insert(parent);
      } else if (dk.cf == Cf::kInodes) {
        changed.insert(InodeFromKey(vk));
      } else if (dk.cf == Cf::kChunks) {
        InodeId ino;
        uint64_t idx;
        ParseChunkKey(vk, &ino, &idx);
        changed.insert(ino);
        content.insert(ino);
      } else if (dk.cf == Cf::kXattrs) {
        InodeId ino;
        std::string_view name;
        ParseXattrKey(vk, &ino, &name);
        changed.insert(ino);
        content.insert(ino);
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  }

  // 2. Classify each changed inode; directories get their entries compared.
  PathFinder pa(m, a.epoch), pb(m, b.epoch);
  std::map<std::string, DiffEntry> entries;  // by path
  std::set<InodeId> modified;
  for (InodeId ino : changed) {
    InodeAttr xa, xb;
    Epoch va = 0, vb = 0;
    Status sa = pa.Attr(ino, &xa, &va);
    Status sb = pb.Attr(ino, &xb, &vb);
    if (!sa.ok() && !sa.Is(Code::kNotFound)) return sa;
    if (!sb.ok() && !sb.Is(Code::kNotFound)) return sb;
    if ((sa.ok() && S_ISDIR(xa.mode)) || (sb.ok() && S_ISDIR(xb.mode))) dirs.insert(ino);
    if (!sa.ok() || !sb.ok()) continue;
    if (!SameButAtime(xa, xb) || content.count(ino)) {
      modified.insert(ino);
    } else if (va != vb) {
      // The attributes were rewritten to equal values (a change within one
      // tick, or an atime-only update): an xattr added meanwhile still counts.
      std::map<std::string, std::string> ea, eb;
      PSM_RETURN_IF_ERROR(XattrsAt(m, ino, a.epoch, &ea));
      PSM_RETURN_IF_ERROR(XattrsAt(m, ino, b.epoch, &eb));
      if (ea != eb) modified.insert(ino);
    }
  }
  // Entries that appeared / disappeared, matched by inode into renames.
  struct Moved {
    InodeId dir;
    const std::string* name;
    Dentry d;
  };
  std::vector<Moved> went, arrived;  // in directory, then name order
  for (InodeId dir : dirs) {
    ++r.dirs_compared;
    const Listing* la = pa.List(dir);
    const Listing* lb = pb.List(dir);
    InodeAttr da, db;
    if (la->ents != lb->ents && pa.Attr(dir, &da).ok() && pb.Attr(dir, &db).ok()) {
      modified.insert(dir);  // entries came or went, whatever its times say
    }
    for (const auto& [name, d] : la->ents) {
      auto o = lb->ents.find(name);
      if (o != lb->ents.end() && o->second.ino == d.ino) continue;
      went.push_back(Moved{dir, &name, d});
    }
    for (const auto& [name, d] : lb->ents) {
      auto o = la->ents.find(name);
      if (o != la->ents.end() && o->second.ino == d.ino) continue;
      arrived.push_back(Moved{dir, &name, d});
    }
  }
  // The paths wanted at each end, their directories read once for all.
  {
    std::vector<InodeId> wa, wb;
    for (const Moved& x : went) wa.push_back(x.dir);
    for (const Moved& x : arrived) wb.push_back(x.dir);
    for (InodeId ino : modified) {
      InodeAttr xb;
      if (pb.Attr(ino, &xb).ok()) wb.push_back(ino);
    }
    pa.Prepare(wa);
    pb.Prepare(wb);
  }
  std::map<InodeId, std::pair<std::string, uint32_t>> gone, came;
  auto path_in = [](PathFinder& pf, InodeId dir) {
    if (dir == kRootIno) return std::string();
    std::string up = pf.PathOf(dir);
    return up.empty() ? "/<inode " + std::to_string(dir) + ">" : up;
  };
  for (const Moved& x : went) gone[x.d.ino] = {path_in(pa, x.dir) + "/" + *x.name, x.d.type};
  for (const Moved& x : arrived) came[x.d.ino] = {path_in(pb, x.dir) + "/" + *x.name, x.d.type};
  for (const auto& [ino, pt] : gone) {
    auto c = came.find(ino);
    DiffEntry e;
    e.type = pt.second;
    if (c != came.end()) {
      e.change = 'R';
      e.path = c->second.first;
      e.old_path = pt.first;
      came.erase(c);
    } else {
      e.change = '-';
      e.path = pt.first;
    }
    entries[e.path + (e.change == '-' ? "\x01" : "")] = e;
  }
  for (const auto& [ino, pt] : came) {
    DiffEntry e;
    e.change = '+';
    e.path = pt.first;
    e.type = pt.second;
    entries[e.path] = e;
  }
  for (InodeId ino : modified) {
    InodeAttr xb;
    if (!pb.Attr(ino, &xb).ok()) continue;
    std::string p = ino == kRootIno ? "/" : pb.PathOf(ino);
    if (p.empty()) p = "/<inode " + std::to_string(ino) + ">";
    if (entries.count(p)) continue;  // already listed as created or renamed
    DiffEntry e;
    e.change = 'M';
    e.path = p;
    e.type = xb.mode & S_IFMT;
    entries[p] = e;
  }
  for (auto& [k, e] : entries) r.entries.push_back(std::move(e));
  std::stable_sort(r.entries.begin(), r.entries.end(),
                   [](const DiffEntry& x, const DiffEntry& y) { return x.path < y.path; });
  return r;
}

}  // namespace psm
