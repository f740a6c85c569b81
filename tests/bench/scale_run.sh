#!/usr/bin/env bash
# Scale benchmark (issue #16): a volume of SCALE_FILES small files against
# one of SCALE_REF_FILES, both built through the filesystem core
# (psmpopulate, no FUSE), then mounted with the real psmfs and measured the
# same way. Called by `make bench-scale` as: tests/bench/scale_run.sh BUILD/bin
#
# Each volume, once populated, is mounted once and its compactions are
# waited for (settle, below), so that every figure is of a volume in its
# steady state. Figures, each on both volumes, with the ratio large /
# reference:
#   populate        files/s through the core (psmpopulate, 2 threads)
#   meta_bytes      du of VOLUME/meta after populating, per file
#   mount_ms        psmfs started to the first answer (stat of a file in the
#                   mount), caches dropped before; median of 3 mounts
#   stat            stats of SCALE_SAMPLES distinct random files (all of them
#                   on a smaller volume), fresh mount and cold caches: each
#                   is a LOOKUP of a name the kernel has never seen  files/s
#   stat_warm       the same files again on a fresh daemon, RocksDB's files
#                   read into the page cache first: the row above less the
#                   disk reads                                      files/s
#   lookup_miss     SCALE_SAMPLES names that do not exist (what every create
#                   asks first), fresh mount, cold                 lookups/s
#   readdir         listing SCALE_SAMPLES/100 distinct random directories,
#                   fresh mount, cold, names and types only        entries/s
#   snapshot_ms     `psmctl snapshot create` end to end, median of 5
#   diff_ms         `psmctl diff` between two snapshots 100 rewritten files
#                   of d0 apart (the same change on both volumes), end to
#                   end, median of 3
#   walk            every directory of the live tree listed and every entry
#                   lstat'ed (.snapshots skipped)                  entries/s
#   rss_mount_mb    the daemon's VmRSS after mounting and the figures above
#   rss_walk_mb     its VmRSS after the walk (and `psmctl status`'s memory
#                   and kernel-refs lines, in the log)
#   fsck            `psmctl fsck` of the unmounted volume           inodes/s
#   fsck_cpu_share  its user + system CPU time over its wall time (1 = one
#                   core busy all along; below: waiting for the disk)
#
# Environment:
#   SCALE_FILES=N       files in the large volume (default 10000000; it takes
#                       hours and ~45 GB here: try SCALE_FILES=200000 first)
#   SCALE_REF_FILES=N   files in the reference volume (default 10000)
#   SCALE_PERDIR=N      files per directory (default 1000)
#   SCALE_FILE_BYTES=N  bytes per file (default 4096)
#   SCALE_SAMPLES=N     stats and lookups per figure (default 20000)
#   SCALE_REUSE=1       keep the volumes and use them again if their file
#                       count matches (skips populating; a volume a run has
#                       measured also holds that run's snapshots and changes)
#   BENCH_DIR=DIR       work directory (default REPO/var/bench)
# Output: a table on stdout and in BUILD/bench/scale_results.md.
set -euo pipefail
die() { echo "scale_run.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: $0 BUILD/bin" >&2; exit 2; }
BIN=$(cd "$1" && pwd) || die "no such directory: $1"
for p in psmfs psmctl psmpopulate; do
  [ -x "$BIN/$p" ] || die "$BIN/$p missing (make bench-scale builds it)"
done
[ "$(id -u)" = 0 ] || die "needs root (drops the page cache between figures)"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(dirname "$BIN")/bench
WORK=${BENCH_DIR:-$REPO/var/bench}/scale
FILES=${SCALE_FILES:-10000000}
REF=${SCALE_REF_FILES:-10000}
PERDIR=${SCALE_PERDIR:-1000}
BYTES=${SCALE_FILE_BYTES:-4096}
SAMPLES=${SCALE_SAMPLES:-20000}
mkdir -p "$OUT" "$WORK"
g++ -O2 -std=c++20 -pthread -o "$OUT/psmbench" "$REPO/tests/bench/psmbench.cc"

# Room: the data blocks plus ~1 KiB of metadata per file, and 2 GiB.
need_kib=$(( (FILES + REF) * ((BYTES + 4095) / 4096 * 4 + 1) + 2 * 1024 * 1024 ))
avail_kib=$(df -k --output=avail "$WORK" | tail -1)
[ "$avail_kib" -gt "$need_kib" ] ||
  die "$WORK has $((avail_kib / 1024)) MiB free, the volumes need ~$((need_kib / 1024)) MiB (lower SCALE_FILES or SCALE_FILE_BYTES)"

MNT=$WORK/mnt
PID=""
RES=$OUT/scale_results.txt
: > "$RES"
ms() { date +%s%N; }
mounted() { findmnt -rn -M "$MNT" >/dev/null 2>&1; }
unmount() {
  if mounted; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true; fi
  if [ -n "$PID" ]; then wait "$PID" 2>/dev/null || true; PID=""; fi
}
cleanup() {
  set +e
  unmount
  if [ "${SCALE_REUSE:-0}" != 1 ]; then rm -rf "$WORK/ref" "$WORK/large"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$MNT"
mounted && fusermount3 -uz "$MNT"

record() { echo "$1 $2 $3" >> "$RES"; printf '  %-6s %-14s %14s\n' "$2" "$1" "$3"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
MOUNT_MS=""
cold_mount() {  # unmount, drop caches, mount; MOUNT_MS: ms from exec to the first answer
  unmount
  sync; echo 3 > /proc/sys/vm/drop_caches
  local a b
  a=$(ms)
  "$BIN/psmfs" "$1" "$MNT" -f >>"$WORK/psmfs.log" 2>&1 &
  PID=$!
  until mounted && stat "$MNT/d0/f0" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || die "psmfs exited while mounting $1; see $WORK/psmfs.log"
    sleep 0.002
  done
  b=$(ms)
  MOUNT_MS=$(awk -v ns=$((b - a)) 'BEGIN { printf "%.1f", ns / 1e6 }')
}
bench_value() { "$OUT/psmbench" "$@" | awk '$1 == "RESULT" { print $3 }'; }
# settle VOLUME: mount it and wait until RocksDB's compaction thread
# (`rocksdb:low`) has read nothing for 2 s, then unmount. psmpopulate
# closes the store with compaction debt, which the first mount pays while
# it answers; measured during it, a "cold" figure is partly warm (the
# compaction reads every table into the page cache) and shares the two
# cores (docs/performance.md, "Compaction reads"). Every figure below is
# taken on a volume in its steady state. Prints the seconds waited.
settle() {
  cold_mount "$1"
  local t="" c last=-1 same=0 waited=0
  for c in /proc/"$PID"/task/*; do
    [ "$(cat "$c/comm" 2>/dev/null)" = rocksdb:low ] && { t=$c; break; }
  done
  [ -n "$t" ] || die "no rocksdb:low thread in psmfs (pid $PID)"
  while [ $same -lt 20 ]; do
    c=$(awk '/^syscr/ { print $2 }' "$t/io")
    if [ "$c" = "$last" ]; then same=$((same + 1)); else same=0; last=$c; fi
    sleep 0.1; waited=$((waited + 1))
    [ $waited -lt 36000 ] || die "compactions of $1 still running after an hour"
  done
  unmount
  awk -v n=$waited 'BEGIN { printf "%.1f", n / 10 - 2 }'
}
e2e_ms() {  # e2e_ms CMD...: wall time of one command, ms
  local a b
  a=$(ms); "$@" >/dev/null; b=$(ms)
  awk -v ns=$((b - a)) 'BEGIN { printf "%.2f", ns / 1e6 }'
}

measure() {  # measure TAG FILES
  local tag=$1 n=$2 vol=$WORK/$1 dirs t mounts=()
  dirs=$(( (n + PERDIR - 1) / PERDIR ))
  # The samples come from the full directories.
  local perdir=$PERDIR full=$((n / PERDIR))
  if [ "$full" = 0 ]; then full=1 perdir=$n; fi
  echo "== $tag: $n files of $BYTES bytes in $dirs directories"
  if [ "${SCALE_REUSE:-0}" = 1 ] && [ -f "$vol.files" ] && [ "$(cat "$vol.files")" = "$n" ]; then
    echo "  reusing $vol"
    read -r pop meta < "$vol.figures"
  else
    rm -f "$vol.files"
    pop=$("$BIN/psmpopulate" "$vol" "$n" "$PERDIR" "$BYTES" | awk '{ print $NF == "files/s" ? $(NF - 1) : "" }')
    [ -n "$pop" ] || die "psmpopulate failed"
    meta=$(du -sb "$vol/meta" | awk -v n="$n" '{ printf "%.0f", $1 / n }')
    echo "$pop $meta" > "$vol.figures"; echo "$n" > "$vol.files"
  fi
  record populate "$tag" "$pop"
  record meta_bytes "$tag" "$meta"
  echo "  compactions after populating settled in $(settle "$vol") s"
  # Every read figure on a fresh daemon with cold caches; the mount time of
  # each such mount is kept.
  cold_mount "$vol"; mounts+=("$MOUNT_MS")
  record stat "$tag" "$(bench_value scalestat "$MNT" "$full" "$perdir" "$SAMPLES")"
  # The same files with RocksDB's files in the page cache (a new daemon,
  # its own caches empty): what the disk reads cost in the row above.
  cold_mount "$vol"; mounts+=("$MOUNT_MS")
  cat "$vol"/meta/* > /dev/null
  record stat_warm "$tag" "$(bench_value scalestat "$MNT" "$full" "$perdir" "$SAMPLES")"
  cold_mount "$vol"; mounts+=("$MOUNT_MS")
  record lookup_miss "$tag" "$(bench_value scalemiss "$MNT" "$full" "$perdir" "$SAMPLES")"
  cold_mount "$vol"; mounts+=("$MOUNT_MS")
  record readdir "$tag" "$(bench_value scalereaddir "$MNT" "$full" $((SAMPLES / 100 > 0 ? SAMPLES / 100 : 1)))"
  record mount_ms "$tag" "$(printf '%s\n' "${mounts[@]}" | median)"
  local i times=() run
  run=$(date +%s)  # snapshot names of this run (a reused volume has older ones)
  for i in 1 2 3 4 5; do times+=("$(e2e_ms "$BIN/psmctl" snapshot create "$MNT" "s$run-$i")"); done
  record snapshot_ms "$tag" "$(printf '%s\n' "${times[@]}" | median)"
  times=()
  for i in 1 2 3; do
    # The same change on both volumes: 100 files of d0 rewritten.
    "$BIN/psmctl" snapshot create "$MNT" "before$run-$i" >/dev/null
    for t in $(seq 0 99); do echo "change $i" >> "$MNT/d0/f$((t % perdir))"; done
    "$BIN/psmctl" snapshot create "$MNT" "after$run-$i" >/dev/null
    times+=("$(e2e_ms "$BIN/psmctl" diff "$MNT" "before$run-$i" "after$run-$i")")
  done
  record diff_ms "$tag" "$(printf '%s\n' "${times[@]}" | median)"
  record rss_mount_mb "$tag" "$(rss_mb)"
  record walk "$tag" "$(bench_value walk "$MNT")"
  record rss_walk_mb "$tag" "$(rss_mb)"
  "$BIN/psmctl" status "$MNT" | grep -iE "memory|kernel refs" | sed "s/^/  $tag   /"
  unmount
  /usr/bin/time -f "%e %U %S" -o "$WORK/fsck-$tag.time" "$BIN/psmctl" fsck "$vol" >"$WORK/fsck-$tag.txt" 2>&1 ||
    die "psmctl fsck $vol failed: see $WORK/fsck-$tag.txt"
  local wall cpu
  read -r wall cpu < <(awk '{ print $1, $2 + $3 }' "$WORK/fsck-$tag.time")
  record fsck "$tag" "$(awk -v n=$((n + dirs + 1)) -v s="$wall" 'BEGIN { printf "%.0f", n / s }')"
  record fsck_cpu_share "$tag" "$(awk -v w="$wall" -v c="$cpu" 'BEGIN { printf "%.2f", c / w }')"
}

measure ref "$REF"
measure large "$FILES"

machine="$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
{
  echo "$FILES files against $REF, $BYTES bytes each, $PERDIR per directory, $SAMPLES samples; $machine"
  echo
  echo "| figure | $REF files | $FILES files | large / reference |"
  echo "|---|---:|---:|---:|"
  awk '
    { v[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
    END {
      unit["populate"] = "files/s"; unit["meta_bytes"] = "bytes per file"; unit["mount_ms"] = "ms"
      unit["stat"] = "files/s"; unit["stat_warm"] = "files/s"; unit["fsck_cpu_share"] = "CPU s per s"; unit["lookup_miss"] = "lookups/s"; unit["readdir"] = "entries/s"
      unit["snapshot_ms"] = "ms"; unit["diff_ms"] = "ms"; unit["rss_mount_mb"] = "MB"
      unit["walk"] = "entries/s"; unit["rss_walk_mb"] = "MB"; unit["fsck"] = "inodes/s"
      for (i = 0; i < n; i++) {
        f = order[i]; r = v[f, "ref"]; l = v[f, "large"]
        printf "| %s (%s) | %s | %s | %s |\n", f, unit[f], r, l, (r > 0 ? sprintf("%.2f", l / r) : "—")
      }
    }' "$RES"
} > "$OUT/scale_results.md"
echo
cat "$OUT/scale_results.md"
echo "(also in $OUT/scale_results.md)"
