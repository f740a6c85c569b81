// A daemon killed while /dev/fuse stays open must not leave a mount that
// hangs (fs/daemon/guard.h). That state happens when a daemon thread is stuck in
// an uninterruptible wait inside the kernel at SIGKILL (the process cannot
// finish dying and keeps the device open). Here it is made on purpose: the
// test duplicates the daemon's /dev/fuse descriptor (pidfd_getfd) and then
// SIGKILLs it, so the connection stays alive with nobody to answer.
//   - With the guard (the default), a process that touches the mount gets
//     an error within seconds: psm-guard aborted the connection.
//   - With -o noguard that process is still waiting after 3 s (what the
//     guard prevents), until the test aborts the connection by hand.
// Either way the volume then mounts again, holds what was fsynced, and
// fsck is clean.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/common/mount_fixture.h"

namespace {

using psm::test::MountedVolume;

// The daemon's /dev/fuse descriptor, duplicated into this process.
int DupFuseFd(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  int target = -1;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec) == "/dev/fuse") {
      target = std::stoi(e.path().filename().string());
      break;
    }
  }
  if (target < 0) return -1;
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return -1;
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  close(pidfd);
  return fd;
}

// /sys/fs/fuse/connections/N/abort of the mount at `mnt`.
std::string AbortFile(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point != mnt) continue;
    const size_t colon = dev.find(':');
    const unsigned long major = std::stoul(dev.substr(0, colon));
    const unsigned long minor = std::stoul(dev.substr(colon + 1));
    return "/sys/fs/fuse/connections/" + std::to_string((major << 20) | minor) + "/abort";
  }
  return {};
}

// Runs mkdir(path) in a child; the child's exit status says how it ended:
// 0 success, 10 ENOTCONN/ECONNABORTED, 20 anything else.
pid_t MkdirInChild(const std::string& path) {
  pid_t c = fork();
  if (c == 0) {
    int r = mkdir(path.c_str(), 0755);
    _exit(r == 0 ? 0 : (errno == ENOTCONN || errno == ECONNABORTED) ? 10 : 20);
  }
  return c;
}

// Waits up to `seconds` for child `c`; its exit status, or -1 if it still runs.
int WaitChild(pid_t c, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    int status = 0;
    if (waitpid(c, &status, WNOHANG) == c) return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < end);
  return -1;
}

void Scenario(const std::string& opts, bool guarded) {
  REQUIRE_MESSAGE(geteuid() == 0,
                  "this test needs root (pidfd_getfd of the daemon, fusectl); run it as root");
  auto mv = MountedVolume::Create("256M", opts);
  {
    int fd = open(mv->Path("kept").c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "synced", 6) == 6);
    REQUIRE(fsync(fd) == 0);
    close(fd);
  }
  const std::string abort_file = AbortFile(mv->mnt);
  REQUIRE_FALSE(abort_file.empty());
  const int held = DupFuseFd(mv->pid);
  REQUIRE_MESSAGE(held >= 0, "pidfd_getfd: " << strerror(errno));
  // The daemon must still be running, or the kill below tests nothing.
  REQUIRE_MESSAGE(mv->Alive(), "psmfs died before the SIGKILL (exit " << mv->last_exit
                                                                      << "). Log:\n"
                                                                      << mv->LogText());
  REQUIRE(kill(mv->pid, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(mv->pid, &status, 0) == mv->pid);
  mv->pid = -1;
  REQUIRE_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL),
                  "psmfs ended on its own (status " << status << ") before the SIGKILL");

  const pid_t c = MkdirInChild(mv->Path("after-kill"));
  REQUIRE(c > 0);
  if (guarded) {
    const int r = WaitChild(c, 15);
    CHECK_MESSAGE(r == 10, "mkdir on the killed mount ended with " << r
                                                                   << " (-1: still waiting)");
    if (r == -1) {  // leave nothing hanging behind a failed check
      std::ofstream(abort_file) << "1";
      WaitChild(c, 10);
    }
  } else {
    CHECK(WaitChild(c, 3) == -1);  // hangs: nobody reads /dev/fuse
    std::ofstream(abort_file) << "1";
    CHECK(WaitChild(c, 10) == 10);
  }
  close(held);
  mv->DropDeadMount();  // lazy unmount of the dead mount
  REQUIRE(mv->Remount());
  {
    std::ifstream kept(mv->Path("kept"));
    std::string text((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
    CHECK(text == "synced");
  }
  CHECK(mv->Unmount());
  auto fsck = psm::test::RunProgram({psm::test::BinDir() + "/psmctl", "fsck", mv->vol});
  INFO(fsck.output);
  CHECK(fsck.exit_code == 0);
}

}  // namespace

TEST_CASE("a killed daemon that keeps /dev/fuse open: psm-guard aborts the connection") {
  Scenario("", true);
}

TEST_CASE("the same with -o noguard hangs until the connection is aborted by hand") {
  Scenario("noguard", false);
}
