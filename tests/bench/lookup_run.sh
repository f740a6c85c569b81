#!/usr/bin/env bash
# The lookup figures of scale_run.sh on a volume that already exists (built
# by psmpopulate VOLUME FILES PERDIR BYTES), each on a fresh daemon after
# drop_caches, with the daemon's CPU time per operation: on a shared machine
# wall-clock rates swing by 2-5x from run to run, its CPU time less so.
#
#   tests/bench/lookup_run.sh BUILD/bin VOLUME FILES [PERDIR]
#
# Prints, one line each (rate, then the daemon's user+system and user CPU
# microseconds per operation):
#   stat       SAMPLES distinct random files, cold (each a LOOKUP)
#   stat_warm  the same, RocksDB's files read into the page cache first
#   miss       SAMPLES names that do not exist, cold
# and the daemon's RSS at the end. SAMPLES (default 20000) as in
# scale_run.sh; on a volume of fewer files every file is stat'ed once, and
# the per-operation CPU is divided by the stats actually made.
set -euo pipefail
die() { echo "lookup_run.sh: $*" >&2; exit 1; }
[ $# -ge 3 ] || { echo "usage: $0 BUILD/bin VOLUME FILES [PERDIR]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (drops the page cache)"
BIN=$(cd "$1" && pwd); VOL=$2; N=$3; PERDIR=${4:-1000}
SAMPLES=${SAMPLES:-20000}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/lookup_run.XXXXXX)
PB=$WORK/psmbench MNT=$WORK/mnt PID=""
mkdir -p "$MNT"
g++ -O2 -std=c++20 -pthread -o "$PB" "$REPO/tests/bench/psmbench.cc"
mounted() { findmnt -rn -M "$MNT" >/dev/null 2>&1; }
unmount() {
  if mounted; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true; fi
  if [ -n "$PID" ]; then wait "$PID" 2>/dev/null || true; PID=""; fi
}
trap 'unmount; rm -rf "$WORK"' EXIT
cold() {
  unmount
  sync; echo 3 > /proc/sys/vm/drop_caches
  "$BIN/psmfs" "$VOL" "$MNT" -f >>"$WORK/psmfs.log" 2>&1 &
  PID=$!
  until mounted && stat "$MNT/d0/f0" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || die "psmfs exited; $(cat "$WORK/psmfs.log")"
    sleep 0.002
  done
}
ticks() { awk '{ print $14 + $15, $14 }' "/proc/$PID/stat"; }  # user+system, user
run() {  # run NAME KIND OPS
  local t0 u0 t1 u1 r hz
  hz=$(getconf CLK_TCK)
  read -r t0 u0 < <(ticks)
  r=$("$PB" "$2" "$MNT" "$full" "$perdir" "$SAMPLES" | awk '$1 == "RESULT" { print $3 }')
  read -r t1 u1 < <(ticks)
  awk -v n="$1" -v r="$r" -v t=$((t1 - t0)) -v u=$((u1 - u0)) -v hz="$hz" -v ops="$3" \
    'BEGIN { printf "%-10s %10.0f /s  cpu %5.1f us/op  user %5.1f us/op\n", n, r, t * 1e6 / hz / ops, u * 1e6 / hz / ops }'
}
full=$((N / PERDIR)) perdir=$PERDIR
if [ "$full" = 0 ]; then full=1 perdir=$N; fi
stats=$((full * perdir < SAMPLES ? full * perdir : SAMPLES))
cold; run stat scalestat "$stats"
cold; cat "$VOL"/meta/* > /dev/null; run stat_warm scalestat "$stats"
cold; run miss scalemiss "$SAMPLES"
echo "rss        $(awk '/^VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$PID/status")"
