// Shared by the restore and send/receive model tests (and stream_race_test):
// an independent model of a tree (TreeModel), a random-change driver over
// psm::FileSystem that keeps the model and checks every result against it
// (Mutator), and the comparison of any psmfs tree with a model
// (CompareWithModel). Manifests (every path of a psmfs tree with everything
// a restore or a receive must reproduce about it) remain for comparing one
// psmfs tree with another where no model is kept.
#pragma once

#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/common/core_test_util.h"

namespace psm_test {
using namespace psm;

using Manifest = std::map<std::string, std::string>;

inline uint64_t Fnv(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline std::string Ns(const struct timespec& t) {
  return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec);
}

// Everything a restore must bring back about one node.
inline std::string Describe(FileSystem& fs, NodeId node, const std::string& path,
                     std::map<InodeId, std::string>* groups) {
  auto a = fs.GetAttr(node);
  REQUIRE_MESSAGE(a.ok(), (path + ": " + a.status().ToString()));
  const struct stat& st = a->st;
  std::string d = "mode=" + std::to_string(st.st_mode) + " uid=" + std::to_string(st.st_uid) +
                  " gid=" + std::to_string(st.st_gid) + " nlink=" + std::to_string(st.st_nlink) +
                  " size=" + std::to_string(st.st_size) + " mtime=" + Ns(st.st_mtim) +
                  " ctime=" + Ns(st.st_ctim) + " rdev=" + std::to_string(st.st_rdev);
  if (!S_ISDIR(st.st_mode)) {
    // Hard links: the first path (in walk order) of the inode names the group.
    auto [it, fresh] = groups->emplace(InoOf(node), path);
    d += " group=" + it->second;
    (void)fresh;
  }
  if (S_ISREG(st.st_mode)) {
    d += " blocks=" + std::to_string(st.st_blocks);
    auto fh = fs.OpenFile(node, O_RDONLY);
    REQUIRE_MESSAGE(fh.ok(), (path + ": " + fh.status().ToString()));
    std::string data(st.st_size, '\0');
    auto n = fs.Read(*fh, 0, data.size(), data.data());
    REQUIRE(n.ok());
    CHECK(*n == data.size());
    d += " data=" + std::to_string(Fnv(data));
    // The hole map: runs of data.
    uint64_t off = 0;
    while (off < static_cast<uint64_t>(st.st_size)) {
      auto ds = fs.Lseek(*fh, off, SEEK_DATA);
      if (!ds.ok()) break;
      auto hs = fs.Lseek(*fh, *ds, SEEK_HOLE);
      REQUIRE(hs.ok());
      d += " [" + std::to_string(*ds) + "," + std::to_string(*hs) + ")";
      if (*hs <= *ds) break;
      off = *hs;
    }
    REQUIRE(fs.Release(*fh).ok());
  } else if (S_ISLNK(st.st_mode)) {
    auto t = fs.ReadLink(node);
    REQUIRE(t.ok());
    d += " target=" + *t;
  }
  auto names = fs.ListXattr(node);
  REQUIRE(names.ok());
  std::vector<std::string> xs;
  for (size_t p = 0; p < names->size();) {
    size_t e = names->find('\0', p);
    if (e == std::string::npos) e = names->size();
    if (e > p) xs.push_back(names->substr(p, e - p));
    p = e + 1;
  }
  std::sort(xs.begin(), xs.end());
  for (const std::string& x : xs) {
    auto v = fs.GetXattr(node, x);
    REQUIRE_MESSAGE(v.ok(), (path + " " + x + ": " + v.status().ToString()));
    d += " x:" + x + "=" + *v;
  }
  return d;
}

inline void Walk(FileSystem& fs, NodeId dir, const std::string& path, bool live_root, Manifest* out,
          std::map<InodeId, std::string>* groups) {
  std::vector<std::string> names;
  auto dh = fs.OpenDir(dir);
  REQUIRE_MESSAGE(dh.ok(), (path + ": " + dh.status().ToString()));
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
               if (e.name != "." && e.name != ".." && !(live_root && e.name == kSnapDirName)) {
                 names.emplace_back(e.name);
               }
               return true;
             }).ok());
  REQUIRE(fs.ReleaseDir(*dh).ok());
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    auto e = fs.Lookup(dir, n);
    REQUIRE_MESSAGE(e.ok(), (path + "/" + n + ": " + e.status().ToString()));
    const std::string p = path + "/" + n;
    (*out)[p] = Describe(fs, e->node, p, groups);
    if (S_ISDIR(e->st.st_mode)) Walk(fs, e->node, p, false, out, groups);
  }
}

inline Manifest Take(FileSystem& fs, NodeId root, bool live) {
  Manifest m;
  std::map<InodeId, std::string> groups;
  m["/"] = Describe(fs, root, "/", &groups);
  Walk(fs, root, "", live, &m, &groups);
  return m;
}
inline Manifest Live(FileSystem& fs) { return Take(fs, kRootIno, true); }
inline Manifest Snap(FileSystem& fs, const std::string& name) {
  auto e = fs.Lookup(kSnapDirNode, name);
  REQUIRE_MESSAGE(e.ok(), (name + ": " + e.status().ToString()));
  return Take(fs, e->node, false);
}

// The first difference between two manifests, for a readable failure.
inline std::string Diff(const Manifest& a, const Manifest& b) {
  for (const auto& [p, d] : a) {
    auto it = b.find(p);
    if (it == b.end()) return p + " only in the first: " + d;
    if (it->second != d) return p + ":\n  " + d + "\n  " + it->second;
  }
  for (const auto& [p, d] : b) {
    if (!a.count(p)) return p + " only in the second: " + d;
  }
  return "";
}
#define CHECK_SAME(a, b)                   \
  do {                                     \
    std::string diff_ = Diff((a), (b));    \
    CHECK_MESSAGE(diff_.empty(), diff_);   \
  } while (0)

// ---------------------------------------------------------------------------
// The independent model: what a tree must look like, kept by the driver
// alongside every change it makes, never read back from psmfs. Each node
// holds its type and permission bits, owner, link count, device number,
// contents and data-block map (regular files), target (symlinks), xattrs
// and entries (directories). Times come from the clock the core reads
// (CLOCK_REALTIME_COARSE), which the test cannot set: the model holds the
// interval [clock before the call, clock after it] of the last operation
// that set a time (an exact value for an explicit mtime), and a comparison
// asked to `pin` replaces an interval by the value psmfs shows once that
// value has been found inside it — so later trees (a snapshot, a restored or
// received tree) must carry that exact time.

inline int64_t ClockNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}
inline int64_t NsOf(const struct timespec& t) { return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec; }

struct Times {
  int64_t lo = 0, hi = 0;  // inclusive, ns
  bool Has(int64_t v) const { return lo <= v && v <= hi; }
  std::string Str() const {
    return lo == hi ? std::to_string(lo) : "[" + std::to_string(lo) + ".." + std::to_string(hi) + "]";
  }
};

struct FileBody {
  std::string bytes;       // the contents; bytes.size() is the file size
  std::vector<bool> data;  // per block of the file: data (true) or hole
};

struct MNode {
  uint32_t mode = 0, uid = 0, gid = 0, nlink = 1;
  uint64_t rdev = 0;
  std::shared_ptr<FileBody> body;  // regular files (shared until changed)
  std::string target;              // symlinks
  std::map<std::string, std::string> xattrs;
  std::map<std::string, uint64_t> entries;  // directories: name -> node
  uint64_t parent = 0;                      // directories
  Times mtime, ctime;
};

// The model of one tree. Operations mirror the core's FileSystem calls:
// each returns the Code the call must return and, when that is kOk, makes
// the change, with `t` the interval of the call.
struct TreeModel {
  static constexpr uint64_t kRoot = 1;
  uint32_t bs = 4096;
  std::map<uint64_t, MNode> nodes;
  uint64_t next = 2;

  MNode& N(uint64_t id) { return nodes.at(id); }
  const MNode& N(uint64_t id) const { return nodes.at(id); }
  uint64_t SizeOf(const MNode& n) const {
    if (S_ISREG(n.mode)) return n.body->bytes.size();
    if (S_ISDIR(n.mode)) return bs;
    if (S_ISLNK(n.mode)) return n.target.size();
    return 0;
  }
  uint64_t DataBlocks(const MNode& n) const {
    return S_ISREG(n.mode) ? std::count(n.body->data.begin(), n.body->data.end(), true) : 0;
  }
  // Copy on write: snapshots of the model share bodies until one changes.
  FileBody& Body(MNode& n) {
    if (n.body.use_count() != 1) n.body = std::make_shared<FileBody>(*n.body);
    return *n.body;
  }
  static void Touch(MNode& n, Times t) { n.mtime = n.ctime = t; }

  Code Lookup(uint64_t dir, const std::string& name, uint64_t* out) const {
    const MNode& d = N(dir);
    if (!S_ISDIR(d.mode)) return Code::kNotDir;
    auto it = d.entries.find(name);
    if (it == d.entries.end()) return Code::kNotFound;
    *out = it->second;
    return Code::kOk;
  }
  // MkNod, MkDir, Symlink, Create: `mode` carries the type.
  Code Create(uint64_t dir, const std::string& name, uint32_t mode, uint64_t rdev,
              const std::string& target, const Credentials& c, Times t, uint64_t* out) {
    MNode& p = N(dir);
    if (!S_ISDIR(p.mode)) return Code::kNotDir;
    if (p.entries.count(name)) return Code::kExists;
    MNode n;
    n.mode = mode;
    n.uid = c.uid;
    n.gid = c.gid;
    if (p.mode & S_ISGID) {  // a set-group-ID directory passes its group on
      n.gid = p.gid;
      if (S_ISDIR(mode)) n.mode |= S_ISGID;
    }
    n.nlink = S_ISDIR(mode) ? 2 : 1;
    n.rdev = rdev;
    n.target = target;
    Touch(n, t);
    if (S_ISREG(mode)) n.body = std::make_shared<FileBody>();
    if (S_ISDIR(mode)) {
      n.parent = dir;
      p.nlink++;
    }
    const uint64_t id = next++;
    p.entries[name] = id;
    Touch(p, t);
    nodes[id] = std::move(n);
    if (out) *out = id;
    return Code::kOk;
  }
  Code OpenFile(uint64_t id) const {
    const MNode& n = N(id);
    if (S_ISDIR(n.mode)) return Code::kIsDir;
    if (!S_ISREG(n.mode)) return Code::kInvalid;
    return Code::kOk;
  }
  // O_TRUNC on a writable open: only a non-empty file changes.
  void OpenTrunc(uint64_t id, Times t) {
    MNode& n = N(id);
    if (n.body->bytes.empty()) return;
    FileBody& b = Body(n);
    b.bytes.clear();
    b.data.clear();
    Touch(n, t);
  }
  void Write(uint64_t id, uint64_t off, const std::string& d, bool kernel_times, Times t) {
    MNode& n = N(id);
    FileBody& b = Body(n);
    const uint64_t end = off + d.size();
    if (b.bytes.size() < end) b.bytes.resize(end, '\0');
    b.bytes.replace(off, d.size(), d);
    b.data.resize((b.bytes.size() + bs - 1) / bs, false);
    for (uint64_t k = off / bs; k <= (end - 1) / bs; ++k) b.data[k] = true;
    if (!kernel_times) Touch(n, t);
  }
  // SetAttr(kSetSize).
  Code Truncate(uint64_t id, uint64_t size, Times t) {
    MNode& n = N(id);
    if (S_ISDIR(n.mode)) return Code::kIsDir;
    if (!S_ISREG(n.mode)) return Code::kInvalid;
    FileBody& b = Body(n);
    b.bytes.resize(size, '\0');  // what grows reads as zeros
    b.data.resize((size + bs - 1) / bs, false);
    Touch(n, t);
    return Code::kOk;
  }
  // Fallocate(PUNCH_HOLE | KEEP_SIZE): the bytes read as zeros; whole
  // blocks become holes, partial edge blocks inside the file are written
  // (zeroed) and so hold data.
  void Punch(uint64_t id, uint64_t off, uint64_t len, Times t) {
    MNode& n = N(id);
    FileBody& b = Body(n);
    const uint64_t size = b.bytes.size(), end = off + len;
    const uint64_t data_end = std::min(end, size);
    if (off < data_end) std::fill(b.bytes.begin() + off, b.bytes.begin() + data_end, '\0');
    const uint64_t fb = (off + bs - 1) / bs, lb = end / bs;
    if (fb > lb) {
      if (off < data_end) b.data[off / bs] = true;
    } else {
      if (off % bs && off < data_end) b.data[off / bs] = true;
      if (end % bs && lb * bs < data_end) b.data[lb] = true;
      for (uint64_t k = fb; k < lb && k < b.data.size(); ++k) b.data[k] = false;
    }
    Touch(n, t);
  }
  void DropLink(uint64_t id, Times t) {
    MNode& n = N(id);
    if (S_ISDIR(n.mode) || --n.nlink == 0) {
      nodes.erase(id);
    } else {
      n.ctime = t;
    }
  }
  Code Unlink(uint64_t dir, const std::string& name, Times t) {
    MNode& p = N(dir);
    if (!S_ISDIR(p.mode) || !p.entries.count(name)) return Code::kNotFound;
    const uint64_t id = p.entries.at(name);
    if (S_ISDIR(N(id).mode)) return Code::kIsDir;
    p.entries.erase(name);
    Touch(p, t);
    DropLink(id, t);
    return Code::kOk;
  }
  Code RmDir(uint64_t dir, const std::string& name, Times t) {
    MNode& p = N(dir);
    if (!S_ISDIR(p.mode) || !p.entries.count(name)) return Code::kNotFound;
    const uint64_t id = p.entries.at(name);
    if (!S_ISDIR(N(id).mode)) return Code::kNotDir;
    if (!N(id).entries.empty()) return Code::kNotEmpty;
    p.entries.erase(name);
    p.nlink--;
    Touch(p, t);
    nodes.erase(id);
    return Code::kOk;
  }
  // Is directory `target` `dir` or below it?
  bool Below(uint64_t dir, uint64_t target) const {
    uint64_t cur = target;
    for (int depth = 0; cur != kRoot && depth < 10000; ++depth) {
      if (cur == dir) return true;
      cur = N(cur).parent;
    }
    return cur == dir;
  }
  Code Rename(uint64_t sdir, const std::string& sname, uint64_t ddir, const std::string& dname,
              unsigned flags, Times t) {
    const bool exchange = flags & RENAME_EXCHANGE;
    if (!S_ISDIR(N(sdir).mode) || !N(sdir).entries.count(sname)) return Code::kNotFound;
    const uint64_t sid = N(sdir).entries.at(sname);
    uint64_t tid = 0;
    const bool have_t = S_ISDIR(N(ddir).mode) && N(ddir).entries.count(dname);
    if (have_t) tid = N(ddir).entries.at(dname);
    if (sdir == ddir && sname == dname) return Code::kOk;
    if (have_t && (flags & RENAME_NOREPLACE)) return Code::kExists;
    if (!have_t && exchange) return Code::kNotFound;
    if (ddir != sdir && !S_ISDIR(N(ddir).mode)) return Code::kNotDir;
    const bool sd = S_ISDIR(N(sid).mode), td = have_t && S_ISDIR(N(tid).mode);
    if (sd && sdir != ddir && Below(sid, ddir)) return Code::kInvalid;
    if (exchange && td && sdir != ddir && Below(tid, sdir)) return Code::kInvalid;
    if (have_t && tid == sid) return Code::kOk;  // two links of one file
    if (have_t && !exchange) {
      if (sd && !td) return Code::kNotDir;
      if (!sd && td) return Code::kIsDir;
      if (td && !N(tid).entries.empty()) return Code::kNotEmpty;
    }
    MNode& sp = N(sdir);
    MNode& dp = N(ddir);
    if (exchange) {
      sp.entries[sname] = tid;
      dp.entries[dname] = sid;
      if (sdir != ddir) {
        if (sd) {
          N(sid).parent = ddir;
          sp.nlink--;
          dp.nlink++;
        }
        if (td) {
          N(tid).parent = sdir;
          dp.nlink--;
          sp.nlink++;
        }
      }
      N(tid).ctime = t;
    } else {
      if (have_t) {
        if (td) dp.nlink--;
        DropLink(tid, t);
      }
      sp.entries.erase(sname);
      dp.entries[dname] = sid;
      if (sd && sdir != ddir) {
        N(sid).parent = ddir;
        sp.nlink--;
        dp.nlink++;
      }
    }
    N(sid).ctime = t;
    Touch(sp, t);
    Touch(dp, t);
    return Code::kOk;
  }
  Code Link(uint64_t id, uint64_t ddir, const std::string& dname, Times t) {
    if (S_ISDIR(N(id).mode)) return Code::kPermission;
    MNode& dp = N(ddir);
    if (!S_ISDIR(dp.mode)) return Code::kNotDir;
    if (dp.entries.count(dname)) return Code::kExists;
    dp.entries[dname] = id;
    N(id).nlink++;
    N(id).ctime = t;
    Touch(dp, t);
    return Code::kOk;
  }
  Code SetXattr(uint64_t id, const std::string& name, const std::string& value, int flags,
                Times t) {
    MNode& n = N(id);
    const bool exists = n.xattrs.count(name);
    if (exists && (flags & XATTR_CREATE)) return Code::kExists;
    if (!exists && (flags & XATTR_REPLACE)) return Code::kNoAttr;
    n.xattrs[name] = value;
    n.ctime = t;
    return Code::kOk;
  }
  Code RemoveXattr(uint64_t id, const std::string& name, Times t) {
    MNode& n = N(id);
    if (!n.xattrs.erase(name)) return Code::kNoAttr;
    n.ctime = t;
    return Code::kOk;
  }
  // SetAttr with kSetMode, kSetUid|kSetGid or kSetMtime (no size).
  void SetAttr(uint64_t id, const struct stat& in, uint32_t bits, Times t) {
    MNode& n = N(id);
    if (bits & kSetMode) n.mode = (n.mode & S_IFMT) | (in.st_mode & 07777);
    if (bits & kSetUid) n.uid = in.st_uid;
    if (bits & kSetGid) n.gid = in.st_gid;
    if (bits & kSetMtime) n.mtime = Times{NsOf(in.st_mtim), NsOf(in.st_mtim)};
    n.ctime = t;
  }
  // Lseek(SEEK_DATA / SEEK_HOLE) on a regular file.
  Result<uint64_t> Seek(uint64_t id, uint64_t off, int whence) const {
    const FileBody& b = *N(id).body;
    const uint64_t size = b.bytes.size();
    if (off >= size) return Status::NoData();
    for (uint64_t k = off / bs; k < b.data.size(); ++k) {
      if (b.data[k] == (whence == SEEK_DATA)) return std::max(off, k * bs);
    }
    if (whence == SEEK_HOLE) return size;
    return Status::NoData();
  }
  // Runs of data, as "[start,end)" clamped to the size.
  std::string DataRuns(uint64_t id) const {
    const FileBody& b = *N(id).body;
    std::string out;
    for (uint64_t k = 0; k < b.data.size();) {
      if (!b.data[k]) {
        ++k;
        continue;
      }
      uint64_t e = k;
      while (e < b.data.size() && b.data[e]) ++e;
      out += " [" + std::to_string(k * bs) + "," +
             std::to_string(std::min<uint64_t>(e * bs, b.bytes.size())) + ")";
      k = e;
    }
    return out;
  }
};

// A readable rendering of a model tree (path -> description), for
// comparing two models (e.g. "the restore has something to do").
inline void RenderWalk(const TreeModel& m, uint64_t dir, const std::string& path, Manifest* out,
                       std::map<uint64_t, std::string>* groups) {
  for (const auto& [name, id] : m.N(dir).entries) {
    const std::string p = path + "/" + name;
    const MNode& n = m.N(id);
    std::string d = "mode=" + std::to_string(n.mode) + " uid=" + std::to_string(n.uid) +
                    " gid=" + std::to_string(n.gid) + " nlink=" + std::to_string(n.nlink) +
                    " size=" + std::to_string(m.SizeOf(n)) + " rdev=" + std::to_string(n.rdev) +
                    " mtime=" + n.mtime.Str() + " ctime=" + n.ctime.Str();
    if (!S_ISDIR(n.mode)) d += " group=" + groups->emplace(id, p).first->second;
    if (S_ISREG(n.mode)) d += " data=" + std::to_string(Fnv(n.body->bytes)) + m.DataRuns(id);
    if (S_ISLNK(n.mode)) d += " target=" + n.target;
    for (const auto& [k, v] : n.xattrs) d += " x:" + k + "=" + v;
    (*out)[p] = d;
    if (S_ISDIR(n.mode)) RenderWalk(m, id, p, out, groups);
  }
}
inline Manifest Render(const TreeModel& m) {
  Manifest out;
  std::map<uint64_t, std::string> groups;
  const MNode& r = m.N(TreeModel::kRoot);
  out["/"] = "mode=" + std::to_string(r.mode) + " nlink=" + std::to_string(r.nlink) +
             " mtime=" + r.mtime.Str() + " ctime=" + r.ctime.Str();
  RenderWalk(m, TreeModel::kRoot, "", &out, &groups);
  return out;
}

// Compares a psmfs tree (or one node) with a model. Collects differences
// as text; reads psmfs only to compare, never to decide what is expected.
struct ModelCheck {
  FileSystem& fs;
  TreeModel& m;
  bool pin;  // replace time intervals by the (checked) values psmfs shows
  std::vector<std::string> diffs;
  std::map<InodeId, std::string> pgroups;  // psmfs inode -> first path
  std::map<uint64_t, std::string> mgroups;  // model node -> first path

  void Diff(const std::string& path, const std::string& what) {
    if (diffs.size() < 25) diffs.push_back(path + ": " + what);
  }
  template <typename T>
  void Eq(const std::string& path, const char* field, T want, T got) {
    if (want != got) {
      Diff(path, std::string(field) + " is " + std::to_string(got) + ", model " +
                     std::to_string(want));
    }
  }
  void Time(const std::string& path, const char* field, Times* want, const struct timespec& got) {
    const int64_t v = NsOf(got);
    if (!want->Has(v)) {
      Diff(path, std::string(field) + " is " + std::to_string(v) + ", model " + want->Str());
    } else if (pin) {
      *want = Times{v, v};
    }
  }

  void Node(NodeId node, uint64_t id, const std::string& path, bool data) {
    MNode& n = m.N(id);
    auto a = fs.GetAttr(node);
    if (!a.ok()) return Diff(path, "getattr: " + a.status().ToString());
    const struct stat& st = a->st;
    Eq<uint64_t>(path, "mode", n.mode, st.st_mode);
    Eq<uint64_t>(path, "uid", n.uid, st.st_uid);
    Eq<uint64_t>(path, "gid", n.gid, st.st_gid);
    Eq<uint64_t>(path, "nlink", n.nlink, st.st_nlink);
    Eq<uint64_t>(path, "rdev", n.rdev, st.st_rdev);
    Eq<uint64_t>(path, "size", m.SizeOf(n), static_cast<uint64_t>(st.st_size));
    Time(path, "mtime", &n.mtime, st.st_mtim);
    Time(path, "ctime", &n.ctime, st.st_ctim);
    if (!S_ISDIR(n.mode)) {
      const std::string& pg = pgroups.emplace(InoOf(node), path).first->second;
      const std::string& mg = mgroups.emplace(id, path).first->second;
      if (pg != mg) Diff(path, "is a link of " + pg + ", model: of " + mg);
    }
    if (S_ISREG(n.mode) && (st.st_mode & S_IFMT) == S_IFREG) {
      Eq<uint64_t>(path, "st_blocks", m.DataBlocks(n) * (m.bs / 512),
                   static_cast<uint64_t>(st.st_blocks));
      if (data) Data(node, id, path);
    }
    if (S_ISLNK(n.mode)) {
      auto t = fs.ReadLink(node);
      if (!t.ok() || *t != n.target) {
        Diff(path, "target " + (t.ok() ? *t : t.status().ToString()) + ", model " + n.target);
      }
    }
    Xattrs(node, n, path);
  }
  void Data(NodeId node, uint64_t id, const std::string& path) {
    const FileBody& b = *m.N(id).body;
    auto fh = fs.OpenFile(node, O_RDONLY);
    if (!fh.ok()) return Diff(path, "open: " + fh.status().ToString());
    std::string got(b.bytes.size() + 4096, '\0');
    auto r = fs.Read(*fh, 0, got.size(), got.data());
    if (!r.ok()) {
      Diff(path, "read: " + r.status().ToString());
    } else {
      got.resize(*r);
      if (got != b.bytes) {
        size_t i = 0;
        while (i < got.size() && i < b.bytes.size() && got[i] == b.bytes[i]) ++i;
        Diff(path, "contents differ from byte " + std::to_string(i) + " (read " +
                       std::to_string(got.size()) + " bytes, model " +
                       std::to_string(b.bytes.size()) + ")");
      }
    }
    std::string runs;  // the hole map as psmfs shows it
    for (uint64_t off = 0; off < b.bytes.size();) {
      auto ds = fs.Lseek(*fh, off, SEEK_DATA);
      if (!ds.ok()) break;
      auto hs = fs.Lseek(*fh, *ds, SEEK_HOLE);
      if (!hs.ok() || *hs <= *ds) {
        runs += " bad SEEK_HOLE at " + std::to_string(*ds);
        break;
      }
      runs += " [" + std::to_string(*ds) + "," + std::to_string(*hs) + ")";
      off = *hs;
    }
    if (runs != m.DataRuns(id)) Diff(path, "data runs" + runs + ", model" + m.DataRuns(id));
    (void)fs.Release(*fh);
  }
  void Xattrs(NodeId node, const MNode& n, const std::string& path) {
    auto names = fs.ListXattr(node);
    if (!names.ok()) return Diff(path, "listxattr: " + names.status().ToString());
    std::map<std::string, std::string> got;
    for (size_t p = 0; p < names->size();) {
      size_t e = names->find('\0', p);
      if (e == std::string::npos) e = names->size();
      if (e > p) {
        const std::string x = names->substr(p, e - p);
        auto v = fs.GetXattr(node, x);
        got[x] = v.ok() ? *v : "<" + v.status().ToString() + ">";
      }
      p = e + 1;
    }
    if (got != n.xattrs) {
      std::string g, w;
      for (const auto& [k, v] : got) g += " " + k + "=" + v;
      for (const auto& [k, v] : n.xattrs) w += " " + k + "=" + v;
      Diff(path, "xattrs" + g + ", model" + w);
    }
  }
  // The directory's entries (names and types) and, recursively, every node.
  void Tree(NodeId dir, uint64_t id, const std::string& path, bool live_root) {
    std::map<std::string, uint32_t> got;
    auto dh = fs.OpenDir(dir);
    if (!dh.ok()) return Diff(path, "opendir: " + dh.status().ToString());
    Status s = fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
      if (e.name != "." && e.name != ".." && !(live_root && e.name == kSnapDirName)) {
        if (!got.emplace(std::string(e.name), e.type).second) {
          Diff(path, std::string(e.name) + " listed twice");
        }
      }
      return true;
    });
    (void)fs.ReleaseDir(*dh);
    if (!s.ok()) return Diff(path, "readdir: " + s.ToString());
    const MNode& d = m.N(id);
    for (const auto& [name, cid] : d.entries) {
      const std::string p = path + "/" + name;
      auto it = got.find(name);
      if (it == got.end()) {
        Diff(p, "missing");
        continue;
      }
      const uint32_t type = m.N(cid).mode & S_IFMT;
      if (it->second != type) Diff(p, "listed with type " + std::to_string(it->second));
      auto e = fs.Lookup(dir, name);
      if (!e.ok()) {
        Diff(p, "lookup: " + e.status().ToString());
        continue;
      }
      Node(e->node, cid, p, true);
      if (S_ISDIR(m.N(cid).mode) && S_ISDIR(e->st.st_mode)) Tree(e->node, cid, p, false);
    }
    for (const auto& [name, type] : got) {
      if (!d.entries.count(name)) Diff(path + "/" + name, "not in the model");
    }
  }
  std::string Text() const {
    std::string out;
    for (const std::string& d : diffs) out += "\n  " + d;
    return out;
  }
};

// "" when the tree at `root` (the live root, or a snapshot's) is the model.
inline std::string CompareWithModel(FileSystem& fs, NodeId root, bool live_root, TreeModel& m,
                                    bool pin = false) {
  ModelCheck c{fs, m, pin, {}, {}, {}};
  c.Node(root, TreeModel::kRoot, "/", false);
  c.Tree(root, TreeModel::kRoot, "", live_root);
  return c.Text();
}
// "" when snapshot `name` of `fs` is the model `m` (its times pinned).
inline std::string CompareSnapshot(FileSystem& fs, const std::string& name, const TreeModel& m) {
  auto e = fs.Lookup(kSnapDirNode, name);
  if (!e.ok()) return "\n  snapshot " + name + ": " + e.status().ToString();
  TreeModel copy = m;  // shares the file bodies; nothing in it changes
  return CompareWithModel(fs, e->node, false, copy);
}
#define CHECK_MODEL(diff_expr)                                    \
  do {                                                            \
    const std::string diff_ = (diff_expr);                        \
    CHECK_MESSAGE(diff_.empty(), "differs from the model:" << diff_); \
  } while (0)

struct ModelSnap {
  std::string name;
  TreeModel m;
};
inline void CheckModelSnapshots(FileSystem& fs, const std::vector<ModelSnap>& snaps) {
  for (const ModelSnap& s : snaps) {
    INFO("snapshot " << s.name);
    CHECK_MODEL(CompareSnapshot(fs, s.name, s.m));
  }
}

// Random live changes over a small name space, so that names collide and
// every kind of change meets every other, made on psmfs and on the model
// together. Every call's result is checked against the model: the status
// code (ENOENT, EEXIST, ... are part of the game and must be the model's),
// the bytes of every read, every SEEK_DATA/SEEK_HOLE answer, and after each
// change the attributes (and contents, after a data change) of the nodes it
// touched. A mismatch calls on_fail (default: FAIL, ending the test case)
// with the seed and the last operations; the driver then stops.
struct Mutator {
  std::unique_ptr<FileSystem>& fsp;
  FileSystem& F() { return *fsp; }
  uint64_t seed;
  std::mt19937_64 rng;
  Credentials cred;
  uint32_t seq = 0;
  const std::vector<std::string> dirs = {"", "d1", "d1/d2", "d3"};
  const std::vector<std::string> names = {"a", "b", "c", "d1", "d2", "d3"};
  TreeModel model;  // the live tree
  std::deque<std::string> history;
  bool failed = false;
  std::function<void(const std::string&)> on_fail = [](const std::string& m) { FAIL(m); };
  uint64_t ops = 0, refused = 0;  // calls checked; of them, errors the model predicted

  Mutator(std::unique_ptr<FileSystem>& f, uint64_t s) : fsp(f), seed(s), rng(s) {
    // A fresh volume: an empty root directory, as Format makes it.
    MNode root;
    root.mode = S_IFDIR | 0755;
    root.uid = geteuid();
    root.gid = getegid();
    root.nlink = 2;
    root.parent = TreeModel::kRoot;
    root.mtime = root.ctime = Times{0, ClockNs()};
    model.nodes[TreeModel::kRoot] = root;
    model.bs = F().Stats().block_size;
    const std::string d = CompareWithModel(F(), kRootIno, true, model);
    REQUIRE_MESSAGE(d.empty(), "the model starts from an empty volume:" << d);
  }
  size_t R(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

  void Fail(const std::string& what) {
    if (failed) return;
    failed = true;
    std::string h = "seed " + std::to_string(seed) + ", call " + std::to_string(ops) + ": " +
                    what + "\nlast calls (newest last):";
    for (const std::string& s : history) h += "\n  " + s;
    on_fail(h);
  }
  void Note(const std::string& op) {
    history.push_back(op);
    if (history.size() > 40) history.pop_front();
  }
  // The call's code must be the model's.
  bool Expect(const std::string& op, const Status& got, Code want) {
    ++ops;
    Note(op + " -> " + (got.ok() ? "ok" : got.ToString()));
    if (got.code() != want) {
      Fail(op + " returned " + got.ToString() + ", the model says code " +
           std::to_string(static_cast<int>(want)));
      return false;
    }
    if (want != Code::kOk) ++refused;
    return true;
  }
  static Times Span(int64_t t0) { return Times{t0, ClockNs()}; }

  // Node and (model) id at `path`; every lookup checked.
  std::optional<std::pair<NodeId, uint64_t>> Resolve(const std::string& path) {
    NodeId n = kRootIno;
    uint64_t id = TreeModel::kRoot;
    size_t p = 0;
    while (p < path.size()) {
      size_t e = path.find('/', p);
      if (e == std::string::npos) e = path.size();
      const std::string c = path.substr(p, e - p);
      auto r = Look(n, id, c, path);
      if (!r) return std::nullopt;
      n = r->first;
      id = r->second;
      p = e + 1;
    }
    return std::make_pair(n, id);
  }
  // Lookup on both; the codes (and the type found) must agree.
  std::optional<std::pair<NodeId, uint64_t>> Look(NodeId dir, uint64_t dir_id,
                                                  const std::string& name,
                                                  const std::string& where) {
    auto r = F().Lookup(dir, name);
    uint64_t id = 0;
    const Code want = model.Lookup(dir_id, name, &id);
    if (!Expect("lookup " + where + " " + name, r.status(), want) || !r.ok()) return std::nullopt;
    if ((r->st.st_mode & S_IFMT) != (model.N(id).mode & S_IFMT)) {
      Fail("lookup " + name + " found type " + std::to_string(r->st.st_mode & S_IFMT) +
           ", model " + std::to_string(model.N(id).mode & S_IFMT));
      return std::nullopt;
    }
    return std::make_pair(r->node, id);
  }
  // After a change: the node at dir/name is the model's (contents too if `data`).
  void CheckName(NodeId dir, uint64_t dir_id, const std::string& name, bool data) {
    if (failed) return;
    auto e = Look(dir, dir_id, name, "(check)");
    if (!e) return;
    ModelCheck c{F(), model, /*pin=*/true, {}, {}, {}};
    c.Node(e->first, e->second, name, data);
    if (!c.diffs.empty()) Fail("after the change:" + c.Text());
  }
  void CheckDir(NodeId dir, uint64_t dir_id, const std::string& what) {
    if (failed) return;
    ModelCheck c{F(), model, /*pin=*/true, {}, {}, {}};
    c.Node(dir, dir_id, what, false);
    if (!c.diffs.empty()) Fail("after the change:" + c.Text());
  }

  struct Picked {
    NodeId dir;
    uint64_t dir_id;
    std::string path, name;
  };
  std::optional<Picked> Pick() {
    const std::string& d = dirs[R(dirs.size())];
    const std::string& n = names[R(names.size())];
    auto r = Resolve(d);
    if (!r) return std::nullopt;
    return Picked{r->first, r->second, d, n};
  }

  // Opens `n` read-write (O_TRUNC sometimes), writes, closes; all checked.
  void WriteSome(NodeId n, uint64_t id, const std::string& what) {
    const bool trunc = R(8) == 0;
    int64_t t0 = ClockNs();
    auto fh = F().OpenFile(n, O_RDWR | (trunc ? O_TRUNC : 0));
    Times t = Span(t0);
    if (!Expect("open " + what + (trunc ? " O_RDWR|O_TRUNC" : " O_RDWR"), fh.status(),
                model.OpenFile(id)) ||
        !fh.ok()) {
      return;
    }
    if (trunc) model.OpenTrunc(id, t);
    const size_t len = 1 + R(R(2) ? 5000 : 200000);
    const uint64_t off = R(2) ? 0 : R(3u << 20);
    const std::string d = Pattern(len, ++seq);
    // Sometimes as the FUSE adapter writes from the page cache: the caller
    // keeps the times, and an overwrite inside the file is made in place.
    const bool kernel_times = R(4) == 0;
    t0 = ClockNs();
    auto w = F().Write(*fh, off, d.data(), d.size(), kernel_times);
    t = Span(t0);
    if (Expect("write " + what + " @" + std::to_string(off) + " +" + std::to_string(len) +
                   (kernel_times ? " (kernel times)" : ""),
               w.status(), Code::kOk)) {
      if (*w != len) Fail("write returned " + std::to_string(*w));
      model.Write(id, off, d, kernel_times, t);
    }
    Expect("release " + what, F().Release(*fh), Code::kOk);
  }

  // Reads a random range and asks SEEK_DATA/SEEK_HOLE once; both checked.
  void ReadSome(NodeId n, uint64_t id, const std::string& what) {
    auto fh = F().OpenFile(n, O_RDONLY);
    if (!Expect("open " + what + " O_RDONLY", fh.status(), model.OpenFile(id)) || !fh.ok()) return;
    const FileBody& b = *model.N(id).body;
    const uint64_t size = b.bytes.size();
    const uint64_t off = R(size + 8192);
    const size_t len = 1 + R(R(2) ? 8192 : 400000);
    std::string buf(len, '\x55');
    auto r = F().Read(*fh, off, len, buf.data());
    if (Expect("read " + what + " @" + std::to_string(off) + " +" + std::to_string(len),
               r.status(), Code::kOk)) {
      const size_t want = off < size ? std::min<uint64_t>(len, size - off) : 0;
      if (*r != want) {
        Fail("read returned " + std::to_string(*r) + " bytes, model " + std::to_string(want));
      } else if (want > 0 && buf.compare(0, want, b.bytes, off, want) != 0) {
        Fail("read " + what + " @" + std::to_string(off) + ": bytes differ from the model");
      }
    }
    const int whence = R(2) ? SEEK_DATA : SEEK_HOLE;
    const uint64_t soff = R(size + 8192);
    auto s = F().Lseek(*fh, soff, whence);
    auto want = model.Seek(id, soff, whence);
    if (Expect(std::string(whence == SEEK_DATA ? "SEEK_DATA " : "SEEK_HOLE ") + what + " @" +
                   std::to_string(soff),
               s.status(), want.status().code()) &&
        s.ok() && *s != *want) {
      Fail("lseek answered " + std::to_string(*s) + ", model " + std::to_string(*want));
    }
    Expect("release " + what, F().Release(*fh), Code::kOk);
  }

  void Step() {
    if (failed) return;
    auto pk = Pick();
    if (!pk) return;
    const NodeId dir = pk->dir;
    const uint64_t dir_id = pk->dir_id;
    const std::string& name = pk->name;
    const std::string what = pk->path + "/" + name;
    auto node = Look(dir, dir_id, name, pk->path);
    if (failed) return;
    int64_t t0 = 0;
    switch (R(19)) {
      case 0:
      case 1:
      case 2: {  // write (creating the file if needed)
        if (node) {
          WriteSome(node->first, node->second, what);
        } else {
          const uint32_t mode = 0600 | R(0100);
          t0 = ClockNs();
          auto c = F().Create(dir, name, mode, O_RDWR, cred);
          uint64_t id = 0;
          const Code want = model.Create(dir_id, name, S_IFREG | mode, 0, "", cred, Span(t0), &id);
          if (!Expect("create " + what, c.status(), want) || !c.ok()) break;
          Expect("release " + what, F().Release(c->second), Code::kOk);
          WriteSome(c->first.node, id, what);
        }
        CheckName(dir, dir_id, name, true);
        CheckDir(dir, dir_id, pk->path + "/");
        break;
      }
      case 3: {  // truncate
        if (!node) break;
        struct stat st {};
        st.st_size = R(2) ? 0 : R(4u << 20);
        t0 = ClockNs();
        auto r = F().SetAttr(node->first, st, kSetSize, cred);
        if (Expect("truncate " + what + " " + std::to_string(st.st_size), r.status(),
                   model.Truncate(node->second, st.st_size, Span(t0)))) {
          CheckName(dir, dir_id, name, true);
        }
        break;
      }
      case 4: {  // punch a hole
        if (!node) break;
        auto fh = F().OpenFile(node->first, O_RDWR);
        if (!Expect("open " + what + " O_RDWR", fh.status(), model.OpenFile(node->second)) ||
            !fh.ok()) {
          break;
        }
        const uint64_t off = R(1u << 20), len = 1 + R(300000);
        t0 = ClockNs();
        Status s = F().Fallocate(*fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        if (Expect("punch " + what + " @" + std::to_string(off) + " +" + std::to_string(len), s,
                   Code::kOk)) {
          model.Punch(node->second, off, len, Span(t0));
        }
        Expect("release " + what, F().Release(*fh), Code::kOk);
        CheckName(dir, dir_id, name, true);
        break;
      }
      case 5: {
        t0 = ClockNs();
        Status s = F().Unlink(dir, name);
        if (Expect("unlink " + what, s, model.Unlink(dir_id, name, Span(t0))) && s.ok()) {
          CheckDir(dir, dir_id, pk->path + "/");
          CheckName(dir, dir_id, name, false);  // ENOENT now, on both
        }
        break;
      }
      case 6: {
        t0 = ClockNs();
        auto e = F().MkDir(dir, name, 0755, cred);
        if (Expect("mkdir " + what, e.status(),
                   model.Create(dir_id, name, S_IFDIR | 0755, 0, "", cred, Span(t0), nullptr)) &&
            e.ok()) {
          CheckName(dir, dir_id, name, false);
          CheckDir(dir, dir_id, pk->path + "/");
        }
        break;
      }
      case 7: {
        t0 = ClockNs();
        Status s = F().RmDir(dir, name, cred);
        if (Expect("rmdir " + what, s, model.RmDir(dir_id, name, Span(t0))) && s.ok()) {
          CheckDir(dir, dir_id, pk->path + "/");
        }
        break;
      }
      case 8: {
        auto p2 = Pick();
        if (!p2) break;
        static const unsigned kFlags[] = {0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE};
        const unsigned flags = kFlags[R(4)];
        t0 = ClockNs();
        Status s = F().Rename(dir, name, p2->dir, p2->name, flags);
        const Code want = model.Rename(dir_id, name, p2->dir_id, p2->name, flags, Span(t0));
        if (Expect("rename " + what + " -> " + p2->path + "/" + p2->name + " flags " +
                       std::to_string(flags),
                   s, want) &&
            s.ok()) {
          CheckName(dir, dir_id, name, false);
          CheckName(p2->dir, p2->dir_id, p2->name, false);
          CheckDir(dir, dir_id, pk->path + "/");
          CheckDir(p2->dir, p2->dir_id, p2->path + "/");
        }
        break;
      }
      case 9: {
        if (!node) break;
        auto p2 = Pick();
        if (!p2) break;
        t0 = ClockNs();
        auto e = F().Link(node->first, p2->dir, p2->name);
        if (Expect("link " + what + " -> " + p2->path + "/" + p2->name, e.status(),
                   model.Link(node->second, p2->dir_id, p2->name, Span(t0))) &&
            e.ok()) {
          CheckName(p2->dir, p2->dir_id, p2->name, false);
          CheckDir(p2->dir, p2->dir_id, p2->path + "/");
        }
        break;
      }
      case 10: {
        const std::string target = "target-" + std::to_string(++seq);
        t0 = ClockNs();
        auto e = F().Symlink(dir, name, target, cred);
        if (Expect("symlink " + what, e.status(),
                   model.Create(dir_id, name, S_IFLNK | 0777, 0, target, cred, Span(t0),
                                nullptr)) &&
            e.ok()) {
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 11: {
        if (!node) break;
        static const int kXFlags[] = {0, 0, XATTR_CREATE, XATTR_REPLACE};
        const int flags = kXFlags[R(4)];
        const std::string k = "user.k" + std::to_string(R(3)), val = "v" + std::to_string(++seq);
        t0 = ClockNs();
        Status s = F().SetXattr(node->first, k, val, flags);
        if (Expect("setxattr " + what + " " + k + " flags " + std::to_string(flags), s,
                   model.SetXattr(node->second, k, val, flags, Span(t0)))) {
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 12: {
        if (!node) break;
        const std::string k = "user.k" + std::to_string(R(3));
        t0 = ClockNs();
        Status s = F().RemoveXattr(node->first, k);
        if (Expect("removexattr " + what + " " + k, s,
                   model.RemoveXattr(node->second, k, Span(t0)))) {
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 13: {
        if (!node) break;
        struct stat st {};
        st.st_mode = 0400 | R(07777);
        st.st_uid = R(3) * 1000;
        st.st_gid = R(3) * 1000;
        const uint32_t bits = R(2) ? kSetMode : (kSetUid | kSetGid);
        t0 = ClockNs();
        auto r = F().SetAttr(node->first, st, bits, cred);
        if (Expect("setattr " + what + " bits " + std::to_string(bits), r.status(), Code::kOk)) {
          model.SetAttr(node->second, st, bits, Span(t0));
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 14: {
        if (!node) break;
        struct stat st {};
        st.st_mtim.tv_sec = 1000000 + R(1000000);
        st.st_mtim.tv_nsec = R(1000000000);
        t0 = ClockNs();
        auto r = F().SetAttr(node->first, st, kSetMtime, cred);
        if (Expect("set mtime " + what, r.status(), Code::kOk)) {
          model.SetAttr(node->second, st, kSetMtime, Span(t0));
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 15: {
        const uint32_t mode = (R(2) ? S_IFIFO : S_IFCHR) | 0644;
        const uint64_t rdev = R(2) ? 0 : makedev(1, 3);
        t0 = ClockNs();
        auto e = F().MkNod(dir, name, mode, rdev, cred);
        if (Expect("mknod " + what, e.status(),
                   model.Create(dir_id, name, mode, rdev, "", cred, Span(t0), nullptr)) &&
            e.ok()) {
          CheckName(dir, dir_id, name, false);
        }
        break;
      }
      case 16:
      case 17:  // read back a range, ask for data/holes
        if (node) ReadSome(node->first, node->second, what);
        break;
      case 18: {  // the node (a directory: all below it) against the model
        if (!node) break;
        ModelCheck c{F(), model, /*pin=*/true, {}, {}, {}};
        c.Node(node->first, node->second, what, true);
        if (S_ISDIR(model.N(node->second).mode)) c.Tree(node->first, node->second, what, false);
        if (!c.diffs.empty()) Fail("check of " + what + ":" + c.Text());
        break;
      }
    }
  }
  void Steps(int n) {
    for (int i = 0; i < n && !failed; ++i) Step();
  }

  // The whole live tree against the model (times pinned).
  std::string CompareLive() { return CompareWithModel(F(), kRootIno, true, model, /*pin=*/true); }
  // After snapshot `name` was taken (by the caller, nothing changing the
  // live tree meanwhile): the live tree and the snapshot against the model.
  // "" when both match; the model (a copy is the snapshot's) has its times
  // pinned then.
  std::string Taken(const std::string& name) {
    Note("snapshot " + name);
    std::string d = CompareLive();
    if (!d.empty()) return "live tree at snapshot " + name + " (seed " + std::to_string(seed) + "):" + d;
    d = CompareSnapshot(F(), name, model);
    if (!d.empty()) return "snapshot " + name + " (seed " + std::to_string(seed) + "):" + d;
    return "";
  }
  // Takes snapshot `name`, checks it (Taken) and returns its model.
  TreeModel Snapshot(const std::string& name) {
    auto s = F().CreateSnapshot(name);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    const std::string d = Taken(name);
    CHECK_MESSAGE(d.empty(), d);
    return model;
  }
};

// Removes everything in the live tree (for the leak check).
inline void RemoveAll(FileSystem& fs, NodeId dir) {
  std::vector<std::string> names;
  auto dh = fs.OpenDir(dir);
  REQUIRE(dh.ok());
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
               if (e.name != "." && e.name != ".." && e.name != kSnapDirName) {
                 names.emplace_back(e.name);
               }
               return true;
             }).ok());
  REQUIRE(fs.ReleaseDir(*dh).ok());
  for (const std::string& n : names) {
    auto e = fs.Lookup(dir, n);
    REQUIRE(e.ok());
    if (S_ISDIR(e->st.st_mode)) {
      RemoveAll(fs, e->node);
      REQUIRE(fs.RmDir(dir, n).ok());
    } else {
      REQUIRE(fs.Unlink(dir, n).ok());
    }
  }
}

}  // namespace psm_test
