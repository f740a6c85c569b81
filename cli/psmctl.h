// psmctl internals shared by the subcommand files (cli/cmd_*.cc): exit
// codes, the command registry, size parsing and printing, and how a
// MOUNTPOINT_OR_VOLUME argument is turned into an answer (ask the daemon if
// the volume is mounted, else open it offline).
//
// Each cli/cmd_<name>.cc defines one subcommand and registers it with
// PSMCTL_REGISTER_COMMAND(order, SetupFn): adding a command is adding a
// file, nothing else changes (psmctl_main.cc calls SetupAll()).
//
// Thread safety: psmctl is single-threaded; nothing here is meant for threads.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cli/client.h"
#include "fs/control_json.h"
#include "fs/filesystem.h"
#include "fs/scanner.h"
#include "meta/status.h"

namespace psmctl {

// Exit codes (documented in every --help footer and in psmctl(8)).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,    // the operation failed
  kExitUsage = 2,     // bad command line
  kExitDamaged = 3,   // the volume is damaged (fsck found problems)
  kExitNotFound = 4,  // no such volume, snapshot, or the volume is not mounted
};
extern const char* const kExitCodesFooter;

// ---- the command registry ----
using SetupFn = void (*)(CLI::App& app);
bool RegisterCommand(int order, SetupFn fn);
// Adds every registered command to `app`, in `order`.
void SetupAll(CLI::App& app);
#define PSMCTL_REGISTER_COMMAND(order, fn) \
  static const bool psmctl_registered_##fn = ::psmctl::RegisterCommand(order, fn)

// A subcommand with the standard footer.
CLI::App* AddCommand(CLI::App& parent, const std::string& name, const std::string& description);
// Makes `fn` the subcommand's action; a non-zero result is the exit code.
void SetAction(CLI::App* cmd, std::function<int()> fn);

// ---- errors ----
// The exit code for a failed Status: kNotFound -> 4, kCorruption -> 3, else 1.
int ExitCodeFor(const psm::Status& st);
// Prints "psmctl: <context>: <message>" to stderr; returns ExitCodeFor(st).
int Fail(const psm::Status& st, const std::string& context = {});
// Prints "psmctl: <message>" to stderr; returns kExitUsage.
int UsageError(const std::string& message);

// ---- sizes and times ----
// "10G", "512M", "4K", "4096", "1.5T", "10GiB": K/M/G/T/P are powers of 1024;
// a trailing "B" or "iB" is accepted.
psm::Result<uint64_t> ParseSize(std::string_view text);
// "0B", "512B", "4.0K", "1.2G", "10G" (powers of 1024, like df -h).
std::string HumanSize(uint64_t bytes);
// Local time "2024-05-01 12:00:00"; "-" for 0.
std::string FormatTime(int64_t realtime_ns);
// "0:05", "1:02:03".
std::string FormatDuration(double sec);

// ---- volumes ----
// True when `dir` looks like a psmfs volume directory (has meta/).
bool LooksLikeVolume(const std::string& dir);
// Opens an unmounted volume for reading (read-only: nothing is written, the
// mount generation stays). Fails, naming the holder, when another process
// holds the volume. With `scan`, runs the free-space scan and waits for it
// (space figures are exact only after a scan; it reads the whole alloc map).
psm::Result<std::unique_ptr<psm::FileSystem>> OpenOffline(const std::string& volume, bool scan);
// syncfs(2) on a mount point: what the kernel's write-back cache holds
// reaches the daemon. The error names --no-sync.
psm::Status SyncMount(const std::string& mountpoint);
// For commands that work online and offline: the daemon serving `target`
// if it is mounted and answers; null when it is not mounted (or its daemon
// is gone) but `target` is a volume directory, to be opened here; an error
// (kNotFound: neither) otherwise.
psm::Result<std::unique_ptr<psm::Client>> DaemonOrOffline(const std::string& target);
// Connects to the daemon serving `target` (mount point or volume).
psm::Result<std::unique_ptr<psm::Client>> ConnectMounted(const std::string& target);

// What df and status show.
struct VolumeInfo {
  bool mounted = false;
  std::string volume;
  std::string mountpoint;
  int64_t pid = 0;
  std::string since;
  psm::VolumeStats stats;
  psm::ScanStatus scan;
  psm::ScrubStatus scrub;
};
// Mounted: asks the daemon. A volume directory that is not mounted: opens
// it offline. Else kNotFound.
psm::Result<VolumeInfo> GetVolumeInfo(const std::string& target);
psm::Json VolumeInfoJson(const VolumeInfo& info);
// One line about the running or last scrub (cmd_scrub.cc): progress, or
// when it ended and what it found.
std::string ScrubLine(const psm::ScrubStatus& s, uint64_t block_size);

}  // namespace psmctl
