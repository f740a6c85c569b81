// psmctl-offline's half of cli/psmctl.h: what needs the filesystem engine
// (psm_fs, RocksDB). The front end (psmctl) has psmctl_handoff.cc instead,
// which runs this executable in its place for the same calls.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

namespace psmctl {

const bool kOfflineEngine = true;

void SetCommandLine(int /*argc*/, char** /*argv*/) {}

psm::Status RunOfflineEngine() {
  return psm::Status::NotSupported("psmctl-offline is the offline engine: nothing to hand over to");
}

bool ServedHere(const CLI::App& /*app*/, int /*argc*/, char** /*argv*/) { return true; }

namespace {

// A read-only FileSystem::Open takes no lock (RocksDB allows a read-only
// open beside a writer), so a volume held by another process would be read
// as if it were idle. Probe the core's mount lock (VOLUME/psmfs.<uuid>.mount.lock,
// the name fs_open.cc uses) with a shared lock first and refuse, with the
// core's wording and holder, if a mount holds it. The probe is released at
// once: holding it would make a concurrent mount fail with a stale holder.
psm::Status CheckNotMounted(const std::string& volume) {
  DIR* d = ::opendir(volume.c_str());
  if (d == nullptr) return psm::Status::Ok();  // Open reports it
  psm::Status st;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    const std::string suffix = ".mount.lock";
    if (n.rfind("psmfs.", 0) != 0 || n.size() <= suffix.size() ||
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::string path = volume + "/" + n;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
      char buf[512] = {};
      ssize_t r = ::pread(fd, buf, sizeof(buf) - 1, 0);
      std::string holder = r > 0 ? std::string(buf, static_cast<size_t>(r)) : "another process";
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      st = psm::Status::Busy("volume " + volume + " is already mounted by " + holder);
    }
    ::close(fd);
    if (!st.ok()) break;
  }
  ::closedir(d);
  return st;
}

}  // namespace

psm::Result<std::unique_ptr<psm::FileSystem>> OpenOffline(const std::string& volume, bool scan) {
  PSM_RETURN_IF_ERROR(CheckNotMounted(volume));
  psm::MountOptions opts;
  opts.read_only = true;
  opts.start_scanner = scan;
  opts.scan_reason = "offline";
  PSM_ASSIGN_OR_RETURN(auto fs, psm::FileSystem::Open(volume, opts));
  // Space figures count what the scan has not reached as free: wait for it.
  while (scan) {
    psm::ScanStatus st = fs->GetScanStatus();
    if (!st.last_error.empty()) {
      (void)fs->Close();
      return psm::Status::IOError("free-space scan of " + volume + ": " + st.last_error);
    }
    if (!st.running) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return fs;
}

psm::Result<VolumeInfo> OfflineVolumeInfo(const std::string& target) {
  VolumeInfo info;
  psm::Result<std::unique_ptr<psm::FileSystem>> fs = OpenOffline(target, /*scan=*/true);
  if (!fs.ok()) {
    return psm::ctl::MakeStatus(fs.status().code(),
                                "cannot open " + target + " offline: " + fs.status().message());
  }
  info.mounted = false;
  char buf[PATH_MAX];
  info.volume = ::realpath(target.c_str(), buf) ? buf : target;
  info.stats = fs.value()->Stats();
  info.scan = fs.value()->GetScanStatus();
  info.scrub = fs.value()->GetScrubStatus();
  PSM_RETURN_IF_ERROR(fs.value()->Close());
  return info;
}

psm::Result<std::vector<psm::SnapshotInfo>> OfflineSnapshotList(const std::string& target) {
  PSM_ASSIGN_OR_RETURN(auto fs, OpenOffline(target, /*scan=*/false));
  std::vector<psm::SnapshotInfo> list = fs->ListSnapshots(true);
  PSM_RETURN_IF_ERROR(fs->Close());
  return list;
}

psm::Result<psm::MirrorInfo> OfflineMirror(const std::string& action, const std::string& target,
                                           const std::string& path, bool force) {
  if (action == "status") {
    PSM_ASSIGN_OR_RETURN(auto fs, OpenOffline(target, /*scan=*/false));
    psm::MirrorInfo m = fs->Stats().mirror;
    PSM_RETURN_IF_ERROR(fs->Close());
    return m;
  }
  if (action == "attach" && ::geteuid() != 0) {
    return psm::Status::Permission("permission denied: mirror attach requires root");
  }
  // Writable, with the volume's mount lock (a mount meanwhile is refused);
  // no free-space scan is needed for this.
  psm::MountOptions opts;
  opts.start_scanner = false;
  opts.scan_reason = "offline";
  PSM_ASSIGN_OR_RETURN(auto fs, psm::FileSystem::Open(target, opts));
  psm::Status st = action == "attach" ? fs->MirrorAttach(path, force) : fs->MirrorDetach();
  if (st.ok() && action == "attach") {
    const bool tty = ::isatty(2) == 1;
    while (true) {
      psm::MirrorInfo m = fs->Stats().mirror;
      if (!m.resilvering) break;
      if (tty) {
        std::fprintf(stderr, "\r\033[K%5.1f%%  resilvering %s",
                     m.resilver_total ? 100.0 * static_cast<double>(m.resilver_done) /
                                            static_cast<double>(m.resilver_total)
                                      : 0.0,
                     path.c_str());
        std::fflush(stderr);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (tty) std::fprintf(stderr, "\r\033[K");
    st = fs->MirrorWait();
  }
  psm::MirrorInfo m = fs->Stats().mirror;
  psm::Status c = fs->Close();
  PSM_RETURN_IF_ERROR(st);
  PSM_RETURN_IF_ERROR(c);
  return m;
}

}  // namespace psmctl
