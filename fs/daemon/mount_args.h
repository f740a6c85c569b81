// How psmfs is called by mount(8) and /etc/fstab.
//
// `mount -t fuse.psmfs VOLUME MOUNTPOINT -o OPTS` (and an fstab line of type
// fuse.psmfs) runs the helper /sbin/mount.fuse.psmfs if it exists, else
// libfuse's /sbin/mount.fuse (mount.fuse3), which runs `psmfs VOLUME
// MOUNTPOINT -o OPTS` from PATH. `make install` puts mount.fuse.psmfs, a
// link to psmfs, in PREFIX/sbin: psmfs started under that name reads mount(8)'s
// helper convention
//     mount.fuse.psmfs SPEC DIR [-s] [-f] [-n] [-v] [-N NS] [-o OPTS] [-t TYPE]
// and turns it into its own (MountHelperArgs).
//
// Either way the options may hold words that only mean something to
// mount(8), fstab or systemd (`defaults`, `noauto`, `nofail`, `_netdev`,
// `user`, `x-systemd.*`, `comment=...`): IsFstabOnlyOption says which, and
// psmfs drops them.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "meta/status.h"

namespace psm {

// True for options that belong to mount(8)/fstab/systemd, not to psmfs or
// the kernel: defaults, auto, noauto, user, nouser, users, owner, group,
// _netdev, nofail, sw, comment=..., x-... (x-systemd.*, x-gvfs-*, ...).
bool IsFstabOnlyOption(std::string_view opt);

// True when argv[0] names the mount helper (basename "mount.fuse.psmfs" or
// "mount.psmfs").
bool IsMountHelperName(std::string_view argv0);

struct MountHelperCall {
  std::vector<std::string> psmfs_args;  // VOLUME MOUNTPOINT [-o OPTS] (no argv[0])
  bool fake = false;                    // -f: do everything but mount (exit 0)
  bool verbose = false;                 // -v
};

// Translates the helper's arguments (without argv[0]). kInvalid, with a
// message for the user, on what mount(8) would never pass (a missing
// argument, a foreign -t type, -N namespaces).
Result<MountHelperCall> MountHelperArgs(const std::vector<std::string>& args);

}  // namespace psm
