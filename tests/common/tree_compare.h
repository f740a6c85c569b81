// Comparing two directory trees, or two open files, byte for byte: what
// the randomized tests use to check a psmfs mount against a native
// reference copy. Every function returns "" when equal, otherwise a short
// description of the first difference.
#pragma once

#include <string>

namespace psm::testutil {

// Size, nlink, and every byte (read with pread from offset 0).
std::string CompareFds(int a, int b);
// lstat type, permission bits, size, nlink, symlink target and content of
// one path on both sides (a missing path must be missing on both).
std::string ComparePaths(const std::string& a, const std::string& b);
// Recursive: the same names in every directory, and ComparePaths on each.
std::string CompareTrees(const std::string& a, const std::string& b);

}  // namespace psm::testutil
