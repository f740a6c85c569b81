// PsmMount: a standalone psmfs mount for tests (mkfs, `psmfs -f` as a child
// with PR_SET_PDEATHSIG, unmount, SIGKILL, fsck, psmctl), plus Run() for
// commands. It predates tests/common/mount_fixture.h (MountedVolume), which
// the parity, random-operations and crash tests now use; snapshot_model_test
// still uses this one. Unlike MountedVolume it reports failures through
// return values, never through doctest, so it also works outside test cases.
//
// Scratch directories come from psm_test_util.h (the repository's disk).
// Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace psm::testutil {

// $PSMFS_BIN_DIR, else $PSMFS_SOURCE_DIR/build/bin.
std::string BinDir();

struct CmdResult {
  bool exited = false;  // false: killed by a signal or timed out
  int exit_code = -1;
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved
  bool ok() const { return exited && exit_code == 0; }
};
// Runs argv[0] (PATH lookup) with stdin from /dev/null. Kills it after
// timeout_s seconds.
CmdResult Run(const std::vector<std::string>& argv, int timeout_s = 300);
std::string Describe(const std::vector<std::string>& argv, const CmdResult& r);

// True when `path` is the mount point of a mount in /proc/self/mountinfo.
bool IsMountPoint(const std::string& path);

class PsmMount {
 public:
  struct Options {
    std::string size = "2G";
    uint32_t block_size = 0;                                // 0: mkfs default
    std::vector<std::string> mount_opts = {"allow_other"};  // joined into -o
  };
  explicit PsmMount(std::string_view tag) : PsmMount(tag, Options{}) {}
  PsmMount(std::string_view tag, Options opts);
  ~PsmMount();  // unmounts (or kills), removes the scratch dir unless PSMFS_KEEP_TMP
  PsmMount(const PsmMount&) = delete;
  PsmMount& operator=(const PsmMount&) = delete;

  // psmctl mkfs. Returns false and fills *err on failure.
  bool Mkfs(std::string* err);
  // Starts `psmfs VOL MNT -f -o ...` and waits until the mount appears.
  bool Mount(std::string* err);
  // fusermount3 -u, then waits for the daemon to exit with status 0. Fails
  // also when the daemon wrote a sanitizer report (mount_fixture.h).
  bool Unmount(std::string* err);
  // SIGKILL to the daemon, reap it, fusermount3 -uz (lazy). False when the
  // daemon was not running any more at the signal (it had exited or died on
  // its own, or none was started): a crash test must then fail, not pass.
  bool KillDaemon();
  // psmctl fsck VOL; true when it exits 0. *out gets its output.
  bool Fsck(std::string* out);
  // Runs psmctl with the given arguments.
  CmdResult Ctl(const std::vector<std::string>& args, int timeout_s = 300);

  bool mounted() const { return daemon_pid_ > 0; }
  // False once the daemon has exited (reaps it; the mount is then dead).
  bool DaemonAlive();
  pid_t daemon_pid() const { return daemon_pid_; }
  const std::string& dir() const { return dir_; }  // scratch root of this mount
  const std::string& vol() const { return vol_; }
  const std::string& mnt() const { return mnt_; }
  std::string LogTail(size_t bytes = 4000) const;

 private:
  // Sanitizer reports of daemon `pid` (ended), and in the log since the
  // last call; "" if none.
  std::string SanitizerReports(pid_t pid);
  Options opts_;
  std::string dir_, vol_, mnt_, log_;
  size_t log_checked_ = 0;
  pid_t daemon_pid_ = -1;
};

}  // namespace psm::testutil
