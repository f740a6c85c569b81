// The Prometheus text exposition format (version 0.0.4) of psmfs volumes'
// figures: what `psmctl metrics` prints for node_exporter's textfile
// collector. docs/monitoring.md lists every metric.
//
//   psm::MetricsTarget t{uuid, mountpoint, client->GetMetrics().value()};
//   std::string text = psm::RenderPrometheus({t});
//
// Every sample carries the labels volume="UUID" and mountpoint="PATH";
// each metric family appears once, with its # HELP and # TYPE lines before
// its samples, whatever the number of volumes. Label values are escaped as
// the format asks (backslash, double quote, line feed) and bytes that are
// not UTF-8 become U+FFFD (snapshot names and paths are arbitrary bytes;
// the format is UTF-8).
//
// Thread safety: functions only.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"

namespace psm {

// One volume to render: its figures, or only who it is when its daemon did
// not answer (then psmfs_up is 0 and nothing else is written for it).
struct MetricsTarget {
  std::string uuid;
  std::string mountpoint;
  std::optional<VolumeMetrics> metrics;
};

std::string RenderPrometheus(const std::vector<MetricsTarget>& volumes);

// A label value as it appears between the quotes.
std::string PrometheusLabelValue(std::string_view raw);

}  // namespace psm
