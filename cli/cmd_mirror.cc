// psmctl mirror attach MOUNTPOINT_OR_VOLUME PATH [--force] [--wait] [--json]
// psmctl mirror detach MOUNTPOINT_OR_VOLUME
// psmctl mirror status MOUNTPOINT_OR_VOLUME [--json]
//
// The mirror (docs/integrity.md, "Mirror"): a second image holding the
// same blocks. On a mounted volume the daemon attaches it and resilvers it
// while the volume serves (`--wait` follows the resilver: a progress bar
// on a terminal); an unmounted volume is opened here (psmctl-offline),
// resilvered, and closed. Attach is root's: the daemon opens, creates or
// overwrites the path named.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

namespace psmctl {

std::string MirrorLine(const psm::MirrorInfo& m) {
  if (!m.mirrored) return "none";
  const psm::MirrorSideInfo& img = m.sides[0];
  const psm::MirrorSideInfo& mir = m.sides[1];
  std::string out;
  if (m.resilvering || (m.stale >= 0 && m.sides[m.stale].health == "resilvering")) {
    char pct[32];
    std::snprintf(pct, sizeof(pct), "%.1f%%",
                  m.resilver_total ? 100.0 * static_cast<double>(m.resilver_done) /
                                         static_cast<double>(m.resilver_total)
                                   : 0.0);
    out = std::string("RESILVERING the ") + (m.stale == 0 ? "image " + img.path : "mirror " + mir.path) +
          " from the " + (m.stale == 0 ? "mirror" : "image") + ": " + pct + " (" +
          HumanSize(m.resilver_done) + " of " + HumanSize(m.resilver_total) +
          "); until it ends there is one complete copy";
  } else if (m.degraded) {
    const int bad = m.stale >= 0 ? m.stale : (mir.health != "online" ? 1 : 0);
    const psm::MirrorSideInfo& b = m.sides[bad];
    out = std::string("DEGRADED: the ") + (bad == 0 ? "image " : "mirror ") + b.path + " is " +
          b.health + (b.reason.empty() ? "" : " (" + b.reason + ")") +
          "; the volume has ONE copy of its data";
  } else {
    out = "ONLINE: " + mir.path + " (both copies hold every block)";
  }
  return out;
}

std::string MirrorSideLine(const psm::MirrorSideInfo& s) {
  return s.path + ": " + s.health + ", " + std::to_string(s.read_errors) + " read / " +
         std::to_string(s.write_errors) + " write / " + std::to_string(s.checksum_errors) +
         " checksum error(s), " + std::to_string(s.repaired_blocks) + " block(s) repaired";
}

namespace {

struct MirrorArgs {
  std::string action;
  std::string target;
  std::string path;
  bool force = false;
  bool wait = false;
  bool json = false;
};

void DrawBar(const psm::MirrorInfo& m) {
  constexpr int kWidth = 30;
  const double frac = m.resilver_total ? static_cast<double>(m.resilver_done) /
                                             static_cast<double>(m.resilver_total)
                                       : 0;
  int filled = static_cast<int>(frac * kWidth + 0.5);
  filled = filled < 0 ? 0 : (filled > kWidth ? kWidth : filled);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r\033[K[%s] %5.1f%%  resilvering", bar.c_str(), frac * 100);
  std::fflush(stderr);
}

psm::Result<psm::MirrorInfo> Ask(psm::Client& c, const MirrorArgs& a, const std::string& action) {
  psm::Json req = psm::ctl::Request(psm::ctl::kOpMirror);
  req.Set("action", action).Set("path", a.path).Set("force", a.force);
  PSM_ASSIGN_OR_RETURN(psm::Json r, c.Call(std::move(req), action == "status"));
  const psm::Json* m = r.Find("mirror");
  if (m == nullptr) return psm::Status::IOError("mirror reply without a status");
  return psm::ctl::MirrorFromJson(*m);
}

void Print(const psm::MirrorInfo& m, bool json) {
  if (json) {
    std::printf("%s\n", psm::ctl::ToJson(m).Dump(2).c_str());
    return;
  }
  std::printf("mirror: %s\n", MirrorLine(m).c_str());
  if (m.mirrored) {
    std::printf("  image:  %s\n", MirrorSideLine(m.sides[0]).c_str());
    std::printf("  mirror: %s\n", MirrorSideLine(m.sides[1]).c_str());
  }
}

int RunMirror(MirrorArgs a) {
  if (a.action == "attach") {
    if (a.path.empty()) return UsageError("mirror attach needs PATH");
    // The daemon resolves nothing relative to the caller's directory.
    char buf[4096];
    if (a.path[0] != '/' && ::getcwd(buf, sizeof(buf)) != nullptr) {
      a.path = std::string(buf) + "/" + a.path;
    }
  }
  auto client = DaemonOrOffline(a.target);
  if (!client.ok()) return Fail(client.status());
  if (!client.value()) {
    auto r = OfflineMirror(a.action, a.target, a.path, a.force);
    if (!r.ok()) return Fail(r.status(), "mirror " + a.action);
    Print(r.value(), a.json);
    return r.value().degraded && a.action != "status" ? kExitFailed : kExitOk;
  }
  psm::Client& c = *client.value();
  auto r = Ask(c, a, a.action);
  if (!r.ok()) return Fail(r.status(), "mirror " + a.action);
  psm::MirrorInfo m = r.value();
  if (a.action == "attach" && a.wait) {
    const bool tty = ::isatty(2) == 1;
    while (m.resilvering) {
      if (tty) DrawBar(m);
      std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 200 : 500));
      auto s = Ask(c, a, "status");
      if (!s.ok()) {
        if (tty) std::fputc('\n', stderr);
        return Fail(s.status(), "mirror status");
      }
      m = s.value();
    }
    if (tty) std::fprintf(stderr, "\r\033[K");
    Print(m, a.json);
    return m.degraded ? kExitFailed : kExitOk;
  }
  if (a.action == "attach" && !a.json) {
    std::printf("mirror %s attached; resilvering (psmctl status shows its progress)\n",
                a.path.c_str());
    return kExitOk;
  }
  if (a.action == "detach" && !a.json) {
    std::printf("mirror detached: the volume has one copy of its data\n");
    return kExitOk;
  }
  Print(m, a.json);
  return kExitOk;
}

void SetupMirror(CLI::App& app) {
  CLI::App* grp = AddCommand(app, "mirror",
                             "Keep a second copy of the volume's image (a mirror) on another disk: "
                             "attach, detach, status.");
  grp->require_subcommand(1);
  auto add = [&](const std::string& action, const std::string& help) {
    auto a = std::make_shared<MirrorArgs>();
    a->action = action;
    CLI::App* cmd = AddCommand(*grp, action, help);
    cmd->add_option("MOUNTPOINT_OR_VOLUME", a->target,
                    "Mount point, or volume directory (mounted or not; an unmounted one is "
                    "opened here).")
        ->required()
        ->type_name("");
    if (action == "attach") {
      cmd->add_option("PATH", a->path,
                      "The mirror: a file (created sparse, or resized, to the image's size) or "
                      "a block device at least as large as the image; normally on another disk.")
          ->required()
          ->type_name("");
      cmd->add_flag("--force", a->force, "Overwrite PATH even if it holds another psmfs volume.");
      cmd->add_flag("-w,--wait", a->wait,
                    "Wait until the resilver ends (a progress bar on a terminal). An unmounted "
                    "volume always waits.");
    }
    cmd->add_flag("--json", a->json, "Print the mirror's state as JSON.");
    SetAction(cmd, [a] { return RunMirror(*a); });
  };
  add("attach",
      "Attach PATH as the volume's mirror and copy every block to it (resilver) while the "
      "volume serves. Root only.");
  add("detach",
      "Forget the mirror (its contents stay as they are); the volume keeps one copy. Refused "
      "while the mirror holds the only complete copy.");
  add("status", "Show the mirror: its health, the resilver's progress, errors and repairs.");
}

}  // namespace

PSMCTL_REGISTER_COMMAND(63, SetupMirror);

}  // namespace psmctl
