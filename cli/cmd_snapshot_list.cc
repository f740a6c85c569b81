// psmctl snapshot list MOUNTPOINT_OR_VOLUME [--json]
//
// Oldest first: name, created, epoch, used (space only this snapshot
// holds: what deleting it frees), referenced (data its tree references).
// Asks the daemon; an unmounted volume is read offline.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/cmd_snapshot.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct ListArgs {
  std::string target;
  bool json = false;
  bool bytes = false;
};

psm::Result<std::vector<psm::SnapshotInfo>> Load(const std::string& target) {
  psm::Result<psm::MountEntry> entry = psm::FindMount(target);
  if (entry.ok()) {
    auto client = psm::Client::Connect(entry.value());
    if (client.ok()) return client.value()->ListSnapshots();
    // A daemon that no longer answers (killed): read the volume offline.
    if (!client.status().Is(psm::Code::kNotFound)) return client.status();
    entry = client.status();
  }
  if (!LooksLikeVolume(target)) return entry.status();
  return OfflineSnapshotList(target);
}

int RunList(const ListArgs& a) {
  auto list = Load(a.target);
  if (!list.ok()) return Fail(list.status(), a.target);
  if (a.json) {
    psm::Json arr = psm::Json::Array();
    for (const auto& s : list.value()) arr.Push(psm::ctl::ToJson(s));
    std::printf("%s\n", arr.Dump(2).c_str());
    return kExitOk;
  }
  if (list.value().empty()) {
    std::printf("no snapshots\n");
    return kExitOk;
  }
  auto size = [&](uint64_t b) { return a.bytes ? std::to_string(b) : HumanSize(b); };
  size_t w = 4;
  for (const auto& s : list.value()) w = std::max(w, s.name.size() + (s.deleting ? 11 : 0));
  std::printf("%-*s  %-19s  %8s  %10s  %10s\n", static_cast<int>(w), "NAME", "CREATED", "EPOCH",
              "USED", "REFERENCED");
  for (const auto& s : list.value()) {
    std::string name = s.name + (s.deleting ? " (deleting)" : "");
    std::printf("%-*s  %-19s  %8llu  %10s  %10s\n", static_cast<int>(w), name.c_str(),
                FormatTime(s.ctime_ns).c_str(), static_cast<unsigned long long>(s.epoch),
                size(s.used_bytes).c_str(), size(s.referenced_bytes).c_str());
  }
  return kExitOk;
}

void SetupList(CLI::App& snapshot) {
  auto a = std::make_shared<ListArgs>();
  CLI::App* cmd = AddCommand(snapshot, "list",
                             "List a volume's snapshots, oldest first, with the space each uses.");
  cmd->add_option("MOUNTPOINT", a->target,
                  "Mount point or volume directory. An unmounted volume is opened read-only.")
      ->required()
      ->type_name("");
  cmd->add_flag(
      "--json", a->json,
      "Print a JSON array: name, id, epoch, created_ns, deleting, used_bytes, referenced_bytes.");
  cmd->add_flag("--bytes", a->bytes, "Print sizes in bytes instead of K/M/G/T units.");
  SetAction(cmd, [a] { return RunList(*a); });
}

}  // namespace

PSMCTL_REGISTER_SNAPSHOT_ACTION(20, SetupList);

}  // namespace psmctl
