#include "meta/status.h"

#include <cstring>

namespace psm {

Status Status::FromErrno(int err, std::string m) {
  switch (err) {
    case 0: return Status::Ok();
    case ENOENT: return NotFound(std::move(m));
    case EEXIST: return Exists(std::move(m));
    case ENOTEMPTY: return NotEmpty(std::move(m));
    case ENOTDIR: return NotDir(std::move(m));
    case EISDIR: return IsDir(std::move(m));
    case ENOSPC: case EDQUOT: return NoSpace(std::move(m));
    case EROFS: return ReadOnly(std::move(m));
    case EBUSY: return Busy(std::move(m));
    case EINVAL: return Invalid(std::move(m));
    case EPERM: return Permission(std::move(m));
    case EACCES: return Access(std::move(m));
    case ENAMETOOLONG: return NameTooLong(std::move(m));
    case ENODATA: return NoAttr(std::move(m));
    case ERANGE: return Range(std::move(m));
    case EOPNOTSUPP: return NotSupported(std::move(m));
    case EFBIG: return TooBig(std::move(m));
    case EMLINK: return TooManyLinks(std::move(m));
    case EXDEV: return CrossDevice(std::move(m));
    case ESTALE: return Stale(std::move(m));
    case EBADF: return BadFd(std::move(m));
    case ENXIO: return NoData(std::move(m));
    default: {
      std::string s = std::strerror(err);
      return IOError(m.empty() ? s : m + ": " + s);
    }
  }
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kExists: return EEXIST;
    case Code::kNotEmpty: return ENOTEMPTY;
    case Code::kNotDir: return ENOTDIR;
    case Code::kIsDir: return EISDIR;
    case Code::kNoSpace: return ENOSPC;
    case Code::kReadOnly: return EROFS;
    case Code::kCorruption: return EIO;
    case Code::kIOError: return EIO;
    case Code::kBusy: return EBUSY;
    case Code::kInvalid: return EINVAL;
    case Code::kPermission: return EPERM;
    case Code::kAccess: return EACCES;
    case Code::kNameTooLong: return ENAMETOOLONG;
    case Code::kNoAttr: return ENODATA;
    case Code::kRange: return ERANGE;
    case Code::kNotSupported: return EOPNOTSUPP;
    case Code::kTooBig: return EFBIG;
    case Code::kTooManyLinks: return EMLINK;
    case Code::kCrossDevice: return EXDEV;
    case Code::kStale: return ESTALE;
    case Code::kBadFd: return EBADF;
    case Code::kNoData: return ENXIO;
  }
  return EIO;
}

std::string Status::ToString() const {
  const char* name = "ok";
  switch (code_) {
    case Code::kOk: name = "ok"; break;
    case Code::kNotFound: name = "not found"; break;
    case Code::kExists: name = "already exists"; break;
    case Code::kNotEmpty: name = "not empty"; break;
    case Code::kNotDir: name = "not a directory"; break;
    case Code::kIsDir: name = "is a directory"; break;
    case Code::kNoSpace: name = "no space left"; break;
    case Code::kReadOnly: name = "read-only"; break;
    case Code::kCorruption: name = "corruption"; break;
    case Code::kIOError: name = "I/O error"; break;
    case Code::kBusy: name = "busy"; break;
    case Code::kInvalid: name = "invalid argument"; break;
    case Code::kPermission: name = "operation not permitted"; break;
    case Code::kAccess: name = "permission denied"; break;
    case Code::kNameTooLong: name = "name too long"; break;
    case Code::kNoAttr: name = "no such attribute"; break;
    case Code::kRange: name = "out of range"; break;
    case Code::kNotSupported: name = "not supported"; break;
    case Code::kTooBig: name = "file too big"; break;
    case Code::kTooManyLinks: name = "too many links"; break;
    case Code::kCrossDevice: name = "cross-device"; break;
    case Code::kStale: name = "stale handle"; break;
    case Code::kBadFd: name = "bad file handle"; break;
    case Code::kNoData: name = "no data at offset"; break;
  }
  return msg_.empty() ? std::string(name) : std::string(name) + ": " + msg_;
}

}  // namespace psm
