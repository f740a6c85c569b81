// psmctl send MOUNTPOINT_OR_VOLUME SNAPSHOT [--from BASE] [--quiet] [-o FILE | > FILE]
// psmctl receive MOUNTPOINT_OR_VOLUME [--name NAME] [--force] [--json] [--quiet] < FILE
//
// Backup streams (docs/send-receive.md). On a mounted volume the daemon
// reads or writes the volume and the stream passes through its control
// socket; an unmounted volume is opened here. Standard output (send) and
// standard input (receive) must not be a terminal. On a terminal's standard
// error a progress line shows bytes, rate and time left (the stream's size
// is known from its header).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"
#include "fs/device/sync_dir.h"
#include "fs/stream/send_stream.h"

namespace psmctl {
namespace {

class Progress {
 public:
  Progress(bool on, std::string what) : on_(on), what_(std::move(what)) {}
  void SetTotal(uint64_t t) { total_ = t; }
  void Add(uint64_t n) {
    done_ += n;
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    Draw(now);
  }
  void Done() {
    if (!on_ || !drawn_) return;
    Draw(std::chrono::steady_clock::now());
    std::fputc('\n', stderr);
  }
  uint64_t done() const { return done_; }

 private:
  void Draw(std::chrono::steady_clock::time_point now) {
    const double sec = std::chrono::duration<double>(now - start_).count();
    const double rate = sec > 0 ? done_ / sec : 0;
    std::string line = "\r" + what_ + " " + HumanSize(done_);
    if (total_) {
      line += " / " + HumanSize(total_) + " (" +
              std::to_string(static_cast<int>(100.0 * done_ / total_)) + "%)";
    }
    line += "  " + HumanSize(static_cast<uint64_t>(rate)) + "/s";
    if (total_ && rate > 0 && done_ < total_) {
      line += "  ETA " + FormatDuration((total_ - done_) / rate);
    }
    line += "   ";
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    drawn_ = true;
  }
  bool on_;
  std::string what_;
  uint64_t total_ = 0, done_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

psm::Status WriteOut(int fd, std::string_view p, const std::string& where = "standard output") {
  while (!p.empty()) {
    ssize_t w = ::write(fd, p.data(), p.size());
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return psm::Status::IOError(where + " was closed by its reader");
      return psm::Status::FromErrno(errno, "writing the stream to " + where);
    }
    p.remove_prefix(static_cast<size_t>(w));
  }
  return psm::Status::Ok();
}

// ------------------------------------------------------------------ send

struct SendArgs {
  std::string target, snapshot, base, output;
  bool quiet = false;
};

// --output: the stream goes to a new file beside FILE, which becomes FILE
// (rename, after an fsync) only once the whole stream is written; a send
// that fails leaves no file behind, and an old FILE stays as it was.
class OutputFile {
 public:
  explicit OutputFile(std::string path)
      : path_(std::move(path)), tmp_(path_ + ".partial-" + std::to_string(::getpid())) {}
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!kept_) ::unlink(tmp_.c_str());
  }
  psm::Status Open() {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) return psm::Status::FromErrno(errno, "cannot create " + tmp_);
    return psm::Status::Ok();
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  psm::Status Keep() {
    if (::fsync(fd_) != 0) return psm::Status::FromErrno(errno, "syncing " + tmp_);
    if (::close(fd_) != 0) {
      fd_ = -1;
      return psm::Status::FromErrno(errno, "closing " + tmp_);
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      return psm::Status::FromErrno(errno, "renaming " + tmp_ + " to " + path_);
    }
    kept_ = true;
    return psm::SyncDirOf(path_);  // the rename, durable
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool kept_ = false;
};

int RunSend(const SendArgs& a) {
  std::unique_ptr<OutputFile> file;
  if (!a.output.empty()) {
    file = std::make_unique<OutputFile>(a.output);
    psm::Status o = file->Open();
    if (!o.ok()) return Fail(o, "send '" + a.snapshot + "'");
  } else if (::isatty(1) == 1) {
    return UsageError(
        "refusing to write a stream to a terminal: redirect standard output to a file or a "
        "pipe (psmctl send ... > FILE), or give -o FILE");
  }
  ::signal(SIGPIPE, SIG_IGN);  // a closed pipe is an error message, not a silent death
  Progress prog(!a.quiet && ::isatty(2) == 1, "sending '" + a.snapshot + "'");
  const int out_fd = file ? file->fd() : 1;
  const std::string out_name = file ? file->path() : "standard output";
  auto sink = [&](std::string_view p) {
    PSM_RETURN_IF_ERROR(WriteOut(out_fd, p, out_name));
    prog.Add(p.size());
    return psm::Status::Ok();
  };
  auto on_size = [&](uint64_t n) { prog.SetTotal(n); };
  psm::Result<psm::SendStats> r = psm::Status::IOError("not sent");
  auto client = DaemonOrOffline(a.target);
  if (!client.ok()) return Fail(client.status());
  if (client.value()) {
    r = client.value()->Send(a.snapshot, a.base, sink, on_size);
  } else {
    auto fs = OpenOffline(a.target, false);
    if (!fs.ok()) return Fail(fs.status());
    psm::SendOptions o;
    o.snapshot = a.snapshot;
    o.base = a.base;
    r = fs.value()->Send(o, sink, on_size);
    (void)fs.value()->Close();
  }
  prog.Done();
  if (!r.ok()) {
    // With -o, nothing was written to FILE (the partial file is removed).
    return Fail(r.status(), "send '" + a.snapshot + "'" +
                                (file ? " (nothing written to " + file->path() + ")" : ""));
  }
  if (file) {
    psm::Status k = file->Keep();
    if (!k.ok()) return Fail(k, "send '" + a.snapshot + "'");
  }
  if (!a.quiet) {
    const psm::SendStats& s = r.value();
    std::fprintf(stderr, "sent snapshot '%s'%s: %s (%s of file data, %llu inodes) in %s\n",
                 s.snapshot.c_str(),
                 s.base.empty() ? " (full)" : (" (incremental from '" + s.base + "')").c_str(),
                 HumanSize(s.bytes).c_str(), HumanSize(s.data_bytes).c_str(),
                 static_cast<unsigned long long>(s.inodes), FormatDuration(s.seconds).c_str());
  }
  return kExitOk;
}

// --------------------------------------------------------------- receive

struct ReceiveArgs {
  std::string target, name;
  bool force = false, json = false, quiet = false;
};

// Reads standard input; learns the stream's size from its header record
// when it comes by.
class StdinSource {
 public:
  explicit StdinSource(Progress* p) : prog_(p) {}
  psm::Result<size_t> operator()(char* buf, size_t n) {
    while (true) {
      ssize_t r = ::read(0, buf, n);
      if (r < 0) {
        if (errno == EINTR) continue;
        return psm::Status::FromErrno(errno, "reading the stream from standard input");
      }
      Sniff(buf, static_cast<size_t>(r));
      prog_->Add(static_cast<uint64_t>(r));
      return static_cast<size_t>(r);
    }
  }

 private:
  void Sniff(const char* p, size_t n) {
    if (sniffed_) return;
    head_.append(p, std::min(n, size_t{65536} - std::min(head_.size(), size_t{65536})));
    if (head_.size() < psm::stream::kRecordHeader) return;
    uint32_t len = 0;
    for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(head_[4 + i]);
    const size_t skip = psm::stream::kRecordHeader + psm::stream::kMagic.size() + 4;
    if (len > 65000 || head_.size() < psm::stream::kRecordHeader + len) {
      if (head_.size() >= 65536) sniffed_ = true;
      return;
    }
    sniffed_ = true;
    if (len + psm::stream::kRecordHeader < skip) return;
    auto j = psm::Json::Parse(
        std::string_view(head_).substr(skip, psm::stream::kRecordHeader + len - skip));
    if (!j.ok()) return;
    prog_->SetTotal(psm::stream::kRecordHeader + len + psm::stream::kRecordTrailer +
                    j.value().GetUint("body_bytes"));
  }
  Progress* prog_;
  std::string head_;
  bool sniffed_ = false;
};

void ReportReceive(const psm::ReceiveResult& r, bool json) {
  if (json) {
    std::printf("%s\n", psm::ctl::ToJson(r).Dump(2).c_str());
    return;
  }
  std::printf("received snapshot '%s'%s: %s (%s of file data, %llu inodes) in %s\n",
              r.snapshot.c_str(),
              r.incremental ? (" (incremental from '" + r.base + "')").c_str() : " (full)",
              HumanSize(r.bytes).c_str(), HumanSize(r.data_bytes).c_str(),
              static_cast<unsigned long long>(r.inodes), FormatDuration(r.seconds).c_str());
  if (r.discarded) {
    std::printf("discarded changes to %llu inodes made since '%s' (--force)\n",
                static_cast<unsigned long long>(r.discarded), r.base.c_str());
  }
}

int RunReceive(const ReceiveArgs& a) {
  if (::isatty(0) == 1) {
    return UsageError(
        "refusing to read a stream from a terminal: redirect standard input from a file or a "
        "pipe (psmctl receive ... < FILE)");
  }
  Progress prog(!a.quiet && !a.json && ::isatty(2) == 1, "receiving");
  StdinSource src(&prog);
  auto source = [&](char* buf, size_t n) { return src(buf, n); };
  psm::Result<psm::ReceiveResult> r = psm::Status::IOError("not received");
  auto client = DaemonOrOffline(a.target);
  if (!client.ok()) return Fail(client.status());
  if (client.value()) {
    r = client.value()->Receive(a.name, a.force, source);
  } else {
    auto fs = psm::FileSystem::Open(a.target, psm::MountOptions{});
    if (!fs.ok()) {
      return Fail(psm::ctl::MakeStatus(fs.status().code(), "cannot open " + a.target + ": " +
                                                                fs.status().message()));
    }
    psm::ReceiveOptions o;
    o.name = a.name;
    o.force = a.force;
    r = fs.value()->Receive(o, source);
    psm::Status closed = fs.value()->Close();
    if (r.ok() && !closed.ok()) return Fail(closed, "closing " + a.target);
  }
  prog.Done();
  if (!r.ok()) return Fail(r.status(), "receive (the volume is unchanged)");
  if (!a.quiet || a.json) ReportReceive(r.value(), a.json);
  return kExitOk;
}

void SetupSend(CLI::App& app) {
  auto a = std::make_shared<SendArgs>();
  CLI::App* cmd = AddCommand(
      app, "send",
      "Write a snapshot as a stream to standard output (never a terminal): a full stream, or "
      "with --from an incremental one that carries only what changed since an older snapshot. "
      "`psmctl receive` makes it a snapshot of another volume. While a send runs, neither "
      "snapshot can be deleted (the delete is refused with 'being sent'). Root or the volume "
      "owner only: a stream holds every file.");
  cmd->add_option("MOUNTPOINT_OR_VOLUME", a->target,
                  "Mount point of a mounted volume, or the directory of an unmounted one.")
      ->required()
      ->type_name("");
  cmd->add_option("SNAPSHOT", a->snapshot, "The snapshot to send.")->required()->type_name("");
  cmd->add_option("--from", a->base,
                  "Send incrementally from this older snapshot (the receiving volume must have "
                  "received it).")
      ->type_name("BASE");
  cmd->add_option("-o,--output", a->output,
                  "Write the stream to FILE instead of standard output: to a new file beside it "
                  "that becomes FILE (replacing any) only once the whole stream is written and "
                  "synced. A send that fails leaves no partial FILE.")
      ->type_name("FILE");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress line and no summary on standard error.");
  SetAction(cmd, [a] { return RunSend(*a); });
}

void SetupReceive(CLI::App& app) {
  auto a = std::make_shared<ReceiveArgs>();
  CLI::App* cmd = AddCommand(
      app, "receive",
      "Read a stream written by `psmctl send` from standard input (never a terminal) and make "
      "it a snapshot of this volume. As with `zfs receive`, the live tree becomes the received "
      "snapshot's tree. All or nothing: the snapshot appears only after the whole stream was "
      "read and verified; a truncated, damaged or wrong-base stream changes nothing. A full "
      "stream needs a volume with an empty live tree; an incremental one needs its base here "
      "and the live tree unchanged since it (or --force).");
  cmd->add_option("MOUNTPOINT_OR_VOLUME", a->target,
                  "Mount point of a mounted volume, or the directory of an unmounted one.")
      ->required()
      ->type_name("");
  cmd->add_option("--name", a->name, "Name of the new snapshot (default: the name it was sent with).")
      ->type_name("NAME");
  cmd->add_flag("--force", a->force,
                "For an incremental stream: discard changes made to the live tree since the "
                "base (as `psmctl restore BASE` would) instead of refusing.");
  cmd->add_flag("--json", a->json, "Print the result as a JSON object.");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress line and no summary.");
  SetAction(cmd, [a] { return RunReceive(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(46, SetupSend);
PSMCTL_REGISTER_COMMAND(47, SetupReceive);

}  // namespace psmctl
