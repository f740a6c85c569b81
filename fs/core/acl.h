// POSIX ACLs in their Linux xattr form ("system.posix_acl_access" and
// "system.posix_acl_default"), and the mode arithmetic the kernel leaves to
// a FUSE file system that asks for FUSE_CAP_POSIX_ACL: keep the mode in step
// with the access ACL (setxattr, chmod) and inherit a directory's default
// ACL into new nodes (create, mkdir, mknod). The kernel enforces ACLs; the
// core only stores them (as ordinary versioned xattrs, so snapshots keep
// them) and does this arithmetic. Pure functions, no I/O.
//
// Wire form (include/uapi/linux/posix_acl_xattr.h): le32 version (2), then
// entries of { le16 tag, le16 perm, le32 id }.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "meta/status.h"

namespace psm::acl {

inline constexpr std::string_view kAccessName = "system.posix_acl_access";
inline constexpr std::string_view kDefaultName = "system.posix_acl_default";

enum Tag : uint16_t {
  kUserObj = 0x01,
  kUser = 0x02,
  kGroupObj = 0x04,
  kGroup = 0x08,
  kMask = 0x10,
  kOther = 0x20,
};

struct Entry {
  uint16_t tag = 0;
  uint16_t perm = 0;  // rwx in the low three bits
  uint32_t id = 0;    // uid for kUser, gid for kGroup, else unused
  bool operator==(const Entry&) const = default;
};

struct Acl {
  std::vector<Entry> entries;
  bool operator==(const Acl&) const = default;
};

// Parses and validates (posix_acl_valid): exactly one USER_OBJ, GROUP_OBJ
// and OTHER; a MASK when there are named entries, at most one; entries in
// tag order, named ones by ascending id without duplicates; perms <= 7.
// An empty ACL (header only) is valid and has no entries. Invalid: EINVAL.
Result<Acl> Parse(std::string_view xattr);
std::string Encode(const Acl& acl);

// True if the ACL says no more than the mode does (three base entries
// only); *mode's permission bits (0777) are then set from it.
bool EquivalentToMode(const Acl& acl, uint32_t* mode);

// The permission bits the ACL implies: owner from USER_OBJ, group from MASK
// if present else GROUP_OBJ, other from OTHER. Other mode bits untouched.
uint32_t ApplyToMode(const Acl& acl, uint32_t mode);

// chmod with an access ACL (posix_acl_chmod): USER_OBJ, MASK (or GROUP_OBJ
// when there is no mask) and OTHER take the new mode's bits.
void Chmod(Acl* acl, uint32_t mode);

// Inheritance at create (posix_acl_create_masq): `acl` starts as the
// parent's default ACL; its entries are masked by the requested mode and
// the returned mode carries the result. Returns the new node's mode.
uint32_t CreateMask(Acl* acl, uint32_t mode);

}  // namespace psm::acl
