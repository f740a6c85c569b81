// psmpopulate: builds a volume holding many small files through the
// filesystem core (no FUSE, no daemon), for the scale benchmark
// (tests/bench/scale_run.sh, `make bench-scale`).
//
//   psmpopulate VOLUME FILES PERDIR BYTES [THREADS]
//
// Formats VOLUME (its image sized for the data plus 1 GiB) and creates
// FILES regular files of BYTES bytes each (mode 0644, owner root) as
// VOLUME:/d<i>/f<j>: ceil(FILES / PERDIR) directories of PERDIR files, the
// last one possibly short. THREADS (default 2) threads each fill their own
// directories, as a file server's clients would. Prints progress to stderr
// and one line "populated FILES files in DIRS directories: R files/s" to
// stdout. Exits non-zero on the first error.
#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "fs/core/filesystem.h"

using namespace psm;

namespace {

[[noreturn]] void Die(const std::string& what, const Status& s) {
  fprintf(stderr, "psmpopulate: %s: %s\n", what.c_str(), s.ToString().c_str());
  exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    fprintf(stderr, "usage: psmpopulate VOLUME FILES PERDIR BYTES [THREADS]\n");
    return 2;
  }
  const std::string vol = argv[1];
  const uint64_t files = strtoull(argv[2], nullptr, 10);
  const uint64_t perdir = strtoull(argv[3], nullptr, 10);
  const uint64_t bytes = strtoull(argv[4], nullptr, 10);
  const int threads = argc > 5 ? atoi(argv[5]) : 2;
  if (files == 0 || perdir == 0 || threads < 1) {
    fprintf(stderr, "psmpopulate: FILES, PERDIR and THREADS must be positive\n");
    return 2;
  }
  const uint64_t dirs = (files + perdir - 1) / perdir;
  const uint64_t file_blocks = (bytes + 4095) / 4096;

  std::filesystem::remove_all(vol);
  FormatOptions fo;
  fo.size_bytes = (files * file_blocks * 4096) / 100 * 105 + (1ull << 30);
  fo.force = true;
  if (Status s = Format(vol, fo); !s.ok()) Die("mkfs " + vol, s);
  auto opened = FileSystem::Open(vol, MountOptions{});
  if (!opened.ok()) Die("open " + vol, opened.status());
  std::unique_ptr<FileSystem> fs = std::move(opened).value();

  const std::string data(bytes, 'p');
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      Credentials cred;
      for (uint64_t d = t; d < dirs && !failed; d += threads) {
        auto dir = fs->MkDir(kRootIno, "d" + std::to_string(d), 0755, cred);
        if (!dir.ok()) Die("mkdir d" + std::to_string(d), dir.status());
        const uint64_t n = std::min(perdir, files - d * perdir);
        for (uint64_t j = 0; j < n; ++j) {
          std::string name = "f" + std::to_string(j);
          auto c = fs->Create(dir->node, name, 0644, O_WRONLY, cred);
          if (!c.ok()) Die("create d" + std::to_string(d) + "/" + name, c.status());
          if (bytes > 0) {
            auto w = fs->Write(c->second, 0, data.data(), data.size());
            if (!w.ok()) Die("write d" + std::to_string(d) + "/" + name, w.status());
          }
          if (Status s = fs->Release(c->second); !s.ok()) Die("release", s);
          uint64_t k = ++done;
          if (k % 100000 == 0) {
            double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            fprintf(stderr, "psmpopulate: %llu / %llu files, %.0f files/s\n",
                    static_cast<unsigned long long>(k), static_cast<unsigned long long>(files), k / sec);
          }
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  if (Status s = fs->SyncAll(); !s.ok()) Die("sync", s);
  if (Status s = fs->Close(); !s.ok()) Die("close", s);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("populated %llu files in %llu directories: %.0f files/s\n",
         static_cast<unsigned long long>(files), static_cast<unsigned long long>(dirs), files / sec);
  return 0;
}
