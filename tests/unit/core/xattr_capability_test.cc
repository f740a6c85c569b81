// The security.capability fast path (fs_xattr.cc): the kernel asks for
// this xattr before every write; a volume on which none was ever set
// answers ENODATA without a lookup. Here: the answer is right before and
// after one is set, across a remount, through a receive, and on a volume
// whose flag is missing (formatted before it existed: scanned once).
#include <map>
#include <string>

#include "fs/stream/send_stream.h"
#include "meta/keys.h"
#include "meta/store.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {
const std::string kCap = "security.capability";
const std::string kValue("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
}  // namespace

TEST_CASE("capability xattr: none on a fresh volume; set, read back, remount") {
  CoreVolume v;
  NodeId f = v.Put(kRootIno, "bin", "x");
  NodeId g = v.Put(kRootIno, "other", "y");
  CHECK(v.fs->GetXattr(f, kCap).status().Is(Code::kNoAttr));
  CHECK(v.fs->GetXattr(f, "user.a").status().Is(Code::kNoAttr));
  REQUIRE(v.fs->SetXattr(f, kCap, kValue, 0).ok());
  auto got = v.fs->GetXattr(f, kCap);
  REQUIRE(got.ok());
  CHECK(*got == kValue);
  CHECK(v.fs->GetXattr(g, kCap).status().Is(Code::kNoAttr));
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  REQUIRE(v.fs->RemoveXattr(f, kCap).ok());
  v.Remount();
  CHECK(v.fs->GetXattr(f, kCap).status().Is(Code::kNoAttr));
  auto root = v.fs->Lookup(kSnapDirNode, "s");
  REQUIRE(root.ok());
  auto sf = v.fs->Lookup(root->node, "bin");
  REQUIRE(sf.ok());
  auto in_snap = v.fs->GetXattr(sf->node, kCap);
  REQUIRE(in_snap.ok());  // the snapshot still has it
  CHECK(*in_snap == kValue);
  // A stale node still says ESTALE, not ENODATA, for a deleted snapshot.
  REQUIRE(v.fs->DeleteSnapshot("s").ok());
  REQUIRE(v.fs->ReclaimNow().ok());
  CHECK_FALSE(v.fs->GetXattr(sf->node, kCap).ok());
}

TEST_CASE("capability xattr: a volume without the flag is scanned once at mount") {
  CoreVolume v;
  NodeId f = v.Put(kRootIno, "bin", "x");
  REQUIRE(v.fs->SetXattr(f, kCap, kValue, 0).ok());
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  {
    // As a volume formatted before the flag existed: no key.
    auto st = Store::Open(v.dir + "/meta", StoreOptions{});
    REQUIRE(st.ok());
    rocksdb::WriteBatch b;
    REQUIRE(b.Delete((*st)->handle(Cf::kVolume), std::string(kVolCapabilities)).ok());
    REQUIRE((*st)->Write(&b).ok());
  }
  v.Open();
  auto got = v.fs->GetXattr(v.Node(kRootIno, "bin"), kCap);
  REQUIRE(got.ok());
  CHECK(*got == kValue);
}

TEST_CASE("capability xattr: a received capability is seen on the target") {
  CoreVolume a, b;
  NodeId f = a.Put(kRootIno, "bin", "x");
  REQUIRE(a.fs->SetXattr(f, kCap, kValue, 0).ok());
  REQUIRE(a.fs->CreateSnapshot("s").ok());
  std::string stream;
  SendOptions o;
  o.snapshot = "s";
  REQUIRE(a.fs->Send(o, [&](std::string_view p) {
                 stream.append(p);
                 return Status::Ok();
               }).ok());
  CHECK(b.fs->GetXattr(kRootIno, kCap).status().Is(Code::kNoAttr));
  size_t pos = 0;
  auto r = b.fs->Receive({}, [&](char* buf, size_t n) -> Result<size_t> {
    size_t k = std::min(n, stream.size() - pos);
    std::memcpy(buf, stream.data() + pos, k);
    pos += k;
    return k;
  });
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto got = b.fs->GetXattr(b.Node(kRootIno, "bin"), kCap);
  REQUIRE(got.ok());
  CHECK(*got == kValue);
  b.Remount();
  got = b.fs->GetXattr(b.Node(kRootIno, "bin"), kCap);
  REQUIRE(got.ok());
  CHECK(*got == kValue);
}
