#!/usr/bin/env bash
# Snapshot and scanner benchmarks (issues #3, #4). Called by run.sh (make
# bench) as: tests/bench/snap_run.sh BUILD/bin; output in BUILD/bench/snap_results.txt.
#
# Core (psmsnapbench, no FUSE): snapshot create with 10 files and with many
# files + data, delete return and reclaim of an exclusive snapshot, read
# through a snapshot vs live, listing 1,000 snapshots; a volume whose alloc
# holds many ranges: open, first 1 MiB write, full scan, ranges/s, index
# bytes per free range.
# Restore (core): 10,000 files, 1% vs 100% changed since the snapshot.
# Failover: SIGKILL the psmfs owning the scan volume (many alloc ranges),
# time a new psmfs from start to the first successful write.
# End to end (psmfs + psmctl): `psmctl snapshot create` (syncfs + request)
# with the many-files tree, 1,000 snapshots made with mkdir and removed
# with rmdir in .snapshots (first vs last medians: psmsnapbench snapdir),
# and cold reads of one file through .snapshots and live.
#
# Environment (defaults run in a few minutes; the issue's full sizes in ()):
#   SNAPBENCH_FILES=10000 (100000)  SNAPBENCH_MIB=128 (1024)
#   SNAPBENCH_SNAPS=1000            SCANBENCH_RANGES=200000 (1000000)
#   RESTOREBENCH_FILES=10000
#   BENCH_DIR=DIR                   work directory (default REPO/var/bench)
set -euo pipefail
BIN=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(dirname "$BIN")/bench
WORK=${BENCH_DIR:-$REPO/var/bench}/snap
mkdir -p "$OUT" "$WORK"
RES=$OUT/snap_results.txt
: > "$RES"
FILES=${SNAPBENCH_FILES:-10000}
MIB=${SNAPBENCH_MIB:-128}
MNT=$WORK/mnt
PID=""
cleanup() {
  set +e
  findmnt -rn -M "$MNT" >/dev/null 2>&1 && fusermount3 -u "$MNT"
  [ -n "$PID" ] && wait "$PID" 2>/dev/null
  rm -rf "$WORK/snapvol" "$WORK/scanvol" "$WORK/e2e"
}
trap cleanup EXIT
echo "== core: snapshots"; "$BIN/psmsnapbench" snap "$WORK" | tee -a "$RES"
echo "== core: scanner";   "$BIN/psmsnapbench" scan "$WORK" | tee -a "$RES"

echo "== end to end (psmfs + psmctl)"
rm -rf "$WORK/e2e"; mkdir -p "$MNT"
"$BIN/psmctl" mkfs "$WORK/e2e" --size "$((MIB * 3 + 1024))M" >/dev/null
"$BIN/psmfs" "$WORK/e2e" "$MNT" -f >>"$WORK/psmfs.log" 2>&1 &
PID=$!
for _ in $(seq 300); do findmnt -rn -M "$MNT" >/dev/null 2>&1 && break; sleep 0.1; done
ms() { date +%s%N; }
create_e2e() {  # median of 11 psmctl snapshot create, ms
  local prefix=$1 t=() i a b
  for i in $(seq 11); do
    a=$(ms); "$BIN/psmctl" snapshot create "$MNT" "$prefix$i" >/dev/null; b=$(ms)
    t+=($(( (b - a) / 1000 )))
  done
  printf '%s\n' "${t[@]}" | sort -n | sed -n 6p | awk '{ printf "%.3f", $1 / 1000 }'
}
for i in $(seq 10); do echo x > "$MNT/small$i"; done
printf '%-34s %14s %s\n' create_e2e_ms_10_files "$(create_e2e a)" "ms (median of 11, psmctl)" | tee -a "$RES"
# SNAPBENCH_SNAPS snapshots with mkdir/rmdir in .snapshots: cost flat?
"$BIN/psmsnapbench" snapdir "$MNT" | tee -a "$RES"
for _ in $(seq 600); do  # let their reclaim finish before the next rows
  "$BIN/psmctl" status "$MNT" --json | grep -q '"pending_reclaim": 0,' && break; sleep 0.1
done
mkdir "$MNT/many"
(cd "$MNT/many" && seq "$FILES" | xargs touch)
dd if=/dev/urandom of="$MNT/data" bs=1M count="$MIB" status=none
printf '%-34s %14s %s\n' "create_e2e_ms_${FILES}_files_${MIB}MiB" "$(create_e2e b)" "ms (median of 11, psmctl)" | tee -a "$RES"
read_rate() {  # MiB/s of a cold sequential read
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local a b; a=$(ms); cat "$1" > /dev/null; b=$(ms)
  awk -v m="$MIB" -v ns=$((b - a)) 'BEGIN { printf "%.1f", m / (ns / 1e9) }'
}
"$BIN/psmctl" snapshot create "$MNT" rd >/dev/null
live=$(read_rate "$MNT/data"); snap=$(read_rate "$MNT/.snapshots/rd/data")
live2=$(read_rate "$MNT/data"); snap2=$(read_rate "$MNT/.snapshots/rd/data")
best() { awk -v x="$1" -v y="$2" 'BEGIN { print (x > y ? x : y) }'; }
live=$(best "$live" "$live2"); snap=$(best "$snap" "$snap2")
printf '%-34s %14s %s\n' read_live_MiBps_mount "$live" "MiB/s (cold, best of 2)" | tee -a "$RES"
printf '%-34s %14s %s\n' read_snapshot_MiBps_mount "$snap" "MiB/s (cold, best of 2)" | tee -a "$RES"
printf '%-34s %14s %s\n' read_snapshot_over_live_mount "$(awk -v s="$snap" -v l="$live" 'BEGIN { printf "%.3f", s / l }')" x | tee -a "$RES"
a=$(ms); "$BIN/psmctl" snapshot delete "$MNT" rd >/dev/null; b=$(ms)
printf '%-34s %14s %s\n' delete_e2e_ms "$(awk -v ns=$((b - a)) 'BEGIN { printf "%.3f", ns / 1e6 }')" "ms (psmctl)" | tee -a "$RES"

echo "== core: restore (10,000 files, 1% vs 100% changed)"
"$BIN/psmsnapbench" restore "$WORK" | tee -a "$RES"

echo "== failover: SIGKILL the owner of the scan volume, time a new psmfs to its first write"
MNT2=$WORK/mnt2; mkdir -p "$MNT2"; rm -f "$MNT2/after" "$MNT2/before"
"$BIN/psmfs" "$WORK/scanvol" "$MNT2" -f >>"$WORK/psmfs.log" 2>&1 &
P2=$!
for _ in $(seq 600); do findmnt -rn -M "$MNT2" >/dev/null 2>&1 && break; sleep 0.1; done
echo before > "$MNT2/before"; sync -f "$MNT2/before"
kill -9 "$P2"; wait "$P2" 2>/dev/null || true
fusermount3 -uz "$MNT2" 2>/dev/null || umount -l "$MNT2"
a=$(ms)
"$BIN/psmfs" "$WORK/scanvol" "$MNT2" -f >>"$WORK/psmfs.log" 2>&1 &
P2=$!
# The first write that lands in the mount (not in the bare directory under
# it) and is durable (fsync: its block was allocated, its metadata committed).
until findmnt -rn -M "$MNT2" >/dev/null 2>&1 && echo after 2>/dev/null > "$MNT2/after" &&
  sync -f "$MNT2/after" 2>/dev/null; do
  kill -0 "$P2" 2>/dev/null || { echo "psmfs failed to take over (see $WORK/psmfs.log)" >&2; exit 1; }
  sleep 0.005
done
b=$(ms)
printf '%-34s %14s %s\n' failover_first_write_ms "$(awk -v ns=$((b - a)) 'BEGIN { printf "%.1f", ns / 1e6 }')" \
  "ms (SIGKILL'd owner; new psmfs to first fsynced write; ${SCANBENCH_RANGES:-200000} ranges; target < 1000)" | tee -a "$RES"
fusermount3 -u "$MNT2"; wait "$P2" 2>/dev/null || true
echo "(also in $RES)"
