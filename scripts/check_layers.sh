#!/usr/bin/env bash
# check_layers.sh [SOURCE_DIR] — fails when a source file includes a header of
# a layer it may not depend on (fs/CMakeLists.txt draws the graph;
# docs/architecture.md, "Layers"). Run by CTest as unit_layering.
set -u
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
# layer: the folders its files may include (besides its own).
declare -A allowed=(
  [meta]="meta"
  [fs/base]="meta"
  [fs/json]="meta"
  [fs/device]="fs/base meta"
  [fs/space]="fs/base meta"
  [fs/stream]="fs/base meta"
  [fs/core]="fs/space fs/device fs/stream fs/json fs/base meta"
  [fs/control]="fs/core fs/space fs/device fs/stream fs/json fs/base meta"
  [fs/fuse]="fs/core fs/space fs/device fs/stream fs/json fs/base meta"
  [fs/daemon]="fs/base meta"
)
bad=0
for layer in "${!allowed[@]}"; do
  [ -d "$layer" ] || { echo "check_layers: no folder $layer (update this script with fs/CMakeLists.txt)"; bad=1; continue; }
  for f in "$layer"/*.h "$layer"/*.cc; do
    [ -e "$f" ] || continue
    while IFS= read -r inc; do
      dir=${inc%/*}
      [ "$dir" = "$layer" ] && continue
      ok=0
      for a in ${allowed[$layer]}; do [ "$dir" = "$a" ] && ok=1; done
      if [ $ok -eq 0 ]; then
        echo "$f includes \"$inc\": $layer may include only ${allowed[$layer]}"
        bad=1
      fi
    done < <(grep -ohE '^#include "(fs|meta|cli)/[^"]+"' "$f" | sed -E 's/^#include "(.*)"/\1/')
  done
done
# Every folder under fs/ must be a known layer.
for d in fs/*/; do
  d=${d%/}
  [ -n "${allowed[$d]+x}" ] || { echo "check_layers: $d is not a known layer"; bad=1; }
done
[ $bad -eq 0 ] && echo "layering: every include points down"
exit $bad
