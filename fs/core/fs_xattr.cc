// Extended attributes: one versioned record per (inode, name), so snapshots
// keep the xattrs they had. POSIX ACLs are stored like any other xattr; the
// mode arithmetic around them (fs/core/acl.h) is done here.
#include <sys/xattr.h>

#include "fs/core/acl.h"
#include "fs/core/fs_impl.h"

namespace psm {

namespace {
constexpr size_t kXattrValueMax = 65536;
}

namespace {
// The namespaces psmfs stores: user.*, trusted.*, security.* and the two
// POSIX ACL names. Any other system.* name and any unknown prefix are
// EOPNOTSUPP, as on ext4.
bool KnownXattrNamespace(std::string_view name) {
  if (name == acl::kAccessName || name == acl::kDefaultName) return true;
  for (std::string_view ns : {"user.", "trusted.", "security."}) {
    if (name.size() > ns.size() && name.substr(0, ns.size()) == ns) return true;
  }
  return false;
}
}  // namespace

Status FileSystem::SetXattr(NodeId node, std::string_view name, std::string_view value,
                            int flags) {
  Impl* m = impl_.get();
  if (name.empty()) return Status::Invalid();
  if (name.size() > 255) return Status::Range();
  if (value.size() > kXattrValueMax) return Status::Range();
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) return Status::Invalid();
  if (!KnownXattrNamespace(name)) return Status::NotSupported("unknown xattr namespace");
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  LockSet ls(m, {v.ino});
  Txn txn(m->store.get());
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, v.ino, m->live(), &a));
  std::string prefix = XattrPrefix(v.ino, name);
  Status s = txn.GetAt(Cf::kXattrs, prefix, m->live(), nullptr);
  if (s.ok() && (flags & XATTR_CREATE)) return Status::Exists();
  if (s.Is(Code::kNotFound) && (flags & XATTR_REPLACE)) return Status::NoAttr();
  if (!s.ok() && !s.Is(Code::kNotFound)) return s;
  const bool exists = s.ok();
  std::optional<std::string> stored{std::string(value)};
  if (name == acl::kAccessName || name == acl::kDefaultName) {
    // What ext4 does (posix_acl_update_mode): the mode follows the access
    // ACL, and an ACL that says no more than the mode is not stored.
    PSM_ASSIGN_OR_RETURN(acl::Acl parsed, acl::Parse(value));
    if (name == acl::kDefaultName) {
      if (!S_ISDIR(a.mode)) return parsed.entries.empty() ? Status::Ok() : Status::Access();
      if (parsed.entries.empty()) stored.reset();
    } else {
      if (parsed.entries.empty()) return Status::Invalid("empty access ACL");
      uint32_t mode = a.mode;
      if (acl::EquivalentToMode(parsed, &mode)) stored.reset();
      a.mode = acl::ApplyToMode(parsed, a.mode);
    }
    if (stored) *stored = acl::Encode(parsed);
    if (!stored && !exists) {
      a.ctime_ns = NowNs();
      PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, a));
      return m->committer->Apply(&txn, {}, {});
    }
  }
  m->NoteXattrName(&txn, name);
  PSM_RETURN_IF_ERROR(PutVersion(&txn, Cf::kXattrs, prefix, m->live(),
                                 stored ? std::optional<std::string_view>(*stored) : std::nullopt,
                                 *m));
  a.ctime_ns = NowNs();
  PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, a));
  return m->committer->Apply(&txn, {}, {});
}

void FileSystem::Impl::NoteXattrName(Txn* txn, std::string_view name) {
  if (name != kCapabilityXattr || capabilities.load()) return;
  txn->Put(Cf::kVolume, kVolCapabilities, "1");
  // Before the commit: a reader that sees the xattr also sees the flag.
  capabilities.store(true);
}

Result<std::string> FileSystem::GetXattr(NodeId node, std::string_view name) {
  Impl* m = impl_.get();
  if (name.size() > 255) return Status::Range();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  if (v.snapdir) return Status::NoAttr();
  // The kernel asks for security.capability before writing to a file (to
  // drop file capabilities): at a new file's first write, or before every
  // write without FUSE_HANDLE_KILLPRIV_V2. On a volume where none was ever
  // set the answer needs no lookup.
  if (name == kCapabilityXattr && !m->capabilities.load(std::memory_order_relaxed)) {
    return Status::NoAttr();
  }
  std::string value;
  Status s = GetAt(m->store.get(), Cf::kXattrs, XattrPrefix(v.ino, name), v.epoch, &value);
  if (s.Is(Code::kNotFound)) return Status::NoAttr();
  PSM_RETURN_IF_ERROR(s);
  return value;
}

Result<std::string> FileSystem::ListXattr(NodeId node) {
  Impl* m = impl_.get();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  if (v.snapdir) return std::string();
  std::string out;
  std::string done;
  bool have_done = false;
  auto it = m->store->NewIterator(Cf::kXattrs);
  PSM_RETURN_IF_ERROR(ForEachPrefix(it.get(), XattrFilePrefix(v.ino),
                                    [&](std::string_view k, std::string_view val) {
                                      InodeId ino;
                                      std::string_view name;
                                      ParseXattrKey(k, &ino, &name);
                                      if (have_done && name == done) return true;
                                      if (KeyEpoch(k) > v.epoch) return true;
                                      done.assign(name);
                                      have_done = true;
                                      if (!val.empty() && val[0] == kTagValue) {
                                        out.append(name);
                                        out.push_back('\0');
                                      }
                                      return true;
                                    }));
  return out;
}

Status FileSystem::RemoveXattr(NodeId node, std::string_view name) {
  Impl* m = impl_.get();
  if (name.size() > 255) return Status::Range();
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  LockSet ls(m, {v.ino});
  Txn txn(m->store.get());
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, v.ino, m->live(), &a));
  std::string prefix = XattrPrefix(v.ino, name);
  Status s = txn.GetAt(Cf::kXattrs, prefix, m->live(), nullptr);
  if (s.Is(Code::kNotFound)) return Status::NoAttr();
  PSM_RETURN_IF_ERROR(s);
  PSM_RETURN_IF_ERROR(PutVersion(&txn, Cf::kXattrs, prefix, m->live(), std::nullopt, *m));
  a.ctime_ns = NowNs();
  PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, a));
  return m->committer->Apply(&txn, {}, {});
}

Status FileSystem::Impl::AclChmod(Txn* txn, InodeId ino, uint32_t mode) {
  const std::string prefix = XattrPrefix(ino, acl::kAccessName);
  std::string value;
  Status s = txn->GetAt(Cf::kXattrs, prefix, live(), &value);
  if (s.Is(Code::kNotFound)) return Status::Ok();
  PSM_RETURN_IF_ERROR(s);
  PSM_ASSIGN_OR_RETURN(acl::Acl parsed, acl::Parse(value));
  acl::Chmod(&parsed, mode);
  return PutVersion(txn, Cf::kXattrs, prefix, live(), acl::Encode(parsed), *this);
}

Status FileSystem::Impl::AclInherit(Txn* txn, InodeId parent, InodeId ino, InodeAttr* a,
                                    uint32_t umask) {
  if (S_ISLNK(a->mode)) return Status::Ok();
  std::string value;
  Status s = txn->GetAt(Cf::kXattrs, XattrPrefix(parent, acl::kDefaultName), live(), &value);
  if (s.Is(Code::kNotFound)) {
    a->mode &= ~(umask & 0777);
    return Status::Ok();
  }
  PSM_RETURN_IF_ERROR(s);
  PSM_ASSIGN_OR_RETURN(acl::Acl def, acl::Parse(value));
  if (def.entries.empty()) {
    a->mode &= ~(umask & 0777);
    return Status::Ok();
  }
  if (S_ISDIR(a->mode)) {
    PSM_RETURN_IF_ERROR(
        PutVersion(txn, Cf::kXattrs, XattrPrefix(ino, acl::kDefaultName), live(), value, *this));
  }
  acl::Acl access = def;
  a->mode = acl::CreateMask(&access, a->mode);
  uint32_t ignored = a->mode;
  if (!acl::EquivalentToMode(access, &ignored)) {
    PSM_RETURN_IF_ERROR(PutVersion(txn, Cf::kXattrs, XattrPrefix(ino, acl::kAccessName), live(),
                                   acl::Encode(access), *this));
  }
  return Status::Ok();
}

}  // namespace psm
