// psmctl scrub MOUNTPOINT [--wait] [--stop] [--rate MB/s] [--rewrite] [--json]
//
// Starts a scrub of a mounted volume (docs/integrity.md): the daemon reads
// every allocated block once, in physical order, and verifies its
// checksum. Without --wait it returns once the scrub runs. --wait follows
// it (a progress bar on a terminal, a one-line summary otherwise) and
// exits 0 when no damage was found, 1 when some was (each damaged block is
// listed with every live and snapshot path that reads it). --stop stops a
// running scrub.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

namespace psmctl {

std::string ScrubLine(const psm::ScrubStatus& s, uint64_t bs) {
  char buf[512];
  const double pct =
      s.end > 0 ? 100.0 * static_cast<double>(s.cursor) / static_cast<double>(s.end) : 0.0;
  const std::string found =
      std::to_string(s.damaged_blocks) + " damaged block(s)" +
      (s.repaired_blocks ? ", " + std::to_string(s.repaired_blocks) +
                               " repaired from the other side of the mirror"
                         : "") +
      (s.rewritten_blocks ? ", " + std::to_string(s.rewritten_blocks) +
                                " block(s) without a checksum given one (--rewrite)"
                          : "");
  if (s.state.empty()) return "never run";
  if (s.state == "running") {
    std::snprintf(buf, sizeof(buf), "running since %s: %.1f%%, %s verified, %s%s",
                  FormatTime(s.started_ns).c_str(), pct,
                  HumanSize(s.checked_blocks * bs).c_str(), found.c_str(),
                  s.rate_mb_s > 0 ? (", rate " + std::to_string(static_cast<int>(s.rate_mb_s)) +
                                     " MB/s").c_str()
                                  : "");
  } else {
    std::snprintf(buf, sizeof(buf), "%s %s: %s verified, %s unverified (no checksum), %s%s",
                  s.state.c_str(), FormatTime(s.finished_ns).c_str(),
                  HumanSize(s.checked_blocks * bs).c_str(),
                  HumanSize(s.unverified_blocks * bs).c_str(), found.c_str(),
                  s.state == "stopped" ? " before the end" : "");
  }
  return buf;
}

namespace {

struct ScrubArgs {
  std::string target;
  bool wait = false;
  bool stop = false;
  bool json = false;
  bool rewrite = false;
  double rate = 0;
};

void DrawBar(const psm::ScrubStatus& s) {
  constexpr int kWidth = 30;
  const double frac = s.end > 1 ? static_cast<double>(s.cursor) / static_cast<double>(s.end) : 0;
  int filled = static_cast<int>(frac * kWidth + 0.5);
  filled = filled < 0 ? 0 : (filled > kWidth ? kWidth : filled);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r\033[K[%s] %5.1f%%  %llu damaged", bar.c_str(), frac * 100,
               static_cast<unsigned long long>(s.damaged_blocks));
  std::fflush(stderr);
}

psm::Result<psm::ScrubStatus> Ask(psm::Client& c, const std::string& action, double rate,
                                  bool rewrite = false) {
  psm::Json req = psm::ctl::Request(psm::ctl::kOpScrub);
  req.Set("action", action).Set("rate_mb_s", rate).Set("rewrite", rewrite);
  PSM_ASSIGN_OR_RETURN(psm::Json r, c.Call(std::move(req), action == "status"));
  const psm::Json* s = r.Find("scrub");
  if (s == nullptr) return psm::Status::IOError("scrub reply without a status");
  return psm::ctl::ScrubFromJson(*s);
}

void PrintDamage(const psm::ScrubStatus& s) {
  for (const psm::ScrubDamage& d : s.damage) {
    std::printf("damaged block %llu:\n", static_cast<unsigned long long>(d.block));
    if (d.paths.empty()) std::printf("  (no file reads it now)\n");
    for (const std::string& p : d.paths) std::printf("  %s\n", p.c_str());
  }
}

int RunScrub(const ScrubArgs& a) {
  if (a.stop && (a.wait || a.rate > 0 || a.rewrite)) {
    return UsageError("--stop takes no --wait, --rate or --rewrite");
  }
  if (a.rate < 0) return UsageError("--rate must not be negative");
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Client& c = *client.value();
  auto status = c.GetStatus();
  if (!status.ok()) return Fail(status.status());
  const uint64_t bs = status->stats.block_size;
  if (a.stop) {
    auto r = Ask(c, "stop", 0);
    if (!r.ok()) return Fail(r.status(), "scrub --stop");
    std::printf("scrub stopped: %s\n", ScrubLine(r.value(), bs).c_str());
    return kExitOk;
  }
  auto started = Ask(c, "start", a.rate, a.rewrite);
  if (!started.ok()) return Fail(started.status(), "scrub");
  const std::string where = c.mount().mountpoint.empty() ? c.mount().volume : c.mount().mountpoint;
  if (!a.wait) {
    if (a.json) {
      std::printf("%s\n", psm::ctl::ToJson(started.value()).Dump(2).c_str());
    } else {
      std::printf("scrub started on %s (psmctl status shows its progress)\n", where.c_str());
    }
    return kExitOk;
  }
  const bool tty = ::isatty(2) == 1;
  psm::ScrubStatus s = started.value();
  while (s.state == "running") {
    if (tty) DrawBar(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 200 : 500));
    auto r = Ask(c, "status", 0);
    if (!r.ok()) {
      if (tty) std::fputc('\n', stderr);
      return Fail(r.status(), "scrub status");
    }
    s = r.value();
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(s).Dump(2).c_str());
  } else {
    std::printf("scrub of %s %s\n", where.c_str(), ScrubLine(s, bs).c_str());
    PrintDamage(s);
  }
  if (s.state != "finished") return kExitFailed;
  return s.damaged_blocks == 0 ? kExitOk : kExitFailed;
}

void SetupScrub(CLI::App& app) {
  auto a = std::make_shared<ScrubArgs>();
  CLI::App* cmd = AddCommand(
      app, "scrub",
      "Verify every allocated block of a mounted volume against its checksum, in the "
      "background while the volume serves; report every damaged block with its paths.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_flag("-w,--wait", a->wait,
                "Wait until the scrub ends: a progress bar on a terminal, then a summary and the "
                "damaged blocks with their paths. Exit 0 when clean, 1 when damage was found.");
  cmd->add_flag("--stop", a->stop, "Stop the running scrub.");
  cmd->add_option("--rate", a->rate,
                  "Read at most MB megabytes (2^20 bytes) per second. Default: as fast as the "
                  "image reads.")
      ->type_name("MB/s");
  cmd->add_flag("--rewrite", a->rewrite,
                "Also give every block that has no checksum (written before the volume had "
                "checksums) one, from the bytes read; on a mirror only where both copies agree. "
                "Run it once after upgrading a volume made before checksums.");
  cmd->add_flag("--json", a->json, "Print the scrub status as JSON.");
  SetAction(cmd, [a] { return RunScrub(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(62, SetupScrub);

}  // namespace psmctl
