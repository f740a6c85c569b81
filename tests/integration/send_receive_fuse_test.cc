// Backup streams through real mounts and the real psmctl (issue #6):
//   * `psmctl send A S > F` / `psmctl receive B < F`, full then incremental
//     through a pipe: A's snapshots, every received snapshot, and B's live
//     tree equal the model — the same sample tree built and changed in a
//     native directory (sample_tree.h; names, types, modes, owners, sizes,
//     bytes, holes, links, symlinks, xattrs, mtimes) — not A read back; B
//     restores to an older received snapshot;
//   * refusals: a terminal as stdout/stdin, a truncated or damaged stream,
//     the wrong base, a user without the right — each a clear message, a
//     non-zero exit, and B exactly as it was;
//   * a snapshot being sent cannot be deleted (refused, "being sent");
//   * many processes at once: four mounted volumes, sends from A to B, C
//     and D and full sends of A to /dev/null running together, then
//     restores on B, C, D while A is sent again — all bounded by a
//     watchdog timeout (a hang fails the test);
//   * backup readers walk A/.snapshots while snapshots are created and
//     deleted: every read returns the right bytes or ENOENT/ESTALE.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/json/control_json.h"
#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"
#include "tests/common/sample_tree.h"

using psm::test::BinDir;
using psm::test::MountedVolume;
using psm::test::ProgramResult;
using psm::test::RunProgram;
using psm::testutil::BuildTree;
using psm::testutil::ChangeTree;
using psm::testutil::Ctl;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;
using psm::testutil::MakeSampleModel;
using psm::testutil::SameAs;
using psm::testutil::SampleModel;
using psm::testutil::WriteFile;

namespace {

// Runs a shell command line (pipes, redirections) with a watchdog timeout.
ProgramResult Sh(const std::string& cmd, int timeout_s = 300) {
  return RunProgram({"/bin/sh", "-c", cmd}, timeout_s);
}

std::string Q(const std::string& s) { return "'" + s + "'"; }
std::string Psmctl() { return Q(BinDir() + "/psmctl"); }

std::string Snapshots(const MountedVolume& mv) {
  ProgramResult r = Ctl({"snapshot", "list", mv.mnt, "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE_MESSAGE(j.ok(), r.output);
  std::string names;
  const psm::Json* list = j.value().Find("snapshots");
  if (list == nullptr) list = &j.value();
  for (const psm::Json& s : list->items()) names += s.GetString("name") + ",";
  return names;
}

std::string TmpFile(const MountedVolume& mv, const std::string& name) { return mv.dir + "/" + name; }

// Runs a shell command line with a pseudo-terminal as its terminal
// (script(1)); the output is what that terminal showed.
ProgramResult OnPty(const std::string& cmd, int timeout_s) {
  return RunProgram({"script", "-qec", cmd, "/dev/null"}, timeout_s);
}

}  // namespace

TEST_CASE("send/receive through mounts: full and incremental, every snapshot equal, restore") {
  auto a = MountedVolume::Create("512M");
  auto b = MountedVolume::Create("512M");
  const SampleModel model = MakeSampleModel();
  BuildTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s1"}).ok());
  ChangeTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s2"}).ok());

  const std::string f1 = TmpFile(*a, "s1.stream");
  ProgramResult r = Sh(Psmctl() + " send " + Q(a->mnt) + " s1 > " + Q(f1));
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("sent snapshot 's1' (full)") != std::string::npos, r.output);
  r = Sh(Psmctl() + " receive " + Q(b->mnt) + " < " + Q(f1));
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("received snapshot 's1' (full)") != std::string::npos, r.output);
  CHECK(SameAs(model.built, a->Path(".snapshots/s1/data")) == "");
  CHECK(SameAs(model.changed, a->Path(".snapshots/s2/data")) == "");
  CHECK(SameAs(model.built, b->Path(".snapshots/s1/data")) == "");
  CHECK(SameAs(model.built, b->Path("data")) == "");

  // Incremental, straight through a pipe, with --json.
  r = Sh(Psmctl() + " send -q " + Q(a->mnt) + " s2 --from s1 | " + Psmctl() + " receive " +
         Q(b->mnt) + " --json");
  REQUIRE_MESSAGE(r.ok(), r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE_MESSAGE(j.ok(), r.output);
  CHECK(j.value().GetBool("incremental"));
  CHECK(j.value().GetString("base") == "s1");
  CHECK(SameAs(model.changed, b->Path(".snapshots/s2/data")) == "");
  CHECK(SameAs(model.changed, b->Path("data")) == "");
  CHECK(SameAs(model.built, b->Path(".snapshots/s1/data")) == "");
  // The incremental stream is small next to the full one.
  const std::string f2 = TmpFile(*a, "s2.inc");
  const std::string f2full = TmpFile(*a, "s2.full");
  REQUIRE(Sh(Psmctl() + " send -q " + Q(a->mnt) + " s2 --from s1 > " + Q(f2)).ok());
  // (-o FILE: the file appears whole, once the stream is written.)
  r = Ctl({"send", "-q", a->mnt, "s2", "-o", f2full});
  REQUIRE_MESSAGE(r.ok(), r.output);
  {
    auto d = MountedVolume::Create("512M");
    r = Sh(Psmctl() + " receive -q " + Q(d->mnt) + " < " + Q(f2full));
    REQUIRE_MESSAGE(r.ok(), r.output);
    CHECK(SameAs(model.changed, d->Path(".snapshots/s2/data")) == "");
  }
  struct stat si, sf;
  REQUIRE(::stat(f2.c_str(), &si) == 0);
  REQUIRE(::stat(f2full.c_str(), &sf) == 0);
  MESSAGE("full " << sf.st_size << " B, incremental " << si.st_size << " B");
  CHECK(si.st_size * 4 < sf.st_size);

  // B restores to the older received snapshot.
  r = Ctl({"restore", b->mnt, "s1"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(SameAs(model.built, b->Path("data")) == "");
  // Files written on B after the receive are ordinary files.
  WriteFile(b->Path("data/after"), "written on b");
  CHECK(ReadFile(b->Path("data/after")) == "written on b");

  // fsck is clean on both (unmounted).
  REQUIRE(a->Unmount());
  REQUIRE(b->Unmount());
  CHECK(Ctl({"fsck", a->vol}).ok());
  r = Ctl({"fsck", b->vol});
  CHECK_MESSAGE(r.ok(), r.output);
  // Offline: send from and receive into unmounted volumes.
  auto c = MountedVolume::Create("512M");
  REQUIRE(c->Unmount());
  r = Sh(Psmctl() + " send -q " + Q(a->vol) + " s1 | " + Psmctl() + " receive -q " + Q(c->vol));
  REQUIRE_MESSAGE(r.ok(), r.output);
  REQUIRE(c->Remount());
  CHECK(SameAs(model.built, c->Path(".snapshots/s1/data")) == "");
  CHECK(SameAs(model.built, c->Path("data")) == "");
  CHECK(Snapshots(*c) == "s1,");
}

TEST_CASE("send/receive: refusals leave the target exactly as it was") {
  auto a = MountedVolume::Create("256M");
  auto b = MountedVolume::Create("256M");
  const SampleModel model = MakeSampleModel();
  BuildTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s1"}).ok());
  ChangeTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s2"}).ok());
  const std::string full = TmpFile(*a, "full"), inc = TmpFile(*a, "inc");
  REQUIRE(Sh(Psmctl() + " send -q " + Q(a->mnt) + " s1 > " + Q(full)).ok());
  REQUIRE(Sh(Psmctl() + " send -q " + Q(a->mnt) + " s2 --from s1 > " + Q(inc)).ok());

  // Terminals are refused (script(1) gives the command a pseudo-terminal).
  ProgramResult r = OnPty(BinDir() + "/psmctl send " + a->mnt + " s1", 60);
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("refusing to write a stream to a terminal") != std::string::npos,
                r.output);
  r = OnPty(BinDir() + "/psmctl receive " + b->mnt, 60);
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("refusing to read a stream from a terminal") != std::string::npos,
                r.output);

  // The wrong base: an increment before its base.
  r = Sh(Psmctl() + " receive " + Q(b->mnt) + " < " + Q(inc));
  CHECK(r.exit_code == 4);
  CHECK_MESSAGE(r.output.find("the base of this incremental stream") != std::string::npos, r.output);
  CHECK(Snapshots(*b) == "");
  // Truncated at a few places, and damaged.
  struct stat st;
  REQUIRE(::stat(full.c_str(), &st) == 0);
  for (long cut : {10L, 100L, static_cast<long>(st.st_size / 2), static_cast<long>(st.st_size - 1)}) {
    r = Sh("head -c " + std::to_string(cut) + " " + Q(full) + " | " + Psmctl() + " receive " +
           Q(b->mnt));
    CHECK(r.exit_code != 0);
    CHECK_MESSAGE((r.output.find("truncated") != std::string::npos ||
                   r.output.find("not a psmfs") != std::string::npos),
                  r.output);
    CHECK_MESSAGE(r.output.find("the volume is unchanged") != std::string::npos, r.output);
  }
  const std::string bad = TmpFile(*a, "bad");
  REQUIRE(Sh("cp " + Q(full) + " " + Q(bad) + " && printf 'X' | dd of=" + Q(bad) +
             " bs=1 seek=" + std::to_string(st.st_size / 3) + " conv=notrunc 2>/dev/null")
              .ok());
  r = Sh(Psmctl() + " receive " + Q(b->mnt) + " < " + Q(bad));
  CHECK(r.exit_code == 3);  // damaged
  CHECK_MESSAGE(r.output.find("checksum mismatch") != std::string::npos, r.output);
  CHECK(Snapshots(*b) == "");
  DIR* d = ::opendir(b->mnt.c_str());
  REQUIRE(d != nullptr);
  int entries = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..") &&
        std::strcmp(e->d_name, ".snapshots")) {
      ++entries;
    }
  }
  ::closedir(d);
  CHECK(entries == 0);

  // A user without the right may neither send nor receive.
  r = RunProgram({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                  Psmctl() + " send " + Q(a->mnt) + " s1 > /dev/null"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("ermission") != std::string::npos, r.output);
  r = RunProgram({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                  Psmctl() + " receive " + Q(b->mnt) + " < /dev/zero"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("ermission") != std::string::npos, r.output);
  CHECK(Snapshots(*b) == "");

  // Unknown names.
  r = Sh(Psmctl() + " send " + Q(a->mnt) + " nope > /dev/null");
  CHECK(r.exit_code == 4);
  CHECK_MESSAGE(r.output.find("no snapshot named 'nope'") != std::string::npos, r.output);

  // The intact streams still go in, and a second time is refused.
  REQUIRE(Sh(Psmctl() + " receive -q " + Q(b->mnt) + " < " + Q(full)).ok());
  REQUIRE(Sh(Psmctl() + " receive -q " + Q(b->mnt) + " < " + Q(inc)).ok());
  r = Sh(Psmctl() + " receive " + Q(b->mnt) + " --name again < " + Q(inc));
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("already has the stream's snapshot") != std::string::npos, r.output);
  CHECK(Snapshots(*b) == "s1,s2,");
  CHECK(SameAs(model.changed, b->Path("data")) == "");
  CHECK(SameAs(model.built, b->Path(".snapshots/s1/data")) == "");

  // On a terminal's standard error: a progress line with bytes, the total
  // (100% at the end) and a rate; the stream itself goes to the file.
  const std::string tty_stream = TmpFile(*a, "tty.stream");
  r = OnPty(BinDir() + "/psmctl send " + a->mnt + " s1 > " + tty_stream, 120);
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("sending 's1'") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("(100%)") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("/s") != std::string::npos, r.output);
  CHECK(psm::testutil::ReadFile(tty_stream) == psm::testutil::ReadFile(full));
  auto c = MountedVolume::Create("256M");
  r = OnPty(BinDir() + "/psmctl receive " + c->mnt + " < " + tty_stream, 120);
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("receiving") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("(100%)") != std::string::npos, r.output);
  CHECK(SameAs(model.built, c->Path("data")) == "");
}

TEST_CASE("send/receive: a snapshot being sent is not deleted; the delete is refused") {
  auto a = MountedVolume::Create("512M");
  for (int i = 0; i < 8; ++i) WriteFile(a->Path("f" + std::to_string(i)), Pattern(8 << 20, i));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "big"}).ok());
  // The send writes into a FIFO this test reads only after the delete:
  // once its first bytes are there the send has begun (and pinned the
  // snapshot), and it then waits with the pipe full, pinned.
  const std::string out = TmpFile(*a, "sent");
  const std::string fifo = TmpFile(*a, "sent.fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread sender([&] {
    ProgramResult r = Sh(Psmctl() + " send -q " + Q(a->mnt) + " big > " + Q(fifo));
    CHECK_MESSAGE(r.ok(), r.output);
  });
  const int rfd = ::open(fifo.c_str(), O_RDONLY);  // waits for the sender to open it
  REQUIRE(rfd >= 0);
  int avail = 0;
  for (int i = 0; i < 6000 && avail == 0; ++i) {
    REQUIRE(::ioctl(rfd, FIONREAD, &avail) == 0);
    if (avail == 0) ::usleep(10000);
  }
  REQUIRE_MESSAGE(avail > 0, "the send wrote nothing in 60 s");
  ProgramResult del = Ctl({"snapshot", "delete", a->mnt, "big"});
  CHECK_MESSAGE((!del.ok() && del.output.find("being sent") != std::string::npos), del.output);
  {
    const int wfd = ::open(out.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    REQUIRE(wfd >= 0);
    std::vector<char> buf(1 << 20);
    ssize_t n;
    while ((n = ::read(rfd, buf.data(), buf.size())) > 0) {
      REQUIRE(::write(wfd, buf.data(), static_cast<size_t>(n)) == n);
    }
    REQUIRE(n == 0);
    REQUIRE(::close(wfd) == 0);
  }
  ::close(rfd);
  sender.join();
  struct stat st;
  REQUIRE(::stat(out.c_str(), &st) == 0);
  CHECK(st.st_size > (64 << 20));
  // The stream is whole: it goes into another volume.
  auto b = MountedVolume::Create("512M");
  ProgramResult r = Sh(Psmctl() + " receive -q " + Q(b->mnt) + " < " + Q(out));
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(ReadFile(b->Path("f7")) == Pattern(8 << 20, 7));
  // A reader that goes away ends the send (psmctl says so), and the pin
  // goes with it: the delete works at once.
  r = RunProgram({"/bin/bash", "-c",
                  Psmctl() + " send " + Q(a->mnt) + " big | head -c 1000 > /dev/null; "
                  "echo exit=${PIPESTATUS[0]}"},
                 120);
  CHECK_MESSAGE(r.output.find("exit=1") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("closed by its reader") != std::string::npos, r.output);
  // (the daemon notices at its next write to the closed connection)
  ProgramResult gone;
  for (int i = 0; i < 100; ++i) {
    gone = Ctl({"snapshot", "delete", a->mnt, "big"});
    if (gone.ok() || gone.output.find("being sent") == std::string::npos) break;
    ::usleep(20000);
  }
  CHECK_MESSAGE(gone.ok(), gone.output);
}

TEST_CASE("send/receive: many processes, four volumes at once, no stall") {
  auto a = MountedVolume::Create("512M");
  std::vector<std::unique_ptr<MountedVolume>> t;
  for (int i = 0; i < 3; ++i) t.push_back(MountedVolume::Create("512M"));
  const SampleModel model = MakeSampleModel();
  BuildTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s1"}).ok());
  ChangeTree(a->Path("data"));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "s2"}).ok());
  // Round 1: full sends into B, C, D and two full sends of A to /dev/null,
  // all at once. The 300 s timeout is the watchdog: a hang fails.
  std::string script;
  for (size_t i = 0; i < t.size(); ++i) {
    script += Psmctl() + " send -q " + Q(a->mnt) + " s1 | " + Psmctl() + " receive -q " +
              Q(t[i]->mnt) + " || echo FAIL-recv-" + std::to_string(i) + " &\n";
  }
  for (int i = 0; i < 2; ++i) {
    script += Psmctl() + " send -q " + Q(a->mnt) + " s2 > /dev/null || echo FAIL-send &\n";
  }
  script += "wait\n";
  ProgramResult r = Sh(script);
  REQUIRE_MESSAGE(!r.timed_out, ("stalled: " + r.output));
  CHECK_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("FAIL") == std::string::npos, r.output);
  // Round 2: increments into B, C, D at once, while A is snapshotted.
  script.clear();
  for (size_t i = 0; i < t.size(); ++i) {
    script += Psmctl() + " send -q " + Q(a->mnt) + " s2 --from s1 | " + Psmctl() +
              " receive -q " + Q(t[i]->mnt) + " || echo FAIL-inc-" + std::to_string(i) + " &\n";
  }
  script += Psmctl() + " snapshot create " + Q(a->mnt) + " s3 > /dev/null || echo FAIL-snap &\n";
  script += "wait\n";
  r = Sh(script);
  REQUIRE_MESSAGE(!r.timed_out, ("stalled: " + r.output));
  CHECK_MESSAGE(r.output.find("FAIL") == std::string::npos, r.output);
  // Round 3: restores on B, C, D while A is sent again.
  script.clear();
  for (size_t i = 0; i < t.size(); ++i) {
    script += Psmctl() + " restore -q " + Q(t[i]->mnt) + " s1 > /dev/null || echo FAIL-restore-" +
              std::to_string(i) + " &\n";
  }
  script += Psmctl() + " send -q " + Q(a->mnt) + " s3 > /dev/null || echo FAIL-send3 &\n";
  script += "wait\n";
  r = Sh(script);
  REQUIRE_MESSAGE(!r.timed_out, ("stalled: " + r.output));
  CHECK_MESSAGE(r.output.find("FAIL") == std::string::npos, r.output);
  CHECK(SameAs(model.changed, a->Path(".snapshots/s3/data")) == "");
  for (auto& v : t) {
    CHECK(SameAs(model.changed, v->Path(".snapshots/s2/data")) == "");
    CHECK(SameAs(model.built, v->Path(".snapshots/s1/data")) == "");
    CHECK(SameAs(model.built, v->Path("data")) == "");
  }
}

TEST_CASE("send/receive: backup readers walk .snapshots while snapshots come and go") {
  auto a = MountedVolume::Create("256M");
  const int kFiles = 6;
  auto content = [](int gen, int f) { return Pattern(30000 + f * 1000, gen * 10 + f); };
  REQUIRE(::mkdir(a->Path("d").c_str(), 0755) == 0);
  for (int f = 0; f < kFiles; ++f) WriteFile(a->Path("d/f" + std::to_string(f)), content(0, f));
  REQUIRE(Ctl({"snapshot", "create", a->mnt, "g0"}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> ok_reads{0}, gone{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        DIR* sd = ::opendir(a->Path(".snapshots").c_str());
        if (sd == nullptr) continue;
        std::vector<std::string> names;
        while (dirent* e = ::readdir(sd)) {
          if (e->d_name[0] == 'g') names.push_back(e->d_name);
        }
        ::closedir(sd);
        for (const std::string& n : names) {
          const int gen = std::atoi(n.c_str() + 1);
          for (int f = 0; f < kFiles; ++f) {
            const std::string p = a->Path(".snapshots/" + n + "/d/f" + std::to_string(f));
            int fd = ::open(p.c_str(), O_RDONLY);
            if (fd < 0) {
              if (errno != ENOENT && errno != ESTALE) {
                std::lock_guard<std::mutex> l(mu);
                if (first_error.empty()) first_error = p + ": " + std::strerror(errno);
              }
              gone++;
              break;
            }
            const std::string want = content(gen, f);
            std::string got(want.size() + 10, '\0');
            ssize_t k = ::read(fd, got.data(), got.size());
            ::close(fd);
            if (k != static_cast<ssize_t>(want.size()) || got.substr(0, want.size()) != want) {
              std::lock_guard<std::mutex> l(mu);
              if (first_error.empty()) first_error = p + ": wrong bytes";
            } else {
              ok_reads++;
            }
          }
        }
      }
    });
  }
  for (int g = 1; g <= 8; ++g) {
    for (int f = 0; f < kFiles; ++f) WriteFile(a->Path("d/f" + std::to_string(f)), content(g, f));
    // Through psmctl and through mkdir/rmdir in .snapshots, alternately.
    if (g % 2) {
      REQUIRE(Ctl({"snapshot", "create", a->mnt, "g" + std::to_string(g)}).ok());
    } else {
      REQUIRE(::mkdir(a->Path(".snapshots/g" + std::to_string(g)).c_str(), 0755) == 0);
    }
    if (g >= 3) {
      const std::string old = "g" + std::to_string(g - 3);
      if (g % 2) {
        REQUIRE(Ctl({"snapshot", "delete", a->mnt, old}).ok());
      } else {
        REQUIRE(::rmdir(a->Path(".snapshots/" + old).c_str()) == 0);
      }
    }
    REQUIRE(Ctl({"scan", a->mnt}).ok());
  }
  stop.store(true);
  for (auto& th : readers) th.join();
  CHECK_MESSAGE(first_error.empty(), first_error);
  CHECK(ok_reads.load() > 0);
  MESSAGE("reads " << ok_reads.load() << ", vanished " << gone.load());
}
