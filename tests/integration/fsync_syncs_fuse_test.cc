// fsync through a real mount reaches the disk: strace, attached to the
// daemon from outside, counts its fdatasync/fsync calls on the image while
// a program does 300 rounds of "overwrite 4 KiB in place, fsync" (the case
// that used to return with the bytes still in the host's page cache: an
// overwrite in place commits no record, and the committer synced nothing).
// Every round has a new write to cover, so every fsync needs an image sync
// that began after its write: at least one per round. The same holds for
// `psmctl sync` after a write that nobody fsynced.
//
// The count comes from strace, not from psmfs. strace is a prerequisite
// (installed by the Makefile); a missing one fails the test.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "cli/client.h"
#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"

using psm::test::MountedVolume;
using psm::testutil::Ctl;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;

namespace {

// strace -f -p PID, writing the image syncs it sees to a log.
class ImageSyncTracer {
 public:
  ImageSyncTracer(pid_t daemon, std::string log) : daemon_(daemon), log_(std::move(log)) {
    REQUIRE_MESSAGE(::access("/usr/bin/strace", X_OK) == 0,
                    "strace is missing: make test installs it (apt-get install strace)");
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      const std::string p = std::to_string(daemon_);
      ::execl("/usr/bin/strace", "strace", "-f", "-qq", "-y", "-e", "trace=fdatasync,fsync",
              "-o", log_.c_str(), "-p", p.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Attached when every thread of the daemon has a tracer.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!AllTraced()) {
      int st = 0;
      REQUIRE_MESSAGE(::waitpid(pid_, &st, WNOHANG) == 0, "strace exited before attaching");
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                      "strace did not attach to every daemon thread in 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~ImageSyncTracer() { Stop(); }

  // Detaches and returns the number of fdatasync/fsync calls on the image
  // that returned 0.
  int Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGINT);
      int st = 0;
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
    }
    std::ifstream in(log_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      if (line.find("/image>) = 0") != std::string::npos &&
          (line.find("fdatasync(") != std::string::npos ||
           line.find("fsync(") != std::string::npos)) {
        ++n;
      }
    }
    return n;
  }
  // The whole strace log, for failure messages.
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  bool AllTraced() const {
    const std::string task = "/proc/" + std::to_string(daemon_) + "/task";
    int threads = 0;
    for (const auto& e : std::filesystem::directory_iterator(task)) {
      std::ifstream st(e.path() / "status");
      std::string line;
      while (std::getline(st, line)) {
        if (line.rfind("TracerPid:", 0) == 0) {
          if (std::stoi(line.substr(10)) == 0) return false;
          ++threads;
        }
      }
    }
    return threads > 0;
  }
  pid_t daemon_;
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("fsync on the mount: one image sync at least per fsync of an overwrite in place") {
  auto mv = MountedVolume::Create("256M");
  REQUIRE(mv->Alive());
  const std::string f = mv->Path("db");
  int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  std::string model = Pattern(1 << 20, 1);
  REQUIRE(::pwrite(fd, model.data(), model.size(), 0) == static_cast<ssize_t>(model.size()));
  REQUIRE(::fsync(fd) == 0);

  ImageSyncTracer tracer(mv->pid, mv->dir + "/strace.log");
  const int rounds = 300;
  for (int i = 0; i < rounds; ++i) {
    const std::string page = Pattern(4096, 100 + static_cast<unsigned>(i));
    const off_t off = static_cast<off_t>(((i * 7919) % 256) * 4096);
    REQUIRE(::pwrite(fd, page.data(), page.size(), off) == 4096);
    REQUIRE((i % 2 ? ::fsync(fd) : ::fdatasync(fd)) == 0);
    model.replace(static_cast<size_t>(off), 4096, page);
  }
  const int syncs = tracer.Stop();
  MESSAGE("image syncs seen by strace: " << syncs << " for " << rounds << " fsyncs");
  CHECK_MESSAGE(syncs >= rounds, "only " << syncs << " image syncs for " << rounds
                                         << " fsyncs of new writes: some fsync returned before "
                                            "its bytes were synced");
  REQUIRE(::close(fd) == 0);
  CHECK(ReadFile(f) == model);  // and the bytes are right
  REQUIRE(mv->Alive());
  CHECK(mv->Unmount());
}

TEST_CASE("psmctl sync MOUNTPOINT: syncs the image after a write nobody fsynced") {
  // A long commit interval, so only the command can have synced.
  auto mv = MountedVolume::Create("256M", "commit_interval=60000");
  const std::string f = mv->Path("log");
  int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  const std::string data = Pattern(64 * 4096, 2);
  REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  REQUIRE(::fsync(fd) == 0);
  ImageSyncTracer tracer(mv->pid, mv->dir + "/strace-sync.log");
  const std::string page = Pattern(4096, 3);
  REQUIRE(::pwrite(fd, page.data(), page.size(), 8 * 4096) == 4096);  // in place, no fsync
  auto r = Ctl({"sync", mv->mnt});
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  const int syncs = tracer.Stop();
  CHECK_MESSAGE(syncs >= 1, "psmctl sync returned without syncing the image; strace saw:\n"
                                << tracer.Log() << "psmctl: " << r.output);
  REQUIRE(::close(fd) == 0);
  // Not mounted: a clear error, exit 4.
  auto bad = Ctl({"sync", mv->dir + "/nowhere"});
  CHECK(bad.exit_code == 4);
  CHECK(bad.output.find("nowhere") != std::string::npos);
  CHECK(mv->Unmount());
}

// The hello reply's writable_files lets psmctl skip its search of /proc for
// open files (SyncMount): it must be non-zero whenever a process may hold a
// file of the mount with dirty pages, through an fd or a shared mapping.
TEST_CASE("hello says whether a file of the mount is open for writing or mapped") {
  auto mv = MountedVolume::Create("256M");
  auto writers = [&] {
    auto c = psm::Client::Connect(mv->mnt);
    REQUIRE_MESSAGE(c.ok(), c.status().ToString());
    return c.value()->may_have_writers();
  };
  // The release after a close or munmap reaches the daemon asynchronously.
  auto settles_to_none = [&] {
    for (int i = 0; i < 200; ++i) {
      if (!writers()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  CHECK_FALSE(writers());
  const std::string f = mv->Path("data");
  int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 8192) == 0);
  CHECK(writers());
  void* p = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  REQUIRE(::close(fd) == 0);
  CHECK(writers());  // the mapping holds the file open
  std::memset(p, 'm', 8192);
  REQUIRE(::munmap(p, 8192) == 0);
  CHECK(settles_to_none());
  int ro = ::open(f.c_str(), O_RDONLY);
  REQUIRE(ro >= 0);
  CHECK_FALSE(writers());  // read-only opens cannot dirty pages
  int wo = ::open(f.c_str(), O_WRONLY);
  REQUIRE(wo >= 0);
  CHECK(writers());
  REQUIRE(::close(wo) == 0);
  CHECK(settles_to_none());
  REQUIRE(::close(ro) == 0);
  CHECK(ReadFile(f) == std::string(8192, 'm'));
  CHECK(mv->Unmount());
}
