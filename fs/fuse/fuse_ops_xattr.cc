// FUSE handlers for extended attributes: setxattr, getxattr, listxattr,
// removexattr. Each decodes, calls the core once, replies once
// (fs/fuse/fuse_ops.h).
//
// Size protocol (getxattr, listxattr): a request with size 0 asks for the
// value's length (fuse_reply_xattr); a request whose buffer is too small
// gets ERANGE; otherwise the value itself (fuse_reply_buf).
#include <string_view>

#include "fs/fuse/fuse_ops.h"

namespace psm::fuse_ops {
namespace {

void ReplySized(fuse_req_t req, const Result<std::string>& r, size_t size) {
  if (!r.ok()) return ReplyStatus(req, r.status());
  const std::string& v = r.value();
  if (size == 0) {
    fuse_reply_xattr(req, v.size());
  } else if (v.size() > size) {
    ReplyStatus(req, Status::Range("xattr buffer too small"));
  } else {
    fuse_reply_buf(req, v.data(), v.size());
  }
}

// Without FUSE_CAP_POSIX_ACL (mount option noacl, or no default_permissions)
// nothing would enforce an ACL: storing one would let setfacl "succeed"
// while it means nothing, so the ACL names are refused then.
bool AclRefused(fuse_req_t req, std::string_view name) {
  return (name == "system.posix_acl_access" || name == "system.posix_acl_default") &&
         !Adapter(req)->acl_enabled();
}

}  // namespace

void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) {
  if (AclRefused(req, name)) return ReplyStatus(req, Status::NotSupported("POSIX ACLs are off"));
  ReplyDone(req, Fs(req)->SetXattr(ino, name, std::string_view(value, size), flags));
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (AclRefused(req, name)) return ReplyStatus(req, Status::NotSupported("POSIX ACLs are off"));
  ReplySized(req, Fs(req)->GetXattr(ino, name), size);
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ReplySized(req, Fs(req)->ListXattr(ino), size);
}

void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  ReplyDone(req, Fs(req)->RemoveXattr(ino, name));
}

}  // namespace psm::fuse_ops
