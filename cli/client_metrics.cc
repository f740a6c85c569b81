// Client::GetMetrics and the Prometheus rendering of its figures
// (cli/prometheus.h, docs/monitoring.md).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <utility>

#include "cli/client.h"
#include "cli/prometheus.h"

namespace psm {

Result<VolumeMetrics> Client::GetMetrics(bool snapshot_space) {
  Json req = ctl::Request(ctl::kOpMetrics);
  req.Set("space", snapshot_space);
  Result<Json> reply = Call(std::move(req), true);
  if (!reply.ok()) {
    if (reply.status().Is(Code::kNotSupported)) {
      return Status::NotSupported(
          "the daemon serving " + entry_.volume + " (pid " + std::to_string(entry_.pid) +
          ") does not serve metrics: it is older than this psmctl (" + reply.status().message() +
          "); mount the volume again with the new psmfs");
    }
    return reply.status();
  }
  const Json& r = reply.value();
  VolumeMetrics m;
  m.uuid = r.GetString("uuid");
  m.volume = r.GetString("volume");
  m.mountpoint = r.GetString("mountpoint");
  m.pid = r.GetInt("pid");
  m.since = r.GetString("since");
  m.since_ns = r.GetInt("since_ns");
  const Json* stats = r.Find("stats");
  const Json* scan = r.Find("scan");
  if (m.uuid.empty() || stats == nullptr || scan == nullptr) {
    return Status::IOError("metrics reply without uuid, stats or scan");
  }
  m.stats = ctl::StatsFromJson(*stats);
  m.scan = ctl::ScanFromJson(*scan);
  if (const Json* sc = r.Find("scrub")) m.scrub = ctl::ScrubFromJson(*sc);
  m.snapshot_space = r.GetBool("space");
  if (const Json* l = r.Find("snapshots")) {
    for (const Json& s : l->items()) m.snapshots.push_back(ctl::SnapshotFromJson(s));
  }
  if (const Json* mem = r.Find("memory")) {
    if (const Json* store = mem->Find("store")) m.store_memory = ctl::StoreMemoryFromJson(*store);
    m.live_cache_chunk_maps = mem->GetUint("live_cache_chunk_maps");
  }
  if (const Json* req_figs = r.Find("requests")) {
    PSM_ASSIGN_OR_RETURN(RequestFigures f, ctl::RequestsFromJson(*req_figs));
    m.requests = std::move(f);
  }
  return m;
}

namespace {

// Appends the UTF-8 sequence starting at s[i] if it is valid (shortest
// form, no surrogates, at most U+10FFFF) and returns its length; else 0.
size_t ValidUtf8(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

std::string Number(uint64_t v) { return std::to_string(v); }

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

double Seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

struct Family {
  std::string name;
  std::string type;
  std::string help;
  std::string samples;
};

// Collects samples by family so that each family is written once, with its
// HELP and TYPE first, however many volumes contribute to it.
class Exposition {
 public:
  // `labels` is the inside of the braces ("" for none); `suffix` is
  // appended to the family name (histograms: _bucket, _sum, _count).
  void Add(const char* name, const char* type, const char* help, std::string_view suffix,
           const std::string& labels, const std::string& value) {
    Family* f = nullptr;
    for (Family& g : families_) {
      if (g.name == name) f = &g;
    }
    if (f == nullptr) f = &families_.emplace_back(Family{name, type, help, {}});
    f->samples.append(name).append(suffix);
    if (!labels.empty()) f->samples.append("{").append(labels).append("}");
    f->samples.append(" ").append(value).append("\n");
  }
  void Comment(std::string line) { comments_ += "# " + line + "\n"; }

  std::string Text() const {
    std::string out = comments_;
    for (const Family& f : families_) {
      out += "# HELP " + f.name + " " + f.help + "\n";
      out += "# TYPE " + f.name + " " + f.type + "\n";
      out += f.samples;
    }
    return out;
  }

 private:
  std::vector<Family> families_;
  std::string comments_;
};

std::string Label(std::string_view name, std::string_view raw) {
  return std::string(name) + "=\"" + PrometheusLabelValue(raw) + "\"";
}

void RenderVolume(const MetricsTarget& t, Exposition* x) {
  const std::string base = Label("volume", t.uuid) + "," + Label("mountpoint", t.mountpoint);
  auto gauge = [&](const char* name, const char* help, const std::string& value,
                   const std::string& extra = {}) {
    x->Add(name, "gauge", help, "", extra.empty() ? base : base + "," + extra, value);
  };
  auto counter = [&](const char* name, const char* help, uint64_t value,
                     const std::string& extra = {}) {
    x->Add(name, "counter", help, "", extra.empty() ? base : base + "," + extra, Number(value));
  };
  gauge("psmfs_up",
        "1 when the daemon serving the volume answered, 0 when it is mounted but did not.",
        t.metrics ? "1" : "0");
  if (!t.metrics) return;
  const VolumeMetrics& m = *t.metrics;
  const VolumeStats& s = m.stats;
  const uint64_t bs = s.block_size;

  gauge("psmfs_volume_info", "The volume's directory (label volume_dir); always 1.", "1",
        Label("volume_dir", m.volume));
  gauge("psmfs_daemon_start_time_seconds",
        "When the daemon started serving the volume, seconds since the epoch.",
        Number(Seconds(static_cast<uint64_t>(std::max<int64_t>(m.since_ns, 0)))));

  // Space and files.
  gauge("psmfs_block_size_bytes", "Block size of the volume.", Number(uint64_t{bs}));
  gauge("psmfs_size_bytes", "Data space of the volume (the image minus its superblock).",
        Number(s.total_blocks * bs));
  gauge("psmfs_used_bytes", "Space held by the live tree and the snapshots.",
        Number(s.used_blocks * bs));
  gauge("psmfs_free_bytes",
        "Free space; while a free-space scan runs, the free space found so far.",
        Number(s.free_blocks * bs));
  gauge("psmfs_files", "Files, directories and other inodes in the live tree.", Number(s.files));

  // Snapshots.
  gauge("psmfs_snapshots", "Snapshots (not counting those being deleted).", Number(s.snapshots));
  std::set<std::string> seen;
  for (const SnapshotInfo& snap : m.snapshots) {
    if (snap.deleting) continue;
    const std::string label = Label("snapshot", snap.name);
    if (!seen.insert(label).second) {
      // Two names that differ only in bytes that are not UTF-8: one series.
      x->Comment("psmfs: volume " + t.uuid + ": snapshot " + label +
                 " left out: its name is the same as another's once made UTF-8");
      continue;
    }
    gauge("psmfs_snapshot_created_timestamp_seconds",
          "When the snapshot was taken, seconds since the epoch.",
          Number(static_cast<double>(snap.ctime_ns) / 1e9), label);
    if (m.snapshot_space) {
      gauge("psmfs_snapshot_used_bytes",
            "Space that deleting only this snapshot would free (data only it still sees).",
            Number(snap.used_bytes), label);
      gauge("psmfs_snapshot_referenced_bytes", "Data the snapshot's tree references.",
            Number(snap.referenced_bytes), label);
    }
  }

  // The free-space scan.
  gauge("psmfs_scan_running", "1 while a free-space scan runs.", m.scan.running ? "1" : "0");
  gauge("psmfs_scan_progress_ratio", "Progress of the running (or last) free-space scan, 0 to 1.",
        Number(m.scan.percent / 100.0));
  counter("psmfs_scans_completed_total", "Free-space scans completed since the mount.",
          m.scan.scans_completed);
  gauge("psmfs_scan_last_duration_seconds", "Duration of the last completed free-space scan.",
        Number(m.scan.last_duration_sec));
  gauge("psmfs_scan_retrying", "1 while the scanner retries a step that failed.",
        m.scan.last_error.empty() ? "0" : "1");

  // Snapshot space reclaim.
  gauge("psmfs_reclaim_pending_snapshots", "Deleted snapshots whose space is not reclaimed yet.",
        Number(s.pending_reclaim));
  gauge("psmfs_reclaim_running", "1 while a deleted snapshot's space is being reclaimed.",
        s.reclaiming.empty() ? "0" : "1");
  gauge("psmfs_reclaim_dead_entries_done",
        "Dead-index entries the running reclaim has processed (0 when none runs).",
        Number(s.reclaim_entries_done));
  gauge("psmfs_reclaim_freed_bytes", "Space the running reclaim has freed (0 when none runs).",
        Number(s.reclaim_blocks_freed * bs));

  // Restore.
  gauge("psmfs_restore_running", "1 while the volume is being restored to a snapshot.",
        s.restoring.empty() ? "0" : "1");
  gauge("psmfs_restore_inodes_compared",
        "Inodes the running restore has compared so far (0 when none runs).",
        Number(s.restore_done));
  gauge("psmfs_restore_inodes_to_compare",
        "Inodes the running restore knows it must compare so far (0 when none runs).",
        Number(s.restore_total));

  // Sync failures.
  gauge("psmfs_volume_failed",
        "1 after a failed sync of the image or metadata log: writes and fsync fail with EIO "
        "until the volume is mounted again.",
        s.failure.empty() ? "0" : "1");
  counter("psmfs_sync_cycles_total", "Group-commit sync cycles since the mount.", s.sync_cycles);
  // Left out on a volume without checksums: a zero would claim the data
  // was checked.
  if (s.checksums) {
    counter("psmfs_checksum_errors_total",
            "Reads of a data block that failed its checksum since the mount (each failed with "
            "EIO).",
            s.checksum_errors);
    // Scrub (docs/integrity.md).
    const ScrubStatus& sc = m.scrub;
    gauge("psmfs_scrub_running", "1 while a scrub runs.", sc.state == "running" ? "1" : "0");
    gauge("psmfs_scrub_progress_ratio", "Progress of the running (or last) scrub, 0 to 1.",
          Number(sc.end ? static_cast<double>(sc.cursor) / static_cast<double>(sc.end) : 0.0));
    gauge("psmfs_scrub_verified_bytes", "Data the running (or last) scrub has verified.",
          Number(sc.checked_blocks * bs));
    gauge("psmfs_scrub_damaged_blocks",
          "Blocks the running (or last) scrub found damaged (see psmctl status for their paths).",
          Number(sc.damaged_blocks));
    if (sc.finished_ns > 0) {
      gauge("psmfs_scrub_last_finished_timestamp_seconds",
            "When the last scrub ended, seconds since the epoch.",
            Number(static_cast<double>(sc.finished_ns) / 1e9));
    }
  }
  // Mirror (docs/integrity.md, "Mirror"); left out without one.
  if (s.mirror.mirrored) {
    const MirrorInfo& mi = s.mirror;
    gauge("psmfs_mirror_degraded",
          "1 while the volume has one complete copy of its data only (a side missing, faulted or "
          "being resilvered).",
          mi.degraded ? "1" : "0");
    gauge("psmfs_mirror_resilver_progress_ratio",
          "Progress of the resilver of the stale side, 0 to 1 (1 when none is needed).",
          Number(mi.stale < 0 || !mi.resilver_total
                     ? 1.0
                     : static_cast<double>(mi.resilver_done) / static_cast<double>(mi.resilver_total)));
    const char* names[2] = {"image", "mirror"};
    for (int i = 0; i < 2; ++i) {
      const MirrorSideInfo& x = mi.sides[i];
      counter("psmfs_mirror_read_errors_total", "Reads of a side that failed (EIO), by side.",
              x.read_errors, Label("side", names[i]));
      counter("psmfs_mirror_write_errors_total",
              "Writes and syncs of a side that failed (the side is then faulted), by side.",
              x.write_errors, Label("side", names[i]));
      counter("psmfs_mirror_checksum_errors_total",
              "Blocks read from a side that failed their checksum, by side.", x.checksum_errors,
              Label("side", names[i]));
      counter("psmfs_mirror_repaired_blocks_total",
              "Blocks of a side rewritten from the other side's good copy, by side.",
              x.repaired_blocks, Label("side", names[i]));
    }
  }

  // FUSE requests.
  if (m.requests) {
    const RequestFigures& rf = *m.requests;
    for (const RequestOpFigures& o : rf.ops) {
      counter("psmfs_requests_total", "FUSE requests served, by operation.", o.count,
              Label("op", o.op));
    }
    const char* hist = "psmfs_request_duration_seconds";
    const char* hist_help =
        "Time to serve a FUSE request (decode, the filesystem's work, the reply), by "
        "operation; only operations served at least once.";
    for (const RequestOpFigures& o : rf.ops) {
      if (o.count == 0) continue;
      const std::string labels = base + "," + Label("op", o.op);
      uint64_t cumulative = 0;
      for (size_t i = 0; i < rf.bounds_ns.size(); ++i) {
        cumulative += o.buckets[i];
        x->Add(hist, "histogram", hist_help, "_bucket",
               labels + ",le=\"" + Number(Seconds(rf.bounds_ns[i])) + "\"", Number(cumulative));
      }
      x->Add(hist, "histogram", hist_help, "_bucket", labels + ",le=\"+Inf\"", Number(o.count));
      x->Add(hist, "histogram", hist_help, "_sum", labels, Number(Seconds(o.sum_ns)));
      x->Add(hist, "histogram", hist_help, "_count", labels, Number(o.count));
    }
  }

  // Memory (docs/architecture.md, "Memory": one budget per mount). A
  // figure the daemon could not read (0 RSS, no cache) is left out.
  if (s.memory_budget_bytes != 0) {
    gauge("psmfs_memory_budget_bytes", "The mount's memory budget (psmfs -o memory=SIZE).",
          Number(s.memory_budget_bytes));
  }
  if (s.rss_bytes != 0) {
    gauge("psmfs_daemon_resident_memory_bytes", "Resident memory of the daemon process.",
          Number(s.rss_bytes));
  }
  if (s.metadata_cache_bytes != 0) {
    gauge("psmfs_metadata_cache_capacity_bytes",
          "Size of RocksDB's one cache (block cache, index and filter blocks, memtables).",
          Number(s.metadata_cache_bytes));
    gauge("psmfs_metadata_cache_used_bytes",
          "What of RocksDB's cache is in use (memtables charged to it included).",
          Number(s.metadata_cache_used_bytes));
  }
  const StoreMemoryStats& sm = m.store_memory;
  if (sm.memtable_bytes) {
    gauge("psmfs_rocksdb_memtable_bytes",
          "Memory of RocksDB's memtables, every column family (charged to its cache).",
          Number(*sm.memtable_bytes));
  }
  if (sm.table_readers_bytes) {
    gauge("psmfs_rocksdb_table_readers_bytes",
          "Memory of RocksDB's table readers outside its cache.", Number(*sm.table_readers_bytes));
  }
  gauge("psmfs_live_cache_bytes", "Chunk maps of open files held in the live cache, bytes.",
        Number(s.live_cache_bytes));
  gauge("psmfs_kernel_refs", "Inodes the kernel holds a reference to (until its FORGET).",
        Number(s.kernel_refs));
  gauge("psmfs_kernel_refs_bytes",
        "Memory of the table counting the kernel's references (charged to the metadata cache).",
        Number(s.kernel_refs_bytes));
  gauge("psmfs_kernel_refs_cap",
        "Most inodes the kernel may hold before the daemon asks it to drop dentries (0: none).",
        Number(s.kernel_refs_cap));
  counter("psmfs_kernel_refs_shed_total",
          "Dentries the daemon asked the kernel to drop to keep under the cap.",
          s.kernel_refs_shed);
  gauge("psmfs_free_index_ranges", "Free extents in the allocator's in-memory index.",
        Number(s.free_ranges));
  gauge("psmfs_free_index_memory_bytes", "Memory of the allocator's free-extent index.",
        Number(s.free_index_bytes));
  gauge("psmfs_live_cache_chunk_maps", "Chunk maps of open files held in the live cache.",
        Number(m.live_cache_chunk_maps));
}

}  // namespace

std::string PrometheusLabelValue(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const size_t n = ValidUtf8(raw, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    if (n == 1) {
      const char c = raw[i];
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    } else {
      out.append(raw.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string RenderPrometheus(const std::vector<MetricsTarget>& volumes) {
  Exposition x;
  for (const MetricsTarget& t : volumes) RenderVolume(t, &x);
  return x.Text();
}

}  // namespace psm
