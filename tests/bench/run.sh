#!/usr/bin/env bash
# Benchmarks psmfs against libfuse's passthrough_ll (with its writeback cache)
# and a native directory, all on the disk that holds the repository
# (var/bench/). Called by `make bench` as: tests/bench/run.sh BUILD/bin
#
# Workloads (tests/bench/psmbench.cc runs them):
#   seqwrite      1 GiB in 1 MiB writes, ending with fsync            MB/s
#   seqread       that file with cold caches                          MB/s
#   randwrite     4 KiB random writes on a 256 MiB file, 1 and 4
#                 threads, ending with fsync                          IOPS
#   randread      4 KiB random reads of it, cold caches, 1/4 threads  IOPS
#   smallfiles    create, stat, read, unlink 50,000 4 KiB files in
#                 10 directories                                      files/s
# "Cold" means: sync, echo 3 > /proc/sys/vm/drop_caches, and for the two
# FUSE targets also unmount and mount again (the daemon starts afresh).
#
# Environment:
#   BENCH_SCALE=0.1   shrink every size and count (default 1)
#   BENCH_DIR=DIR     work directory (default REPO/var/bench)
#   BENCH_KEEP=1      keep the work directory's data afterwards
#   BENCH_ROUNDS=N    run every target N times, rounds interleaved
#                     (psmfs, passthrough, native, psmfs, ...), and report
#                     each one's best: a disk or CPU hiccup during one run
#                     then does not decide a ratio (default 2)
#   BENCH_SNAP=0      skip the snapshot, scanner and stream benchmarks
# Output: a table on stdout and BUILD/bench/results.md (with the machine).
# Everything is unmounted on exit, whatever happens.
set -euo pipefail

die() { echo "run.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: $0 BUILD/bin" >&2; exit 2; }
BIN=$(cd "$1" && pwd) || die "no such directory: $1"
[ -x "$BIN/psmfs" ] && [ -x "$BIN/psmctl" ] || die "$BIN has no psmfs/psmctl (build first)"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(dirname "$BIN")/bench
WORK=${BENCH_DIR:-$REPO/var/bench}
SCALE=${BENCH_SCALE:-1}
ROUNDS=${BENCH_ROUNDS:-2}
ROOT=0; [ "$(id -u)" = 0 ] && ROOT=1

scaled() { awk -v x="$1" -v s="$SCALE" 'BEGIN { v = int(x * s); if (v < 1) v = 1; print v }'; }
SEQ_MIB=$(scaled 1024)
RAND_MIB=$(scaled 256)
RAND_OPS=$(scaled 40000)
SMALL_N=$(scaled 50000)
# passthrough_ll keeps one O_PATH descriptor per inode the kernel knows, so
# the small-file workload needs that many descriptors. Raise the limit; if
# the hard limit is lower, every target runs with fewer files (and says so).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$SMALL_N" -gt $((NOFILE - 1000)) ]; then
  echo "warning: open-file limit $NOFILE: small-file workload uses $((NOFILE - 1000)) files, not $SMALL_N" >&2
  SMALL_N=$((NOFILE - 1000))
fi
VOL_GIB=$(awk -v m="$SEQ_MIB" 'BEGIN { g = int(2 * m / 1024) + 3; print g }')

# ---------------------------------------------------------------- build
mkdir -p "$OUT"
g++ -O2 -std=c++20 -pthread -o "$OUT/psmbench" "$REPO/tests/bench/psmbench.cc"
EX=/usr/share/doc/libfuse3-dev/examples
for f in passthrough_ll.c passthrough_helpers.h; do
  if [ -f "$EX/$f" ]; then cp "$EX/$f" "$OUT/$f"
  elif [ -f "$EX/$f.gz" ]; then zcat "$EX/$f.gz" > "$OUT/$f"
  else die "$EX/$f(.gz) not found: install libfuse3-dev"; fi
done
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$OUT/passthrough_ll" "$OUT/passthrough_ll.c" \
  $(pkg-config fuse3 --cflags) $(pkg-config fuse3 --libs)

# ---------------------------------------------------------------- mounts
PSM_PID=""; PT_PID=""
is_mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }
wait_mount() {
  local i
  for i in $(seq 300); do is_mounted "$1" && return 0; sleep 0.1; done
  die "$1 did not get mounted; see $WORK/*.log"
}
unmount() {  # unmount MNT PID
  local mnt=$1 pid=$2
  if is_mounted "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true; fi
  if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
}
mount_psm() {
  "$BIN/psmfs" "$WORK/vol" "$WORK/psm" -f >>"$WORK/psmfs.log" 2>&1 &
  PSM_PID=$!
  wait_mount "$WORK/psm"
}
mount_pt() {
  "$OUT/passthrough_ll" -f -o "source=$WORK/pt-src,writeback" "$WORK/pt" >>"$WORK/passthrough.log" 2>&1 &
  PT_PID=$!
  wait_mount "$WORK/pt"
}
cleanup() {
  set +e
  unmount "$WORK/psm" "$PSM_PID"
  unmount "$WORK/pt" "$PT_PID"
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$WORK/vol" "$WORK/pt-src" "$WORK/native"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for m in "$WORK/psm" "$WORK/pt"; do is_mounted "$m" && fusermount3 -uz "$m"; done
rm -rf "$WORK/vol" "$WORK/pt-src" "$WORK/native" "$WORK"/*.log
mkdir -p "$WORK/psm" "$WORK/pt" "$WORK/pt-src" "$WORK/native"
"$BIN/psmctl" mkfs "$WORK/vol" --size "${VOL_GIB}G" >/dev/null
mount_psm
mount_pt

dir_of() {
  case $1 in
    psmfs) echo "$WORK/psm" ;;
    passthrough) echo "$WORK/pt" ;;
    native) echo "$WORK/native" ;;
  esac
}
cold() {  # cold TARGET: nothing cached, for the target or below it
  sync
  case $1 in
    psmfs) unmount "$WORK/psm" "$PSM_PID"; mount_psm ;;
    passthrough) unmount "$WORK/pt" "$PT_PID"; mount_pt ;;
  esac
  if [ $ROOT = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

RES=$OUT/results.txt
: > "$RES"
bench() {  # bench TARGET psmbench-args...
  local t=$1; shift
  "$OUT/psmbench" "$@" | while read -r tag name value unit; do
    [ "$tag" = RESULT ] && echo "$name $t $value $unit" >> "$RES"
    printf '  %-8s %-20s %12s %s\n' "$t" "$name" "$value" "$unit"
  done
}

[ $ROOT = 1 ] || echo "warning: not root; caches are not dropped, cold reads are warm" >&2
echo "scale $SCALE: seq ${SEQ_MIB} MiB, random ${RAND_MIB} MiB x ${RAND_OPS} ops, ${SMALL_N} small files, best of $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
for t in psmfs passthrough native; do
  d=$(dir_of "$t")
  bench "$t" seqwrite "$d/seq" "$SEQ_MIB"
  cold "$t"
  bench "$t" seqread "$d/seq"
  rm -f "$d/seq"
  "$OUT/psmbench" fill "$d/rand" "$RAND_MIB"
  bench "$t" randwrite "$d/rand" 1 "$RAND_OPS"
  bench "$t" randwrite "$d/rand" 4 "$RAND_OPS"
  cold "$t"
  bench "$t" randread "$d/rand" 1 "$RAND_OPS"
  cold "$t"
  bench "$t" randread "$d/rand" 4 "$RAND_OPS"
  rm -f "$d/rand"
  mkdir -p "$d/small"
  bench "$t" smallfiles "$d/small" "$SMALL_N" 10
  rmdir "$d/small"
done
done

# ---------------------------------------------------------------- report
disk_dev=$(findmnt -rn -o SOURCE -T "$WORK" | head -1)
machine="$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r), $(findmnt -rn -o FSTYPE -T "$WORK") on $disk_dev ($(lsblk -dno MODEL,ROTA "$disk_dev" 2>/dev/null | awk '{ r = $NF == 1 ? "rotational" : "non-rotational"; $NF = ""; print ($0 == " " || $0 == "" ? "" : $0) r }'))"
{
  echo "scale $SCALE, best of $ROUNDS rounds; $machine"
  echo
  echo "| workload | psmfs | passthrough_ll | native | psmfs/passthrough | psmfs/native |"
  echo "|---|---:|---:|---:|---:|---:|"
  awk '
    { k = $1 " " $2; if (!(k in v) || $3 + 0 > v[k] + 0) v[k] = $3
      u[$1] = $4; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
    END {
      for (i = 0; i < n; i++) {
        w = order[i]; p = v[w " psmfs"]; t = v[w " passthrough"]; x = v[w " native"]
        printf "| %s (%s) | %s | %s | %s | %.2f | %.2f |\n", w, u[w], p, t, x,
               (t > 0 ? p / t : 0), (x > 0 ? p / x : 0)
      }
    }' "$RES"
} > "$OUT/results.md"
echo
cat "$OUT/results.md"
echo
echo "(also in $OUT/results.md; higher is better everywhere)"

[ "${BENCH_SNAP:-1}" = 0 ] && exit 0
# Snapshot and scanner benchmarks (docs/performance.md, second part).
if [ -x "$BIN/psmsnapbench" ]; then
  "$REPO/tests/bench/snap_run.sh" "$BIN"
fi
# Backup streams: send/receive vs tar (docs/performance.md).
"$REPO/tests/bench/stream_run.sh" "$BIN"
