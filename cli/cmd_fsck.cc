// psmctl fsck VOLUME [--repair]
//
// Offline check (psm::Fsck). Exit 3 when the volume is damaged; with
// --repair, fixes what is safely fixable and checks again.
#include <cstdio>
#include <string>

#include "cli/psmctl.h"

namespace psmctl {
namespace {

struct FsckArgs {
  std::string volume;
  bool repair = false;
};

void PrintReport(const std::string& report) {
  if (report.empty()) return;
  std::fputs(report.c_str(), stdout);
  if (report.back() != '\n') std::fputc('\n', stdout);
}

int RunFsck(const FsckArgs& a) {
  if (auto m = psm::FindMount(a.volume); m.ok()) {
    return Fail(psm::Status::Busy(a.volume + " is mounted at " + m->mountpoint + " (pid " +
                                  std::to_string(m->pid) + "); unmount it before fsck"));
  }
  if (!LooksLikeVolume(a.volume)) {
    return Fail(psm::Status::NotFound(a.volume + " is not a psmfs volume directory"));
  }
  psm::FsckOptions opts;
  opts.repair = a.repair;
  std::string report;
  auto r = psm::Fsck(a.volume, opts, &report);
  if (!r.ok()) {
    PrintReport(report);
    return Fail(r.status(), "fsck " + a.volume);
  }
  PrintReport(report);
  const uint64_t problems = r.value();
  if (problems == 0) {
    std::printf("%s: clean\n", a.volume.c_str());
    return kExitOk;
  }
  if (!a.repair) {
    std::printf(
        "%s: %llu problem(s) found; 'psmctl fsck --repair %s' fixes what is safely fixable\n",
        a.volume.c_str(), static_cast<unsigned long long>(problems), a.volume.c_str());
    return kExitDamaged;
  }
  // Check again: the exit code says whether the volume is clean now. A
  // repair can uncover more (a leaked version dropped leaves its blocks
  // leaked): repair again, a few passes at most.
  uint64_t fixed = problems;
  for (int pass = 2;; ++pass) {
    psm::FsckOptions check;
    std::string again;
    auto r2 = psm::Fsck(a.volume, check, &again);
    if (!r2.ok()) return Fail(r2.status(), "fsck " + a.volume + " (after repair)");
    if (r2.value() == 0) {
      std::printf("%s: %llu problem(s) repaired; clean now\n", a.volume.c_str(),
                  static_cast<unsigned long long>(fixed));
      return kExitOk;
    }
    if (pass > 3) {
      std::printf("after repair:\n");
      PrintReport(again);
      std::printf("%s: %llu problem(s) remain after repair\n", a.volume.c_str(),
                  static_cast<unsigned long long>(r2.value()));
      return kExitDamaged;
    }
    std::printf("repair pass %d:\n", pass);
    std::string more;
    auto r3 = psm::Fsck(a.volume, opts, &more);
    PrintReport(more);
    if (!r3.ok()) return Fail(r3.status(), "fsck --repair " + a.volume);
    fixed += r3.value();
  }
}

void SetupFsck(CLI::App& app) {
  auto a = std::make_shared<FsckArgs>();
  CLI::App* cmd =
      AddCommand(app, "fsck", "Check an unmounted volume for damage (exit 3 if damaged).");
  cmd->add_option("VOLUME", a->volume, "Volume directory. It must not be mounted.")
      ->required()
      ->type_name("");
  cmd->add_flag("-r,--repair", a->repair,
                "Fix what is safely fixable (leaked ranges, stale dead-index entries), then check "
                "again; exit 0 only if the volume is clean afterwards.");
  SetAction(cmd, [a] { return RunFsck(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(40, SetupFsck);

}  // namespace psmctl
