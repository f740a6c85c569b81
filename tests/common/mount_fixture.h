// MountedVolume: a real psmfs mount for integration tests (label `fuse`).
//
// Create() makes a fresh volume with `$PSMFS_BIN_DIR/psmctl mkfs VOL --size
// SIZE` in a new temporary directory (under $TMPDIR, default /tmp), starts
// `$PSMFS_BIN_DIR/psmfs VOL MNT -f [-o EXTRA_OPTS]` as a child process with
// its stdout/stderr going to DIR/psmfs.log, and waits (30 s at most) until
// MNT shows up in /proc/self/mountinfo as a fuse.psmfs mount.
//
//   auto mv = psm::test::MountedVolume::Create();          // 256M, no options
//   auto ro = psm::test::MountedVolume::Create("1G", "ro,commit_interval=50");
//   int fd = open(mv->Path("a").c_str(), O_CREAT | O_RDWR, 0644);
//   ...
//   CHECK(mv->Unmount());   // fusermount3 -u; true iff the daemon exited 0
//                           // (and wrote no sanitizer report)
//   CHECK(mv->Remount());   // same volume, same options, same mount point
//   REQUIRE(mv->Kill9());   // SIGKILL a running daemon, reap, lazy-unmount
//   CHECK(mv->Remount());   // failover: the volume must come back
//
// Failures are loud: Create() ends the current test case (doctest FAIL) with
// the reason and the daemon's log when mkfs fails, the daemon dies, or the
// mount does not appear; it never returns null. Unmount()/Remount() record a
// failed CHECK with the log and return false. Call them from inside a doctest
// test case (they use doctest assertions).
//
// The destructor unmounts if still mounted (waiting for the daemon), kills a
// daemon that will not exit, lazily unmounts a dead mount, and removes the
// temporary directory unless PSMFS_KEEP_TMP=1 (then it prints where it is).
//
// Sanitizer builds: a daemon started here that wrote a sanitizer report
// fails the check that ends it — Unmount() (also when it exited 0), Kill9(),
// Remount() of a daemon that ended by itself, or Create() of one that died
// while mounting — with the report. Reports are found in
// $PSMFS_SANITIZER_REPORTS/report.PID (tests/sanitizer_run.sh, which CTest
// runs every test of a sanitizer build with) and in the daemon's log (when
// the test runs without it). The destructor fails the test case with them
// too, unless an exception is unwinding (then it prints them).
//
// Environment: PSMFS_BIN_DIR (set by CTest) must name the directory holding
// psmfs and psmctl; TMPDIR picks the temporary root; PSMFS_KEEP_TMP=1 keeps
// volumes and logs; PSMFS_SANITIZER_REPORTS (above).
//
// Thread safety: none; use one MountedVolume from one thread (the test's).
// The mount itself may of course be used from many threads.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace psm::test {

// $PSMFS_BIN_DIR; ends the test case (FAIL) when it is not set.
std::string BinDir();

struct ProgramResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  bool timed_out = false;
  std::string output;  // stdout and stderr, interleaved
  bool ok() const { return exit_code == 0; }
};
// Runs argv (argv[0] is a path or found on PATH) with stdin from /dev/null,
// collecting its output; kills it after `timeout_s` seconds.
ProgramResult RunProgram(const std::vector<std::string>& argv, int timeout_s = 120);

// Sanitizer builds: the reports process `pid` wrote to
// $PSMFS_SANITIZER_REPORTS/report.PID (tests/sanitizer_run.sh), "" if none
// or the variable is not set.
std::string SanitizerReportOf(pid_t pid);
// True if `log` holds a sanitizer runtime's report ("...Sanitizer:" or
// "runtime error:").
bool HasSanitizerReport(std::string_view log);

// True when `path` (absolute) is the mount point of a mount whose file
// system type is `fstype` ("" = any), per /proc/self/mountinfo.
bool IsMountPoint(const std::string& path, std::string_view fstype = "fuse.psmfs");

struct MountedVolume {
  // A fresh volume of `size` (psmctl syntax: 256M, 2G) mounted with the
  // comma-separated psmfs -o options `extra_opts` ("" = none).
  static std::unique_ptr<MountedVolume> Create(const std::string& size = "256M",
                                               const std::string& extra_opts = "");
  // Mounts an existing volume at a new temporary mount point (for tests that
  // move a volume between daemons). The volume directory is not removed.
  static std::unique_ptr<MountedVolume> MountExisting(const std::string& vol,
                                                      const std::string& extra_opts = "");

  std::string dir;     // temporary directory holding vol/, mnt/ and psmfs.log
  std::string vol;     // volume directory
  std::string mnt;     // mount point (absolute)
  std::string log;     // the daemon's stdout+stderr (appended across remounts)
  std::string opts;    // the -o options used
  pid_t pid = -1;      // the running daemon, or -1
  int last_exit = -1;  // exit code of the last daemon that ended (-1: signal)

  // MNT/rel.
  std::string Path(std::string_view rel) const { return mnt + "/" + std::string(rel); }
  // True while the daemon runs (reaps it and records last_exit otherwise).
  bool Alive();
  // fusermount3 -u MNT (retried while busy), then waits up to `timeout_s`
  // for the daemon. True iff it exited with status 0 and wrote no sanitizer
  // report.
  bool Unmount(int timeout_s = 120);
  // SIGKILL to the daemon, reap it, then lazily unmount the dead mount so
  // the mount point can be used again. The volume is left as a crash left it.
  // The daemon must still be running when the signal is sent: if it had
  // already ended (or was not started), or if it turns out to have ended
  // some other way than by this SIGKILL, that is recorded as a failed CHECK
  // with its exit status and log, and false is returned. A crash test whose
  // daemon died on its own would otherwise pass without testing anything.
  // A sanitizer report the daemon wrote before the signal fails it too.
  bool Kill9();
  // Lazily unmounts the mount of a daemon that is already gone (a test that
  // killed it itself); no-op when nothing is mounted. REQUIRES: pid == -1.
  void DropDeadMount();
  // Starts a daemon again on the same volume, mount point and options and
  // waits for the mount. REQUIRES: no daemon running.
  bool Remount();
  // The daemon's log so far.
  std::string LogText() const;

  ~MountedVolume();

 private:
  // Starts the daemon and waits for the mount; "" or the reason it failed.
  std::string Start();
  // Records that daemon `pid` has ended (reaped): its sanitizer reports are
  // collected by the next TakeSanitizerReports().
  void Ended(pid_t pid);
  // The sanitizer reports of the daemons that ended since the last call,
  // from the report directory and from the log written since; "" if none.
  std::string TakeSanitizerReports();
  // FAIL_CHECK with TakeSanitizerReports() if there are any; true if none.
  bool CheckSanitizerReports(const char* when);

  std::vector<pid_t> ended_;  // reaped daemons whose reports were not taken
  size_t log_checked_ = 0;    // how much of `log` TakeSanitizerReports() read
  bool in_destructor_ = false;
};

}  // namespace psm::test
