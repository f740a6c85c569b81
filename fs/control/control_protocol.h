// The control protocol between psmfs (fs/control/control_server.h) and its clients
// (cli/client.h): framing, request and response shapes, the runtime
// directory and the mount registry. docs/control-protocol.md is the
// reference for people writing other clients; keep it in step.
//
// Wire format (STORED in the sense that old clients talk to new daemons):
//   frame   = u32 little-endian payload length, then the payload
//   payload = one JSON object (fs/json/control_json.h), at most kMaxFrameBytes
//   request = {"v": <client protocol version>, "op": "<name>", ...arguments}
//   reply   = {"v": <server version>, "ok": true, ...fields}
//           | {"v": ..., "ok": false, "error": {"code": <psm::Code as int>,
//                                               "name": "<code name>",
//                                               "message": "<for humans>"}}
// A connection carries any number of request/reply pairs, strictly in turn.
// The error "name" is authoritative; "code" is for convenience.
//
// Names on disk (every one carries the volume UUID and what it is for, so
// that servers and clients of different volumes never share a name):
//   <runtime>/<uuid>.ctl.sock           the socket
//   <runtime>/<uuid>.ctl.sock.tmp-<pid> the socket while it is set up
//   <runtime>/<uuid>.ctl.lock           flock()ed by the serving daemon
//   <runtime>/<uuid>.mount              the registry entry (key=value lines)
//   <runtime>/<uuid>.mount.tmp-<pid>    the registry entry while written
//
// Header-only on purpose: the server lives in psm_fs, the client library in
// psm_client (which links only psm_meta); both include this.
//
// Thread safety: functions only; the fd helpers are safe on distinct fds.
#pragma once

#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fs/json/control_json.h"
#include "fs/core/filesystem.h"
#include "fs/base/request_metrics.h"
#include "fs/space/scanner.h"
#include "meta/status.h"

namespace psm::ctl {

// Version 1: the requests below. A server answers requests whose "v" lies in
// [kMinProtocolVersion, kProtocolVersion]; a client sends its own version.
inline constexpr int kProtocolVersion = 1;
inline constexpr int kMinProtocolVersion = 1;
// Largest payload either side accepts. A snapshot list of ~5000 entries fits.
inline constexpr uint32_t kMaxFrameBytes = 4u << 20;

// The psmfs release this code belongs to (keep in step with project(VERSION)
// in the top CMakeLists.txt).
inline constexpr std::string_view kSoftwareVersion = "0.1.0";

// Request names ("op").
inline constexpr std::string_view kOpHello = "hello";
inline constexpr std::string_view kOpStatus = "status";
inline constexpr std::string_view kOpSnapshotCreate = "snapshot.create";
inline constexpr std::string_view kOpSnapshotDelete = "snapshot.delete";
inline constexpr std::string_view kOpSnapshotList = "snapshot.list";
inline constexpr std::string_view kOpScanStart = "scan.start";
inline constexpr std::string_view kOpScanStatus = "scan.status";
inline constexpr std::string_view kOpSync = "sync";
// {"op":"scrub","action":"start"|"stop"|"status","rate_mb_s":N,"rewrite":B} ->
// {"scrub": ScrubStatus} (docs/integrity.md).
inline constexpr std::string_view kOpScrub = "scrub";
// {"op":"mirror","action":"attach"|"detach"|"status","path":P,"force":B} ->
// {"mirror": MirrorInfo} (docs/integrity.md, "Mirror"). Owner or root.
inline constexpr std::string_view kOpMirror = "mirror";
inline constexpr std::string_view kOpRestore = "restore";
// Figures for monitoring (psmctl metrics, docs/monitoring.md); open to all.
inline constexpr std::string_view kOpMetrics = "metrics";
// Streams (docs/control-protocol.md, "Streams"): after the request the
// connection carries the stream as binary frames, ended by an empty frame,
// then one final reply; the connection is closed afterwards.
inline constexpr std::string_view kOpSend = "send";
inline constexpr std::string_view kOpReceive = "receive";
// Payload bytes of one stream data frame at most.
inline constexpr size_t kStreamFrameBytes = 1u << 20;

// ---------------------------------------------------------------- frames

inline std::string EncodeFrame(std::string_view payload) {
  std::string out;
  uint32_t n = static_cast<uint32_t>(payload.size());
  out.reserve(4 + payload.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out.append(payload);
  return out;
}

inline uint32_t DecodeFrameLength(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Incremental decoding of a stream buffer. On a complete frame: ok, the
// payload in *payload and *consumed = its size including the header. When
// more bytes are needed: ok and *consumed = 0. A length above
// kMaxFrameBytes: kInvalid (the stream cannot be resynchronised).
inline Status DecodeFrame(std::string_view buf, std::string* payload, size_t* consumed) {
  *consumed = 0;
  if (buf.size() < 4) return Status::Ok();
  uint32_t n = DecodeFrameLength(reinterpret_cast<const unsigned char*>(buf.data()));
  if (n > kMaxFrameBytes) {
    return Status::Invalid("control frame of " + std::to_string(n) +
                           " bytes exceeds the limit of " + std::to_string(kMaxFrameBytes));
  }
  if (buf.size() - 4 < n) return Status::Ok();
  payload->assign(buf.substr(4, n));
  *consumed = size_t{4} + n;
  return Status::Ok();
}

// Decodes a buffer that must hold exactly one whole frame: a short buffer is
// a truncated frame (kInvalid), extra bytes are an error too.
inline Result<std::string> DecodeWholeFrame(std::string_view buf) {
  std::string payload;
  size_t consumed = 0;
  PSM_RETURN_IF_ERROR(DecodeFrame(buf, &payload, &consumed));
  if (consumed == 0) {
    return Status::Invalid("truncated control frame (" + std::to_string(buf.size()) + " bytes)");
  }
  if (consumed != buf.size()) return Status::Invalid("trailing bytes after control frame");
  return payload;
}

// Sends one frame on a socket (MSG_NOSIGNAL: a closed peer is an error, not
// a SIGPIPE).
inline Status WriteFrame(int fd, std::string_view payload) {
  if (payload.size() > kMaxFrameBytes) {
    return Status::Invalid("control frame of " + std::to_string(payload.size()) +
                           " bytes exceeds the limit");
  }
  std::string frame = EncodeFrame(payload);
  size_t off = 0;
  while (off < frame.size()) {
    ssize_t w = ::send(fd, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return Status::Busy("control socket: send timed out");
      return Status::FromErrno(errno, "control socket: send");
    }
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Reads exactly n bytes. *got = bytes read before EOF.
inline Status ReadFull(int fd, char* buf, size_t n, size_t* got) {
  *got = 0;
  while (*got < n) {
    ssize_t r = ::recv(fd, buf + *got, n - *got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return Status::Busy("control socket: receive timed out");
      return Status::FromErrno(errno, "control socket: receive");
    }
    if (r == 0) return Status::Ok();
    *got += static_cast<size_t>(r);
  }
  return Status::Ok();
}

// Reads one frame. A peer that closed cleanly between frames: ok and
// *eof = true. A peer that closed inside a frame: kIOError "truncated".
inline Status ReadFrame(int fd, std::string* payload, bool* eof) {
  *eof = false;
  unsigned char hdr[4];
  size_t got = 0;
  PSM_RETURN_IF_ERROR(ReadFull(fd, reinterpret_cast<char*>(hdr), 4, &got));
  if (got == 0) {
    *eof = true;
    return Status::Ok();
  }
  if (got < 4)
    return Status::IOError("truncated control frame: connection closed inside the header");
  uint32_t n = DecodeFrameLength(hdr);
  if (n > kMaxFrameBytes) {
    return Status::Invalid("control frame of " + std::to_string(n) +
                           " bytes exceeds the limit of " + std::to_string(kMaxFrameBytes));
  }
  payload->resize(n);
  PSM_RETURN_IF_ERROR(ReadFull(fd, payload->data(), n, &got));
  if (got < n) {
    return Status::IOError("truncated control frame: connection closed after " +
                           std::to_string(got) + " of " + std::to_string(n) + " bytes");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- codes

// Stable names of psm::Code on the wire.
inline const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not_found";
    case Code::kExists:
      return "exists";
    case Code::kNotEmpty:
      return "not_empty";
    case Code::kNotDir:
      return "not_dir";
    case Code::kIsDir:
      return "is_dir";
    case Code::kNoSpace:
      return "no_space";
    case Code::kReadOnly:
      return "read_only";
    case Code::kCorruption:
      return "corruption";
    case Code::kIOError:
      return "io_error";
    case Code::kBusy:
      return "busy";
    case Code::kInvalid:
      return "invalid";
    case Code::kPermission:
      return "permission";
    case Code::kAccess:
      return "access";
    case Code::kNameTooLong:
      return "name_too_long";
    case Code::kNoAttr:
      return "no_attr";
    case Code::kRange:
      return "range";
    case Code::kNotSupported:
      return "not_supported";
    case Code::kTooBig:
      return "too_big";
    case Code::kTooManyLinks:
      return "too_many_links";
    case Code::kCrossDevice:
      return "cross_device";
    case Code::kStale:
      return "stale";
    case Code::kBadFd:
      return "bad_fd";
    case Code::kNoData:
      return "no_data";
  }
  return "io_error";
}

// The highest code value. When psm::Code grows, -Wswitch flags the two
// switches above; extend them and this.
inline constexpr int kLastCode = static_cast<int>(Code::kNoData);

// Builds a Status from a code (Status::FromCode; kept for the clients that
// call it by this name).
inline Status MakeStatus(Code c, std::string m) { return Status::FromCode(c, std::move(m)); }

// The code named `name`; else the int `code` if in range; else kIOError.
inline Code CodeFromWire(std::string_view name, int64_t code) {
  for (int i = 0; i <= kLastCode; ++i) {
    if (name == CodeName(static_cast<Code>(i))) return static_cast<Code>(i);
  }
  if (code > 0 && code <= kLastCode) return static_cast<Code>(code);
  return Code::kIOError;
}

// ---------------------------------------------------------------- messages

inline Json Request(std::string_view op) {
  Json j = Json::Object();
  j.Set("v", kProtocolVersion).Set("op", op);
  return j;
}

inline Json OkReply() {
  Json j = Json::Object();
  j.Set("v", kProtocolVersion).Set("ok", true);
  return j;
}

inline Json ErrorReply(const Status& st) {
  Json err = Json::Object();
  err.Set("code", static_cast<int>(st.code()))
      .Set("name", CodeName(st.code()))
      .Set("message", st.message());
  Json j = Json::Object();
  j.Set("v", kProtocolVersion).Set("ok", false).Set("error", std::move(err));
  return j;
}

// The Status a reply carries: ok, or the error it describes.
inline Status ReplyStatus(const Json& reply) {
  if (!reply.is_object()) return Status::IOError("control reply is not a JSON object");
  if (reply.GetBool("ok")) return Status::Ok();
  const Json* err = reply.Find("error");
  if (err == nullptr || !err->is_object())
    return Status::IOError("control reply without ok or error");
  Code c = CodeFromWire(err->GetString("name"), err->GetInt("code", -1));
  if (c == Code::kOk) c = Code::kIOError;
  return MakeStatus(c, err->GetString("message"));
}

inline Json ToJson(const SnapshotInfo& s) {
  Json j = Json::Object();
  j.Set("id", s.id)
      .Set("name", s.name)
      .Set("epoch", s.epoch)
      .Set("created_ns", s.ctime_ns)
      .Set("deleting", s.deleting)
      .Set("used_bytes", s.used_bytes)
      .Set("referenced_bytes", s.referenced_bytes);
  return j;
}

inline SnapshotInfo SnapshotFromJson(const Json& j) {
  SnapshotInfo s;
  s.id = j.GetUint("id");
  s.name = j.GetString("name");
  s.epoch = j.GetUint("epoch");
  s.ctime_ns = j.GetInt("created_ns");
  s.deleting = j.GetBool("deleting");
  s.used_bytes = j.GetUint("used_bytes");
  s.referenced_bytes = j.GetUint("referenced_bytes");
  return s;
}

inline Json ToJson(const MirrorInfo& m) {
  Json sides = Json::Array();
  for (const MirrorSideInfo& x : m.sides) {
    Json e = Json::Object();
    e.Set("path", x.path)
        .Set("health", x.health)
        .Set("reason", x.reason)
        .Set("read_errors", x.read_errors)
        .Set("write_errors", x.write_errors)
        .Set("checksum_errors", x.checksum_errors)
        .Set("repaired_blocks", x.repaired_blocks);
    sides.Push(std::move(e));
  }
  Json j = Json::Object();
  j.Set("mirrored", m.mirrored)
      .Set("degraded", m.degraded)
      .Set("resilvering", m.resilvering)
      .Set("resilver_done", m.resilver_done)
      .Set("resilver_total", m.resilver_total)
      .Set("stale", static_cast<int64_t>(m.stale))
      .Set("sides", std::move(sides));
  return j;
}

inline MirrorInfo MirrorFromJson(const Json& j) {
  MirrorInfo m;
  m.mirrored = j.GetBool("mirrored", false);
  m.degraded = j.GetBool("degraded", false);
  m.resilvering = j.GetBool("resilvering", false);
  m.resilver_done = j.GetUint("resilver_done");
  m.resilver_total = j.GetUint("resilver_total");
  m.stale = static_cast<int>(j.GetInt("stale", -1));
  if (const Json* a = j.Find("sides"); a != nullptr && a->is_array()) {
    size_t i = 0;
    for (const Json& e : a->items()) {
      if (i >= 2) break;
      MirrorSideInfo& x = m.sides[i++];
      x.path = e.GetString("path");
      x.health = e.GetString("health");
      x.reason = e.GetString("reason");
      x.read_errors = e.GetUint("read_errors");
      x.write_errors = e.GetUint("write_errors");
      x.checksum_errors = e.GetUint("checksum_errors");
      x.repaired_blocks = e.GetUint("repaired_blocks");
    }
  }
  return m;
}

inline Json ToJson(const VolumeStats& v) {
  Json j = Json::Object();
  j.Set("uuid", v.uuid)
      .Set("block_size", v.block_size)
      .Set("total_blocks", v.total_blocks)
      .Set("used_blocks", v.used_blocks)
      .Set("free_blocks", v.free_blocks)
      .Set("files", v.files)
      .Set("snapshots", v.snapshots)
      .Set("epoch", v.epoch)
      .Set("mount_generation", v.mount_generation)
      .Set("pending_reclaim", v.pending_reclaim)
      .Set("reclaiming", v.reclaiming)
      .Set("reclaim_entries_done", v.reclaim_entries_done)
      .Set("reclaim_blocks_freed", v.reclaim_blocks_freed)
      .Set("free_ranges", v.free_ranges)
      .Set("free_index_bytes", v.free_index_bytes)
      .Set("restoring", v.restoring)
      .Set("restore_done", v.restore_done)
      .Set("restore_total", v.restore_total)
      .Set("failure", v.failure)
      .Set("sync_cycles", v.sync_cycles)
      .Set("commits", v.commits)
      .Set("rss_bytes", v.rss_bytes)
      .Set("memory_budget_bytes", v.memory_budget_bytes)
      .Set("metadata_cache_bytes", v.metadata_cache_bytes)
      .Set("metadata_cache_used_bytes", v.metadata_cache_used_bytes)
      .Set("live_cache_bytes", v.live_cache_bytes)
      .Set("kernel_refs", v.kernel_refs)
      .Set("kernel_refs_bytes", v.kernel_refs_bytes)
      .Set("kernel_refs_cap", v.kernel_refs_cap)
      .Set("kernel_refs_shed", v.kernel_refs_shed)
      .Set("checksums", v.checksums)
      .Set("checksum_errors", v.checksum_errors)
      .Set("write_intent_regions", v.write_intent_regions)
      .Set("intent_recovered_blocks", v.intent_recovered_blocks)
      .Set("mirror", ToJson(v.mirror));
  return j;
}

inline Json ToJson(const ScrubStatus& s) {
  Json damage = Json::Array();
  for (const ScrubDamage& d : s.damage) {
    Json paths = Json::Array();
    for (const std::string& p : d.paths) paths.Push(p);
    Json e = Json::Object();
    e.Set("block", d.block).Set("paths", std::move(paths));
    damage.Push(std::move(e));
  }
  Json j = Json::Object();
  j.Set("state", s.state)
      .Set("cursor", s.cursor)
      .Set("end", s.end)
      .Set("checked_blocks", s.checked_blocks)
      .Set("unverified_blocks", s.unverified_blocks)
      .Set("damaged_blocks", s.damaged_blocks)
      .Set("repaired_blocks", s.repaired_blocks)
      .Set("rewrite", s.rewrite)
      .Set("rewritten_blocks", s.rewritten_blocks)
      .Set("started_ns", s.started_ns)
      .Set("finished_ns", s.finished_ns)
      .Set("rate_mb_s", s.rate_mb_s)
      .Set("damage", std::move(damage));
  return j;
}

inline ScrubStatus ScrubFromJson(const Json& j) {
  ScrubStatus s;
  s.state = j.GetString("state");
  s.cursor = j.GetUint("cursor");
  s.end = j.GetUint("end");
  s.checked_blocks = j.GetUint("checked_blocks");
  s.unverified_blocks = j.GetUint("unverified_blocks");
  s.damaged_blocks = j.GetUint("damaged_blocks");
  s.repaired_blocks = j.GetUint("repaired_blocks");
  s.rewrite = j.GetBool("rewrite", false);
  s.rewritten_blocks = j.GetUint("rewritten_blocks");
  s.started_ns = j.GetInt("started_ns");
  s.finished_ns = j.GetInt("finished_ns");
  s.rate_mb_s = j.GetDouble("rate_mb_s");
  if (const Json* d = j.Find("damage"); d != nullptr && d->is_array()) {
    for (const Json& e : d->items()) {
      ScrubDamage x;
      x.block = e.GetUint("block");
      if (const Json* p = e.Find("paths"); p != nullptr && p->is_array()) {
        for (const Json& q : p->items()) {
          if (q.is_string()) x.paths.push_back(q.AsString());
        }
      }
      s.damage.push_back(std::move(x));
    }
  }
  return s;
}

inline VolumeStats StatsFromJson(const Json& j) {
  VolumeStats v;
  v.uuid = j.GetString("uuid");
  v.block_size = static_cast<uint32_t>(j.GetUint("block_size"));
  v.total_blocks = j.GetUint("total_blocks");
  v.used_blocks = j.GetUint("used_blocks");
  v.free_blocks = j.GetUint("free_blocks");
  v.files = j.GetUint("files");
  v.snapshots = j.GetUint("snapshots");
  v.epoch = j.GetUint("epoch");
  v.mount_generation = j.GetUint("mount_generation");
  v.pending_reclaim = j.GetUint("pending_reclaim");
  v.reclaiming = j.GetString("reclaiming");
  v.reclaim_entries_done = j.GetUint("reclaim_entries_done");
  v.reclaim_blocks_freed = j.GetUint("reclaim_blocks_freed");
  v.free_ranges = j.GetUint("free_ranges");
  v.free_index_bytes = j.GetUint("free_index_bytes");
  v.restoring = j.GetString("restoring");
  v.restore_done = j.GetUint("restore_done");
  v.restore_total = j.GetUint("restore_total");
  v.failure = j.GetString("failure");
  v.sync_cycles = j.GetUint("sync_cycles");
  v.commits = j.GetUint("commits");
  v.rss_bytes = j.GetUint("rss_bytes");
  v.memory_budget_bytes = j.GetUint("memory_budget_bytes");
  v.metadata_cache_bytes = j.GetUint("metadata_cache_bytes");
  v.metadata_cache_used_bytes = j.GetUint("metadata_cache_used_bytes");
  v.live_cache_bytes = j.GetUint("live_cache_bytes");
  v.kernel_refs = j.GetUint("kernel_refs");
  v.kernel_refs_bytes = j.GetUint("kernel_refs_bytes");
  v.kernel_refs_cap = j.GetUint("kernel_refs_cap");
  v.kernel_refs_shed = j.GetUint("kernel_refs_shed");
  v.checksums = j.GetBool("checksums", false);
  v.checksum_errors = j.GetUint("checksum_errors");
  v.write_intent_regions = j.GetUint("write_intent_regions");
  v.intent_recovered_blocks = j.GetUint("intent_recovered_blocks");
  if (const Json* m = j.Find("mirror"); m != nullptr && m->is_object()) v.mirror = MirrorFromJson(*m);
  return v;
}

inline Json ToJson(const RestoreResult& r) {
  Json j = Json::Object();
  j.Set("snapshot", r.snapshot)
      .Set("dry_run", r.dry_run)
      .Set("inodes_examined", r.inodes_examined)
      .Set("created", r.created)
      .Set("changed", r.changed)
      .Set("removed", r.removed)
      .Set("entries_changed", r.entries_changed)
      .Set("bytes_restored", r.bytes_restored)
      .Set("bytes_discarded", r.bytes_discarded)
      .Set("dead_entries_read", r.dead_entries_read)
      .Set("seconds", r.seconds);
  return j;
}

inline RestoreResult RestoreFromJson(const Json& j) {
  RestoreResult r;
  r.snapshot = j.GetString("snapshot");
  r.dry_run = j.GetBool("dry_run");
  r.inodes_examined = j.GetUint("inodes_examined");
  r.created = j.GetUint("created");
  r.changed = j.GetUint("changed");
  r.removed = j.GetUint("removed");
  r.entries_changed = j.GetUint("entries_changed");
  r.bytes_restored = j.GetUint("bytes_restored");
  r.bytes_discarded = j.GetUint("bytes_discarded");
  r.dead_entries_read = j.GetUint("dead_entries_read");
  r.seconds = j.GetDouble("seconds");
  return r;
}

inline Json ToJson(const SendStats& s) {
  Json j = Json::Object();
  j.Set("snapshot", s.snapshot)
      .Set("base", s.base)
      .Set("guid", s.guid)
      .Set("bytes", s.bytes)
      .Set("records", s.records)
      .Set("data_bytes", s.data_bytes)
      .Set("inodes", s.inodes)
      .Set("dead_entries_read", s.dead_entries_read)
      .Set("seconds", s.seconds);
  return j;
}

inline SendStats SendStatsFromJson(const Json& j) {
  SendStats s;
  s.snapshot = j.GetString("snapshot");
  s.base = j.GetString("base");
  s.guid = j.GetString("guid");
  s.bytes = j.GetUint("bytes");
  s.records = j.GetUint("records");
  s.data_bytes = j.GetUint("data_bytes");
  s.inodes = j.GetUint("inodes");
  s.dead_entries_read = j.GetUint("dead_entries_read");
  s.seconds = j.GetDouble("seconds");
  return s;
}

inline Json ToJson(const ReceiveResult& r) {
  Json j = Json::Object();
  j.Set("snapshot", r.snapshot)
      .Set("base", r.base)
      .Set("guid", r.guid)
      .Set("incremental", r.incremental)
      .Set("bytes", r.bytes)
      .Set("records", r.records)
      .Set("data_bytes", r.data_bytes)
      .Set("inodes", r.inodes)
      .Set("discarded", r.discarded)
      .Set("seconds", r.seconds);
  return j;
}

inline ReceiveResult ReceiveFromJson(const Json& j) {
  ReceiveResult r;
  r.snapshot = j.GetString("snapshot");
  r.base = j.GetString("base");
  r.guid = j.GetString("guid");
  r.incremental = j.GetBool("incremental");
  r.bytes = j.GetUint("bytes");
  r.records = j.GetUint("records");
  r.data_bytes = j.GetUint("data_bytes");
  r.inodes = j.GetUint("inodes");
  r.discarded = j.GetUint("discarded");
  r.seconds = j.GetDouble("seconds");
  return r;
}

inline Json ToJson(const ScanStatus& s) {
  Json j = Json::Object();
  j.Set("running", s.running)
      .Set("reason", s.reason)
      .Set("percent", s.percent)
      .Set("cursor", s.cursor)
      .Set("ranges_per_sec", s.ranges_per_sec)
      .Set("eta_sec", s.eta_sec)
      .Set("ranges_scanned", s.ranges_scanned)
      .Set("free_blocks_found", s.free_blocks_found)
      .Set("scans_completed", s.scans_completed)
      .Set("started_ns", s.started_ns)
      .Set("finished_ns", s.finished_ns)
      .Set("last_duration_sec", s.last_duration_sec)
      .Set("last_error", s.last_error);
  return j;
}

inline ScanStatus ScanFromJson(const Json& j) {
  ScanStatus s;
  s.running = j.GetBool("running");
  s.reason = j.GetString("reason");
  s.percent = j.GetDouble("percent");
  s.cursor = j.GetUint("cursor");
  s.ranges_per_sec = j.GetDouble("ranges_per_sec");
  s.eta_sec = j.GetDouble("eta_sec");
  s.ranges_scanned = j.GetUint("ranges_scanned");
  s.free_blocks_found = j.GetUint("free_blocks_found");
  s.scans_completed = j.GetUint("scans_completed");
  s.started_ns = j.GetInt("started_ns");
  s.finished_ns = j.GetInt("finished_ns");
  s.last_duration_sec = j.GetDouble("last_duration_sec");
  s.last_error = j.GetString("last_error");
  return s;
}

inline Json ToJson(const RequestFigures& f) {
  Json bounds = Json::Array();
  for (uint64_t b : f.bounds_ns) bounds.Push(b);
  Json ops = Json::Array();
  for (const RequestOpFigures& o : f.ops) {
    Json buckets = Json::Array();
    for (uint64_t n : o.buckets) buckets.Push(n);
    Json j = Json::Object();
    j.Set("op", o.op).Set("count", o.count).Set("sum_ns", o.sum_ns).Set("buckets", std::move(buckets));
    ops.Push(std::move(j));
  }
  Json j = Json::Object();
  j.Set("bounds_ns", std::move(bounds)).Set("ops", std::move(ops));
  return j;
}

// Checks the shape (one bucket more than bounds, per operation); kInvalid
// otherwise: a histogram rendered from a malformed reply would lie.
inline Result<RequestFigures> RequestsFromJson(const Json& j) {
  RequestFigures f;
  const Json* bounds = j.Find("bounds_ns");
  const Json* ops = j.Find("ops");
  if (bounds == nullptr || !bounds->is_array() || ops == nullptr || !ops->is_array()) {
    return Status::Invalid("metrics reply: requests lack bounds_ns or ops");
  }
  for (const Json& b : bounds->items()) f.bounds_ns.push_back(b.AsUint());
  for (size_t i = 1; i < f.bounds_ns.size(); ++i) {
    if (f.bounds_ns[i] <= f.bounds_ns[i - 1]) {
      return Status::Invalid("metrics reply: latency bounds not ascending");
    }
  }
  for (const Json& o : ops->items()) {
    RequestOpFigures r;
    r.op = o.GetString("op");
    r.count = o.GetUint("count");
    r.sum_ns = o.GetUint("sum_ns");
    const Json* buckets = o.Find("buckets");
    if (r.op.empty() || buckets == nullptr || !buckets->is_array() ||
        buckets->items().size() != f.bounds_ns.size() + 1) {
      return Status::Invalid("metrics reply: malformed figures of request '" + r.op + "'");
    }
    for (const Json& n : buckets->items()) r.buckets.push_back(n.AsUint());
    f.ops.push_back(std::move(r));
  }
  return f;
}

// Figures RocksDB did not report are left out (absent, not zero).
inline Json ToJson(const StoreMemoryStats& m) {
  Json j = Json::Object();
  if (m.memtable_bytes) j.Set("memtable_bytes", *m.memtable_bytes);
  if (m.table_readers_bytes) j.Set("table_readers_bytes", *m.table_readers_bytes);
  return j;
}

inline StoreMemoryStats StoreMemoryFromJson(const Json& j) {
  StoreMemoryStats m;
  auto get = [&](const char* key, std::optional<uint64_t>* out) {
    if (const Json* v = j.Find(key); v != nullptr && v->is_number()) *out = v->AsUint();
  };
  get("memtable_bytes", &m.memtable_bytes);
  get("table_readers_bytes", &m.table_readers_bytes);
  return m;
}

// ---------------------------------------------------------------- names

// Where a daemon puts its socket and registry entry: $PSMFS_RUNTIME_DIR if
// set, else /run/psmfs for root, else ${XDG_RUNTIME_DIR:-/tmp}/psmfs-<uid>.
inline std::string ServerRuntimeDir() {
  if (const char* e = std::getenv("PSMFS_RUNTIME_DIR"); e && *e) return e;
  if (::geteuid() == 0) return "/run/psmfs";
  const char* x = std::getenv("XDG_RUNTIME_DIR");
  std::string base = (x && *x) ? x : "/tmp";
  return base + "/psmfs-" + std::to_string(::geteuid());
}

// Where a client looks for registry entries, in order: $PSMFS_RUNTIME_DIR
// alone if set; else /run/psmfs, ${XDG_RUNTIME_DIR}/psmfs-<uid>,
// /tmp/psmfs-<uid>, and for root also every /tmp/psmfs-* and
// /run/user/*/psmfs-* (daemons run by other users).
inline std::vector<std::string> ClientRuntimeDirs() {
  if (const char* e = std::getenv("PSMFS_RUNTIME_DIR"); e && *e) return {e};
  std::vector<std::string> dirs{"/run/psmfs"};
  std::string me = "psmfs-" + std::to_string(::geteuid());
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x)
    dirs.push_back(std::string(x) + "/" + me);
  dirs.push_back("/tmp/" + me);
  if (::geteuid() == 0) {
    auto add_matching = [&](const std::string& parent, const std::string& sub) {
      DIR* d = ::opendir(parent.c_str());
      if (d == nullptr) return;
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        std::string p = parent + "/" + n;
        if (sub.empty()) {
          if (n.rfind("psmfs-", 0) == 0) dirs.push_back(p);
        } else {
          // /run/user/<uid>/psmfs-<uid>
          dirs.push_back(p + "/psmfs-" + n);
        }
      }
      ::closedir(d);
    };
    add_matching("/tmp", "");
    add_matching("/run/user", "user");
  }
  // Drop duplicates, keep the order.
  std::vector<std::string> out;
  for (auto& d : dirs) {
    bool seen = false;
    for (auto& o : out) seen = seen || o == d;
    if (!seen) out.push_back(std::move(d));
  }
  return out;
}

inline std::string SocketPath(const std::string& dir, const std::string& uuid) {
  return dir + "/" + uuid + ".ctl.sock";
}
inline std::string LockPath(const std::string& dir, const std::string& uuid) {
  return dir + "/" + uuid + ".ctl.lock";
}
inline std::string RegistryPath(const std::string& dir, const std::string& uuid) {
  return dir + "/" + uuid + ".mount";
}

// ---------------------------------------------------------------- registry

// One mounted volume, as its registry file describes it.
struct MountEntry {
  std::string uuid;
  std::string volume;      // realpath of the volume directory
  std::string mountpoint;  // realpath of the mount point ("" when not mounted via FUSE)
  int64_t pid = 0;
  std::string socket;
  std::string host;
  std::string since;  // RFC 3339, UTC
  int protocol = 0;
  std::string path;  // the registry file itself (not stored)
  uid_t owner = 0;   // owner of the registry file (not stored)
};

inline std::string EncodeRegistry(const MountEntry& e) {
  std::string s;
  auto line = [&](const char* k, const std::string& v) {
    s.append(k).append("=").append(v).append("\n");
  };
  line("uuid", e.uuid);
  line("volume", e.volume);
  line("mountpoint", e.mountpoint);
  line("pid", std::to_string(e.pid));
  line("socket", e.socket);
  line("host", e.host);
  line("since", e.since);
  line("protocol", std::to_string(e.protocol));
  return s;
}

// Parses key=value lines; unknown keys are ignored (newer daemons may add
// some). Requires uuid and socket.
inline Result<MountEntry> ParseRegistry(std::string_view text) {
  MountEntry e;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view k = line.substr(0, eq);
    std::string v(line.substr(eq + 1));
    if (k == "uuid")
      e.uuid = v;
    else if (k == "volume")
      e.volume = v;
    else if (k == "mountpoint")
      e.mountpoint = v;
    else if (k == "pid")
      e.pid = std::atoll(v.c_str());
    else if (k == "socket")
      e.socket = v;
    else if (k == "host")
      e.host = v;
    else if (k == "since")
      e.since = v;
    else if (k == "protocol")
      e.protocol = std::atoi(v.c_str());
  }
  if (e.uuid.empty() || e.socket.empty())
    return Status::Invalid("registry entry lacks uuid or socket");
  return e;
}

}  // namespace psm::ctl
