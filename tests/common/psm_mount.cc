#include "tests/common/psm_mount.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/common/mount_fixture.h"  // SanitizerReportOf, HasSanitizerReport
#include "tests/common/psm_test_util.h"

namespace psm::testutil {
namespace {

using Clock = std::chrono::steady_clock;

// Waits for `pid` up to `timeout_s`; true (and *status) when it exited.
bool WaitPid(pid_t pid, double timeout_s, int* status) {
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return false;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string BinDir() {
  if (const char* b = std::getenv("PSMFS_BIN_DIR"); b != nullptr && *b != '\0') return b;
  const char* s = std::getenv("PSMFS_SOURCE_DIR");
  return std::string(s != nullptr ? s : ".") + "/build/bin";
}

CmdResult Run(const std::vector<std::string>& argv, int timeout_s) {
  CmdResult res;
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) return res;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(pfd[1], 1);
    dup2(pfd[1], 2);
    execvp(args[0], args.data());
    dprintf(2, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(pfd[1]);
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  char buf[4096];
  for (;;) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    struct pollfd p = {pfd[0], POLLIN, 0};
    int n = poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    ssize_t r = read(pfd[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    res.output.append(buf, r);
  }
  close(pfd[0]);
  int status = 0;
  if (!WaitPid(pid, res.timed_out ? 10 : timeout_s, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    res.timed_out = true;
  }
  if (WIFEXITED(status)) {
    res.exited = !res.timed_out;
    res.exit_code = WEXITSTATUS(status);
  }
  return res;
}

std::string Describe(const std::vector<std::string>& argv, const CmdResult& r) {
  std::ostringstream os;
  for (const auto& a : argv) os << a << ' ';
  if (r.timed_out) {
    os << "-> timed out";
  } else if (!r.exited) {
    os << "-> killed by a signal";
  } else {
    os << "-> exit " << r.exit_code;
  }
  os << "\n" << r.output;
  return os.str();
}

bool IsMountPoint(const std::string& path) {
  std::string canon = path;
  std::error_code ec;
  auto w = std::filesystem::weakly_canonical(path, ec);
  if (!ec) canon = w.string();
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);  // id parent major:minor root mountpoint ...
    std::string f[5];
    for (auto& x : f) ls >> x;
    if (f[4] == canon || f[4] == path) return true;
  }
  return false;
}

PsmMount::PsmMount(std::string_view tag, Options opts) : opts_(std::move(opts)) {
  dir_ = MakeScratchDir(tag);
  vol_ = dir_ + "/vol";
  mnt_ = dir_ + "/mnt";
  log_ = dir_ + "/psmfs.log";
  mkdir(mnt_.c_str(), 0755);
}

PsmMount::~PsmMount() {
  if (mounted()) {
    std::string err;
    if (!Unmount(&err)) {
      std::fprintf(stderr, "PsmMount cleanup: %s\n", err.c_str());
      KillDaemon();
    }
  }
  if (IsMountPoint(mnt_)) Run({"fusermount3", "-uz", mnt_}, 30);
  if (!KeepTmp() && !IsMountPoint(mnt_)) {
    RemoveTree(dir_);
  } else {
    std::fprintf(stderr, "PsmMount: kept %s\n", dir_.c_str());
  }
}

CmdResult PsmMount::Ctl(const std::vector<std::string>& args, int timeout_s) {
  std::vector<std::string> argv = {BinDir() + "/psmctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, timeout_s);
}

bool PsmMount::Mkfs(std::string* err) {
  std::vector<std::string> args = {"mkfs", vol_, "--size", opts_.size};
  if (opts_.block_size != 0) {
    args.push_back("--block-size");
    args.push_back(std::to_string(opts_.block_size));
  }
  CmdResult r = Ctl(args, 120);
  if (!r.ok()) {
    *err = Describe(args, r);
    return false;
  }
  return true;
}

std::string PsmMount::LogTail(size_t bytes) const {
  std::string s = ReadFileOrEmpty(log_);
  if (s.size() > bytes) s = "..." + s.substr(s.size() - bytes);
  return s;
}

bool PsmMount::Mount(std::string* err) {
  if (mounted()) {
    *err = "already mounted";
    return false;
  }
  std::string exe = BinDir() + "/psmfs";
  if (access(exe.c_str(), X_OK) != 0) {
    *err = exe + " is missing (build the daemon first)";
    return false;
  }
  std::vector<std::string> argv = {exe, vol_, mnt_, "-f"};
  std::string o;
  for (const auto& opt : opts_.mount_opts) o += (o.empty() ? "" : ",") + opt;
  if (!o.empty()) {
    argv.push_back("-o");
    argv.push_back(o);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // If the test process dies, SIGTERM makes the daemon unmount and exit.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    int devnull = open("/dev/null", O_RDONLY);
    int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  daemon_pid_ = pid;
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    struct stat st;
    if (IsMountPoint(mnt_) && stat(mnt_.c_str(), &st) == 0) return true;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      daemon_pid_ = -1;
      *err = "psmfs exited before the mount appeared (status " + std::to_string(status) +
             "); log:\n" + LogTail();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *err = "mount did not appear within 30 s; log:\n" + LogTail();
  KillDaemon();
  return false;
}

bool PsmMount::Unmount(std::string* err) {
  if (!mounted()) {
    *err = "not mounted";
    return false;
  }
  CmdResult r = Run({"fusermount3", "-u", mnt_}, 60);
  if (!r.ok()) {
    *err = "fusermount3 -u failed: " + Describe({"fusermount3", "-u", mnt_}, r);
    return false;
  }
  int status = 0;
  if (!WaitPid(daemon_pid_, 60, &status)) {
    *err = "psmfs did not exit within 60 s of the unmount; log:\n" + LogTail();
    return false;
  }
  const pid_t ended = daemon_pid_;
  daemon_pid_ = -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *err = "psmfs ended with status " + std::to_string(status) + " after unmount; log:\n" +
           LogTail() + SanitizerReports(ended);
    return false;
  }
  if (std::string r = SanitizerReports(ended); !r.empty()) {
    *err = "psmfs exited 0 after unmount but wrote sanitizer reports:" + r;
    return false;
  }
  return true;
}

std::string PsmMount::SanitizerReports(pid_t pid) {
  std::string out;
  if (std::string r = psm::test::SanitizerReportOf(pid); !r.empty()) {
    out += "\n==== sanitizer report of psmfs pid " + std::to_string(pid) + ":\n" + r;
  }
  std::string text = ReadFileOrEmpty(log_);
  if (text.size() > log_checked_) {
    std::string_view fresh = std::string_view(text).substr(log_checked_);
    if (psm::test::HasSanitizerReport(fresh)) {
      out += "\n==== sanitizer report in " + log_ + ":\n" + std::string(fresh);
    }
    log_checked_ = text.size();
  }
  return out;
}

bool PsmMount::DaemonAlive() {
  if (daemon_pid_ <= 0) return false;
  int status;
  if (waitpid(daemon_pid_, &status, WNOHANG) == daemon_pid_) {
    std::fprintf(stderr, "psmfs (pid %d) died with status %d; log:\n%s%s\n", daemon_pid_, status,
                 LogTail().c_str(), SanitizerReports(daemon_pid_).c_str());
    daemon_pid_ = -1;
    return false;
  }
  return true;
}

bool PsmMount::KillDaemon() {
  bool killed = false;
  if (DaemonAlive()) {  // reaps (and reports) a daemon that already ended
    kill(daemon_pid_, SIGKILL);
    int status = 0;
    waitpid(daemon_pid_, &status, 0);
    killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    // Printed only (this fixture reports through return values);
    // tests/sanitizer_run.sh fails the test on it.
    if (std::string r = SanitizerReports(daemon_pid_); !r.empty()) {
      std::fprintf(stderr, "psmfs (pid %d), killed, had written sanitizer reports:%s\n",
                   daemon_pid_, r.c_str());
    }
    daemon_pid_ = -1;
  }
  if (IsMountPoint(mnt_)) Run({"fusermount3", "-uz", mnt_}, 30);
  return killed;
}

bool PsmMount::Fsck(std::string* out) {
  CmdResult r = Ctl({"fsck", vol_}, 600);
  *out = Describe({"psmctl", "fsck", vol_}, r);
  return r.ok();
}

}  // namespace psm::testutil
