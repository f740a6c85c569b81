// Windows "Previous Versions" over SMB (label fuse): installs Samba from the
// Debian packages if needed, runs smbd on a loopback port with a private
// smb.conf (vfs_shadow_copy2, the share section docs/user-guide.md gives)
// on a psmfs mount, and with smbclient — a real SMB client —
//   writes a file, takes @GMT snapshots (psmctl snapshot create --gmt)
//   between changes, lists the file's previous versions (allinfo shows the
//   @GMT tokens), reads each old version through its @GMT path, and checks
//   that writing into a previous version is refused.
// Samba is a prerequisite (`make test` installs samba and smbclient through
// the Makefile's DEB_PKGS): when smbd, smbclient or vfs_shadow_copy2 is
// missing and cannot be installed, the test fails saying why; it never
// passes without having talked SMB.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/mount_fixture.h"

namespace {

namespace fsys = std::filesystem;
using psm::test::BinDir;
using psm::test::MountedVolume;
using psm::test::ProgramResult;
using psm::test::RunProgram;

constexpr int kPort = 14459;
constexpr char kPass[] = "psm-Test-pw1";

std::string Which(const char* prog) {
  for (const char* d : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string p = std::string(d) + prog;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// vfs_shadow_copy2 ships in samba-vfs-modules on Debian.
bool HaveShadowCopy2() {
  for (const auto& e : fsys::directory_iterator("/usr/lib")) {
    if (fsys::exists(e.path() / "samba/vfs/shadow_copy2.so")) return true;
  }
  return false;
}

// What of Samba this test needs is missing ("" when nothing is).
std::string MissingSamba() {
  std::string missing;
  for (const char* prog : {"smbd", "smbclient", "smbpasswd"}) {
    if (Which(prog).empty()) missing += std::string(missing.empty() ? "" : ", ") + prog;
  }
  if (!HaveShadowCopy2()) missing += std::string(missing.empty() ? "" : ", ") + "vfs shadow_copy2.so";
  return missing;
}

bool EnsureSamba(std::string* why) {
  if (MissingSamba().empty()) return true;
  ProgramResult r = RunProgram({"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                                "--no-install-recommends", "samba", "samba-vfs-modules",
                                "smbclient"},
                               600);
  const std::string missing = MissingSamba();
  if (missing.empty()) return true;
  *why = "missing " + missing + "; apt-get install samba samba-vfs-modules smbclient exited " +
         std::to_string(r.exit_code) + ": " +
         r.output.substr(r.output.size() > 2000 ? r.output.size() - 2000 : 0);
  return false;
}

bool PortOpen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

struct Smbd {
  std::string dir, conf;
  pid_t pid = -1;
  ~Smbd() {
    if (pid > 0) {
      kill(-pid, SIGTERM);
      for (int i = 0; i < 50 && waitpid(pid, nullptr, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      kill(-pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

std::string ReadText(const std::string& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("Samba shows psmfs snapshots as Windows Previous Versions") {
  std::string why;
  REQUIRE_MESSAGE(EnsureSamba(&why),
                  "Samba is a prerequisite of this test (smbd, smbclient, smbpasswd and "
                  "vfs_shadow_copy2; `make test` installs the Debian packages samba and "
                  "smbclient) and it is not available: "
                      << why);
  auto mv = MountedVolume::Create("256M");
  const std::string psmctl = BinDir() + "/psmctl";

  Smbd smbd;
  smbd.dir = mv->dir + "/samba";
  for (const char* d : {"private", "lock", "state", "cache", "pid", "ncalrpc", "log"}) {
    fsys::create_directories(smbd.dir + "/" + d);
  }
  smbd.conf = smbd.dir + "/smb.conf";
  {
    std::ofstream c(smbd.conf);
    const std::string& D = smbd.dir;
    c << "[global]\n"
      << "  server role = standalone server\n"
      << "  smb ports = " << kPort << "\n"
      << "  interfaces = 127.0.0.1\n  bind interfaces only = yes\n"
      << "  private dir = " << D << "/private\n  lock directory = " << D << "/lock\n"
      << "  state directory = " << D << "/state\n  cache directory = " << D << "/cache\n"
      << "  pid directory = " << D << "/pid\n  ncalrpc dir = " << D << "/ncalrpc\n"
      << "  log file = " << D << "/log/%m.log\n  log level = 1\n"
      << "  passdb backend = tdbsam:" << D << "/private/passdb.tdb\n"
      << "  load printers = no\n  printing = bsd\n  printcap name = /dev/null\n"
      << "  disable spoolss = yes\n  server min protocol = SMB2\n"
      << "  disable netbios = yes\n"
      // The share section of docs/user-guide.md.
      << "[data]\n"
      << "  path = " << mv->mnt << "\n"
      << "  read only = no\n"
      << "  vfs objects = shadow_copy2\n"
      << "  shadow:snapdir = .snapshots\n"
      << "  shadow:basedir = " << mv->mnt << "\n"
      << "  shadow:format = @GMT-%Y.%m.%d-%H.%M.%S\n"
      << "  shadow:localtime = no\n"
      << "  shadow:sort = desc\n"
      << "  shadow:crossmountpoints = no\n"
      << "  shadow:fixinodes = no\n";
  }
  // An SMB account for root in the private passdb.
  ProgramResult pw = RunProgram({"sh", "-c",
                                 "printf '%s\\n%s\\n' '" + std::string(kPass) + "' '" + kPass +
                                     "' | smbpasswd -c '" + smbd.conf + "' -s -a root"});
  REQUIRE_MESSAGE(pw.ok(), pw.output);

  fflush(nullptr);
  smbd.pid = fork();
  REQUIRE(smbd.pid >= 0);
  if (smbd.pid == 0) {
    setpgid(0, 0);
    std::string log = smbd.dir + "/log/smbd.out";
    freopen(log.c_str(), "w", stdout);
    dup2(fileno(stdout), 2);
    execl(Which("smbd").c_str(), "smbd", "--foreground", "--no-process-group", "-s",
          smbd.conf.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(smbd.pid, smbd.pid);
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = PortOpen(kPort);
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE_MESSAGE(up, "smbd did not listen on port " << kPort << ": "
                                                     << ReadText(smbd.dir + "/log/smbd.out"));

  const std::string local = mv->dir + "/local";
  fsys::create_directories(local);
  auto smb = [&](const std::string& cmds) {
    return RunProgram({"smbclient", "//127.0.0.1/data", "-p", std::to_string(kPort), "-U",
                       std::string("root%") + kPass, "-m", "SMB3", "-c", cmds},
                      120);
  };
  auto put_version = [&](const std::string& text) {
    std::ofstream(local + "/doc.txt", std::ios::trunc) << text;
    ProgramResult r = smb("put " + local + "/doc.txt doc.txt");
    if (!r.ok()) {
      for (const auto& e : fsys::directory_iterator(smbd.dir + "/log")) {
        if (e.is_regular_file()) MESSAGE(e.path().string() << ":\n" << ReadText(e.path().string()));
      }
    }
    REQUIRE_MESSAGE(r.ok(), r.output);
    REQUIRE_MESSAGE(r.output.find("NT_STATUS") == std::string::npos, r.output);
  };
  auto gmt_snapshot = [&]() -> std::string {
    ProgramResult r = RunProgram({psmctl, "snapshot", "create", mv->mnt, "--gmt"});
    REQUIRE_MESSAGE(r.ok(), r.output);
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(r.output, m, std::regex("'(@GMT-[0-9.\\-]+)'")), r.output);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // names have 1 s resolution
    return m[1];
  };

  const std::vector<std::string> texts = {"first version\n", "second version, longer\n",
                                          "third and live\n"};
  put_version(texts[0]);
  // The bytes reached psmfs through Samba.
  CHECK(ReadText(mv->Path("doc.txt")) == texts[0]);
  const std::string s1 = gmt_snapshot();
  put_version(texts[1]);
  const std::string s2 = gmt_snapshot();
  put_version(texts[2]);

  // allinfo lists the previous versions by their @GMT tokens.
  ProgramResult info = smb("allinfo doc.txt");
  REQUIRE_MESSAGE(info.ok(), info.output);
  CHECK_MESSAGE(info.output.find(s1) != std::string::npos, info.output);
  CHECK_MESSAGE(info.output.find(s2) != std::string::npos, info.output);

  // Each old version's bytes through its @GMT path; the live one as is.
  for (auto [snap, want] : {std::pair{s1, texts[0]}, std::pair{s2, texts[1]}}) {
    const std::string out = local + "/got-" + snap;
    ProgramResult g = smb("get \"" + snap + "\\doc.txt\" \"" + out + "\"");
    CHECK_MESSAGE(g.output.find("NT_STATUS") == std::string::npos, g.output);
    CHECK_MESSAGE(ReadText(out) == want, snap);
  }
  ProgramResult g = smb("get doc.txt " + local + "/got-live");
  CHECK_MESSAGE(g.ok(), g.output);
  CHECK(ReadText(local + "/got-live") == texts[2]);

  // Writing into a previous version is refused, and changes nothing.
  std::ofstream(local + "/evil.txt") << "overwrite attempt\n";
  ProgramResult w = smb("put " + local + "/evil.txt \"" + s1 + "\\doc.txt\"");
  CHECK_MESSAGE(w.output.find("NT_STATUS_") != std::string::npos, w.output);
  ProgramResult w2 = smb("put " + local + "/evil.txt \"" + s1 + "\\new.txt\"");
  CHECK_MESSAGE(w2.output.find("NT_STATUS_") != std::string::npos, w2.output);
  CHECK(ReadText(mv->Path(".snapshots/" + s1 + "/doc.txt")) == texts[0]);
  CHECK_FALSE(fsys::exists(mv->Path(".snapshots/" + s1 + "/new.txt")));
  CHECK(ReadText(mv->Path("doc.txt")) == texts[2]);
  // And psmctl history agrees: three versions, the first two in s1 and s2.
  ProgramResult h = RunProgram({psmctl, "history", mv->mnt, "doc.txt", "--json"});
  CHECK_MESSAGE(h.ok(), h.output);
  CHECK(h.output.find(s1) != std::string::npos);
  CHECK(h.output.find(s2) != std::string::npos);
}
