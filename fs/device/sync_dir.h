// Making a file's directory entry durable: fsync of the directory that
// holds it, after a create or rename there (the mirror's state file, a
// stream `psmctl send -o` wrote).
#pragma once

#include <string>

#include "meta/status.h"

namespace psm {

// fsync of the directory of `file` ("." for a bare name, "/" for a file
// directly under the root).
Status SyncDirOf(const std::string& file);

}  // namespace psm
