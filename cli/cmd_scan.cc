// psmctl scan MOUNTPOINT [--wait] [--json]
//
// Starts (or restarts) the free-space scan of a mounted volume. With --wait,
// follows it to the end: a progress bar when stderr is a terminal, plain
// progress lines otherwise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>

#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct ScanArgs {
  std::string target;
  bool wait = false;
  bool json = false;
  double interval = 0;  // seconds between polls; 0 = 0.2 on a terminal, 1 otherwise
  double timeout = 0;   // seconds; 0 = wait for ever
};

int64_t RealtimeNs() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string Rate(double r) {
  char buf[32];
  if (r >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.1fM", r / 1e6);
  else if (r >= 1e3)
    std::snprintf(buf, sizeof(buf), "%.1fk", r / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.0f", r);
  return buf;
}

void DrawBar(const psm::ScanStatus& s, uint64_t bs) {
  constexpr int kWidth = 30;
  int filled = static_cast<int>(s.percent / 100.0 * kWidth + 0.5);
  filled = filled < 0 ? 0 : (filled > kWidth ? kWidth : filled);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r\033[K[%s] %5.1f%%  %s ranges/s  ETA %s  free found %s", bar.c_str(),
               s.percent, Rate(s.ranges_per_sec).c_str(), FormatDuration(s.eta_sec).c_str(),
               HumanSize(s.free_blocks_found * bs).c_str());
  std::fflush(stderr);
}

int RunScan(const ScanArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Client& c = *client.value();
  auto status = c.GetStatus();
  if (!status.ok()) return Fail(status.status());
  const uint64_t bs = status->stats.block_size;
  // Read before the start: a small volume's scan may finish before the
  // scan.start reply is built, so that reply's count may include ours.
  const uint64_t baseline = status->scan.scans_completed;
  const int64_t requested_ns = RealtimeNs();
  auto started = c.StartScan();
  if (!started.ok()) return Fail(started.status(), "scan");
  if (!a.wait) {
    if (a.json)
      std::printf("%s\n", psm::ctl::ToJson(started.value()).Dump(2).c_str());
    else
      std::printf("free-space scan started on %s\n", c.mount().mountpoint.empty()
                                                         ? c.mount().volume.c_str()
                                                         : c.mount().mountpoint.c_str());
    return kExitOk;
  }

  const bool tty = ::isatty(2) == 1;
  const double interval = a.interval > 0 ? a.interval : (tty ? 0.2 : 1.0);
  int last_decile = -1;
  auto last_line = std::chrono::steady_clock::now();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.timeout);
  psm::ScanStatus s;
  while (true) {
    if (a.timeout > 0 && std::chrono::steady_clock::now() > deadline) {
      if (tty) std::fputc('\n', stderr);
      return Fail(psm::Status::Busy("the scan did not finish within " + FormatDuration(a.timeout) +
                                    " (it goes on in the background)"));
    }
    auto r = c.GetScanStatus();
    if (!r.ok()) {
      if (tty) std::fputc('\n', stderr);
      return Fail(r.status(), "scan status");
    }
    s = r.value();
    if (!s.last_error.empty() && !tty) {
      std::fprintf(stderr, "scan: step failed, retrying: %s\n", s.last_error.c_str());
    }
    // Done when a scan that started after our request has completed (a scan
    // that was running before and completed meanwhile does not count).
    bool done = !s.running && s.scans_completed > baseline &&
                (s.started_ns == 0 || s.started_ns >= requested_ns - 1000000);
    if (done) break;
    if (s.running) {
      if (tty) {
        DrawBar(s, bs);
      } else {
        int decile = static_cast<int>(s.percent / 10);
        auto now = std::chrono::steady_clock::now();
        if (decile != last_decile || now - last_line > std::chrono::seconds(10)) {
          std::fprintf(stderr, "scan: %.1f%%, %s ranges/s, ETA %s, %s free found\n", s.percent,
                       Rate(s.ranges_per_sec).c_str(), FormatDuration(s.eta_sec).c_str(),
                       HumanSize(s.free_blocks_found * bs).c_str());
          last_decile = decile;
          last_line = now;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(s).Dump(2).c_str());
  } else {
    std::printf("scan complete: %llu ranges in %.1f s, %s free\n",
                static_cast<unsigned long long>(s.ranges_scanned), s.last_duration_sec,
                HumanSize(s.free_blocks_found * bs).c_str());
  }
  return kExitOk;
}

void SetupScan(CLI::App& app) {
  auto a = std::make_shared<ScanArgs>();
  CLI::App* cmd = AddCommand(app, "scan",
                             "Start a rescan of a mounted volume's free space (restarts a running "
                             "scan). The volume keeps serving while it runs.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_flag("-w,--wait", a->wait,
                "Wait until the scan has finished, showing progress on stderr: a bar on a "
                "terminal, a line per 10% otherwise.");
  cmd->add_flag("--json", a->json,
                "Print the scan status as JSON (at the start, or with --wait at the end).");
  cmd->add_option("--interval", a->interval,
                  "Seconds between progress polls with --wait (default: 0.2 on a terminal, 1 "
                  "otherwise).")
      ->type_name("SEC")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--timeout", a->timeout,
                  "With --wait: give up after SEC seconds (exit 1; the scan goes on). Default: "
                  "wait until the scan ends.")
      ->type_name("SEC")
      ->check(CLI::PositiveNumber);
  SetAction(cmd, [a] { return RunScan(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(60, SetupScan);

}  // namespace psmctl
