// The front end's half of cli/psmctl.h (docs/cli.md, "Two executables"):
// psmctl links only the control client, so starting it costs a small
// binary's start-up, not RocksDB's and the engine's. What needs the engine
// — commands this executable does not have, --help (whose command list must
// be complete), a volume that is not mounted — is served by psmctl-offline,
// which runs in this process's place (execv, the same arguments), so its
// output and exit code are exactly what the command prints.
//
// psmctl-offline is looked for next to this executable (the build tree),
// then in PSMCTL_OFFLINE_RELDIR relative to it (the install:
// PREFIX/libexec/psmfs from PREFIX/bin; cli/CMakeLists.txt).
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "cli/psmctl.h"

#ifndef PSMCTL_OFFLINE_RELDIR
#define PSMCTL_OFFLINE_RELDIR "../libexec/psmfs"
#endif

namespace psmctl {

const bool kOfflineEngine = false;

namespace {

std::vector<char*>& CommandLine() {
  static auto* argv = new std::vector<char*>();
  return *argv;
}

// The directory of this executable, "" when /proc is not there.
std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string path(buf, static_cast<size_t>(n));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

bool IsHelp(std::string_view arg) {
  return arg == "-h" || arg == "--help" || arg == "--help-all";
}

}  // namespace

void SetCommandLine(int argc, char** argv) {
  CommandLine().assign(argv, argv + argc);
  CommandLine().push_back(nullptr);
}

psm::Status RunOfflineEngine() {
  std::vector<char*>& argv = CommandLine();
  if (argv.empty()) return psm::Status::Invalid("no command line to hand to psmctl-offline");
  const std::string dir = ExeDir();
  std::vector<std::string> tried;
  for (const std::string& path : {dir + "/psmctl-offline",
                                  dir + "/" PSMCTL_OFFLINE_RELDIR "/psmctl-offline"}) {
    ::execv(path.c_str(), argv.data());
    tried.push_back(path + ": " + std::strerror(errno));
  }
  std::string msg = "cannot run psmctl-offline, which serves this command (";
  for (size_t i = 0; i < tried.size(); ++i) msg += (i ? "; " : "") + tried[i];
  return psm::Status::NotSupported(msg + ")");
}

bool ServedHere(const CLI::App& app, int argc, char** argv) {
  // Words name the command and, for a group, its action; once a command
  // without actions is reached the rest are its own. No option of psmctl
  // or of a group takes a value, so every word before that is a name.
  const CLI::App* level = &app;
  bool named = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (IsHelp(arg)) return false;  // the help lists every command
    if (arg.empty() || arg[0] == '-') continue;
    std::vector<const CLI::App*> subs = level->get_subcommands({});
    if (subs.empty()) continue;  // the command's own arguments
    const CLI::App* next = nullptr;
    for (const CLI::App* s : subs) {
      if (s->check_name(std::string(arg))) next = s;
    }
    if (next == nullptr) return false;  // not here: psmctl-offline has it, or says it is unknown
    level = next;
    named = true;
  }
  if (!named) {
    // `psmctl --version` is answered here; `psmctl` alone gets psmctl-offline's usage message.
    for (int i = 1; i < argc; ++i) {
      if (std::string_view(argv[i]) == "--version") return true;
    }
    return false;
  }
  return level->get_subcommands({}).empty();  // a group without its action: the usage message
}

psm::Result<VolumeInfo> OfflineVolumeInfo(const std::string& /*target*/) {
  return RunOfflineEngine();
}

psm::Result<std::vector<psm::SnapshotInfo>> OfflineSnapshotList(const std::string& /*target*/) {
  return RunOfflineEngine();
}

psm::Result<psm::MirrorInfo> OfflineMirror(const std::string& /*action*/,
                                           const std::string& /*target*/,
                                           const std::string& /*path*/, bool /*force*/) {
  return RunOfflineEngine();
}

}  // namespace psmctl
