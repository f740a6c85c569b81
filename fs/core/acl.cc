#include "fs/core/acl.h"

namespace psm::acl {
namespace {

constexpr uint32_t kVersion = 2;

uint32_t Le32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{u[0]} | uint32_t{u[1]} << 8 | uint32_t{u[2]} << 16 | uint32_t{u[3]} << 24;
}
uint16_t Le16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] | u[1] << 8);
}
void Put32(std::string* o, uint32_t v) {
  for (int i = 0; i < 4; ++i) o->push_back(static_cast<char>(v >> (8 * i)));
}
void Put16(std::string* o, uint16_t v) {
  o->push_back(static_cast<char>(v));
  o->push_back(static_cast<char>(v >> 8));
}

Entry* Find(Acl* acl, uint16_t tag) {
  for (Entry& e : acl->entries) {
    if (e.tag == tag) return &e;
  }
  return nullptr;
}

}  // namespace

Result<Acl> Parse(std::string_view x) {
  if (x.size() < 4 || (x.size() - 4) % 8 != 0) return Status::Invalid("ACL: bad size");
  if (Le32(x.data()) != kVersion) return Status::Invalid("ACL: unknown version");
  Acl acl;
  int user_obj = 0, group_obj = 0, other = 0, mask = 0, named = 0;
  uint16_t last_tag = 0;
  uint32_t last_id = 0;
  for (size_t off = 4; off < x.size(); off += 8) {
    Entry e{Le16(x.data() + off), Le16(x.data() + off + 2), Le32(x.data() + off + 4)};
    if (e.perm & ~7u) return Status::Invalid("ACL: bad permission bits");
    if (e.tag < last_tag) return Status::Invalid("ACL: entries out of order");
    switch (e.tag) {
      case kUserObj: ++user_obj; break;
      case kGroupObj: ++group_obj; break;
      case kOther: ++other; break;
      case kMask: ++mask; break;
      case kUser:
      case kGroup:
        if (e.tag == last_tag && e.id <= last_id) return Status::Invalid("ACL: duplicate entry");
        ++named;
        break;
      default: return Status::Invalid("ACL: unknown tag");
    }
    if (e.tag != kUser && e.tag != kGroup) e.id = 0;
    last_tag = e.tag;
    last_id = e.id;
    acl.entries.push_back(e);
  }
  if (acl.entries.empty()) return acl;
  if (user_obj != 1 || group_obj != 1 || other != 1 || mask > 1 || (named > 0 && mask == 0)) {
    return Status::Invalid("ACL: missing or repeated base entry");
  }
  return acl;
}

std::string Encode(const Acl& acl) {
  std::string o;
  o.reserve(4 + 8 * acl.entries.size());
  Put32(&o, kVersion);
  for (const Entry& e : acl.entries) {
    Put16(&o, e.tag);
    Put16(&o, e.perm);
    Put32(&o, (e.tag == kUser || e.tag == kGroup) ? e.id : 0xffffffffu);
  }
  return o;
}

bool EquivalentToMode(const Acl& acl, uint32_t* mode) {
  for (const Entry& e : acl.entries) {
    if (e.tag != kUserObj && e.tag != kGroupObj && e.tag != kOther) return false;
  }
  *mode = ApplyToMode(acl, *mode);
  return true;
}

uint32_t ApplyToMode(const Acl& acl, uint32_t mode) {
  uint32_t owner = 0, group = 0, other = 0;
  bool have_mask = false;
  uint32_t mask = 0;
  for (const Entry& e : acl.entries) {
    switch (e.tag) {
      case kUserObj: owner = e.perm; break;
      case kGroupObj: group = e.perm; break;
      case kOther: other = e.perm; break;
      case kMask: have_mask = true, mask = e.perm; break;
      default: break;
    }
  }
  if (have_mask) group = mask;
  return (mode & ~0777u) | owner << 6 | group << 3 | other;
}

void Chmod(Acl* acl, uint32_t mode) {
  if (Entry* e = Find(acl, kUserObj)) e->perm = (mode >> 6) & 7;
  Entry* g = Find(acl, kMask);
  if (g == nullptr) g = Find(acl, kGroupObj);
  if (g != nullptr) g->perm = (mode >> 3) & 7;
  if (Entry* e = Find(acl, kOther)) e->perm = mode & 7;
}

uint32_t CreateMask(Acl* acl, uint32_t mode) {
  Entry* group_obj = nullptr;
  Entry* mask = nullptr;
  for (Entry& e : acl->entries) {
    switch (e.tag) {
      case kUserObj: e.perm &= (mode >> 6) & 7; mode &= e.perm << 6 | ~0700u; break;
      case kOther: e.perm &= mode & 7; mode &= e.perm | ~0007u; break;
      case kGroupObj: group_obj = &e; break;
      case kMask: mask = &e; break;
      default: break;
    }
  }
  Entry* g = mask != nullptr ? mask : group_obj;
  if (g != nullptr) {
    g->perm &= (mode >> 3) & 7;
    mode &= g->perm << 3 | ~0070u;
  }
  return mode;
}

}  // namespace psm::acl
