// psmbench: the workloads of tests/bench/run.sh, run against one directory.
// Every command prints one or more lines "RESULT <name> <value> <unit>";
// higher is better for every value. run.sh runs the same commands on a
// psmfs mount, a passthrough_ll mount and a native directory.
//
//   psmbench seqwrite FILE MIB          MIB x 1 MiB writes, then fsync      -> MB/s
//   psmbench seqread FILE               fadvise(DONTNEED), 1 MiB reads      -> MB/s
//   psmbench fill FILE MIB              like seqwrite, prints nothing
//   psmbench randwrite FILE THREADS OPS 4 KiB aligned pwrites, then fsync   -> IOPS
//   psmbench randread FILE THREADS OPS  fadvise(DONTNEED), 4 KiB preads     -> IOPS
//   psmbench smallfiles DIR N NDIRS     create (4 KiB each), stat, read,
//                                       unlink N files in NDIRS dirs        -> files/s each
//
// Built by run.sh with g++ directly (not part of the CMake test build).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMiB = 1 << 20, kBlock = 4096;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "psmbench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Result(const char* name, double value, const char* unit) {
  std::printf("RESULT %s %.1f %s\n", name, value, unit);
  std::fflush(stdout);
}

std::vector<char> Buffer(size_t n, unsigned seed) {
  std::vector<char> b(n);
  std::mt19937 rng(seed);
  for (auto& c : b) c = static_cast<char>(rng());  // incompressible
  return b;
}

double SeqWrite(const std::string& path, size_t mib) {
  auto buf = Buffer(kMiB, 1);
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) Die("open " + path);
  auto t0 = Clock::now();
  for (size_t i = 0; i < mib; i++) {
    buf[0] = static_cast<char>(i);
    if (write(fd, buf.data(), kMiB) != static_cast<ssize_t>(kMiB)) Die("write");
  }
  if (fsync(fd) != 0) Die("fsync");
  double s = Seconds(t0);
  close(fd);
  return mib / s;
}

double SeqRead(const std::string& path) {
  std::vector<char> buf(kMiB);
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("open " + path);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  auto t0 = Clock::now();
  size_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) Die("read");
    if (n == 0) break;
    total += n;
  }
  double s = Seconds(t0);
  close(fd);
  return total / static_cast<double>(kMiB) / s;
}

double Random(const std::string& path, int threads, size_t ops, bool write_mode) {
  int fd = open(path.c_str(), write_mode ? O_RDWR : O_RDONLY);
  if (fd < 0) Die("open " + path);
  struct stat st;
  fstat(fd, &st);
  const size_t blocks = st.st_size / kBlock;
  if (blocks == 0) Die("empty file " + path);
  if (!write_mode) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::atomic<bool> failed{false};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      auto buf = Buffer(kBlock, t);
      for (size_t i = t; i < ops; i += threads) {
        off_t off = static_cast<off_t>((rng() % blocks) * kBlock);
        ssize_t n =
            write_mode ? pwrite(fd, buf.data(), kBlock, off) : pread(fd, buf.data(), kBlock, off);
        if (n != static_cast<ssize_t>(kBlock)) failed = true;
      }
    });
  }
  for (auto& t : ts) t.join();
  if (write_mode && fsync(fd) != 0) Die("fsync");
  double s = Seconds(t0);
  close(fd);
  if (failed) Die("random I/O");
  return ops / s;
}

void SmallFiles(const std::string& dir, size_t n, size_t ndirs) {
  auto buf = Buffer(kBlock, 7);
  std::vector<std::string> names;
  for (size_t d = 0; d < ndirs; d++) {
    std::string p = dir + "/d" + std::to_string(d);
    if (mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) Die("mkdir " + p);
  }
  for (size_t i = 0; i < n; i++) {
    names.push_back(dir + "/d" + std::to_string(i % ndirs) + "/f" + std::to_string(i));
  }
  auto t0 = Clock::now();
  for (const auto& p : names) {
    int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0 || write(fd, buf.data(), kBlock) != static_cast<ssize_t>(kBlock)) Die("create " + p);
    close(fd);
  }
  Result("smallfiles_create", n / Seconds(t0), "files/s");
  t0 = Clock::now();
  struct stat st;
  for (const auto& p : names) {
    if (stat(p.c_str(), &st) != 0) Die("stat " + p);
  }
  Result("smallfiles_stat", n / Seconds(t0), "files/s");
  t0 = Clock::now();
  for (const auto& p : names) {
    int fd = open(p.c_str(), O_RDONLY);
    if (fd < 0 || read(fd, buf.data(), kBlock) != static_cast<ssize_t>(kBlock)) Die("read " + p);
    close(fd);
  }
  Result("smallfiles_read", n / Seconds(t0), "files/s");
  t0 = Clock::now();
  for (const auto& p : names) {
    if (unlink(p.c_str()) != 0) Die("unlink " + p);
  }
  Result("smallfiles_unlink", n / Seconds(t0), "files/s");
  for (size_t d = 0; d < ndirs; d++) rmdir((dir + "/d" + std::to_string(d)).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto num = [&](size_t i) {
    return static_cast<size_t>(std::strtoull(a.at(i).c_str(), nullptr, 10));
  };
  if (a.size() == 3 && a[0] == "seqwrite") {
    Result("seqwrite", SeqWrite(a[1], num(2)), "MB/s");
  } else if (a.size() == 3 && a[0] == "fill") {
    SeqWrite(a[1], num(2));
  } else if (a.size() == 2 && a[0] == "seqread") {
    Result("seqread", SeqRead(a[1]), "MB/s");
  } else if (a.size() == 4 && (a[0] == "randwrite" || a[0] == "randread")) {
    int threads = static_cast<int>(num(2));
    std::string name = a[0] + "_" + std::to_string(threads) + "t";
    Result(name.c_str(), Random(a[1], threads, num(3), a[0] == "randwrite"), "IOPS");
  } else if (a.size() == 4 && a[0] == "smallfiles") {
    SmallFiles(a[1], num(2), num(3));
  } else {
    std::fprintf(stderr, "usage: see the comment at the top of psmbench.cc\n");
    return 2;
  }
  return 0;
}
