// Status::FromRocks, apart from the rest of meta/status.cc so that a program
// that uses psm::Status without the store (psmctl's front end, cli/psmctl.h)
// does not need librocksdb.
#include <rocksdb/status.h>

#include "meta/status.h"

namespace psm {

Status Status::FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return Ok();
  if (s.IsNotFound()) return NotFound(s.ToString());
  if (s.IsCorruption()) return Corruption("metadata store: " + s.ToString());
  if (s.IsNoSpace()) return NoSpace("metadata store: " + s.ToString());
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Busy(s.ToString());
  if (s.IsInvalidArgument()) return Invalid(s.ToString());
  if (s.IsNotSupported()) return NotSupported(s.ToString());
  return IOError("metadata store: " + s.ToString());
}

}  // namespace psm
