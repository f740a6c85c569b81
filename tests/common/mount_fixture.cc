// MountedVolume and helpers (tests/common/mount_fixture.h).
#include "tests/common/mount_fixture.h"

#include "fs/control/control_protocol.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace psm::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string TempRoot() {
  const char* t = std::getenv("TMPDIR");
  return (t != nullptr && *t != '\0') ? t : "/tmp";
}

bool KeepTmp() {
  const char* k = std::getenv("PSMFS_KEEP_TMP");
  return k != nullptr && *k != '\0' && std::strcmp(k, "0") != 0;
}

std::string MakeTempDir() {
  std::string tmpl = TempRoot() + "/psmfs-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    FAIL("mkdtemp " << tmpl << ": " << std::strerror(errno));
  }
  return tmpl;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n = 6000) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::string UnescapeMountField(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// waitpid with a deadline. Returns true when the child ended (*status set).
bool WaitFor(pid_t pid, int timeout_ms, int* status) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return true;  // not our child any more
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int ExitCodeOf(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

}  // namespace

std::string SanitizerReportOf(pid_t pid) {
  const char* d = std::getenv("PSMFS_SANITIZER_REPORTS");
  if (d == nullptr || *d == '\0' || pid <= 0) return {};
  return ReadAll(std::string(d) + "/report." + std::to_string(pid));
}

bool HasSanitizerReport(std::string_view log) {
  return log.find("Sanitizer:") != std::string_view::npos ||
         log.find("runtime error:") != std::string_view::npos;
}

std::string BinDir() {
  const char* b = std::getenv("PSMFS_BIN_DIR");
  if (b == nullptr || *b == '\0') FAIL("PSMFS_BIN_DIR is not set (run the test through ctest)");
  return b;
}

ProgramResult RunProgram(const std::vector<std::string>& argv, int timeout_s) {
  ProgramResult res;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    res.output = std::string("pipe: ") + std::strerror(errno);
    return res;
  }
  // Everything the child needs is built before fork(): the test process may
  // have threads, so the child only calls async-signal-safe functions.
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, STDIN_FILENO);
    dup2(p[1], STDOUT_FILENO);
    dup2(p[1], STDERR_FILENO);
    execvp(args[0], args.data());
    dprintf(STDERR_FILENO, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    res.output = std::string("fork: ") + std::strerror(errno);
    return res;
  }
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{p[0], POLLIN, 0};
    int n = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    ssize_t r = read(p[0], buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    res.output.append(buf, static_cast<size_t>(r));
  }
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  res.exit_code = res.timed_out ? -1 : ExitCodeOf(status);
  return res;
}

// True when a registry entry in the control runtime directory
// (fs/control/control_protocol.h, ServerRuntimeDir) names daemon `pid`.
static bool RegisteredBy(pid_t pid) {
  const std::string dir = psm::ctl::ServerRuntimeDir();
  std::error_code ec;
  const std::string want = "\npid=" + std::to_string(pid) + "\n";
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 6 || name.compare(name.size() - 6, 6, ".mount") != 0) continue;
    std::ifstream f(e.path());
    std::stringstream ss;
    ss << f.rdbuf();
    if (ss.str().find(want) != std::string::npos) return true;
  }
  return false;
}

bool IsMountPoint(const std::string& path, std::string_view fstype) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent maj:min root mountpoint options [optional...] - fstype source super
    std::istringstream ss(line);
    std::string f[5];
    for (auto& x : f) ss >> x;
    if (UnescapeMountField(f[4]) != path) continue;
    if (fstype.empty()) return true;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string type;
    rest >> type;
    if (type == fstype) return true;
  }
  return false;
}

std::unique_ptr<MountedVolume> MountedVolume::Create(const std::string& size,
                                                     const std::string& extra_opts) {
  auto mv = std::make_unique<MountedVolume>();
  mv->dir = MakeTempDir();
  mv->vol = mv->dir + "/vol";
  mv->mnt = mv->dir + "/mnt";
  mv->log = mv->dir + "/psmfs.log";
  mv->opts = extra_opts;
  if (mkdir(mv->mnt.c_str(), 0755) != 0) FAIL("mkdir " << mv->mnt << ": " << std::strerror(errno));
  ProgramResult mkfs = RunProgram({BinDir() + "/psmctl", "mkfs", mv->vol, "--size", size});
  if (!mkfs.ok()) {
    FAIL("psmctl mkfs " << mv->vol << " --size " << size << " failed (exit " << mkfs.exit_code
                        << "):\n"
                        << mkfs.output);
  }
  std::string err = mv->Start();
  if (!err.empty()) FAIL(err);
  return mv;
}

std::unique_ptr<MountedVolume> MountedVolume::MountExisting(const std::string& vol,
                                                            const std::string& extra_opts) {
  auto mv = std::make_unique<MountedVolume>();
  mv->dir = MakeTempDir();
  mv->vol = vol;
  mv->mnt = mv->dir + "/mnt";
  mv->log = mv->dir + "/psmfs.log";
  mv->opts = extra_opts;
  if (mkdir(mv->mnt.c_str(), 0755) != 0) FAIL("mkdir " << mv->mnt << ": " << std::strerror(errno));
  std::string err = mv->Start();
  if (!err.empty()) FAIL(err);
  return mv;
}

std::string MountedVolume::Start() {
  const std::string bin = BinDir() + "/psmfs";
  std::vector<std::string> argv = {bin, vol, mnt, "-f"};
  if (!opts.empty()) {
    argv.emplace_back("-o");
    argv.push_back(opts);
  }
  int logfd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) return "open " + log + ": " + std::strerror(errno);
  {
    std::string banner =
        "==== psmfs " + vol + " " + mnt + " -f" + (opts.empty() ? "" : " -o " + opts) + "\n";
    (void)!write(logfd, banner.data(), banner.size());
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t child = fork();
  if (child == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, STDIN_FILENO);
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    execv(args[0], args.data());
    dprintf(STDERR_FILENO, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(logfd);
  if (child < 0) return std::string("fork: ") + std::strerror(errno);
  pid = child;

  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!IsMountPoint(mnt)) {
    if (!Alive()) {
      return "psmfs " + vol + " " + mnt + " died before mounting (exit " +
             std::to_string(last_exit) + "). Log:\n" + Tail(LogText()) + TakeSanitizerReports();
    }
    if (Clock::now() >= deadline) {
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      Ended(pid);
      pid = -1;
      return "psmfs " + vol + " " + mnt + " did not mount within 30 s. Log:\n" + Tail(LogText()) +
             TakeSanitizerReports();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The daemon mounts before it starts its control server: until its
  // registry entry names it, psmctl finds no entry (or, after a SIGKILL,
  // the dead daemon's) and says the volume is not mounted. Wait for it, so
  // a test's first psmctl call after Create/Remount reaches this daemon.
  while (!RegisteredBy(pid)) {
    if (!Alive()) {
      return "psmfs " + vol + " " + mnt + " died after mounting (exit " +
             std::to_string(last_exit) + "). Log:\n" + Tail(LogText()) + TakeSanitizerReports();
    }
    if (Clock::now() >= deadline) {
      return "psmfs " + vol + " " + mnt + " mounted but registered no control socket within 30 s." +
             " Log:\n" + Tail(LogText());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return {};
}

bool MountedVolume::Alive() {
  if (pid <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == 0) return true;
  last_exit = r == pid ? ExitCodeOf(status) : -1;
  Ended(pid);
  pid = -1;
  return false;
}

void MountedVolume::Ended(pid_t p) { ended_.push_back(p); }

std::string MountedVolume::TakeSanitizerReports() {
  std::string out;
  for (pid_t p : ended_) {
    std::string r = SanitizerReportOf(p);
    if (!r.empty()) out += "\n==== sanitizer report of psmfs pid " + std::to_string(p) + ":\n" + r;
  }
  ended_.clear();
  std::string text = LogText();
  if (text.size() > log_checked_) {
    std::string_view fresh = std::string_view(text).substr(log_checked_);
    if (HasSanitizerReport(fresh)) {
      out += "\n==== sanitizer report in " + log + ":\n" + std::string(fresh);
    }
    log_checked_ = text.size();
  }
  return out;
}

bool MountedVolume::CheckSanitizerReports(const char* when) {
  std::string r = TakeSanitizerReports();
  if (r.empty()) return true;
  // From the destructor only while a test case runs normally: not while an
  // exception unwinds (a REQUIRE failed) and not outside a test case.
  if (in_destructor_ && (std::uncaught_exceptions() > 0 || !doctest::is_running_in_test)) {
    fprintf(stderr, "psmfs daemon of %s wrote sanitizer reports (%s):%s\n", vol.c_str(), when,
            r.c_str());
  } else {
    FAIL_CHECK("the psmfs daemon wrote sanitizer reports (" << std::string(when) << "):" << r);
  }
  return false;
}

std::string MountedVolume::LogText() const { return ReadAll(log); }

bool MountedVolume::Unmount(int timeout_s) {
  if (!Alive()) {
    FAIL_CHECK("Unmount: the psmfs daemon is not running (last exit " << last_exit << "). Log:\n"
                                                                      << Tail(LogText())
                                                                      << TakeSanitizerReports());
    if (IsMountPoint(mnt, "")) RunProgram({"fusermount3", "-u", "-z", mnt});
    return false;
  }
  ProgramResult um;
  for (int attempt = 0; attempt < 50; ++attempt) {
    um = RunProgram({"fusermount3", "-u", mnt});
    if (um.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // EBUSY: a test fd still open?
  }
  if (!um.ok()) {
    FAIL_CHECK("fusermount3 -u " << mnt << " failed: " << um.output);
    return false;
  }
  int status = 0;
  if (!WaitFor(pid, timeout_s * 1000, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    Ended(pid);
    pid = -1;
    last_exit = -1;
    FAIL_CHECK("psmfs did not exit within " << timeout_s << " s of the unmount; killed. Log:\n"
                                            << Tail(LogText()) << TakeSanitizerReports());
    return false;
  }
  Ended(pid);
  pid = -1;
  last_exit = ExitCodeOf(status);
  if (last_exit != 0) {
    FAIL_CHECK("psmfs " << DescribeStatus(status) << " after unmount. Log:\n"
                        << Tail(LogText()) << TakeSanitizerReports());
    return false;
  }
  return CheckSanitizerReports("unmount");
}

bool MountedVolume::Kill9() {
  bool ok = true;
  const bool started = pid > 0;
  if (!Alive()) {
    FAIL_CHECK("Kill9: the psmfs daemon was no longer running before the SIGKILL ("
               << (!started ? std::string("no daemon had been started")
                            : last_exit >= 0 ? "it had exited with status " + std::to_string(last_exit)
                                             : std::string("it had been killed by a signal"))
               << "); the crash this test meant to cause did not happen. Log:\n"
               << Tail(LogText()));
    ok = false;
  } else {
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    Ended(pid);
    pid = -1;
    last_exit = ExitCodeOf(status);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
      // It ended between the check above and the signal, on its own.
      FAIL_CHECK("Kill9: the psmfs daemon " << DescribeStatus(status)
                                            << " on its own just before the SIGKILL. Log:\n"
                                            << Tail(LogText()));
      ok = false;
    }
  }
  if (started && !CheckSanitizerReports("SIGKILL")) ok = false;
  DropDeadMount();
  return ok;
}

void MountedVolume::DropDeadMount() {
  // The connection died with the daemon; the mount stays ("Transport
  // endpoint is not connected") until unmounted.
  for (int attempt = 0; attempt < 50 && IsMountPoint(mnt, ""); ++attempt) {
    RunProgram({"fusermount3", "-u", "-z", mnt});
    if (!IsMountPoint(mnt, "")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

bool MountedVolume::Remount() {
  if (Alive()) {
    FAIL_CHECK("Remount: a psmfs daemon is still running (pid " << pid << ")");
    return false;
  }
  CheckSanitizerReports("the daemon before this remount");  // it may have ended by itself
  std::string err = Start();
  if (!err.empty()) {
    FAIL_CHECK(err);
    return false;
  }
  return true;
}

MountedVolume::~MountedVolume() {
  in_destructor_ = true;
  if (Alive()) {
    // Not through Unmount(): no doctest assertion from a destructor.
    RunProgram({"fusermount3", "-u", mnt});
    int status = 0;
    if (!WaitFor(pid, 120 * 1000, &status)) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    Ended(pid);
    pid = -1;
  }
  // A failed check inside a test case, else printed (tests/sanitizer_run.sh
  // fails the test on them anyway).
  CheckSanitizerReports("at the end of the test");
  if (IsMountPoint(mnt, "")) RunProgram({"fusermount3", "-u", "-z", mnt});
  if (dir.empty()) return;
  if (KeepTmp()) {
    fprintf(stderr, "PSMFS_KEEP_TMP: kept %s\n", dir.c_str());
    return;
  }
  if (IsMountPoint(mnt, "")) {
    fprintf(stderr, "%s is still mounted; not removing %s\n", mnt.c_str(), dir.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace psm::test
