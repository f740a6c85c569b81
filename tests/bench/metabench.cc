// psmmetabench: the filesystem core's own cost per small-file create and
// unlink, without FUSE (issue 16: "the daemon's CPU per create and per
// unlink"). The core is called with the requests the kernel sends for
// each file through a mount (docs/performance.md, "Small files: FUSE
// requests per file"):
//
//   create: LOOKUP (a name that does not exist), CREATE, GETXATTR
//           security.capability, WRITE 4 KiB, RELEASE, GETATTR of the dir
//   unlink: UNLINK, FORGET, GETATTR of the dir
//
//   psmmetabench DIR [FILES] [ROUNDS]
//
// DIR gets a fresh volume (DIR/vol); FILES (default 20,000) files in 10
// directories per round; ROUNDS (default 3) rounds, each on a fresh volume.
// Prints, per phase, the median over the rounds of: process CPU time per
// file (every thread: the caller, the committer's group commit, RocksDB's
// flushes) and wall time per file, both including one SyncAll at the end
// of the phase. To count RocksDB writes per file, run it under perf with
// a probe on rocksdb::DBImpl::WriteImpl (docs/performance.md, "Core cost of
// a create and an unlink"); PSMMETABENCH_CREATE_ONLY=1 stops each round
// after its creates, so that a second run gives the unlinks' share.
// PSMMETABENCH_FORGET_BATCH=N sends the FORGETs N at a time (ForgetMany,
// the kernel's BATCH_FORGET) instead of one by one.
#include <fcntl.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fs/core/filesystem.h"

using namespace psm;

namespace {

double CpuSec() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double WallSec() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "psmmetabench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

struct Cost {
  double cpu_us = 0;
  double wall_us = 0;
};

struct Round {
  Cost create;
  Cost unlink;
};

Round RunRound(const std::string& vol, int files) {
  std::filesystem::remove_all(vol);
  FormatOptions fo;
  fo.size_bytes = 2ull << 30;
  fo.force = true;
  if (Status s = Format(vol, fo); !s.ok()) Die("mkfs " + vol, s);
  MountOptions mo;
  mo.count_lookups = true;  // as the FUSE adapter runs it
  auto opened = FileSystem::Open(vol, mo);
  if (!opened.ok()) Die("open " + vol, opened.status());
  std::unique_ptr<FileSystem> fs = std::move(opened).value();
  fs->WaitScan(600);
  Credentials cred;
  const int kDirs = 10;
  std::vector<NodeId> dirs;
  for (int d = 0; d < kDirs; ++d) {
    auto m = fs->MkDir(kRootIno, "d" + std::to_string(d), 0755, cred);
    if (!m.ok()) Die("mkdir", m.status());
    dirs.push_back(m->node);
  }
  if (Status s = fs->SyncAll(); !s.ok()) Die("sync", s);
  const std::string page(4096, 'x');
  std::vector<NodeId> nodes(static_cast<size_t>(files));
  auto name = [](int i) { return "file" + std::to_string(i); };

  Round r;
  double c0 = CpuSec(), w0 = WallSec();
  for (int i = 0; i < files; ++i) {
    NodeId dir = dirs[static_cast<size_t>(i % kDirs)];
    auto l = fs->Lookup(dir, name(i));
    if (l.ok() || !l.status().Is(Code::kNotFound)) Die("lookup of a new name", l.status());
    auto c = fs->Create(dir, name(i), 0644, O_WRONLY | O_CREAT, cred);
    if (!c.ok()) Die("create", c.status());
    nodes[static_cast<size_t>(i)] = c->first.node;
    (void)fs->GetXattr(c->first.node, "security.capability");
    auto w = fs->Write(c->second, 0, page.data(), page.size());
    if (!w.ok()) Die("write", w.status());
    if (Status s = fs->Release(c->second); !s.ok()) Die("release", s);
    if (auto a = fs->GetAttr(dir); !a.ok()) Die("getattr", a.status());
  }
  if (Status s = fs->SyncAll(); !s.ok()) Die("sync", s);
  r.create = {(CpuSec() - c0) * 1e6 / files, (WallSec() - w0) * 1e6 / files};
  if (std::getenv("PSMMETABENCH_CREATE_ONLY")) {
    if (Status s = fs->Close(); !s.ok()) Die("close", s);
    return r;
  }

  // PSMMETABENCH_FORGET_BATCH=N: the FORGETs go N at a time (ForgetMany), as
  // in the kernel's BATCH_FORGET when the daemon is behind; default 1.
  const char* fb = std::getenv("PSMMETABENCH_FORGET_BATCH");
  const size_t batch = fb ? std::max(1, std::atoi(fb)) : 1;
  std::vector<FileSystem::Forgotten> forgets;
  c0 = CpuSec();
  w0 = WallSec();
  for (int i = 0; i < files; ++i) {
    NodeId dir = dirs[static_cast<size_t>(i % kDirs)];
    if (Status s = fs->Unlink(dir, name(i)); !s.ok()) Die("unlink", s);
    if (batch == 1) {
      fs->Forget(nodes[static_cast<size_t>(i)], 1);
    } else {
      forgets.push_back({nodes[static_cast<size_t>(i)], 1});
      if (forgets.size() == batch || i + 1 == files) {
        fs->ForgetMany(forgets);
        forgets.clear();
      }
    }
    if (auto a = fs->GetAttr(dir); !a.ok()) Die("getattr", a.status());
  }
  if (Status s = fs->SyncAll(); !s.ok()) Die("sync", s);
  r.unlink = {(CpuSec() - c0) * 1e6 / files, (WallSec() - w0) * 1e6 / files};
  if (Status s = fs->Close(); !s.ok()) Die("close", s);
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  // (An option where DIR goes, such as --help, is not a directory to fill.)
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: psmmetabench DIR [FILES] [ROUNDS]\n");
    return 2;
  }
  const std::string vol = std::string(argv[1]) + "/vol";
  const int files = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  std::vector<double> cc, cw, uc, uw;
  for (int i = 0; i < rounds; ++i) {
    Round r = RunRound(vol, files);
    cc.push_back(r.create.cpu_us);
    cw.push_back(r.create.wall_us);
    uc.push_back(r.unlink.cpu_us);
    uw.push_back(r.unlink.wall_us);
  }
  std::printf("%-26s %10.1f us per file (process CPU, median of %d)\n", "create_cpu_us", Median(cc),
              rounds);
  std::printf("%-26s %10.1f us per file\n", "create_wall_us", Median(cw));
  std::printf("%-26s %10.1f us per file (process CPU)\n", "unlink_cpu_us", Median(uc));
  std::printf("%-26s %10.1f us per file\n", "unlink_wall_us", Median(uw));
  std::filesystem::remove_all(vol);
  return 0;
}
