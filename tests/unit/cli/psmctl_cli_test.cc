// psmctl end to end, without FUSE: the real binary against volumes in
// temporary directories, offline and served by a ControlServer running in
// this test process (PSMFS_RUNTIME_DIR points both at a temporary runtime
// directory; a plain directory stands in for the mount point). Checks exit
// codes (0 ok, 1 failed, 2 usage, 3 damaged, 4 not found), messages, and
// the --json outputs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <thread>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fs/json/control_json.h"
#include "fs/control/control_server.h"
#include "fs/core/filesystem.h"
#include "meta/sync_point.h"

using psm::Json;
namespace fsys = std::filesystem;

namespace {

std::string PsmctlPath() {
  if (const char* b = std::getenv("PSMFS_BIN_DIR"); b && *b) return std::string(b) + "/psmctl";
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "psmctl";
  exe[n] = 0;
  return fsys::path(exe).parent_path().parent_path().string() + "/bin/psmctl";
}

struct Out {
  int rc = -1;
  std::string out;
  std::string err;
};

std::string Slurp(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  ::lseek(fd, 0, SEEK_SET);
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

// Runs psmctl with `args`; optionally as another uid (we must be root).
Out Ctl(const std::vector<std::string>& args, uid_t as_uid = static_cast<uid_t>(-1)) {
  char o[] = "/tmp/psm-ctl-out-XXXXXX";
  char e[] = "/tmp/psm-ctl-err-XXXXXX";
  int ofd = ::mkstemp(o), efd = ::mkstemp(e);
  REQUIRE(ofd >= 0);
  REQUIRE(efd >= 0);
  ::unlink(o);
  ::unlink(e);
  std::string exe = PsmctlPath();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(ofd, 1);
    ::dup2(efd, 2);
    if (as_uid != static_cast<uid_t>(-1)) {
      if (::setgid(as_uid) != 0 || ::setuid(as_uid) != 0) ::_exit(120);
    }
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  Out r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = Slurp(ofd);
  r.err = Slurp(efd);
  ::close(ofd);
  ::close(efd);
  return r;
}

std::string Describe(const Out& r) {
  return "rc=" + std::to_string(r.rc) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

struct Scratch {
  std::string root;
  Scratch() {
    char t[] = "/tmp/psm-cli-XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    root = t;
    ::chmod(root.c_str(), 0755);
    ::setenv("PSMFS_RUNTIME_DIR", (root + "/run").c_str(), 1);
  }
  ~Scratch() {
    ::unsetenv("PSMFS_RUNTIME_DIR");
    std::error_code ec;
    fsys::remove_all(root, ec);
  }
};

// A missing psmctl is a failed prerequisite, never a skip.
bool HavePsmctl() {
  REQUIRE_MESSAGE(::access(PsmctlPath().c_str(), X_OK) == 0,
                  "psmctl is not built at " << PsmctlPath() << " (build the psmctl target)");
  return true;
}

}  // namespace

TEST_CASE("psmctl: usage, help and version") {
  if (!HavePsmctl()) return;
  Out r = Ctl({});
  CHECK_MESSAGE(r.rc == 2, Describe(r));
  r = Ctl({"--version"});
  CHECK(r.rc == 0);
  CHECK(Has(r.out, "psmctl "));
  r = Ctl({"--help"});
  CHECK(r.rc == 0);
  CHECK(Has(r.out, "Exit codes"));
  for (const char* cmd : {"mkfs", "df", "status", "fsck", "scan"}) {
    r = Ctl({cmd, "--help"});
    CHECK_MESSAGE(r.rc == 0, cmd);
    CHECK_MESSAGE(Has(r.out, "Exit codes"), cmd);
  }
  r = Ctl({"snapshot", "create", "--help"});
  CHECK(r.rc == 0);
  CHECK(Has(r.out, "--no-sync"));
  CHECK(Ctl({"snapshot"}).rc == 2);
  CHECK(Ctl({"nosuchcommand"}).rc == 2);
  CHECK(Ctl({"status"}).rc == 2);  // missing argument
  CHECK(Ctl({"status", "--bogus", "x"}).rc == 2);
}

TEST_CASE("psmctl: mkfs, status, df, fsck and snapshot list offline") {
  if (!HavePsmctl()) return;
  Scratch s;
  const std::string vol = s.root + "/vol";

  Out r = Ctl({"mkfs", vol});
  CHECK_MESSAGE(r.rc == 2, Describe(r));  // --size missing
  CHECK(Has(r.err, "--size"));
  CHECK(Ctl({"mkfs", vol, "--size", "10X"}).rc == 2);
  CHECK(Ctl({"mkfs", vol, "--size", "64M", "--block-size", "3000"}).rc == 2);

  r = Ctl({"mkfs", vol, "--size", "64M"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "uuid"));
  r = Ctl({"mkfs", vol, "--size", "64M"});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "already holds a psmfs volume"));
  CHECK(Has(r.err, "--force"));
  r = Ctl({"mkfs", vol, "--size", "32M", "--block-size", "8K", "--force"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));

  r = Ctl({"status", vol, "--json"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  auto j = Json::Parse(r.out);
  REQUIRE_MESSAGE(j.ok(), r.out);
  CHECK(j->GetBool("mounted", true) == false);
  CHECK(j->GetUint("block_size") == 8192);
  CHECK(j->GetUint("size_bytes") > 30u << 20);
  CHECK(j->GetUint("size_bytes") <= 32u << 20);
  CHECK(j->GetUint("snapshots") == 0);
  CHECK(j->GetString("uuid").size() == 36);

  r = Ctl({"status", vol});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "not mounted"));
  r = Ctl({"df", vol});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "(not mounted)"));
  r = Ctl({"df", "--json", vol});
  REQUIRE(r.rc == 0);
  CHECK(Json::Parse(r.out)->items().size() == 1);
  r = Ctl({"fsck", vol});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "clean"));
  r = Ctl({"snapshot", "list", vol});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "no snapshots"));

  // Not found / not mounted: exit 4.
  r = Ctl({"status", s.root + "/nothing"});
  CHECK_MESSAGE(r.rc == 4, Describe(r));
  r = Ctl({"fsck", s.root});
  CHECK_MESSAGE(r.rc == 4, Describe(r));
  r = Ctl({"snapshot", "create", vol, "x"});
  CHECK_MESSAGE(r.rc == 4, Describe(r));
  CHECK(Has(r.err, "not a mounted psmfs volume"));
  r = Ctl({"scan", vol});
  CHECK(r.rc == 4);

  // A damaged volume: exit 3 from fsck (and from a command that cannot read it).
  {
    const std::string bad = s.root + "/bad";
    REQUIRE(Ctl({"mkfs", bad, "--size", "16M"}).rc == 0);
    int fd = ::open((bad + "/image").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "XXXXXXXX", 8, 0) == 8);  // the superblock's magic
    ::close(fd);
    r = Ctl({"fsck", bad});
    CHECK_MESSAGE(r.rc == 3, Describe(r));
    r = Ctl({"status", bad});
    CHECK_MESSAGE(r.rc == 3, Describe(r));
  }

  // A non-empty directory that is not a volume is never formatted.
  fsys::create_directories(s.root + "/data/sub");
  r = Ctl({"mkfs", s.root + "/data", "--size", "64M", "--force"});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(fsys::exists(s.root + "/data/sub"));
}

TEST_CASE("psmctl: an offline open of a volume held by another opener fails cleanly") {
  if (!HavePsmctl()) return;
  Scratch s;
  const std::string vol = s.root + "/vol";
  psm::FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  REQUIRE(psm::Format(vol, fo).ok());
  auto fs = psm::FileSystem::Open(vol, psm::MountOptions{});
  REQUIRE(fs.ok());
  // Held, but with no control server (no registry entry to find).
  Out r = Ctl({"status", vol});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "already mounted by pid " + std::to_string(::getpid())));
  r = Ctl({"snapshot", "list", vol});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  r = Ctl({"fsck", vol});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "mounted"));
  REQUIRE(fs.value()->Close().ok());
  CHECK(Ctl({"status", vol}).rc == 0);
}

TEST_CASE("psmctl: snapshot create/list/delete, status, df and scan through the daemon") {
  if (!HavePsmctl()) return;
  Scratch s;
  const std::string vol = s.root + "/vol";
  const std::string mnt = s.root + "/mnt";
  fsys::create_directories(mnt);
  ::chmod(mnt.c_str(), 0755);
  psm::FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  REQUIRE(psm::Format(vol, fo).ok());
  auto fs = psm::FileSystem::Open(vol, psm::MountOptions{});
  REQUIRE(fs.ok());
  psm::ControlServer server(fs.value().get(), vol, mnt);
  REQUIRE(server.Start().ok());

  Out r = Ctl({"snapshot", "create", mnt, "first"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "created snapshot 'first'"));
  r = Ctl({"snapshot", "create", vol, "second", "--json"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Json::Parse(r.out)->GetString("name") == "second");
  r = Ctl({"snapshot", "create", mnt, "first"});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "already exists"));
  r = Ctl({"snapshot", "create", mnt, "a/b"});
  CHECK_MESSAGE(r.rc == 1, Describe(r));

  r = Ctl({"snapshot", "list", mnt});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "NAME"));
  CHECK(Has(r.out, "first"));
  CHECK(Has(r.out, "second"));
  r = Ctl({"snapshot", "list", mnt, "--json"});
  REQUIRE(r.rc == 0);
  auto list = Json::Parse(r.out);
  REQUIRE(list.ok());
  REQUIRE(list->items().size() == 2);
  CHECK(list->items()[0].GetString("name") == "first");
  CHECK(list->items()[0].GetUint("epoch") < list->items()[1].GetUint("epoch"));

  r = Ctl({"status", mnt, "--json"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  auto st = Json::Parse(r.out);
  REQUIRE(st.ok());
  CHECK(st->GetBool("mounted"));
  CHECK(st->GetUint("snapshots") == 2);
  CHECK(st->GetString("mountpoint") == fsys::canonical(mnt).string());
  CHECK(st->GetInt("pid") == ::getpid());
  r = Ctl({"status", mnt});
  CHECK(r.rc == 0);
  CHECK(Has(r.out, "Mounted on:"));
  r = Ctl({"df", mnt});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, fsys::canonical(mnt).string()));

  r = Ctl({"scan", mnt, "--wait", "--json", "--interval", "0.05", "--timeout", "120"});
  REQUIRE_MESSAGE(r.rc == 0, Describe(r));
  auto scan = Json::Parse(r.out);
  REQUIRE(scan.ok());
  CHECK_FALSE(scan->GetBool("running"));
  CHECK(scan->GetUint("scans_completed") >= 1);
  r = Ctl({"scan", mnt, "--wait", "--timeout", "120"});  // not a terminal: plain lines
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "scan complete"));
  // On a terminal (script(1) gives psmctl one): the progress bar, redrawn
  // while the scan runs (held for a moment in its first step).
  if (::access("/usr/bin/script", X_OK) == 0) {
    std::atomic<bool> held{false};
    psm::SyncPoint::SetCallback("Scanner::AfterStep", [&] {
      if (!held.exchange(true)) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    });
    psm::SyncPoint::Enable();
    const std::string out = s.root + "/bar.txt";
    const std::string cmd = "script -qec '" + PsmctlPath() + " scan " + mnt +
                            " --wait --timeout 60' /dev/null > " + out + " 2>&1";
    const int rc = std::system(cmd.c_str());
    psm::SyncPoint::Disable();
    psm::SyncPoint::ClearAll();
    std::string text;
    {
      int fd = ::open(out.c_str(), O_RDONLY);
      REQUIRE(fd >= 0);
      text = Slurp(fd);
      ::close(fd);
    }
    CHECK_MESSAGE(rc == 0, text);
    CHECK_MESSAGE(held.load(), text);
    CHECK_MESSAGE(Has(text, "ranges/s"), text);  // the bar: "[###...]  12.3%  ... ranges/s  ETA ..."
    CHECK_MESSAGE(Has(text, "ETA"), text);
    CHECK_MESSAGE(Has(text, "\033[K["), text);  // redrawn in place: only the bar does that
    CHECK_MESSAGE(Has(text, "scan complete"), text);
  }

  // One bad name: nothing deleted, exit 4.
  r = Ctl({"snapshot", "delete", mnt, "first", "nope"});
  CHECK_MESSAGE(r.rc == 4, Describe(r));
  CHECK(Has(r.err, "nope"));
  CHECK(fs.value()->ListSnapshots(false).size() == 2);
  r = Ctl({"snapshot", "delete", mnt, "first", "second"});
  CHECK_MESSAGE(r.rc == 0, Describe(r));
  CHECK(Has(r.out, "deleted snapshot 'second'"));

  // A mounted volume is neither checked nor formatted.
  r = Ctl({"fsck", vol});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "unmount"));
  r = Ctl({"mkfs", vol, "--size", "64M", "--force"});
  CHECK_MESSAGE(r.rc == 1, Describe(r));
  CHECK(Has(r.err, "mounted"));

  // Another user may look but not change anything.
  if (::geteuid() == 0) {
    ::chmod(s.root.c_str(), 0755);
    ::chmod((s.root + "/run").c_str(), 0755);
    const uid_t nobody = 65534;
    r = Ctl({"snapshot", "create", mnt, "intruder"}, nobody);
    CHECK_MESSAGE(r.rc == 1, Describe(r));
    CHECK(
        Has(r.err, "permission denied: snapshot.create requires root or the volume owner (uid 0)"));
    r = Ctl({"snapshot", "list", mnt, "--json"}, nobody);
    CHECK_MESSAGE(r.rc == 0, Describe(r));
    CHECK(Json::Parse(r.out)->items().empty());
    r = Ctl({"scan", mnt}, nobody);
    CHECK(r.rc == 1);
  }
  server.Stop();
  REQUIRE(fs.value()->Close().ok());
}
