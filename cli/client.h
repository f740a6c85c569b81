// psm::Client: the thread-safe client library for the psmfs control socket
// (DESIGN §7). psmctl uses it; so can a backup program that snapshots many
// volumes from many threads.
//
//   PSM_ASSIGN_OR_RETURN(auto client, psm::Client::Connect("/mnt/vol"));
//   PSM_ASSIGN_OR_RETURN(psm::SnapshotInfo s, client->CreateSnapshot("nightly"));
//
// Connect() finds the volume through the registry entries the daemons write
// (fs/control/control_protocol.h): the argument may be the mount point or the volume
// directory, compared by real path.
//
// Thread safety: every method may be called from many threads at once. Each
// call takes an idle connection from the Client's own small pool or dials a
// new one, so calls run concurrently, each on its own connection. The only
// lock is the Client's own pool mutex (held for a vector push/pop, never
// across I/O): Client objects for different volumes, in one process, never
// wait on each other, and there is no process-wide state.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fs/json/control_json.h"
#include "fs/control/control_protocol.h"
#include "fs/core/filesystem.h"
#include "fs/space/scanner.h"
#include "meta/status.h"

namespace psm {

using MountEntry = ctl::MountEntry;

// The registry entries found in the runtime directories
// (ctl::ClientRuntimeDirs()). Entries whose file is not owned by its
// directory's owner are ignored (nobody can plant one for someone else's
// volume). Stale entries (daemon gone) are included; see IsAlive().
std::vector<MountEntry> ListMounts();

// True when the entry's daemon runs (same host and its pid exists).
bool IsAlive(const MountEntry& e);

// The live entry whose mount point or volume is `path` (by real path).
// kNotFound, with a message listing what was looked at, when there is none.
Result<MountEntry> FindMount(const std::string& path);

// What `status` returns.
struct VolumeStatus {
  VolumeStats stats;
  ScanStatus scan;
  ScrubStatus scrub;  // the running or last scrub (docs/integrity.md)
  std::string volume;
  std::string mountpoint;
  int64_t pid = 0;
  std::string since;
};

// What `metrics` returns (Client::GetMetrics; docs/monitoring.md): the
// figures `psmctl metrics` prints.
struct VolumeMetrics {
  std::string uuid;
  std::string volume;      // real path of the volume directory
  std::string mountpoint;  // "" when served without FUSE
  int64_t pid = 0;
  std::string since;     // RFC 3339: when the daemon started serving
  int64_t since_ns = 0;  // the same in nanoseconds since the epoch
  VolumeStats stats;
  ScanStatus scan;
  ScrubStatus scrub;  // the running or last scrub
  // Every snapshot, oldest first, those being deleted included (`deleting`);
  // used/referenced only when `snapshot_space`.
  std::vector<SnapshotInfo> snapshots;
  bool snapshot_space = false;
  StoreMemoryStats store_memory;  // RocksDB's details (RSS and caches: in stats)
  uint64_t live_cache_chunk_maps = 0;
  // Absent when the daemon serves no FUSE mount (nothing counts requests).
  std::optional<RequestFigures> requests;
};

struct ClientOptions {
  // Idle connections kept for reuse. Default: 4.
  size_t max_idle = 4;
  // A pooled connection idle longer than this is closed rather than reused
  // (the server closes idle ones after ControlServer::kIdleTimeoutSec).
  // Default: 60 s.
  std::chrono::seconds max_idle_age{60};
  // How long a query (hello, status, scan status: what the daemon answers
  // from memory) waits for its reply before it fails, naming the daemon,
  // so that a stopped or wedged daemon cannot hang `psmctl status` or a
  // monitoring job for ever. Requests that change something, and those
  // whose work grows with the volume (snapshot space, diff, history),
  // wait as long as they take. 0: no limit. Default: 30 s.
  std::chrono::milliseconds query_timeout{30000};
};

class Client {
 public:
  // Finds the mounted volume (FindMount) and says hello. kNotFound when
  // nothing matches or the daemon is gone; kNotSupported on a protocol
  // mismatch.
  static Result<std::unique_ptr<Client>> Connect(const std::string& mountpoint_or_volume,
                                                 ClientOptions opts = {});
  // Same, for a known entry.
  static Result<std::unique_ptr<Client>> Connect(const MountEntry& entry, ClientOptions opts = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const MountEntry& mount() const { return entry_; }
  // The protocol version both sides speak.
  int protocol_version() const { return version_; }
  // Whether the daemon said this process may create/delete/scan/sync.
  bool may_modify() const { return may_modify_; }
  // Whether a process may hold a file of the mount open for writing (or
  // mapped shared), as the hello reply said: false only when the daemon had
  // no writable handle of a live file then (an older daemon does not say:
  // true). Used to skip SyncMount's search for such files.
  bool may_have_writers() const { return may_have_writers_; }

  Result<VolumeStatus> GetStatus();
  // Figures for monitoring. `snapshot_space` = false skips the per-snapshot
  // used/referenced bytes (a pass over the volume's alloc records).
  // kNotSupported from a daemon older than "metrics".
  Result<VolumeMetrics> GetMetrics(bool snapshot_space = true);
  Result<SnapshotInfo> CreateSnapshot(const std::string& name);
  // All or nothing as far as names go: if one name does not exist (or is
  // given twice) nothing is deleted. Returns the names deleted.
  Result<std::vector<std::string>> DeleteSnapshots(const std::vector<std::string>& names);
  // Oldest first, with space figures.
  Result<std::vector<SnapshotInfo>> ListSnapshots();
  // Starts (or restarts) a free-space scan; returns the status right after.
  Result<ScanStatus> StartScan();
  Result<ScanStatus> GetScanStatus();
  // Makes everything the daemon has received durable. (It cannot flush the
  // kernel's write-back cache: call syncfs(2) on the mount point first.)
  Status Sync();
  // Makes the live tree equal to snapshot `name` (docs/restore.md); with
  // dry_run, only reports what would change. Blocks until done; GetStatus()
  // from another thread shows its progress.
  Result<RestoreResult> Restore(const std::string& name, bool dry_run);

  // Streams snapshot `name` (incremental from `base`, "" = full) into
  // `sink`, piece by piece, on a connection of its own. `on_size` learns the
  // exact stream size first. A sink error ends the send (the daemon stops)
  // and is returned. While it runs, the daemon refuses to delete either
  // snapshot (kBusy). Root or the volume owner only.
  Result<SendStats> Send(const std::string& name, const std::string& base,
                         const std::function<Status(std::string_view)>& sink,
                         const std::function<void(uint64_t)>& on_size = {});
  // Sends the stream that `source` yields (bytes read into the buffer; 0 at
  // its end) to the daemon, which makes it a snapshot (FileSystem::Receive:
  // all or nothing). `name` "" keeps the stream's name; `force` discards
  // changes made since the base. A source error abandons the receive (the
  // volume is unchanged) and is returned.
  Result<ReceiveResult> Receive(const std::string& name, bool force,
                                const std::function<Result<size_t>(char*, size_t)>& source);

  // One request/reply (adds "v"). The reply's error, if any, becomes the
  // Status. Safe for idempotent requests to be retried once on a fresh
  // connection when a pooled one turns out closed; `idempotent` says so.
  // A `query` waits for its reply at most ClientOptions::query_timeout.
  Result<Json> Call(Json request, bool idempotent, bool query = false);

 private:
  struct Idle {
    int fd;
    std::chrono::steady_clock::time_point since;
  };
  Client(MountEntry entry, ClientOptions opts) : entry_(std::move(entry)), opts_(opts) {}
  // A new connection to the daemon (checks the server's credentials).
  Result<int> Dial();
  Status Hello();
  int TakeIdle();  // -1 if none
  void GiveBack(int fd);

  const MountEntry entry_;
  const ClientOptions opts_;
  int version_ = ctl::kProtocolVersion;
  bool may_modify_ = false;
  bool may_have_writers_ = true;
  std::mutex mu_;
  std::vector<Idle> idle_;  // GUARDED_BY(mu_)
};

}  // namespace psm
