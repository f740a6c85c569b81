#include "fs/device/sync_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace psm {

Status SyncDirOf(const std::string& file) {
  const size_t slash = file.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : file.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "cannot open " + dir);
  int r = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) return Status::FromErrno(e, "cannot sync " + dir);
  return Status::Ok();
}

}  // namespace psm
