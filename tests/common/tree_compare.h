// Comparing two directory trees, or two open files, byte for byte: what
// the randomized tests use to check a psmfs mount against a native
// reference copy. Every function returns "" when equal, otherwise a short
// description of the first difference.
#pragma once

#include <map>
#include <string>

namespace psm::testutil {

// Size, nlink, and every byte (read with pread from offset 0).
std::string CompareFds(int a, int b);
// lstat type, permission bits, size, nlink, symlink target and content of
// one path on both sides (a missing path must be missing on both).
std::string ComparePaths(const std::string& a, const std::string& b);
// Recursive: the same names in every directory, and ComparePaths on each.
std::string CompareTrees(const std::string& a, const std::string& b);

// A tree as a map path -> description, for a model kept in a native mirror
// directory (recorded once, compared with psmfs trees later): "/" is the
// root itself, then every path below it. Each node: type and permission
// bits, owner, link count, rdev, size (not for directories), symlink
// target, a hash of the contents and the runs of data (SEEK_DATA /
// SEEK_HOLE) of regular files, mtime (unless `with_mtime` is false), the
// xattr names and values, and for a file with several links the first
// path (in sorted walk order) of its inode. `.snapshots` at the root is
// left out.
using TreeManifest = std::map<std::string, std::string>;
TreeManifest ManifestOf(const std::string& root, bool with_mtime = true);
// "" when equal; else every difference ("missing P", "extra P", "differs
// P: want [...] got [...]"), at most 20.
std::string DiffManifests(const TreeManifest& want, const TreeManifest& got);

}  // namespace psm::testutil
