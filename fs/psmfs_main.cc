// psmfs: mounts a psmfs volume with FUSE.
//
//   psmfs VOLUME MOUNTPOINT [-f] [-d] [-s] [-o OPTIONS]
//
// What happens, in order (docs/fuse-adapter.md, docs/man/psmfs.8):
//   1. Parse and check the command line (usage errors exit 2), check that
//      VOLUME is a psmfs volume and MOUNTPOINT a directory that is not
//      already a mount point (exit 1), and let libfuse check the pass-through
//      -o options (exit 2). No thread exists yet.
//   2. Without -f: fork. The parent waits on a pipe for "ready" or an error
//      text from the child and exits 0 or 1. The child calls setsid(), logs
//      to syslog and goes on. (FileSystem::Open starts threads, so the fork
//      comes first; fuse_daemonize() is never used.)
//   3. FileSystem::Open (a volume mounted elsewhere is refused here with the
//      core's message), fuse_session_new, signal handlers, fuse_session_mount,
//      the invalidation notifier, the control server; then "ready".
//   4. The session loop (multi-threaded unless -s) until unmount or
//      SIGINT/SIGTERM/SIGHUP.
//   5. Control server Stop(), notifier Stop(), fuse_session_unmount,
//      FileSystem::Close() (makes everything durable). Exit 0, or 1 if the
//      loop failed or Close() did.
//
// Signals: SIGINT/SIGTERM/SIGHUP/SIGQUIT are blocked before any thread is
// started, so every core, notifier, control and libfuse worker thread
// inherits the block, and are unblocked only in the main thread while it
// runs the session loop: the signal always reaches the thread that can end
// the loop.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/core/filesystem.h"
#include "fs/fuse/fuse_adapter.h"
#include "fs/daemon/guard.h"
#include "fs/fuse/fuse_ops.h"  // FUSE_USE_VERSION + <fuse_lowlevel.h>
#include "fs/base/log.h"
#include "fs/daemon/mount_args.h"
#include "fs/control/scheduler.h"
#include "fs/daemon/sd_notify.h"
#include "fs/device/superblock.h"
#include "meta/status.h"

#if __has_include("fs/control/control_server.h")
#include "fs/control/control_server.h"
#define PSMFS_HAVE_CONTROL_SERVER 1
#else
#define PSMFS_HAVE_CONTROL_SERVER 0
#endif
#if __has_include("fs/control/control_protocol.h")
#include "fs/control/control_protocol.h"
#define PSMFS_VERSION_STRING std::string(psm::ctl::kSoftwareVersion)
#else
#define PSMFS_VERSION_STRING std::string("0.1.0")
#endif

namespace psm {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// ---------------------------------------------------------------- logging
//
// Foreground (-f/-d): stderr. Daemon: syslog("psmfs"). libfuse's own
// messages are routed here too. While the mount is being set up, messages
// are also collected so that a failed start reports them in one piece.

struct LogState {
  std::mutex mu;
  bool to_syslog = false;
  bool debug = false;
  bool capturing = false;
  std::string captured;
};
LogState& Logs() {
  static LogState s;
  return s;
}

void VLog(int prio, const char* fmt, va_list ap) {
  char buf[2048];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  std::string msg(buf);
  LogState& s = Logs();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!LogEnabled(prio)) return;
  if (s.capturing && prio <= LOG_WARNING) {
    // libfuse builds one message from several calls; keep the raw text.
    s.captured += msg;
    if (!s.to_syslog) return;  // printed once, as the start-up error
  }
  LogWrite(prio, msg);  // fs/base/log.h: syslog when daemonised, else stderr
}

__attribute__((format(printf, 2, 3))) void Log(int prio, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VLog(prio, fmt, ap);
  va_end(ap);
}

void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  VLog(static_cast<int>(level), fmt, ap);
}

void StartCapture() {
  std::lock_guard<std::mutex> lock(Logs().mu);
  Logs().capturing = true;
  Logs().captured.clear();
}
// The captured text, lines joined with "; ".
std::string EndCapture() {
  std::lock_guard<std::mutex> lock(Logs().mu);
  Logs().capturing = false;
  std::string out;
  for (char c : Logs().captured) {
    if (c == '\n') {
      out += "; ";
    } else {
      out += c;
    }
  }
  Logs().captured.clear();
  while (out.size() >= 2 && out.compare(out.size() - 2, 2, "; ") == 0) out.resize(out.size() - 2);
  return out;
}

// ------------------------------------------------------------ command line

struct CmdLine {
  std::string volume;      // as given, then resolved to an absolute path
  std::string mountpoint;  // likewise
  bool foreground = false;
  bool debug = false;
  bool single_thread = false;
  bool default_permissions = true;
  bool user_fsname = false;
  bool user_subtype = false;
  bool guard = true;  // start psm-guard (fs/daemon/guard.h); -o noguard
  unsigned max_threads = 10;
  unsigned max_idle_threads = 10;
  MountOptions mount;
  FuseAdapterOptions adapter;
  std::vector<std::string> fuse_opts;  // passed to fuse_session_new, raw (escaped)
};

constexpr char kUsage[] =
    "usage: psmfs VOLUME MOUNTPOINT [-f] [-d] [-s] [-o OPTION[,OPTION...]]\n"
    "       psmfs --help | --version\n";

void PrintHelp() {
  printf(
      "%s\n"
      "Mounts the psmfs volume VOLUME (a directory made by `psmctl mkfs`) at\n"
      "MOUNTPOINT. Snapshots appear read-only under MOUNTPOINT/.snapshots/NAME.\n"
      "\n"
      "Options:\n"
      "  -f                 stay in the foreground; log to stderr\n"
      "  -d                 debug: log every FUSE request (implies -f)\n"
      "  -s                 serve requests on one thread\n"
      "  -o OPT[,OPT...]    mount options, below; -o may be repeated\n"
      "  -h, --help         print this help and exit\n"
      "  -V, --version      print the version and exit\n"
      "\n"
      "psmfs mount options:\n"
      "  ro                     refuse every change (EROFS); also mounts read-only\n"
      "  commit_interval=MS     unsynced writes become durable within MS ms\n"
      "                         (default 1000)\n"
      "  resilver_rate=MB/s     copy at most MB/s to a mirror being resilvered\n"
      "                         (default: as fast as the disks go)\n"
      "  redirect_writes        checksummed volumes: write every block to a new\n"
      "                         place instead of overwriting whole blocks in\n"
      "                         place under a write intent (slower random\n"
      "                         writes; a block damaged in the seconds before a\n"
      "                         crash is still caught; docs/integrity.md)\n"
      "  memory=SIZE            the daemon's memory budget: metadata cache,\n"
      "                         memtables and open-file cache stay within it\n"
      "                         (default 256M, at least 32M)\n"
      "  max_kernel_refs=N      past N inodes held by the kernel, ask it to drop\n"
      "                         dentries until it holds 3/4 of N (default: from\n"
      "                         memory, 1572864 at 256M; at least 100)\n"
      "  no_default_permissions do not let the kernel check permissions; psmfs\n"
      "                         does not check them either, so every caller may\n"
      "                         do everything (default: default_permissions on)\n"
      "  max_threads=N          at most N request threads (default 10)\n"
      "  max_idle_threads=N     keep at most N idle request threads (default 10)\n"
      "  snapdir=visible|hidden whether .snapshots is listed in the root; it is\n"
      "                         reachable by name either way (default visible)\n"
      "  live_timeout=SEC       kernel cache time of live-tree entries and\n"
      "                         attributes (default 30)\n"
      "  snapshot_timeout=SEC   kernel cache time inside snapshots, which never\n"
      "                         change (default 86400)\n"
      "  no_writeback_cache     send every write to psmfs at once instead of\n"
      "                         collecting them in the kernel page cache\n"
      "  acl|noacl              POSIX ACLs (system.posix_acl_*), enforced by the\n"
      "                         kernel; need default_permissions (default: acl)\n"
      "  noguard                start no psm-guard process (it aborts the FUSE\n"
      "                         connection if the daemon is killed and cannot\n"
      "                         finish dying, so the mount never hangs)\n"
      "  nokillpriv_v2          let the kernel clear set-ID bits and file\n"
      "                         capabilities itself (slower writes; default:\n"
      "                         psmfs clears them, FUSE_HANDLE_KILLPRIV_V2)\n"
      "  debug                  same as -d\n"
      "\n"
      "Standard FUSE mount options are passed to the kernel, e.g.:\n"
      "  allow_other            let other users in (non-root: needs\n"
      "                         user_allow_other in /etc/fuse.conf)\n"
      "  allow_root             let root in as well as the mounting user\n"
      "  default_permissions    on by default, see no_default_permissions\n"
      "  fsname=NAME            first field of /proc/mounts (default: VOLUME)\n"
      "  subtype=NAME           type shown as fuse.NAME (default: psmfs)\n"
      "  nosuid, nodev, noexec, noatime, ...  as for mount(8)\n"
      "  auto_unmount           unmount when psmfs dies (uses fusermount3)\n"
      "An unknown option is an error.\n"
      "\n"
      "Without -f, psmfs returns once the volume is mounted (or has failed to\n"
      "mount) and keeps serving in the background, logging to syslog. Unmount\n"
      "with `fusermount3 -u MOUNTPOINT` (or `umount` as root) or SIGTERM; both\n"
      "make everything durable before psmfs exits.\n"
      "\n"
      "Environment:\n"
      "  PSMFS_RUNTIME_DIR      where the control socket goes (default\n"
      "                         /run/psmfs for root, else $XDG_RUNTIME_DIR)\n"
      "\n"
      "Exit status:\n"
      "  0  mounted (without -f), or unmounted cleanly (with -f)\n"
      "  1  the volume or mount point is not usable, the mount failed, or the\n"
      "     final flush at unmount failed\n"
      "  2  usage error (bad arguments or options)\n",
      kUsage);
}

void PrintVersion() {
  printf("psmfs %s\n", PSMFS_VERSION_STRING.c_str());
  printf("FUSE library version %s\n", fuse_pkgversion());
  fflush(stdout);
  fuse_lowlevel_version();  // kernel interface; runs `fusermount3 --version`
  fflush(stdout);
}

[[noreturn]] void UsageError(const std::string& msg) {
  fprintf(stderr, "psmfs: %s\n%s(try `psmfs --help`)\n", msg.c_str(), kUsage);
  exit(kExitUsage);
}

// Splits an -o argument at commas that are not escaped with a backslash.
// Returns the raw tokens (escapes kept, for libfuse).
std::vector<std::string> SplitOpts(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      cur += s[i];
      cur += s[++i];
    } else if (s[i] == ',') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += s[i];
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// Escapes commas and backslashes for an -o value.
std::string EscapeOpt(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

bool ParseUnsigned(std::string_view s, unsigned long long max, unsigned long long* out) {
  if (s.empty() || s.size() > 19) return false;
  unsigned long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

// "256M", "1G", "262144K", "268435456": K/M/G are powers of 1024.
bool ParseMemorySize(std::string_view s, uint64_t* out) {
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K': case 'k': mult = 1ull << 10; break;
      case 'M': case 'm': mult = 1ull << 20; break;
      case 'G': case 'g': mult = 1ull << 30; break;
      default: break;
    }
    if (mult != 1) s.remove_suffix(1);
  }
  unsigned long long n = 0;
  if (!ParseUnsigned(s, (1ull << 50) / mult, &n)) return false;
  *out = n * mult;
  return true;
}

bool ParseSeconds(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || *end != '\0' || !(v >= 0) || v > 1e9) return false;
  *out = v;
  return true;
}

// One -o token: a psmfs option is consumed; anything else is kept for libfuse.
void ApplyOpt(const std::string& raw, CmdLine* cl) {
  const size_t eq = raw.find('=');
  const std::string key = raw.substr(0, eq);
  const std::string val = eq == std::string::npos ? "" : raw.substr(eq + 1);
  const bool has_val = eq != std::string::npos;
  auto need_val = [&] {
    if (!has_val || val.empty()) UsageError("option `" + key + "' needs a value");
  };
  unsigned long long n = 0;
  if (key == "commit_interval") {
    need_val();
    if (!ParseUnsigned(val, 3600ull * 1000, &n) || n == 0) {
      UsageError("commit_interval=" + val + ": expected milliseconds, 1..3600000");
    }
    cl->mount.commit_interval_ms = static_cast<uint32_t>(n);
  } else if (key == "resilver_rate") {
    need_val();
    if (!ParseUnsigned(val, 1ull << 20, &n) || n == 0) {
      UsageError("resilver_rate=" + val + ": expected MB/s, 1..1048576");
    }
    cl->mount.resilver_rate = static_cast<uint64_t>(n) << 20;
  } else if (key == "memory") {
    need_val();
    uint64_t bytes = 0;
    if (!ParseMemorySize(val, &bytes) || bytes < (32ull << 20)) {
      UsageError("memory=" + val + ": expected a size of at least 32M (e.g. 256M, 1G)");
    }
    cl->mount.memory_bytes = bytes;
  } else if (key == "max_kernel_refs") {
    need_val();
    if (!ParseUnsigned(val, 1ull << 40, &n) || n < 100) {
      UsageError("max_kernel_refs=" + val + ": expected a count of at least 100");
    }
    cl->mount.max_kernel_refs = n;
  } else if (key == "redirect_writes" && !has_val) {
    cl->mount.redirect_writes = true;
  } else if (key == "no_default_permissions" && !has_val) {
    cl->default_permissions = false;
  } else if (key == "default_permissions" && !has_val) {
    cl->default_permissions = true;
  } else if (key == "ro" && !has_val) {
    cl->mount.read_only = true;
    cl->fuse_opts.emplace_back("ro");
  } else if (key == "rw" && !has_val) {
    cl->mount.read_only = false;
    cl->fuse_opts.emplace_back("rw");
  } else if (key == "max_threads") {
    need_val();
    if (!ParseUnsigned(val, 100000, &n) || n == 0) {
      UsageError("max_threads=" + val + ": expected a number >= 1");
    }
    cl->max_threads = static_cast<unsigned>(n);
  } else if (key == "max_idle_threads") {
    need_val();
    if (!ParseUnsigned(val, 100000, &n))
      UsageError("max_idle_threads=" + val + ": expected a number");
    cl->max_idle_threads = static_cast<unsigned>(n);
  } else if (key == "snapdir") {
    if (val != "visible" && val != "hidden") {
      UsageError("snapdir=" + val + ": expected visible or hidden");
    }
    cl->mount.snapdir_visible = val == "visible";
  } else if (key == "live_timeout") {
    need_val();
    if (!ParseSeconds(val, &cl->mount.live_timeout)) {
      UsageError("live_timeout=" + val + ": expected seconds >= 0");
    }
  } else if (key == "snapshot_timeout") {
    need_val();
    if (!ParseSeconds(val, &cl->mount.snapshot_timeout)) {
      UsageError("snapshot_timeout=" + val + ": expected seconds >= 0");
    }
  } else if (key == "no_writeback_cache" && !has_val) {
    cl->adapter.writeback_cache = false;
  } else if (key == "noguard" && !has_val) {
    cl->guard = false;
  } else if (key == "nokillpriv_v2" && !has_val) {
    cl->adapter.killpriv_v2 = false;
  } else if (key == "noacl" && !has_val) {
    cl->adapter.posix_acl = false;
  } else if (key == "acl" && !has_val) {
    cl->adapter.posix_acl = true;
  } else if (key == "debug" && !has_val) {
    cl->debug = true;
  } else if (IsFstabOnlyOption(raw)) {
    // mount(8)/fstab/systemd words (defaults, nofail, _netdev, x-systemd.*): not ours.
  } else {
    if (key == "fsname") cl->user_fsname = true;
    if (key == "subtype") cl->user_subtype = true;
    cl->fuse_opts.push_back(raw);
  }
}

CmdLine ParseCmdLine(int argc, char** argv) {
  CmdLine cl;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      PrintHelp();
      exit(kExitOk);
    } else if (a == "-V" || a == "--version") {
      PrintVersion();
      exit(kExitOk);
    } else if (a == "-f") {
      cl.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      cl.debug = true;
    } else if (a == "-s") {
      cl.single_thread = true;
    } else if (a == "-o") {
      if (i + 1 >= argc) UsageError("-o needs an argument");
      for (const std::string& t : SplitOpts(argv[++i])) ApplyOpt(t, &cl);
    } else if (a.size() > 2 && a.substr(0, 2) == "-o") {
      for (const std::string& t : SplitOpts(a.substr(2))) ApplyOpt(t, &cl);
    } else if (a == "--") {
      for (++i; i < argc; ++i) positional.emplace_back(argv[i]);
    } else if (!a.empty() && a[0] == '-') {
      UsageError("unknown option `" + std::string(a) + "'");
    } else {
      positional.emplace_back(a);
    }
  }
  if (positional.size() < 2) UsageError("VOLUME and MOUNTPOINT are required");
  if (positional.size() > 2) UsageError("unexpected argument `" + positional[2] + "'");
  cl.volume = positional[0];
  cl.mountpoint = positional[1];
  if (cl.debug) cl.foreground = true;
  cl.adapter.snapshot_negative_timeout = cl.mount.snapshot_timeout;
  return cl;
}

// ------------------------------------------------------------- validation

[[noreturn]] void Fail(const std::string& msg) {
  fprintf(stderr, "psmfs: %s\n", msg.c_str());
  exit(kExitFailure);
}

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf) == nullptr) return {};
  return buf;
}

// Decodes the octal escapes of /proc/self/mountinfo (\040 for a space...).
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

// Calls fn(major:minor, mount point) for each line of /proc/self/mountinfo.
void ForEachMount(const std::function<void(std::string_view, const std::string&)>& fn) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint ...
    std::vector<std::string_view> f;
    std::string_view rest = line;
    for (int k = 0; k < 5 && !rest.empty(); ++k) {
      size_t sp = rest.find(' ');
      f.push_back(rest.substr(0, sp));
      rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    }
    if (f.size() == 5) fn(f[2], UnescapeMountField(f[4]));
  }
}

// The "major:minor" of the topmost mount at `path` (absolute, resolved), or
// nothing when `path` is not a mount point.
std::optional<std::string> MountDevice(const std::string& path) {
  std::optional<std::string> found;
  ForEachMount([&](std::string_view dev, const std::string& at) {
    if (at == path) found = std::string(dev);
  });
  return found;
}

// The first mount strictly below `path` (absolute, resolved), "" if none.
std::string MountBelow(const std::string& path) {
  std::string found;
  const std::string prefix = path == "/" ? path : path + "/";
  ForEachMount([&](std::string_view, const std::string& at) {
    if (found.empty() && at.size() > prefix.size() && at.compare(0, prefix.size(), prefix) == 0) {
      found = at;
    }
  });
  return found;
}

void CheckVolume(CmdLine* cl) {
  const std::string& v = cl->volume;
  struct stat st {};
  if (stat(v.c_str(), &st) != 0) Fail(v + ": " + strerror(errno));
  if (!S_ISDIR(st.st_mode)) Fail(v + ": not a directory (a psmfs volume is a directory)");
  struct stat mst {};
  if (stat((v + "/meta").c_str(), &mst) != 0 || !S_ISDIR(mst.st_mode)) {
    Fail(v + ": not a psmfs volume (no meta/ directory; create one with `psmctl mkfs`)");
  }
  // The image may be elsewhere (a block device recorded in meta); when it is
  // in the volume directory, check its magic.
  const std::string image = v + "/image";
  int fd = open(image.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char magic[sizeof(kSuperMagic)] = {};
    ssize_t n = pread(fd, magic, sizeof(magic), 0);
    close(fd);
    if (n != static_cast<ssize_t>(sizeof(magic)) ||
        memcmp(magic, kSuperMagic, sizeof(magic)) != 0) {
      Fail(v + ": not a psmfs volume (" + image + " has no psmfs superblock)");
    }
  }
  cl->volume = RealPath(v);
  if (cl->volume.empty()) Fail(v + ": " + strerror(errno));
}

void CheckMountpoint(CmdLine* cl) {
  const std::string& m = cl->mountpoint;
  struct stat st {};
  if (stat(m.c_str(), &st) != 0) {
    if (errno == ENOTCONN) {
      Fail(m + ": a dead FUSE mount is left there; run `fusermount3 -u " + m + "` first");
    }
    Fail(m + ": " + strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) Fail(m + ": not a directory");
  std::string abs = RealPath(m);
  if (abs.empty()) Fail(m + ": " + strerror(errno));
  struct stat parent {};
  const bool other_dev =
      abs != "/" && stat((abs + "/..").c_str(), &parent) == 0 && parent.st_dev != st.st_dev;
  if (other_dev || MountDevice(abs).has_value()) {
    Fail(m + ": already a mount point (unmount it first)");
  }
  if (abs == cl->volume || abs.rfind(cl->volume + "/", 0) == 0) {
    Fail(m + ": inside the volume directory " + cl->volume);
  }
  cl->mountpoint = abs;
}

// The arguments for fuse_session_new: argv[0], then one -o per option.
std::vector<std::string> FuseArgv(const CmdLine& cl, bool with_debug) {
  std::vector<std::string> a = {"psmfs"};
  auto add = [&](const std::string& o) {
    a.emplace_back("-o");
    a.push_back(o);
  };
  if (cl.default_permissions) add("default_permissions");
  if (!cl.user_fsname) add("fsname=" + EscapeOpt(cl.volume));
  if (!cl.user_subtype) add("subtype=psmfs");
  for (const std::string& o : cl.fuse_opts) add(o);
  if (with_debug) a.emplace_back("-d");
  return a;
}

struct FuseArgs {
  explicit FuseArgs(const std::vector<std::string>& v) : strs(v) {
    for (std::string& s : strs) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
    args.argc = static_cast<int>(strs.size());
    args.argv = ptrs.data();
    args.allocated = 0;
  }
  ~FuseArgs() { fuse_opt_free_args(&args); }
  std::vector<std::string> strs;
  std::vector<char*> ptrs;
  fuse_args args{};
};

// Lets libfuse judge the pass-through options before anything starts.
void CheckFuseOptions(const CmdLine& cl) {
  FuseArgs fa(FuseArgv(cl, false));
  StartCapture();
  fuse_session* se =
      fuse_session_new(&fa.args, FuseAdapter::Ops(), FuseAdapter::OpsSize(), nullptr);
  std::string err = EndCapture();
  if (se == nullptr) UsageError(err.empty() ? "bad mount options" : err);
  fuse_session_destroy(se);
}

// ------------------------------------------------------------------ serve

// Where the start-up outcome goes: the parent's pipe (daemon) or stderr.
class StartupReport {
 public:
  explicit StartupReport(int fd) : fd_(fd) {}
  void Ready() { Send("ready\n"); }
  void Error(const std::string& msg) {
    if (fd_ < 0) {
      fprintf(stderr, "psmfs: %s\n", msg.c_str());
    } else {
      Log(LOG_ERR, "psmfs: %s", msg.c_str());
      Send("error: " + msg + "\n");
    }
  }

 private:
  void Send(const std::string& s) {
    if (fd_ < 0) return;
    for (size_t off = 0; off < s.size();) {
      ssize_t n = write(fd_, s.data() + off, s.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(fd_);
    fd_ = -1;
  }
  int fd_;
};

// Raises the kernel readahead of the new mount to what INIT asked for. The
// kernel caps INIT's max_readahead at the bdi's read_ahead_kb (128 KiB by
// default). `dev` ("MAJOR:MINOR") comes from mountinfo, so nothing here
// sends a request to the not yet served mount. Best effort (needs root).
void RaiseReadahead(const CmdLine& cl, const std::string& dev) {
  const std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  std::ofstream out(path);
  if (out) out << (cl.adapter.max_readahead_bytes / 1024) << "\n";
  if (!out) Log(LOG_DEBUG, "psmfs: could not set %s", path.c_str());
}

sigset_t StopSignals() {
  sigset_t s;
  sigemptyset(&s);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&s, sig);
  return s;
}

int Serve(const CmdLine& cl, StartupReport report) {
  const sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  MountOptions mount = cl.mount;
  mount.count_lookups = true;  // the kernel references inodes: forget drops them
  Result<std::unique_ptr<FileSystem>> opened = FileSystem::Open(cl.volume, mount);
  if (!opened.ok()) {
    report.Error(cl.volume + ": " + opened.status().ToString());
    return kExitFailure;
  }
  std::unique_ptr<FileSystem> fs = std::move(opened).value();
  auto close_fs = [&]() -> bool {
    Status s = fs->Close();
    if (!s.ok()) Log(LOG_ERR, "psmfs: closing %s: %s", cl.volume.c_str(), s.ToString().c_str());
    return s.ok();
  };

  FuseAdapterOptions adapter_opts = cl.adapter;
  // ACLs enforced by the kernel need its permission checks.
  if (!cl.default_permissions) adapter_opts.posix_acl = false;
  adapter_opts.max_kernel_refs = KernelRefsCap(cl.mount);
  adapter_opts.mount_below = [mnt = cl.mountpoint] { return MountBelow(mnt); };
  FuseAdapter adapter(fs.get(), adapter_opts);
  FuseArgs fa(FuseArgv(cl, cl.debug));
  StartCapture();
  fuse_session* se =
      fuse_session_new(&fa.args, FuseAdapter::Ops(), FuseAdapter::OpsSize(), &adapter);
  if (se == nullptr) {
    report.Error("cannot set up FUSE: " + EndCapture());
    close_fs();
    return kExitFailure;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    report.Error("cannot install signal handlers: " + EndCapture());
    fuse_session_destroy(se);
    close_fs();
    return kExitFailure;
  }
  if (fuse_session_mount(se, cl.mountpoint.c_str()) != 0) {
    std::string why = EndCapture();
    report.Error("cannot mount at " + cl.mountpoint + (why.empty() ? "" : ": " + why));
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    close_fs();
    return kExitFailure;
  }
  EndCapture();
  auto unwind = [&]() {
    fuse_remove_signal_handlers(se);
    adapter.Stop();
    fuse_session_unmount(se);
    fuse_session_destroy(se);
  };
  if (Status s = adapter.AttachIo(se); !s.ok()) {
    report.Error("cannot set up FUSE I/O: " + s.ToString());
    unwind();
    close_fs();
    return kExitFailure;
  }
  if (Status s = adapter.Start(se); !s.ok()) {
    report.Error("cannot start the FUSE adapter: " + s.ToString());
    unwind();
    close_fs();
    return kExitFailure;
  }
  // Scheduled snapshots (fs/control/scheduler.h): the policy lives on the volume.
  Scheduler scheduler(fs.get());
  scheduler.SetBeforeSnapshot([mnt = cl.mountpoint] {
    // Flush the kernel's write-back cache into the snapshot. This thread is
    // not a FUSE worker, so the requests it causes are served meanwhile.
    int fd = open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      if (syncfs(fd) != 0) Log(LOG_WARNING, "psmfs: syncfs %s: %s", mnt.c_str(), strerror(errno));
      close(fd);
    }
  });
#if PSMFS_HAVE_CONTROL_SERVER
  ControlServer control(fs.get(), cl.volume, cl.mountpoint);
  control.SetScheduler(&scheduler);
  control.SetRequestMetrics(adapter.request_metrics());
  if (Status s = control.Start(); !s.ok()) {
    report.Error("cannot start the control socket: " + s.ToString());
    unwind();
    close_fs();
    return kExitFailure;
  }
#endif
  // The mount's device number (from mountinfo: no request to the mount).
  const std::optional<std::string> dev = MountDevice(cl.mountpoint);
  if (dev) RaiseReadahead(cl, *dev);
  if (cl.guard) {
    // A killed daemon must never leave a mount that hangs (fs/daemon/guard.h).
    Status g = dev ? StartGuard(getpid(), cl.mountpoint, *dev) : Status::NotFound("mount device");
    if (!g.ok()) {
      Log(LOG_WARNING, "psmfs: no guard for %s: %s", cl.mountpoint.c_str(), g.ToString().c_str());
    }
  }
  if (!cl.mount.read_only) scheduler.Start();
  Log(LOG_INFO, "psmfs: %s mounted at %s", cl.volume.c_str(), cl.mountpoint.c_str());
  report.Ready();
  SdNotify("READY=1\nSTATUS=serving " + cl.volume + " at " + cl.mountpoint);

  // Serve. Only this thread takes the stop signals.
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  int rc;
  if (cl.single_thread) {
    rc = fuse_session_loop(se);
  } else {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, cl.max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, cl.max_idle_threads);
    rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
  }
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  SdNotify("STOPPING=1");
  if (rc < 0) {
    Log(LOG_ERR, "psmfs: session loop failed: %s", strerror(-rc));
  } else if (rc > 0) {
    Log(LOG_INFO, "psmfs: signal %d, unmounting %s", rc, cl.mountpoint.c_str());
  }

#if PSMFS_HAVE_CONTROL_SERVER
  control.Stop();
#endif
  unwind();  // the mount is gone: a scheduler blocked in syncfs returns now
  scheduler.Stop();
  const bool closed = close_fs();
  if (closed) Log(LOG_INFO, "psmfs: %s unmounted", cl.volume.c_str());
  return (rc >= 0 && closed) ? kExitOk : kExitFailure;
}

// Forks; the parent reports the child's start-up outcome and exits.
int Daemonize(const CmdLine& cl) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) Fail(std::string("pipe: ") + strerror(errno));
  fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) Fail(std::string("fork: ") + strerror(errno));
  if (pid > 0) {
    close(p[1]);
    std::string msg;
    char buf[4096];
    for (;;) {
      ssize_t n = read(p[0], buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      msg.append(buf, static_cast<size_t>(n));
    }
    close(p[0]);
    if (msg.rfind("ready", 0) == 0) return kExitOk;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (msg.rfind("error: ", 0) == 0) {
      fprintf(stderr, "psmfs: %s\n", msg.substr(7).c_str());
    } else {
      int status = 0;
      waitpid(pid, &status, 0);
      fprintf(stderr, "psmfs: the daemon died while mounting (%s %d); see syslog\n",
              WIFSIGNALED(status) ? "signal" : "exit status",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    return kExitFailure;
  }
  // Child: the daemon.
  close(p[0]);
  setsid();
  if (chdir("/") != 0) {
    // Paths are absolute already; nothing depends on the cwd.
  }
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    if (devnull > STDERR_FILENO) close(devnull);
  }
  openlog("psmfs", LOG_PID, LOG_DAEMON);
  {
    std::lock_guard<std::mutex> lock(Logs().mu);
    Logs().to_syslog = true;
  }
  SetLogSink(LogSink::kSyslog);
  int rc = Serve(cl, StartupReport(p[1]));
  closelog();
  return rc;
}

}  // namespace
}  // namespace psm

int main(int argc, char** argv) {
  using namespace psm;
  if (argc > 0 && std::string_view(argv[0]) == kGuardName) return GuardMain(argc, argv);
#ifdef M_ARENA_MAX
  // Two malloc arenas, not glibc's eight per core: the FUSE threads and
  // RocksDB's threads allocate and free the metadata cache's blocks in
  // each other's arenas, and after a walk of 1,000,000 files the freed
  // memory scattered over them was ~20 MB of the RSS (docs/performance.md,
  // "Scale"). MALLOC_ARENA_MAX in the environment still decides.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
  // Started as /sbin/mount.fuse.psmfs by mount(8): translate its convention.
  std::vector<std::string> helper_argv;
  std::vector<char*> helper_ptrs;
  bool fake_mount = false;
  if (argc > 0 && IsMountHelperName(argv[0])) {
    Result<MountHelperCall> call = MountHelperArgs(std::vector<std::string>(argv + 1, argv + argc));
    if (!call.ok()) {
      fprintf(stderr, "mount.fuse.psmfs: %s\n", call.status().message().c_str());
      return kExitUsage;
    }
    fake_mount = call.value().fake;
    helper_argv.push_back("psmfs");
    for (const std::string& a : call.value().psmfs_args) helper_argv.push_back(a);
    for (std::string& a : helper_argv) helper_ptrs.push_back(a.data());
    helper_ptrs.push_back(nullptr);
    argc = static_cast<int>(helper_argv.size());
    argv = helper_ptrs.data();
  }
  CmdLine cl = ParseCmdLine(argc, argv);
  Logs().debug = cl.debug;
  SetLogLevel(cl.debug ? kLogDebug : kLogInfo);
  fuse_set_log_func(FuseLog);
  CheckVolume(&cl);
  CheckMountpoint(&cl);
  CheckFuseOptions(cl);
  if (fake_mount) return kExitOk;  // mount -f: checked, not mounted
  if (cl.foreground) return Serve(cl, StartupReport(-1));
  return Daemonize(cl);
}
