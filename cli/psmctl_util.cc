// Helpers shared by the psmctl subcommands (see cli/psmctl.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <utility>
#include <vector>

#include "cli/psmctl.h"

namespace psmctl {

const char* const kExitCodesFooter =
    "Exit codes:\n"
    "  0  success\n"
    "  1  the operation failed (the message says why)\n"
    "  2  usage error (bad command line)\n"
    "  3  the volume is damaged (fsck found problems, or its metadata cannot be read)\n"
    "  4  not found: no such volume or snapshot, or the volume is not mounted";

namespace {

std::vector<std::pair<int, SetupFn>>& Registry() {
  static auto* r = new std::vector<std::pair<int, SetupFn>>();
  return *r;
}

}  // namespace

bool RegisterCommand(int order, SetupFn fn) {
  Registry().emplace_back(order, fn);
  return true;
}

void SetupAll(CLI::App& app) {
  auto cmds = Registry();
  std::stable_sort(cmds.begin(), cmds.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [order, fn] : cmds) fn(app);
}

CLI::App* AddCommand(CLI::App& parent, const std::string& name, const std::string& description) {
  CLI::App* cmd = parent.add_subcommand(name, description);
  cmd->footer(kExitCodesFooter);
  return cmd;
}

void SetAction(CLI::App* cmd, std::function<int()> fn) {
  cmd->callback([fn = std::move(fn)] {
    int rc = fn();
    if (rc != kExitOk) throw CLI::RuntimeError(rc);
  });
}

int ExitCodeFor(const psm::Status& st) {
  if (st.ok()) return kExitOk;
  if (st.Is(psm::Code::kNotFound)) return kExitNotFound;
  if (st.Is(psm::Code::kCorruption)) return kExitDamaged;
  return kExitFailed;
}

int Fail(const psm::Status& st, const std::string& context) {
  std::string msg = st.message().empty() ? st.ToString() : st.message();
  // "psmctl: /mnt/x: /mnt/x is not ..." says the path twice: drop the context.
  bool show = !context.empty() && msg.rfind(context, 0) != 0;
  std::fprintf(stderr, "psmctl: %s%s%s\n", show ? context.c_str() : "", show ? ": " : "",
               msg.c_str());
  return ExitCodeFor(st);
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "psmctl: %s\nRun with --help for more information.\n", message.c_str());
  return kExitUsage;
}

psm::Result<uint64_t> ParseSize(std::string_view text) {
  std::string s(text);
  auto bad = [&] {
    return psm::Status::Invalid("bad size '" + s +
                                "' (use a number with an optional K, M, G, T or P suffix)");
  };
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return bad();
  std::string num = s.substr(0, i);
  std::string suffix = s.substr(i);
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() >= 2 && suffix.substr(suffix.size() - 2) == "IB")
    suffix.resize(suffix.size() - 2);
  else if (suffix.size() >= 2 && suffix.back() == 'B')
    suffix.pop_back();
  else if (suffix == "B")
    suffix.clear();
  int shift = 0;
  if (suffix.empty())
    shift = 0;
  else if (suffix == "K")
    shift = 10;
  else if (suffix == "M")
    shift = 20;
  else if (suffix == "G")
    shift = 30;
  else if (suffix == "T")
    shift = 40;
  else if (suffix == "P")
    shift = 50;
  else
    return bad();
  if (std::count(num.begin(), num.end(), '.') > 1) return bad();
  char* end = nullptr;
  long double v = std::strtold(num.c_str(), &end);
  if (end == nullptr || *end != '\0' || !std::isfinite(static_cast<double>(v))) return bad();
  long double bytes = v * std::ldexp(1.0L, shift);
  if (bytes >= 18446744073709551615.0L) return psm::Status::Range("size '" + s + "' is too large");
  uint64_t out = static_cast<uint64_t>(bytes);
  if (num.find('.') != std::string::npos && static_cast<long double>(out) != bytes) {
    return psm::Status::Invalid("size '" + s + "' is not a whole number of bytes");
  }
  return out;
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "K", "M", "G", "T", "P", "E"};
  if (bytes < 1024) return std::to_string(bytes) + "B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (v < 10)
    std::snprintf(buf, sizeof(buf), "%.1f%s", std::floor(v * 10) / 10, kUnits[u]);
  else
    std::snprintf(buf, sizeof(buf), "%.0f%s", std::floor(v), kUnits[u]);
  return buf;
}

std::string FormatTime(int64_t realtime_ns) {
  if (realtime_ns <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(realtime_ns / 1000000000);
  std::tm tm;
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string FormatDuration(double sec) {
  if (!std::isfinite(sec) || sec < 0) return "?";
  uint64_t s = static_cast<uint64_t>(sec + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600, (s / 60) % 60,
                  s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
  }
  return buf;
}

bool LooksLikeVolume(const std::string& dir) {
  struct stat st;
  return ::stat((dir + "/meta").c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace {

// fsync(2) of every regular file of the mount (device `dev`) that some
// process holds open or mapped, each inode once: the only files that can
// still have dirty pages, since the kernel writes an inode's dirty pages back
// and waits for their WRITEs at every close (fuse_flush). syncfs(2) alone is
// not enough: on a /dev/fuse mount it starts the write-back of dirty pages
// but may return before the daemon has received or answered those WRITEs,
// while fsync waits for every WRITE of the inode in flight
// (fuse_sync_writes). Files of processes this user may not look at are not
// seen; root sees all. Returns the first fsync error other than a file gone
// meanwhile.
//
// Cheap on a machine with many processes and fds: names are resolved
// relative to open directory fds (no /proc/PID/... path walk per fd), a
// descriptor is checked with statx(AT_STATX_DONT_SYNC) (the device and type
// only; no GETATTR to a FUSE daemon), and mappings come from one read of
// /proc/PID/maps, whose lines carry the device and inode, instead of a stat
// of every /proc/PID/map_files entry: only mappings of `dev` are opened.
class OpenFileSyncer {
 public:
  OpenFileSyncer(dev_t dev, const std::string& mountpoint) : dev_(dev), mountpoint_(mountpoint) {
    // As /proc/PID/maps prints a device: "%02x:%02x " (show_vma_header_prefix).
    char text[32];
    std::snprintf(text, sizeof(text), "%02x:%02x ", ::major(dev), ::minor(dev));
    dev_text_ = text;
  }

  psm::Status Run() {
    int proc = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (proc < 0) return psm::Status::Ok();  // no /proc: syncfs is all there is
    DIR* pd = ::fdopendir(proc);
    if (pd == nullptr) {
      ::close(proc);
      return psm::Status::Ok();
    }
    const pid_t self = ::getpid();
    while (dirent* p = ::readdir(pd)) {
      if (!std::isdigit(static_cast<unsigned char>(p->d_name[0]))) continue;
      if (std::atoi(p->d_name) == self) continue;
      int pid_dir = ::openat(proc, p->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (pid_dir < 0) continue;  // gone
      Fds(pid_dir);
      Maps(pid_dir);
      ::close(pid_dir);
    }
    ::closedir(pd);
    return first_;
  }

 private:
  // Open `name` (relative to `dir`) and fsync it, once per inode.
  void Sync(int dir, const char* name, ino_t ino) {
    if (std::find(done_.begin(), done_.end(), ino) != done_.end()) return;
    done_.push_back(ino);
    int fd = ::openat(dir, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return;  // closed or unmapped meanwhile: its close wrote it back
    if (::fsync(fd) != 0 && first_.ok() && errno != ENOENT && errno != ESTALE) {
      first_ = psm::Status::FromErrno(errno, "fsync of an open file (inode " +
                                                 std::to_string(ino) + ") of " + mountpoint_);
    }
    ::close(fd);
  }

  void Fds(int pid_dir) {
    int fdd = ::openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fdd < 0) return;  // gone, or not ours to see
    DIR* d = ::fdopendir(fdd);
    if (d == nullptr) {
      ::close(fdd);
      return;
    }
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      struct statx stx {};
      if (::statx(fdd, e->d_name, AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx) != 0) continue;
      if (::makedev(stx.stx_dev_major, stx.stx_dev_minor) != dev_ || !S_ISREG(stx.stx_mode)) {
        continue;
      }
      Sync(fdd, e->d_name, static_cast<ino_t>(stx.stx_ino));
    }
    ::closedir(d);
  }

  // Lines of /proc/PID/maps: "START-END PERMS OFFSET MAJ:MIN INODE [PATH]",
  // numbers in hex but the inode. A mapping of `dev` is opened through
  // map_files/START-END (hex without leading zeros there).
  void Maps(int pid_dir) {
    int fd = ::openat(pid_dir, "maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    buf_.clear();
    char chunk[16384];
    ssize_t n;
    while ((n = ::read(fd, chunk, sizeof(chunk))) > 0) buf_.append(chunk, static_cast<size_t>(n));
    ::close(fd);
    int map_files = -1;
    const char* p = buf_.c_str();
    const char* const stop = p + buf_.size();
    while (p < stop) {
      const char* eol = static_cast<const char*>(std::memchr(p, '\n', stop - p));
      if (eol == nullptr) eol = stop;
      const char* line = p;
      p = eol + 1;
      // Skip to the fourth field (MAJ:MIN) and compare it as text first:
      // most lines are of other devices, and sscanf of each costs more than
      // the read.
      const char* f = line;
      for (int field = 0; field < 3 && f < eol; ++field) {
        f = static_cast<const char*>(std::memchr(f, ' ', eol - f));
        if (f == nullptr) break;
        ++f;
      }
      if (f == nullptr || static_cast<size_t>(eol - f) <= dev_text_.size() ||
          std::memcmp(f, dev_text_.data(), dev_text_.size()) != 0) {
        continue;
      }
      char* after = nullptr;
      const unsigned long start = std::strtoul(line, &after, 16);
      if (after == nullptr || *after != '-') continue;
      const unsigned long end = std::strtoul(after + 1, nullptr, 16);
      const unsigned long ino = std::strtoul(f + dev_text_.size(), nullptr, 10);
      if (ino == 0) continue;
      if (map_files < 0) {
        map_files = ::openat(pid_dir, "map_files", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (map_files < 0) break;  // not ours to see
      }
      char name[64];
      std::snprintf(name, sizeof(name), "%lx-%lx", start, end);
      Sync(map_files, name, static_cast<ino_t>(ino));
    }
    if (map_files >= 0) ::close(map_files);
  }

  const dev_t dev_;
  const std::string& mountpoint_;
  std::vector<ino_t> done_;
  std::string dev_text_;
  std::string buf_;
  psm::Status first_;
};

}  // namespace

psm::Status SyncMount(const std::string& mountpoint, bool find_writers) {
  int fd = ::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return psm::Status::FromErrno(errno, "cannot open mount point " + mountpoint +
                                             " to flush the kernel's cache (--no-sync skips this)");
  }
  struct stat st {};
  int rc = ::fstat(fd, &st);
  if (rc == 0) rc = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return psm::Status::FromErrno(err, "syncfs " + mountpoint);
  if (!find_writers) return psm::Status::Ok();
  return OpenFileSyncer(st.st_dev, mountpoint).Run();
}

psm::Result<std::unique_ptr<psm::Client>> DaemonOrOffline(const std::string& target) {
  auto entry = psm::FindMount(target);
  if (entry.ok()) {
    auto client = psm::Client::Connect(entry.value());
    if (client.ok()) return client;
    if (!client.status().Is(psm::Code::kNotFound)) return client.status();
    // The daemon is gone (killed): the volume is free to open here.
  }
  if (!LooksLikeVolume(target)) {
    return entry.ok() ? psm::Status::NotFound(target + " is not mounted") : entry.status();
  }
  return std::unique_ptr<psm::Client>();
}

psm::Result<std::unique_ptr<psm::Client>> ConnectMounted(const std::string& target) {
  return psm::Client::Connect(target);
}

psm::Result<VolumeInfo> GetVolumeInfo(const std::string& target) {
  VolumeInfo info;
  psm::Result<psm::MountEntry> entry = psm::FindMount(target);
  psm::Result<std::unique_ptr<psm::Client>> client = psm::Status::NotFound();
  if (entry.ok()) {
    client = psm::Client::Connect(entry.value());
    // A daemon that no longer answers (killed): read the volume offline.
    if (!client.ok() && !client.status().Is(psm::Code::kNotFound)) return client.status();
    if (!client.ok()) entry = client.status();
  }
  if (entry.ok()) {
    PSM_ASSIGN_OR_RETURN(psm::VolumeStatus st, client.value()->GetStatus());
    info.mounted = true;
    info.volume = st.volume;
    info.mountpoint = st.mountpoint;
    info.pid = st.pid;
    info.since = st.since;
    info.stats = st.stats;
    info.scan = st.scan;
    info.scrub = st.scrub;
    return info;
  }
  if (!LooksLikeVolume(target)) {
    struct stat st;
    if (::stat(target.c_str(), &st) != 0 && errno == ENOENT) {
      return psm::Status::NotFound(target + " does not exist");
    }
    return entry.status();
  }
  return OfflineVolumeInfo(target);
}

psm::Json VolumeInfoJson(const VolumeInfo& i) {
  const uint64_t bs = i.stats.block_size;
  psm::Json j = psm::Json::Object();
  j.Set("volume", i.volume)
      .Set("mounted", i.mounted)
      .Set("mountpoint", i.mountpoint)
      .Set("pid", i.pid)
      .Set("since", i.since)
      .Set("uuid", i.stats.uuid)
      .Set("block_size", i.stats.block_size)
      .Set("size_bytes", i.stats.total_blocks * bs)
      .Set("used_bytes", i.stats.used_blocks * bs)
      .Set("free_bytes", i.stats.free_blocks * bs)
      .Set("files", i.stats.files)
      .Set("snapshots", i.stats.snapshots)
      .Set("epoch", i.stats.epoch)
      .Set("mount_generation", i.stats.mount_generation)
      .Set("pending_reclaim", i.stats.pending_reclaim)
      .Set("reclaiming", i.stats.reclaiming)
      .Set("reclaim_freed_bytes", i.stats.reclaim_blocks_freed * bs)
      .Set("stats", psm::ctl::ToJson(i.stats))
      .Set("scan", psm::ctl::ToJson(i.scan))
      .Set("scrub", psm::ctl::ToJson(i.scrub));
  return j;
}

}  // namespace psmctl
