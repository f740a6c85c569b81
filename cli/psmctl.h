// psmctl internals shared by the subcommand files (cli/cmd_*.cc): exit
// codes, the command registry, size parsing and printing, and how a
// MOUNTPOINT_OR_VOLUME argument is turned into an answer (ask the daemon if
// the volume is mounted, else open it offline).
//
// Each cli/cmd_<name>.cc defines one subcommand and registers it with
// PSMCTL_REGISTER_COMMAND(order, SetupFn): adding a command is adding a
// file, nothing else changes (psmctl_main.cc calls SetupAll()).
//
// Two executables share these files (docs/cli.md, "Two executables"):
// `psmctl`, the front end, links only the control client and serves the
// commands that talk to a daemon; `psmctl-offline` links the filesystem
// engine too and serves every command. The front end runs psmctl-offline in
// its own place (exec, same arguments) for whatever it does not serve: a
// command it does not have, --help, and an unmounted volume.
//
// Thread safety: psmctl is single-threaded; nothing here is meant for threads.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"
#include "fs/json/control_json.h"
#include "fs/core/filesystem.h"
#include "fs/space/scanner.h"
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

// ---- the two executables ----
// True in psmctl-offline (psmctl_offline.cc), false in the front end
// (psmctl_handoff.cc).
extern const bool kOfflineEngine;
// Remembers the command line for RunOfflineEngine (main calls it first).
void SetCommandLine(int argc, char** argv);
// The front end: replaces this process by psmctl-offline with the same
// command line (next to this executable, or in the install's libexec
// directory). Returns only when that fails, with the reason.
// psmctl-offline: never called (it has the engine); returns kInternal.
psm::Status RunOfflineEngine();
// The front end: whether this executable serves `argv` itself (the command
// and, for a group, its action are registered in `app`, and no help was
// asked for); main runs psmctl-offline otherwise.
bool ServedHere(const CLI::App& app, int argc, char** argv);

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
// psmctl-offline only (psmctl_offline.cc).
psm::Result<std::unique_ptr<psm::FileSystem>> OpenOffline(const std::string& volume, bool scan);
// Everything written to the mount so far reaches the daemon: syncfs(2) on
// the mount point, then fsync(2) of every file of the mount a process holds
// open or mapped (syncfs may return before the daemon has answered the
// WRITEs it started; fsync waits for them). The error names --no-sync.
// `find_writers` false skips the search for open files: pass
// Client::may_have_writers() of a client connected before this call (the
// daemon then had no file open for writing, so every earlier write was
// flushed at its close; files opened since are not ours to wait for).
psm::Status SyncMount(const std::string& mountpoint, bool find_writers = true);
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
// The offline halves of commands that work both ways. psmctl-offline opens
// the volume (`target` is a volume directory that is not mounted); the
// front end runs psmctl-offline in its place and returns only on failure.
psm::Result<VolumeInfo> OfflineVolumeInfo(const std::string& target);
psm::Result<std::vector<psm::SnapshotInfo>> OfflineSnapshotList(const std::string& target);
// psmctl mirror on an unmounted volume: opens it, does `action` (attach
// waits for the resilver, with a progress bar on a terminal), closes it.
psm::Result<psm::MirrorInfo> OfflineMirror(const std::string& action, const std::string& target,
                                           const std::string& path, bool force);
psm::Json VolumeInfoJson(const VolumeInfo& info);
// One line about the running or last scrub (cmd_scrub.cc): progress, or
// when it ended and what it found.
std::string ScrubLine(const psm::ScrubStatus& s, uint64_t block_size);
// The mirror in one line, and one side's errors (cmd_mirror.cc).
std::string MirrorLine(const psm::MirrorInfo& m);
std::string MirrorSideLine(const psm::MirrorSideInfo& s);

}  // namespace psmctl
