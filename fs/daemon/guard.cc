#include "fs/daemon/guard.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace psm {
namespace {

constexpr const char* kFuseCtl = "/sys/fs/fuse/connections";
constexpr long kFuseCtlMagic = 0x65735543;  // FUSE_CTL_SUPER_MAGIC
constexpr unsigned kStatxMntIdUnique = 0x4000;  // STATX_MNT_ID_UNIQUE (not in glibc 2.36)

bool FuseCtlMounted() {
  struct statfs s {};
  return statfs(kFuseCtl, &s) == 0 && s.f_type == kFuseCtlMagic;
}

// The fusectl directory name of a connection: the superblock's dev_t as
// the kernel encodes it (MKDEV: major << 20 | minor), in decimal.
std::string ConnectionName(const std::string& dev) {
  const size_t colon = dev.find(':');
  if (colon == std::string::npos) return {};
  const unsigned long major = std::strtoul(dev.substr(0, colon).c_str(), nullptr, 10);
  const unsigned long minor = std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 10);
  return std::to_string((major << 20) | minor);
}

// The unique mount ID of the mount at `path` (statx STATX_MNT_ID_UNIQUE,
// Linux 6.8+), 0 if unknown. AT_STATX_DONT_SYNC: no request to the file
// system, which may be the mount that hangs.
uint64_t MountId(const char* path) {
  struct statx st {};
  if (statx(AT_FDCWD, path, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, kStatxMntIdUnique, &st) != 0 ||
      !(st.stx_mask & kStatxMntIdUnique)) {
    return 0;
  }
  return st.stx_mnt_id;
}

// The third field of /proc/PID/stat, after "PID (comm) ": the state of the
// main thread. 'Z' or 'X': it has exited, whatever other threads do.
// Async-signal-safe. Returns 0 if the process is gone.
char MainThreadState(const char* stat_path) {
  int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[512];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* paren = strrchr(buf, ')');  // comm may hold spaces and parens
  if (paren == nullptr || paren[1] != ' ') return 0;
  return paren[2];
}

}  // namespace

int GuardMain(int argc, char** argv) {
  if (argc != 5) return 2;
  const std::string stat_path = std::string("/proc/") + argv[1] + "/stat";
  const char* mountpoint = argv[2];
  const std::string conn_dir = std::string(kFuseCtl) + "/" + argv[3];
  const uint64_t mnt_id = std::strtoull(argv[4], nullptr, 10);
  prctl(PR_SET_NAME, kGuardName);
  const struct timespec tick = {0, 200 * 1000 * 1000};
  for (;;) {
    nanosleep(&tick, nullptr);
    if (access(conn_dir.c_str(), F_OK) != 0) return 0;  // unmounted: nothing to guard
    const char state = MainThreadState(stat_path.c_str());
    if (state != 0 && state != 'Z' && state != 'X') continue;
    // The daemon is gone or dying. If /dev/fuse was closed the kernel has
    // aborted the connection already and this changes nothing; if a thread
    // stuck in the kernel holds it open, this is what frees the mount. Only
    // if the mount is still the one the daemon made: connection numbers are
    // reused, and a new daemon may have mounted here meanwhile.
    if (MountId(mountpoint) == mnt_id) {
      int fd = open((conn_dir + "/abort").c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void)!write(fd, "1", 1);
        close(fd);
      }
    }
    return 0;
  }
}

Status StartGuard(pid_t daemon, const std::string& mountpoint, const std::string& dev) {
  const std::string name = ConnectionName(dev);
  if (name.empty()) return Status::Invalid("device number '" + dev + "'");
  if (!FuseCtlMounted() && mount("fusectl", kFuseCtl, "fusectl", 0, nullptr) != 0) {
    return Status::FromErrno(errno, std::string("mounting fusectl on ") + kFuseCtl);
  }
  const std::string abort_path = std::string(kFuseCtl) + "/" + name + "/abort";
  if (access(abort_path.c_str(), W_OK) != 0) {
    return Status::FromErrno(errno, "no connection control file " + abort_path);
  }
  const uint64_t mnt_id = MountId(mountpoint.c_str());
  if (mnt_id == 0) return Status::NotSupported("no unique mount ID (STATX_MNT_ID_UNIQUE)");
  const std::string pid_s = std::to_string(daemon), id_s = std::to_string(mnt_id);
  const char* args[] = {kGuardName, pid_s.c_str(), mountpoint.c_str(), name.c_str(), id_s.c_str(),
                        nullptr};
  // The guard's environment is empty but for the sanitizer runtimes'
  // options (a sanitizer build's tests point their reports at a directory
  // they check; docs/testing.md, "Sanitizers").
  std::vector<std::string> env_strings;
  for (const char* name : {"ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    if (const char* v = getenv(name); v != nullptr) env_strings.push_back(std::string(name) + "=" + v);
  }
  std::vector<const char*> env;
  for (const std::string& e : env_strings) env.push_back(e.c_str());
  env.push_back(nullptr);
  pid_t child = fork();
  if (child < 0) return Status::FromErrno(errno, "fork");
  if (child == 0) {
    // Only async-signal-safe calls from here to exec: the daemon has threads.
    if (fork() != 0) _exit(0);  // the guard is the grandchild: nobody reaps it
    setsid();
    // Hold nothing of the daemon's: an inherited descriptor of the volume's
    // lock or of /dev/fuse would keep them alive after the daemon died.
    syscall(SYS_close_range, 0u, ~0u, 0u);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    execve("/proc/self/exe", const_cast<char* const*>(args), const_cast<char* const*>(env.data()));
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return Status::Ok();
}

}  // namespace psm
