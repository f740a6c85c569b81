// POSIX ACLs: the xattr codec and mode arithmetic of fs/core/acl.h, and the core
// keeping modes and ACLs in step (setxattr, chmod, create with a default
// ACL, snapshots keeping the ACL they had).
#include <sys/stat.h>

#include "fs/core/acl.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
namespace a = psm::acl;

namespace {

const uint32_t kNo = 0xffffffffu;

std::string Raw(std::initializer_list<a::Entry> ents) {
  a::Acl acl;
  acl.entries = ents;
  return a::Encode(acl);
}

// user::rwx user:1000:r-x group::r-x mask::r-x other::---
std::string Named() {
  return Raw({{a::kUserObj, 7, kNo},
              {a::kUser, 5, 1000},
              {a::kGroupObj, 5, kNo},
              {a::kMask, 5, kNo},
              {a::kOther, 0, kNo}});
}

uint32_t Mode(CoreVolume& v, NodeId n) {
  auto r = v.fs->GetAttr(n);
  REQUIRE(r.ok());
  return r->st.st_mode & 07777;
}

}  // namespace

TEST_CASE("acl codec: round trip and validation") {
  auto p = a::Parse(Named());
  REQUIRE(p.ok());
  CHECK(p->entries.size() == 5);
  CHECK(a::Encode(*p) == Named());
  // Header only: valid and empty (how the kernel says "no default ACL").
  auto empty = a::Parse(std::string("\x02\0\0\0", 4));
  REQUIRE(empty.ok());
  CHECK(empty->entries.empty());
  CHECK(a::Parse("").status().Is(Code::kInvalid));
  CHECK(a::Parse(std::string("\x01\0\0\0", 4)).status().Is(Code::kInvalid));  // version
  CHECK(a::Parse(Named().substr(0, 9)).status().Is(Code::kInvalid));          // torn entry
  // A named entry without a mask; a missing OTHER; out of order; duplicate id.
  CHECK(!a::Parse(Raw({{a::kUserObj, 7, kNo}, {a::kUser, 5, 1}, {a::kGroupObj, 5, kNo},
                       {a::kOther, 0, kNo}}))
             .ok());
  CHECK(!a::Parse(Raw({{a::kUserObj, 7, kNo}, {a::kGroupObj, 5, kNo}})).ok());
  CHECK(!a::Parse(Raw({{a::kGroupObj, 5, kNo}, {a::kUserObj, 7, kNo}, {a::kOther, 0, kNo}}))
             .ok());
  CHECK(!a::Parse(Raw({{a::kUserObj, 7, kNo}, {a::kUser, 5, 3}, {a::kUser, 4, 3},
                       {a::kGroupObj, 5, kNo}, {a::kMask, 5, kNo}, {a::kOther, 0, kNo}}))
             .ok());
  CHECK(!a::Parse(Raw({{a::kUserObj, 8, kNo}, {a::kGroupObj, 5, kNo}, {a::kOther, 0, kNo}}))
             .ok());
}

TEST_CASE("acl arithmetic: equivalence, chmod, inheritance mask") {
  uint32_t mode = S_IFREG | 0777;
  auto base = a::Parse(Raw({{a::kUserObj, 6, kNo}, {a::kGroupObj, 4, kNo}, {a::kOther, 1, kNo}}));
  REQUIRE(base.ok());
  CHECK(a::EquivalentToMode(*base, &mode));
  CHECK(mode == (S_IFREG | 0641));
  auto named = a::Parse(Named());
  REQUIRE(named.ok());
  mode = S_IFDIR | 0700;
  CHECK_FALSE(a::EquivalentToMode(*named, &mode));
  CHECK(a::ApplyToMode(*named, S_IFDIR | 01000) == (S_IFDIR | 01750));  // group = mask
  a::Chmod(&*named, 0640);
  CHECK(named->entries[0].perm == 6);  // user::
  CHECK(named->entries[1].perm == 5);  // user:1000: untouched
  CHECK(named->entries[2].perm == 5);  // group:: untouched, the mask moves
  CHECK(named->entries[3].perm == 4);  // mask::
  CHECK(named->entries[4].perm == 0);  // other::
  // posix_acl_create_masq: mode 0640 against the default ACL.
  auto def = a::Parse(Named());
  REQUIRE(def.ok());
  uint32_t m = a::CreateMask(&*def, S_IFREG | 0640);
  CHECK(m == (S_IFREG | 0640));
  CHECK(def->entries[0].perm == 6);
  CHECK(def->entries[3].perm == 4);  // mask r-x & r-- = r--
  CHECK(def->entries[4].perm == 0);
}

TEST_CASE("core: access ACL sets the mode; an equivalent ACL is not stored") {
  CoreVolume v;
  NodeId f = v.Put(kRootIno, "f", "x");
  REQUIRE(v.fs->SetXattr(f, a::kAccessName, Named(), 0).ok());
  CHECK(Mode(v, f) == 0750);
  auto got = v.fs->GetXattr(f, a::kAccessName);
  REQUIRE(got.ok());
  CHECK(*got == Named());
  // chmod moves the mask, keeps the named entry.
  struct stat st {};
  st.st_mode = 0604;
  REQUIRE(v.fs->SetAttr(f, st, kSetMode, v.cred).ok());
  got = v.fs->GetXattr(f, a::kAccessName);
  REQUIRE(got.ok());
  auto p = a::Parse(*got);
  REQUIRE(p.ok());
  CHECK(p->entries[0].perm == 6);
  CHECK(p->entries[1].perm == 5);
  CHECK(p->entries[3].perm == 0);
  CHECK(p->entries[4].perm == 4);
  // Three base entries only: the mode says it all, the xattr goes away.
  REQUIRE(v.fs->SetXattr(f, a::kAccessName,
                         Raw({{a::kUserObj, 7, kNo}, {a::kGroupObj, 0, kNo}, {a::kOther, 5, kNo}}),
                         0)
              .ok());
  CHECK(Mode(v, f) == 0705);
  CHECK(v.fs->GetXattr(f, a::kAccessName).status().Is(Code::kNoAttr));
  CHECK(v.fs->SetXattr(f, a::kAccessName, "junk", 0).Is(Code::kInvalid));
  CHECK(v.fs->SetXattr(f, "system.other", "1", 0).Is(Code::kNotSupported));
  CHECK(v.fs->SetXattr(f, a::kDefaultName, Named(), 0).Is(Code::kAccess));  // not a directory
  CHECK(v.Fsck() == 0);
}

TEST_CASE("core: default ACL is inherited, umask applies only without one") {
  CoreVolume v;
  Credentials c = v.cred;
  c.umask = 022;
  auto d = v.fs->MkDir(kRootIno, "d", 0777, c);
  REQUIRE(d.ok());
  CHECK(Mode(v, d->node) == 0755);  // no default ACL: umask
  REQUIRE(v.fs->SetXattr(d->node, a::kDefaultName, Named(), 0).ok());
  auto f = v.fs->Create(d->node, "f", 0666, O_RDWR, c);
  REQUIRE(f.ok());
  REQUIRE(v.fs->Release(f->second).ok());
  // 0666 masked by the ACL: user rw, mask r (r-x & rw-), other none.
  CHECK(Mode(v, f->first.node) == 0640);
  auto acc = v.fs->GetXattr(f->first.node, a::kAccessName);
  REQUIRE(acc.ok());
  auto p = a::Parse(*acc);
  REQUIRE(p.ok());
  CHECK(p->entries[1].id == 1000);
  CHECK(v.fs->GetXattr(f->first.node, a::kDefaultName).status().Is(Code::kNoAttr));
  auto sub = v.fs->MkDir(d->node, "sub", 0777, c);
  REQUIRE(sub.ok());
  CHECK(Mode(v, sub->node) == 0750);
  auto sd = v.fs->GetXattr(sub->node, a::kDefaultName);
  REQUIRE(sd.ok());
  CHECK(*sd == Named());
  auto ln = v.fs->Symlink(d->node, "l", "f", c);
  REQUIRE(ln.ok());
  CHECK(v.fs->GetXattr(ln->node, a::kAccessName).status().Is(Code::kNoAttr));
  // A snapshot keeps the ACL; removing it live does not touch the snapshot.
  auto snap = v.fs->CreateSnapshot("s1");
  REQUIRE(snap.ok());
  REQUIRE(v.fs->RemoveXattr(f->first.node, a::kAccessName).ok());
  auto sdir = v.fs->Lookup(kSnapDirNode, "s1");
  REQUIRE(sdir.ok());
  auto sd2 = v.fs->Lookup(sdir->node, "d");
  REQUIRE(sd2.ok());
  auto sf = v.fs->Lookup(sd2->node, "f");
  REQUIRE(sf.ok());
  CHECK(v.fs->GetXattr(sf->node, a::kAccessName).ok());
  CHECK(v.fs->GetXattr(f->first.node, a::kAccessName).status().Is(Code::kNoAttr));
  v.Remount();
  CHECK(v.Fsck() == 0);
}
