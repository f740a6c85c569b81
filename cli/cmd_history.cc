// psmctl history MOUNTPOINT PATH [--no-checksum] [--json]
//
// The distinct versions of one file across all snapshots and the live tree,
// oldest first: where each version is seen (first and last snapshot), its
// size, modification time and SHA-256, so the version "from before Tuesday"
// is found without opening every snapshot. The daemon reads the versioned
// metadata (FileSystem::History): a lookup per snapshot, plus one read per
// distinct version for the checksum.
//
// PATH is an absolute path under the mount point, or a path relative to the
// volume's root ("docs/report.odt").
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "cli/psmctl.h"
#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct HistoryArgs {
  std::string target;
  std::string path;
  bool no_checksum = false;
  bool json = false;
};

// Path relative to the volume root.
std::string VolumePath(const std::string& mnt, const std::string& p) {
  if (!mnt.empty() && p.rfind(mnt + "/", 0) == 0) return p.substr(mnt.size() + 1);
  size_t i = 0;
  while (i < p.size() && p[i] == '/') ++i;
  return p.substr(i);
}

std::string Where(const psm::FileVersion& v) {
  std::string s;
  if (!v.snapshots.empty()) {
    s = v.snapshots.front();
    if (v.snapshots.size() > 1) {
      s += " .. " + v.snapshots.back() + " (" + std::to_string(v.snapshots.size()) + ")";
    }
  }
  if (v.live) s += s.empty() ? "live" : " + live";
  return s;
}

int Run(const HistoryArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  const std::string mnt = client.value()->mount().mountpoint;
  // Writes still in the kernel's cache belong to the live version.
  if (!mnt.empty()) {
    int fd = ::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      (void)::syncfs(fd);
      ::close(fd);
    }
  }
  const std::string rel = VolumePath(mnt, a.path);
  psm::Json req = psm::Json::Object();
  req.Set("op", psm::ctl::kOpHistory).Set("path", rel).Set("checksums", !a.no_checksum);
  auto r = client.value()->Call(std::move(req), true);
  if (!r.ok()) return Fail(r.status(), "history of '" + rel + "'");
  std::vector<psm::FileVersion> versions;
  if (const psm::Json* vs = r.value().Find("versions"); vs && vs->is_array()) {
    for (const psm::Json& j : vs->items()) versions.push_back(psm::ctl::FileVersionFromJson(j));
  }
  if (a.json) {
    psm::Json arr = psm::Json::Array();
    for (const auto& v : versions) arr.Push(psm::ctl::ToJson(v));
    std::printf("%s\n", arr.Dump(2).c_str());
    return kExitOk;
  }
  std::printf("%-3s %-60s %12s  %-19s  %s\n", "#", "SEEN IN", "SIZE", "MODIFIED",
              a.no_checksum ? "" : "SHA256");
  int n = 0;
  for (const auto& v : versions) {
    std::printf("%-3d %-60s %12llu  %-19s  %s\n", ++n, Where(v).c_str(),
                static_cast<unsigned long long>(v.size), FormatTime(v.mtime_ns).c_str(),
                v.sha256.c_str());
  }
  return kExitOk;
}

void Setup(CLI::App& app) {
  auto a = std::make_shared<HistoryArgs>();
  CLI::App* cmd = AddCommand(app, "history",
                             "List the distinct versions of one file across all snapshots and the "
                             "live tree: where each is seen, size, mtime and SHA-256.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_option("PATH", a->path,
                  "The file: an absolute path under the mount point, or relative to the volume "
                  "root.")
      ->required()
      ->type_name("");
  cmd->add_flag("--no-checksum", a->no_checksum, "Do not read the versions to checksum them.");
  cmd->add_flag("--json", a->json, "Print a JSON array of versions.");
  SetAction(cmd, [a] { return Run(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(80, Setup);

}  // namespace psmctl
