// The guard: a small process that outlives a killed psmfs and aborts its
// FUSE connection (docs/fuse-adapter.md, "When the daemon is killed").
//
// Why: a daemon killed with SIGKILL normally closes /dev/fuse as it dies,
// the kernel aborts the connection, and processes using the mount get
// ENOTCONN. But a daemon thread that is inside the kernel in an
// uninterruptible wait when the signal comes — the notifier in
// fuse_lowlevel_notify_inval_entry waiting for a directory lock that a
// request in flight holds — never finishes dying: the process stays a
// zombie with /dev/fuse open, the request is never answered, and everything
// that touches the mount (and the volume's lock) waits forever. Only
// writing to /sys/fs/fuse/connections/N/abort ends that, so the guard does
// it when it sees the daemon's main thread gone.
//
// Thread safety: StartGuard forks; the child runs only async-signal-safe
// system calls on buffers prepared before the fork.
#pragma once

#include <sys/types.h>

#include <string>

#include "meta/status.h"

namespace psm {

// Starts the guard of the FUSE connection of the mount at `mountpoint`,
// whose device is `dev` ("MAJOR:MINOR" from /proc/self/mountinfo), watching
// process `daemon`. The guard aborts only while that very mount (its unique
// mount ID) is still at `mountpoint`: connection numbers are reused. Mounts fusectl on /sys/fs/fuse/connections if it is not
// (needs root). The guard exits by itself when the connection is gone (a
// clean unmount), and after aborting it when `daemon`'s main thread has
// exited. The guard is not a child of the caller (double fork): nothing to
// reap. Its environment is empty but for ASAN_OPTIONS, TSAN_OPTIONS,
// UBSAN_OPTIONS and LSAN_OPTIONS, passed on when set.
Status StartGuard(pid_t daemon, const std::string& mountpoint, const std::string& dev);

// The guard's program: the psmfs binary started (by StartGuard, through
// /proc/self/exe) with argv[0] == kGuardName and DAEMON_PID MOUNTPOINT
// CONNECTION MOUNT_ID. Returns the exit status.
inline constexpr const char* kGuardName = "psm-guard";
int GuardMain(int argc, char** argv);

}  // namespace psm
