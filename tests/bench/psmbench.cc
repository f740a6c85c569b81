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
// Small files, one phase per command, so run.sh can empty the caches between
// phases. LAYOUT is "own" (thread k works in DIR/t<k>) or "shared" (every
// thread in DIR/shared); file i of thread k is f<k>_<i>, N files in all.
//   psmbench create DIR N THREADS LAYOUT   open(O_CREAT|O_EXCL), write 4 KiB,
//                                          close                 -> create_<T>t[_shared] files/s
//   psmbench unlink DIR N THREADS LAYOUT   unlink them           -> unlink_<T>t[_shared] files/s
//   psmbench stat DIR N THREADS LAYOUT     stat them, one thread -> stat files/s
//   psmbench read DIR N THREADS LAYOUT     open, read 4 KiB, close, one thread -> read files/s
//   psmbench readdir DIR                   list every directory under DIR (names
//                                          and types, no stat)   -> readdir entries/s
//
// Scale benchmark (tests/bench/scale_run.sh), on a tree made by psmpopulate:
// ROOT/d<i>/f<j>, DIRS directories of PERDIR files.
// Samples are distinct (nothing is asked twice, so the kernel's caches never
// answer); ROOT/d<DIRS-1> must hold PERDIR files too.
//   psmbench scalestat ROOT DIRS PERDIR K  stat K random existing files -> stat files/s
//   psmbench scalemiss ROOT DIRS PERDIR K  stat K names that do not exist, each in
//                                          a random directory -> lookup_miss lookups/s
//   psmbench scalereaddir ROOT DIRS K      list K random directories -> readdir entries/s
//   psmbench walk ROOT                     every directory listed and every entry
//                                          lstat'ed (a find / du), .snapshots
//                                          skipped                  -> walk entries/s
//
// Built by run.sh with g++ directly (not part of the CMake test build).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// ---------------------------------------------------------------- small files, by phase

struct Layout {
  std::string dir;
  size_t n = 0;
  int threads = 1;
  bool shared = false;
  std::string Dir(int t) const { return dir + (shared ? "/shared" : "/t" + std::to_string(t)); }
  // Thread t's files: f<t>_<i> for i in [0, Count(t)).
  size_t Count(int t) const { return n / threads + (static_cast<size_t>(t) < n % threads ? 1 : 0); }
  std::string File(int t, size_t i) const {
    return Dir(t) + "/f" + std::to_string(t) + "_" + std::to_string(i);
  }
  std::string Suffix() const { return std::to_string(threads) + "t" + (shared ? "_shared" : ""); }
};

// Runs fn(t, i) for every file, thread t on its own files; returns files/s.
template <typename Fn>
double PerFile(const Layout& l, int threads, Fn fn) {
  std::atomic<bool> failed{false};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      for (int owner = t; owner < l.threads; owner += threads) {
        for (size_t i = 0; i < l.Count(owner) && !failed; i++) {
          if (!fn(owner, i)) failed = true;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  double s = Seconds(t0);
  if (failed) Die("small-file phase in " + l.dir);
  return l.n / s;
}

void Phase(const std::string& phase, const Layout& l) {
  static const auto buf = Buffer(kBlock, 7);
  if (phase == "create") {
    for (int t = 0; t < (l.shared ? 1 : l.threads); t++) {
      std::string d = l.Dir(t);
      if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) Die("mkdir " + d);
    }
    double r = PerFile(l, l.threads, [&](int t, size_t i) {
      std::string p = l.File(t, i);
      int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd < 0) return false;
      bool ok = write(fd, buf.data(), kBlock) == static_cast<ssize_t>(kBlock);
      return close(fd) == 0 && ok;
    });
    Result(("create_" + l.Suffix()).c_str(), r, "files/s");
  } else if (phase == "unlink") {
    double r = PerFile(l, l.threads, [&](int t, size_t i) { return unlink(l.File(t, i).c_str()) == 0; });
    Result(("unlink_" + l.Suffix()).c_str(), r, "files/s");
    for (int t = 0; t < (l.shared ? 1 : l.threads); t++) rmdir(l.Dir(t).c_str());
  } else if (phase == "stat") {
    struct stat st;
    Result("stat", PerFile(l, 1, [&](int t, size_t i) { return stat(l.File(t, i).c_str(), &st) == 0; }),
           "files/s");
  } else if (phase == "read") {
    std::vector<char> rb(kBlock);
    Result("read", PerFile(l, 1, [&](int t, size_t i) {
             int fd = open(l.File(t, i).c_str(), O_RDONLY);
             if (fd < 0) return false;
             bool ok = read(fd, rb.data(), kBlock) == static_cast<ssize_t>(kBlock);
             return close(fd) == 0 && ok;
           }),
           "files/s");
  }
}

// Lists DIR (names and types only); calls sub(name) for each subdirectory.
template <typename Fn>
size_t List(const std::string& dir, Fn sub) {
  DIR* d = opendir(dir.c_str());
  if (!d) Die("opendir " + dir);
  size_t n = 0;
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    n++;
    sub(e);
  }
  closedir(d);
  return n;
}

double ReadDirAll(const std::string& dir) {
  std::vector<std::string> subs;
  auto t0 = Clock::now();
  size_t n = List(dir, [&](struct dirent* e) {
    if (e->d_type == DT_DIR) subs.push_back(dir + "/" + e->d_name);
  });
  for (const auto& s : subs) n += List(s, [](struct dirent*) {});
  return n / Seconds(t0);
}

// Every directory listed, every entry lstat'ed; a ".snapshots" directory is
// neither (the live tree only, as a backup of it would read).
size_t Walk(const std::string& dir) {
  size_t n = 0;
  struct stat st;
  List(dir, [&](struct dirent* e) {
    if (std::strcmp(e->d_name, ".snapshots") == 0) return;
    std::string p = dir + "/" + e->d_name;
    if (lstat(p.c_str(), &st) != 0) Die("lstat " + p);
    n++;
    if (S_ISDIR(st.st_mode)) n += Walk(p);
  });
  return n;
}

// K distinct indices below n (all of them if K >= n), in random order: no
// sample may hit what an earlier one left in the kernel's caches.
std::vector<uint64_t> Sample(uint64_t n, uint64_t k, unsigned seed) {
  std::vector<uint64_t> all(n);
  for (uint64_t i = 0; i < n; i++) all[i] = i;
  std::mt19937_64 rng(seed);
  k = std::min(k, n);
  for (uint64_t i = 0; i < k; i++) std::swap(all[i], all[i + rng() % (n - i)]);
  all.resize(k);
  return all;
}

// Existing files: K distinct ones. Missing names: K distinct names, each in
// a random directory.
double ScaleStat(const std::string& root, size_t dirs, size_t perdir, size_t k, bool miss) {
  std::vector<std::string> paths;
  std::mt19937_64 rng(2);
  if (miss) {
    for (size_t i = 0; i < k; i++) {
      paths.push_back(root + "/d" + std::to_string(rng() % dirs) + "/missing" + std::to_string(i));
    }
  } else {
    for (uint64_t x : Sample(dirs * perdir, k, 1)) {
      paths.push_back(root + "/d" + std::to_string(x / perdir) + "/f" + std::to_string(x % perdir));
    }
  }
  struct stat st;
  auto t0 = Clock::now();
  for (const auto& p : paths) {
    int r = stat(p.c_str(), &st);
    if (miss ? (r == 0 || errno != ENOENT) : r != 0) Die("stat " + p);
  }
  return paths.size() / Seconds(t0);
}

// K distinct directories (all if K >= DIRS).
double ScaleReadDir(const std::string& root, size_t dirs, size_t k) {
  size_t n = 0;
  auto t0 = Clock::now();
  for (uint64_t d : Sample(dirs, k, 3)) n += List(root + "/d" + std::to_string(d), [](struct dirent*) {});
  return n / Seconds(t0);
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
  } else if (a.size() == 5 && (a[0] == "create" || a[0] == "unlink" || a[0] == "stat" ||
                                a[0] == "read") && (a[4] == "own" || a[4] == "shared")) {
    Layout l{a[1], num(2), static_cast<int>(num(3)), a[4] == "shared"};
    if (l.threads < 1) Die("THREADS must be at least 1");
    Phase(a[0], l);
  } else if (a.size() == 2 && a[0] == "readdir") {
    Result("readdir", ReadDirAll(a[1]), "entries/s");
  } else if (a.size() == 2 && a[0] == "walk") {
    auto t0 = Clock::now();
    size_t n = Walk(a[1]);
    Result("walk", n / Seconds(t0), "entries/s");
    std::printf("ENTRIES %zu\n", n);
  } else if (a.size() == 5 && (a[0] == "scalestat" || a[0] == "scalemiss")) {
    bool miss = a[0] == "scalemiss";
    Result(miss ? "lookup_miss" : "stat", ScaleStat(a[1], num(2), num(3), num(4), miss),
           miss ? "lookups/s" : "files/s");
  } else if (a.size() == 4 && a[0] == "scalereaddir") {
    Result("readdir", ScaleReadDir(a[1], num(2), num(3)), "entries/s");
  } else if (a.size() == 4 && a[0] == "smallfiles") {
    SmallFiles(a[1], num(2), num(3));
  } else {
    std::fprintf(stderr, "usage: see the comment at the top of psmbench.cc\n");
    return 2;
  }
  return 0;
}
