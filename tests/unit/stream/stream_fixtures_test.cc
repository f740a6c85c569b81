// Streams written by an older psmfs are still received: the two fixtures in
// tests/fixtures/streams (made by `psmctl send` before CRC-32C, SHA-256 and
// JSON moved to libraries; the README there describes them) are received
// into fresh volumes of 1 KiB and 512-byte blocks, and every tree — both
// snapshots and the live tree — is compared with the content written out
// below from that description, not with anything read from another volume.
// A fixture with one flipped byte is refused with the volume unchanged.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

std::string Fixture(const std::string& name) {
  const char* src = std::getenv("PSMFS_SOURCE_DIR");
  REQUIRE_MESSAGE(src != nullptr, "PSMFS_SOURCE_DIR must name the repository (ctest sets it)");
  const std::string path = std::string(src) + "/tests/fixtures/streams/" + name;
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), ("cannot read " + path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<ReceiveResult> ReceiveBytes(FileSystem& fs, const std::string& s) {
  size_t pos = 0;
  return fs.Receive(ReceiveOptions{}, [&](char* buf, size_t n) -> Result<size_t> {
    size_t k = std::min({n, s.size() - pos, size_t{1000}});  // uneven pieces
    std::memcpy(buf, s.data() + pos, k);
    pos += k;
    return k;
  });
}

// What one path must be. Sizes, modes, contents and times are those of
// tests/fixtures/streams/README.md.
struct Want {
  mode_t type = S_IFREG;
  mode_t perm = 0644;
  std::string data;                                      // files: every byte; links: the target
  std::vector<std::string> entries;                      // directories: the names, sorted
  std::map<std::string, std::string> xattrs;             // exactly these
  int64_t mtime = -1;                                    // seconds, when the recipe set it
  nlink_t nlink = 1;                                     // files and links
  std::vector<std::pair<uint64_t, uint64_t>> data_runs;  // files: [start, end) of data
};

constexpr int64_t kMay1 = 1714564800;   // 2024-05-01 12:00:00 UTC
constexpr int64_t kJune2 = 1717317000;  // 2024-06-02 08:30:00 UTC

std::string Sparse(const std::string& head, const std::string& mid) {
  std::string s(2052, '\0');
  s.replace(0, head.size(), head);
  s.replace(1024, mid.size(), mid);
  s.replace(2048, 4, "TAIL");
  return s;
}

std::map<std::string, Want> WantS1() {
  std::map<std::string, Want> w;
  w["/"] = {S_IFDIR, 0755, "", {"dir", "empty", "hello.txt", "link", "sparse.bin"}};
  w["/hello.txt"] = {S_IFREG, 0644, "hello, psmfs\n", {}, {{"user.comment", "fixture"}},
                     kMay1,   2,    {{0, 13}}};
  w["/dir"] = {S_IFDIR, 0755, "", {"hardlink", "nested.txt", "sub"}};
  w["/dir/hardlink"] = w["/hello.txt"];
  w["/dir/nested.txt"] = {S_IFREG, 0644, "nested file\n", {}, {}, kMay1, 1, {{0, 12}}};
  w["/dir/sub"] = {S_IFDIR, 0700, "", {}};
  w["/link"] = {S_IFLNK, 0777, "dir/nested.txt", {}, {}, kMay1};
  w["/empty"] = {S_IFREG, 0644, "", {}, {}, -1, 1, {}};
  w["/sparse.bin"] = {S_IFREG, 0640, Sparse("HEAD", ""),       {}, {},
                      kMay1,   1,    {{0, 1024}, {2048, 2052}}};
  return w;
}

std::map<std::string, Want> WantS2() {
  std::map<std::string, Want> w;
  w["/"] = {S_IFDIR, 0755, "", {"dir", "hello.txt", "link", "new.txt", "sparse.bin"}};
  w["/hello.txt"] = {S_IFREG, 0644, "hello again, psmfs\n", {}, {}, kJune2, 2, {{0, 19}}};
  w["/dir"] = {S_IFDIR, 0755, "", {"hardlink", "sub"}, {{"user.tag", "two"}}};
  w["/dir/hardlink"] = w["/hello.txt"];
  w["/dir/sub"] = {S_IFDIR, 0700, "", {"moved.txt"}};
  w["/dir/sub/moved.txt"] = {S_IFREG, 0644, "nested file\n", {}, {}, kJune2, 1, {{0, 12}}};
  w["/link"] = {S_IFLNK, 0777, "dir/sub/moved.txt", {}, {}, kJune2};
  w["/new.txt"] = {S_IFREG, 0600, "new in s2\n", {}, {}, kJune2, 1, {{0, 10}}};
  w["/sparse.bin"] = {S_IFREG, 0640, Sparse("", "MID!"), {}, {}, kJune2, 1, {{1024, 2052}}};
  return w;
}

NodeId Resolve(FileSystem& fs, NodeId root, const std::string& path) {
  NodeId n = root;
  size_t p = 1;
  while (p < path.size()) {
    size_t e = path.find('/', p);
    if (e == std::string::npos) e = path.size();
    auto r = fs.Lookup(n, path.substr(p, e - p));
    REQUIRE_MESSAGE(r.ok(), (path + ": " + r.status().ToString()));
    n = r->node;
    p = e + 1;
  }
  return n;
}

std::vector<std::string> Names(FileSystem& fs, NodeId dir, bool live_root) {
  std::vector<std::string> names;
  auto dh = fs.OpenDir(dir);
  REQUIRE(dh.ok());
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
              if (e.name != "." && e.name != ".." && !(live_root && e.name == kSnapDirName))
                names.emplace_back(e.name);
              return true;
            }).ok());
  REQUIRE(fs.ReleaseDir(*dh).ok());
  std::sort(names.begin(), names.end());
  return names;
}

std::map<std::string, std::string> Xattrs(FileSystem& fs, NodeId node) {
  std::map<std::string, std::string> out;
  auto list = fs.ListXattr(node);
  REQUIRE(list.ok());
  for (size_t p = 0; p < list->size();) {
    size_t e = list->find('\0', p);
    if (e == std::string::npos) e = list->size();
    if (e > p) {
      const std::string name = list->substr(p, e - p);
      auto v = fs.GetXattr(node, name);
      REQUIRE(v.ok());
      out[name] = *v;
    }
    p = e + 1;
  }
  return out;
}

// Checks the tree at `root` against `want`: every path there, nothing else.
void CheckTree(FileSystem& fs, NodeId root, bool live, const std::map<std::string, Want>& want) {
  size_t seen = 0;
  std::map<std::string, ino_t> inos;
  for (const auto& [path, w] : want) {
    INFO(path);
    NodeId n = Resolve(fs, root, path);
    auto a = fs.GetAttr(n);
    REQUIRE(a.ok());
    const struct stat& st = a->st;
    inos[path] = st.st_ino;
    CHECK((st.st_mode & S_IFMT) == w.type);
    CHECK((st.st_mode & 07777) == w.perm);
    CHECK(st.st_uid == 0);
    CHECK(st.st_gid == 0);
    if (w.mtime >= 0) CHECK(st.st_mtim.tv_sec == w.mtime);
    CHECK(Xattrs(fs, n) == w.xattrs);
    if (w.type == S_IFDIR) {
      std::vector<std::string> names = Names(fs, n, live && path == "/");
      CHECK(names == w.entries);
      seen += names.size();
    } else if (w.type == S_IFLNK) {
      auto t = fs.ReadLink(n);
      REQUIRE(t.ok());
      CHECK(*t == w.data);
      CHECK(st.st_nlink == w.nlink);
    } else {
      CHECK(st.st_nlink == w.nlink);
      REQUIRE(static_cast<size_t>(st.st_size) == w.data.size());
      auto fh = fs.OpenFile(n, O_RDONLY);
      REQUIRE(fh.ok());
      std::string got(w.data.size(), 'x');
      auto r = fs.Read(*fh, 0, got.size(), got.data());
      REQUIRE(r.ok());
      CHECK(*r == w.data.size());
      CHECK(got == w.data);
      std::vector<std::pair<uint64_t, uint64_t>> runs;
      for (uint64_t off = 0; off < w.data.size();) {
        auto d = fs.Lseek(*fh, off, SEEK_DATA);
        if (!d.ok()) break;  // ENXIO: no data after off
        auto h = fs.Lseek(*fh, *d, SEEK_HOLE);
        REQUIRE(h.ok());
        runs.emplace_back(*d, *h);
        off = *h;
      }
      CHECK(runs == w.data_runs);
      REQUIRE(fs.Release(*fh).ok());
    }
  }
  CHECK(seen + 1 == want.size());  // no path the description does not name
  CHECK(inos.at("/dir/hardlink") == inos.at("/hello.txt"));
}

}  // namespace

TEST_CASE("stream fixtures of format 1 are received: full, then incremental") {
  const std::string full = Fixture("v1-full.psmstream");
  const std::string incr = Fixture("v1-incr.psmstream");
  CHECK(full.size() == 5824);
  CHECK(incr.size() == 4812);
  const std::string s2 = "s2-\xe9t\xe9";  // not UTF-8: raw in the HEADER's JSON
  for (uint32_t bs : {1024u, 512u}) {
    INFO("receiving volume with " << bs << "-byte blocks");
    CoreVolume v(64ull << 20, 1u << 20, bs);

    auto r1 = ReceiveBytes(*v.fs, full);
    REQUIRE_MESSAGE(r1.ok(), r1.status().ToString());
    CHECK(r1->snapshot == "s1");
    CHECK_FALSE(r1->incremental);
    CHECK(r1->bytes == full.size());
    CheckTree(*v.fs, Resolve(*v.fs, kSnapDirNode, "/s1"), false, WantS1());
    CheckTree(*v.fs, kRootIno, true, WantS1());

    auto r2 = ReceiveBytes(*v.fs, incr);
    REQUIRE_MESSAGE(r2.ok(), r2.status().ToString());
    CHECK(r2->snapshot == s2);
    CHECK(r2->base == "s1");
    CHECK(r2->incremental);
    CHECK(r2->bytes == incr.size());
    std::vector<std::string> snaps;
    for (const SnapshotInfo& s : v.fs->ListSnapshots(false)) snaps.push_back(s.name);
    CHECK(snaps == std::vector<std::string>{"s1", s2});
    CheckTree(*v.fs, Resolve(*v.fs, kSnapDirNode, "/s1"), false, WantS1());
    CheckTree(*v.fs, Resolve(*v.fs, kSnapDirNode, "/" + s2), false, WantS2());
    CheckTree(*v.fs, kRootIno, true, WantS2());
    CHECK(v.Fsck() == 0);
  }
}

TEST_CASE("stream fixtures: a flipped byte is refused by the checksum, the volume unchanged") {
  std::string full = Fixture("v1-full.psmstream");
  CoreVolume v(64ull << 20, 1u << 20, 1024);
  const uint64_t free_before = v.FreeBlocks();
  // A byte of file data ("hello, psmfs"), deep inside a DATA record.
  const size_t at = full.find("hello, psmfs");
  REQUIRE(at != std::string::npos);
  full[at] ^= 0x20;
  auto r = ReceiveBytes(*v.fs, full);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().Is(Code::kCorruption));
  CHECK(r.status().message().find("checksum mismatch") != std::string::npos);
  CHECK(v.fs->ListSnapshots(false).empty());
  CHECK(Names(*v.fs, kRootIno, true).empty());
  CHECK(v.FreeBlocks() == free_before);
}
