// `psmctl metrics` without FUSE: the request counters (fs/base/request_metrics.h),
// the daemon's "metrics" request (ControlServer over a real FileSystem) and
// the Prometheus rendering (cli/prometheus.h), checked with the strict
// parser of tests/common/prom_parser.h, written from the format's
// description and independent of the renderer.
//
// What is proven here:
//   * the output is a valid exposition: HELP/TYPE before samples, each
//     family once (also with two volumes), names and escaping as the format
//     asks, histogram buckets cumulative with +Inf equal to _count;
//   * the figures are what the test did: N recorded writes are N, their
//     latencies land in the buckets the documented bounds say (a request
//     of exactly a bound's duration in that bound's bucket), the sum is
//     theirs; K snapshots are K, each with its name as a label; writing M
//     new bytes moves used space by M; a snapshot of an M-byte file
//     references M bytes and, once the file is overwritten, is the only one
//     to see them (used M); files count what was created;
//   * a failed sync shows as psmfs_volume_failed 1; a daemon that does not
//     answer as psmfs_up 0 and nothing else;
//   * no metric for a feature that does not exist (checksum errors come
//     with issue 15).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/client.h"
#include "cli/prometheus.h"
#include "fs/control/control_protocol.h"
#include "fs/control/control_server.h"
#include "fs/core/filesystem.h"
#include "fs/base/request_metrics.h"
#include "tests/common/prom_parser.h"
#include "tests/common/core_test_util.h"
#include "tests/common/faulty_volume.h"

namespace fsys = std::filesystem;
using psm::promtest::Exposition;

namespace {

// The latency bucket bounds as docs/monitoring.md states them, in seconds.
const std::vector<double> kDocumentedBounds = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                               0.001,   0.0025,   0.005,   0.01,   0.025,   0.05,
                                               0.1,     0.25,     0.5,     1,      2.5,     10};

std::string MakeTempDir(const char* tag) {
  std::string t = std::string("/tmp/psm-") + tag + "-XXXXXX";
  REQUIRE(::mkdtemp(t.data()) != nullptr);
  return t;
}

struct RuntimeDir {
  std::string dir = MakeTempDir("mrt");
  RuntimeDir() { ::setenv("PSMFS_RUNTIME_DIR", dir.c_str(), 1); }
  ~RuntimeDir() {
    ::unsetenv("PSMFS_RUNTIME_DIR");
    std::error_code ec;
    fsys::remove_all(dir, ec);
  }
};

Exposition MustParse(const std::string& text) {
  Exposition e;
  const std::string err = psm::promtest::Parse(text, &e);
  INFO(text);
  REQUIRE_MESSAGE(err.empty(), err);
  return e;
}

// What `psmctl metrics` prints for the volume a client talks to.
std::string Scrape(psm::Client* c, bool space = true) {
  auto m = c->GetMetrics(space);
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  psm::MetricsTarget t{m->uuid, m->mountpoint, std::move(m.value())};
  return psm::RenderPrometheus({t});
}

std::unique_ptr<psm::Client> MustConnect(const std::string& path) {
  auto c = psm::Client::Connect(path);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  return std::move(c).value();
}

}  // namespace

TEST_CASE("metrics: the strict parser refuses what the format forbids") {
  // The parser is the test's yardstick: make sure it can say no.
  Exposition e;
  const std::string ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\"} 1\n";
  CHECK(psm::promtest::Parse(ok, &e).empty());
  CHECK_FALSE(psm::promtest::Parse("a_total 1\n", &e).empty());              // no TYPE
  CHECK_FALSE(psm::promtest::Parse(ok + "a_total{l=\"w\"} 1", &e).empty());  // no final \n
  CHECK_FALSE(psm::promtest::Parse(ok + ok.substr(ok.find("a_total{")), &e).empty());  // dup
  CHECK_FALSE(psm::promtest::Parse("# HELP 1a x\n# TYPE 1a gauge\n1a 1\n", &e).empty());
  CHECK_FALSE(psm::promtest::Parse("# HELP a x\n# TYPE a gauge\na{l=\"\\t\"} 1\n", &e).empty());
  CHECK_FALSE(psm::promtest::Parse("# HELP a x\n# TYPE a gauge\na{l=\"\xff\"} 1\n", &e).empty());
  CHECK_FALSE(psm::promtest::Parse("# HELP a x\n# TYPE a gauge\na 1 123\n", &e).empty());
  CHECK_FALSE(psm::promtest::Parse("# HELP a x\n# TYPE a counter\na 1\n", &e).empty());
  // Family split in two.
  CHECK_FALSE(psm::promtest::Parse("# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\n"
                                   "b 1\na{x=\"1\"} 2\n",
                                   &e)
                  .empty());
  const std::string h = "# HELP h x\n# TYPE h histogram\n";
  CHECK(psm::promtest::Parse(h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
                                 "h_count 2\n",
                             &e)
            .empty());
  // Not cumulative; +Inf differs from _count; no +Inf.
  CHECK_FALSE(psm::promtest::Parse(h + "h_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
                                       "h_count 2\n",
                                   &e)
                  .empty());
  CHECK_FALSE(psm::promtest::Parse(h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
                                       "h_count 3\n",
                                   &e)
                  .empty());
  CHECK_FALSE(psm::promtest::Parse(h + "h_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n", &e).empty());
}

TEST_CASE("metrics: label values are escaped and made UTF-8") {
  CHECK(psm::PrometheusLabelValue("plain") == "plain");
  CHECK(psm::PrometheusLabelValue("a\\b") == "a\\\\b");
  CHECK(psm::PrometheusLabelValue("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(psm::PrometheusLabelValue("two\nlines") == "two\\nlines");
  CHECK(psm::PrometheusLabelValue("tab\there") == "tab\there");  // only \ " and LF are escaped
  CHECK(psm::PrometheusLabelValue("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(psm::PrometheusLabelValue("bad\xff") == "bad\xef\xbf\xbd");
  CHECK(psm::PrometheusLabelValue("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");  // overlong '/'
  CHECK(psm::PrometheusLabelValue("\xed\xa0\x80") ==
        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate
}

TEST_CASE("metrics: request counts and latency buckets are what was recorded") {
  psm::RequestMetrics rm;
  // Durations chosen around the documented bounds: exactly on one, just
  // above, far beyond the last.
  std::vector<uint64_t> durations;
  for (double b : kDocumentedBounds) {
    const uint64_t ns = static_cast<uint64_t>(std::llround(b * 1e9));
    durations.push_back(ns);      // exactly the bound: that bucket
    durations.push_back(ns + 1);  // just above: the next one
  }
  durations.push_back(1);                  // fastest
  durations.push_back(60'000'000'000ull);  // a minute: +Inf
  // Four threads record every duration as a write; one records 3 reads.
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (uint64_t ns : durations) rm.Record(psm::RequestOp::kWrite, ns);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 3; ++i) rm.Record(psm::RequestOp::kRead, 7000);

  // The test's own model of the histogram: per documented bound, how many
  // durations are <= it; the sum of the durations.
  const uint64_t n_writes = kThreads * durations.size();
  std::vector<uint64_t> want_cumulative;
  for (double b : kDocumentedBounds) {
    uint64_t k = 0;
    for (uint64_t ns : durations) k += static_cast<double>(ns) <= b * 1e9 + 0.5 ? 1 : 0;
    want_cumulative.push_back(k * kThreads);
  }
  long double want_sum = 0;
  for (uint64_t ns : durations) want_sum += static_cast<long double>(ns) * kThreads;

  // Render through the renderer with the figures as the protocol carries
  // them (JSON there and back).
  psm::VolumeMetrics m;
  m.uuid = "00000000-0000-0000-0000-000000000001";
  m.stats.block_size = 4096;
  auto figs = psm::ctl::RequestsFromJson(psm::ctl::ToJson(rm.Snapshot()));
  REQUIRE(figs.ok());
  m.requests = figs.value();
  const std::string text = psm::RenderPrometheus({{m.uuid, "/mnt/x", m}});
  Exposition e = MustParse(text);
  const std::map<std::string, std::string> w = {
      {"volume", m.uuid}, {"mountpoint", "/mnt/x"}, {"op", "write"}};
  CHECK(e.Value("psmfs_requests_total", w) == n_writes);
  CHECK(e.Value("psmfs_requests_total", {{"op", "read"}}) == 3);
  CHECK(e.Value("psmfs_requests_total", {{"op", "mkdir"}}) == 0);  // counted, never served
  CHECK(e.families.at("psmfs_requests_total").type == "counter");
  CHECK(e.families.at("psmfs_request_duration_seconds").type == "histogram");
  CHECK(e.Value("psmfs_request_duration_seconds_count", w) == n_writes);
  CHECK(std::fabs(e.Value("psmfs_request_duration_seconds_sum", w) -
                  static_cast<double>(want_sum / 1e9)) < 1e-6);
  for (size_t i = 0; i < kDocumentedBounds.size(); ++i) {
    // Find the bucket whose le parses to this documented bound.
    double got = std::nan("");
    for (const auto* s : e.Find("psmfs_request_duration_seconds_bucket", w)) {
      if (std::fabs(std::strtod(s->labels.at("le").c_str(), nullptr) - kDocumentedBounds[i]) <
          1e-12) {
        got = s->value;
      }
    }
    INFO("le=" << kDocumentedBounds[i]);
    CHECK(got == want_cumulative[i]);
  }
  CHECK(e.Find("psmfs_request_duration_seconds_bucket", w).size() == kDocumentedBounds.size() + 1);
  CHECK(e.Value("psmfs_request_duration_seconds_bucket", {{"op", "write"}, {"le", "+Inf"}}) ==
        n_writes);
  // Operations never served have a zero counter but no histogram series.
  CHECK(e.Find("psmfs_request_duration_seconds_count", {{"op", "mkdir"}}).empty());
}

TEST_CASE("metrics: a daemon's figures follow what was done to its volume") {
  RuntimeDir rt;
  psm_test::CoreVolume v;  // 64 MiB, 4 KiB blocks
  const std::string mnt = MakeTempDir("mmnt");
  psm::RequestMetrics rm;
  psm::ControlServer server(v.fs.get(), v.dir, mnt);
  server.SetRequestMetrics(&rm);
  REQUIRE(server.Start().ok());
  auto client = MustConnect(mnt);
  const std::string uuid = v.fs->uuid();
  const std::string real_mnt = fsys::canonical(mnt).string();
  const std::map<std::string, std::string> vol = {{"volume", uuid}, {"mountpoint", real_mnt}};
  REQUIRE(v.fs->WaitScan(30));

  Exposition before = MustParse(Scrape(client.get()));
  CHECK(before.Value("psmfs_up", vol) == 1);
  CHECK(before.Value("psmfs_snapshots", vol) == 0);
  CHECK(before.Find("psmfs_snapshot_used_bytes").empty());
  CHECK(before.Value("psmfs_block_size_bytes", vol) == 4096);
  const double size = before.Value("psmfs_size_bytes", vol);
  CHECK(size <= 64.0 * 1024 * 1024);
  CHECK(size > 63.0 * 1024 * 1024);
  CHECK(before.Value("psmfs_volume_failed", vol) == 0);
  CHECK(before.Value("psmfs_scan_running", vol) == 0);
  CHECK(before.Value("psmfs_scan_progress_ratio", vol) == 1);
  CHECK(before.Value("psmfs_scans_completed_total", vol) >= 1);
  CHECK(before.Value("psmfs_restore_running", vol) == 0);
  CHECK(before.Value("psmfs_reclaim_running", vol) == 0);
  CHECK(before.Value("psmfs_daemon_resident_memory_bytes", vol) > 1e6);
  // The default budget (psmfs -o memory, 256 MiB), half of it RocksDB's cache.
  CHECK(before.Value("psmfs_memory_budget_bytes", vol) == 256.0 * 1024 * 1024);
  CHECK(before.Value("psmfs_metadata_cache_capacity_bytes", vol) == 128.0 * 1024 * 1024);
  CHECK(before.Value("psmfs_metadata_cache_used_bytes", vol) <= 128.0 * 1024 * 1024);
  CHECK(before.Value("psmfs_rocksdb_memtable_bytes", vol) > 0);
  CHECK(before.Value("psmfs_volume_info", {{"volume_dir", fsys::canonical(v.dir).string()}}) == 1);
  CHECK(before.Value("psmfs_requests_total", {{"op", "write"}}) == 0);
  // A new volume checksums its data (docs/integrity.md): no error yet.
  CHECK(before.Value("psmfs_checksum_errors_total", vol) == 0);

  // N writes as the adapter records them (the mount test drives the real
  // adapter); M new bytes in 3 new files through the core.
  constexpr int kWrites = 37;
  for (int i = 0; i < kWrites; ++i) rm.Record(psm::RequestOp::kWrite, 20'000 + i);
  constexpr size_t kM = 3u << 20;  // 3 MiB, whole blocks
  const psm::NodeId f = v.Put(psm::kRootIno, "f", psm_test::Pattern(kM - (1u << 20), 1));
  v.Put(psm::kRootIno, "g", psm_test::Pattern(1u << 20, 2));
  v.Mkdir(psm::kRootIno, "d");
  REQUIRE(v.fs->SyncAll().ok());
  Exposition after = MustParse(Scrape(client.get()));
  CHECK(after.Value("psmfs_requests_total", {{"op", "write"}}) == kWrites);
  CHECK(after.Value("psmfs_request_duration_seconds_count", {{"op", "write"}}) == kWrites);
  CHECK(after.Value("psmfs_used_bytes", vol) - before.Value("psmfs_used_bytes", vol) == kM);
  CHECK(before.Value("psmfs_free_bytes", vol) - after.Value("psmfs_free_bytes", vol) == kM);
  CHECK(after.Value("psmfs_files", vol) - before.Value("psmfs_files", vol) == 3);

  // Snapshots, one with every character that needs escaping and one whose
  // name is not UTF-8.
  const std::vector<std::string> names = {"monday", "say \"hi\" \\ and\nbye", "raw\xff"};
  for (const auto& n : names) REQUIRE(v.fs->CreateSnapshot(n).ok());
  // Overwrite f completely: its old 2 MiB are now seen by the snapshots
  // only; the newest snapshot ("raw\xff") is the one whose deletion would
  // free... nothing (the two older ones see the same blocks). Take one more
  // snapshot of the new contents and overwrite again: that snapshot alone
  // sees the second version.
  REQUIRE(v.WriteAt(f, 0, psm_test::Pattern(kM - (1u << 20), 3)).ok());
  REQUIRE(v.fs->CreateSnapshot("alone").ok());
  REQUIRE(v.WriteAt(f, 0, psm_test::Pattern(kM - (1u << 20), 4)).ok());
  REQUIRE(v.fs->SyncAll().ok());
  Exposition snaps = MustParse(Scrape(client.get()));
  CHECK(snaps.Value("psmfs_snapshots", vol) == 4);
  CHECK(snaps.Find("psmfs_snapshot_referenced_bytes", vol).size() == 4);
  const std::map<std::string, std::string> weird = {{"snapshot", names[1]}};
  CHECK(snaps.Value("psmfs_snapshot_referenced_bytes", weird) == kM);
  CHECK(snaps.Value("psmfs_snapshot_referenced_bytes", {{"snapshot", "raw\xef\xbf\xbd"}}) == kM);
  CHECK(snaps.Value("psmfs_snapshot_referenced_bytes", {{"snapshot", "alone"}}) == kM);
  CHECK(snaps.Value("psmfs_snapshot_used_bytes", {{"snapshot", "alone"}}) == kM - (1u << 20));
  CHECK(snaps.Value("psmfs_snapshot_used_bytes", {{"snapshot", "monday"}}) == 0);
  CHECK(snaps.Value("psmfs_snapshot_created_timestamp_seconds", {{"snapshot", "monday"}}) > 1.5e9);
  // The raw text carries the escapes.
  const std::string raw = Scrape(client.get());
  CHECK(raw.find("snapshot=\"say \\\"hi\\\" \\\\ and\\nbye\"") != std::string::npos);
  // Without snapshot space: no used/referenced, the rest stays.
  Exposition nospace = MustParse(Scrape(client.get(), false));
  CHECK(nospace.Find("psmfs_snapshot_used_bytes").empty());
  CHECK(nospace.Find("psmfs_snapshot_referenced_bytes").empty());
  CHECK(nospace.Find("psmfs_snapshot_created_timestamp_seconds").size() == 4);
  CHECK(nospace.Value("psmfs_snapshots", vol) == 4);

  // A deleted snapshot leaves the count and the per-snapshot series.
  REQUIRE(v.fs->DeleteSnapshot("monday").ok());
  Exposition del = MustParse(Scrape(client.get()));
  CHECK(del.Value("psmfs_snapshots", vol) == 3);
  CHECK(del.Find("psmfs_snapshot_used_bytes", {{"snapshot", "monday"}}).empty());
  server.Stop();
}

TEST_CASE("metrics: two volumes in one exposition; a silent daemon is psmfs_up 0") {
  RuntimeDir rt;
  psm_test::CoreVolume a, b;
  const std::string ma = MakeTempDir("mma"), mb = MakeTempDir("mmb");
  psm::ControlServer sa(a.fs.get(), a.dir, ma), sb(b.fs.get(), b.dir, mb);
  REQUIRE(sa.Start().ok());
  REQUIRE(sb.Start().ok());
  REQUIRE(a.fs->CreateSnapshot("only-a").ok());
  auto ca = MustConnect(ma), cb = MustConnect(mb);
  auto fa = ca->GetMetrics(), fb = cb->GetMetrics();
  REQUIRE(fa.ok());
  REQUIRE(fb.ok());
  // No request figures without an adapter: nothing is made up.
  CHECK_FALSE(fa->requests.has_value());
  std::vector<psm::MetricsTarget> targets = {{fa->uuid, fa->mountpoint, fa.value()},
                                             {fb->uuid, fb->mountpoint, fb.value()},
                                             {"dead-uuid", "/mnt/dead", std::nullopt}};
  Exposition e = MustParse(psm::RenderPrometheus(targets));  // each family once
  CHECK(e.Find("psmfs_size_bytes").size() == 2);
  CHECK(e.Value("psmfs_up", {{"volume", a.fs->uuid()}}) == 1);
  CHECK(e.Value("psmfs_up", {{"volume", b.fs->uuid()}}) == 1);
  CHECK(e.Value("psmfs_up", {{"volume", "dead-uuid"}, {"mountpoint", "/mnt/dead"}}) == 0);
  CHECK(e.Find("psmfs_size_bytes", {{"volume", "dead-uuid"}}).empty());
  CHECK(e.Value("psmfs_snapshots", {{"volume", a.fs->uuid()}}) == 1);
  CHECK(e.Value("psmfs_snapshots", {{"volume", b.fs->uuid()}}) == 0);
  CHECK(e.Find("psmfs_requests_total").empty());
  sb.Stop();
  sa.Stop();
}

TEST_CASE("metrics: a failed sync shows as psmfs_volume_failed 1") {
  RuntimeDir rt;
  psm_test::FaultyVolume v;
  psm::ControlServer server(v.fs.get(), v.dir, "");
  REQUIRE(server.Start().ok());
  auto client = MustConnect(v.dir);
  const std::map<std::string, std::string> vol = {{"volume", v.fs->uuid()}, {"mountpoint", ""}};
  Exposition ok = MustParse(Scrape(client.get()));
  CHECK(ok.Value("psmfs_volume_failed", vol) == 0);
  const double cycles = ok.Value("psmfs_sync_cycles_total", vol);

  auto c = v.fs->Create(psm::kRootIno, "a", 0644, O_RDWR, v.cred);
  REQUIRE(c.ok());
  const uint64_t fh = c->second;
  REQUIRE(v.fs->Write(fh, 0, "abcd", 4).ok());
  REQUIRE(v.fs->Fsync(fh, false).ok());
  Exposition synced = MustParse(Scrape(client.get()));
  CHECK(synced.Value("psmfs_sync_cycles_total", vol) > cycles);
  CHECK(synced.Value("psmfs_volume_failed", vol) == 0);

  v.dev->FailSync(1);
  REQUIRE(v.fs->Write(fh, 0, "efgh", 4).ok());
  CHECK_FALSE(v.fs->Fsync(fh, false).ok());
  Exposition failed = MustParse(Scrape(client.get()));
  CHECK(failed.Value("psmfs_volume_failed", vol) == 1);
  REQUIRE(v.fs->Release(fh).ok());
  server.Stop();
}
