#!/usr/bin/env bash
# Benchmarks psmfs against its FUSE peers and a native directory, all on the
# disk that holds the repository (var/bench/). Called by `make bench` as:
# tests/bench/run.sh BUILD/bin
#
# Targets:
#   psmfs           a fresh volume, default mount options
#   passthrough     libfuse's passthrough_ll over a native directory
#   passthrough_wb  the same with -o writeback
#   zfs             zfs-fuse (Debian's package and default zfsrc), a pool on a
#                   sparse file, its daemon in a private mount namespace
#                   (tests/bench/zfs_peer.sh: nothing on the host is touched)
#   native          a plain directory
#
# Workloads (tests/bench/psmbench.cc runs them):
#   seqwrite      1 GiB in 1 MiB writes, ending with fsync            MB/s
#   seqread       that file with cold caches                          MB/s
#   randwrite     4 KiB random writes on a 256 MiB file, 1 and 4
#                 threads, ending with fsync                          IOPS
#   randread      4 KiB random reads of it, cold caches, 1/4 threads  IOPS
#   create_Tt     N files of 4 KiB made by T threads (1, 4, 16), each
#                 in its own directory; create_8t_shared: 8 threads in
#                 one directory                                       files/s
#   unlink_Tt     unlinking them, the same threads and directories    files/s
#   stat          stat of the 16-thread set, one thread, cold caches  files/s
#   readdir       listing its 16 directories (no stat), cold caches   entries/s
#   read          open + read 4 KiB + close of each, cold caches      files/s
# "Cold" means: sync, echo 3 > /proc/sys/vm/drop_caches, and for the FUSE
# targets also unmount and mount again (a new daemon; for zfs-fuse a new
# daemon, so its ARC is empty too).
#
# Environment:
#   BENCH_SCALE=0.1   shrink every size and count (default 1)
#   BENCH_DIR=DIR     work directory (default REPO/var/bench)
#   BENCH_KEEP=1      keep the work directory's data afterwards
#   BENCH_ROUNDS=N    run every target N times, rounds interleaved
#                     (psmfs, passthrough, ..., native, psmfs, ...), and
#                     report each one's median (default 2)
#   BENCH_TARGETS="psmfs zfs"  run only these targets (psmfs is always run;
#                     default: all five)
#   BENCH_WORKLOADS=small  only the small-file rows ("io" only the others;
#                     default: both)
#   BENCH_SNAP=0      skip the snapshot, scanner and stream benchmarks
#   BENCH_CHECKSUMS=0 skip the checksum section (checksum_run.sh: checksums
#                     on vs --checksum=off, a mirror vs none, scrub vs dd)
#   BENCH_ONLY=checksums  run only that section (builds psmbench, nothing
#                     else: no peers, no zfs-fuse needed)
# For create and unlink the FUSE daemon's CPU time (user + system, from
# /proc/PID/stat) per file goes into a second table: what the daemon itself
# spends, apart from the kernel and the round trips.
# Output: the tables on stdout and BUILD/bench/results.md (with the machine).
# Everything is unmounted and every daemon stopped on exit, whatever happens.
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
case ${BENCH_ONLY:-} in
  "") ;;
  checksums) exec "$REPO/tests/bench/checksum_run.sh" "$BIN" ;;
  *) die "unknown BENCH_ONLY: $BENCH_ONLY (one of: checksums)" ;;
esac
EX=/usr/share/doc/libfuse3-dev/examples
for f in passthrough_ll.c passthrough_helpers.h; do
  if [ -f "$EX/$f" ]; then cp "$EX/$f" "$OUT/$f"
  elif [ -f "$EX/$f.gz" ]; then zcat "$EX/$f.gz" > "$OUT/$f"
  else die "$EX/$f(.gz) not found: install libfuse3-dev"; fi
done
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$OUT/passthrough_ll" "$OUT/passthrough_ll.c" \
  $(pkg-config fuse3 --cflags) $(pkg-config fuse3 --libs)

# ---------------------------------------------------------------- targets
ALL_TARGETS="psmfs passthrough passthrough_wb zfs native"
TARGETS=psmfs
for t in ${BENCH_TARGETS:-$ALL_TARGETS}; do
  case " $ALL_TARGETS " in *" $t "*) ;; *) die "unknown target in BENCH_TARGETS: $t (one of: $ALL_TARGETS)" ;; esac
  [ "$t" = psmfs ] || TARGETS="$TARGETS $t"
done
WORKLOADS=${BENCH_WORKLOADS:-io small}
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- mounts
# shellcheck source=tests/bench/zfs_peer.sh
. "$REPO/tests/bench/zfs_peer.sh"
if has "$TARGETS" zfs; then zfs_check; fi  # before anything is mounted
PSM_PID=""; PT_PID=""; PTWB_PID=""
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
  "$OUT/passthrough_ll" -f -o "source=$WORK/pt-src" "$WORK/pt" >>"$WORK/passthrough.log" 2>&1 &
  PT_PID=$!
  wait_mount "$WORK/pt"
}
mount_ptwb() {
  "$OUT/passthrough_ll" -f -o "source=$WORK/ptwb-src,writeback" "$WORK/ptwb" >>"$WORK/passthrough_wb.log" 2>&1 &
  PTWB_PID=$!
  wait_mount "$WORK/ptwb"
}
cleanup() {
  set +e
  unmount "$WORK/psm" "$PSM_PID"
  unmount "$WORK/pt" "$PT_PID"
  unmount "$WORK/ptwb" "$PTWB_PID"
  zfs_stop
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$WORK/vol" "$WORK/pt-src" "$WORK/ptwb-src" "$WORK/native" "$WORK/zfs"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for m in "$WORK/psm" "$WORK/pt" "$WORK/ptwb"; do is_mounted "$m" && fusermount3 -uz "$m"; done
rm -rf "$WORK/vol" "$WORK/pt-src" "$WORK/ptwb-src" "$WORK/native" "$WORK/zfs" "$WORK"/*.log
mkdir -p "$WORK/psm" "$WORK/pt" "$WORK/pt-src" "$WORK/ptwb" "$WORK/ptwb-src" "$WORK/native" "$WORK/zfs-mnt"
"$BIN/psmctl" mkfs "$WORK/vol" --size "${VOL_GIB}G" >/dev/null
mount_psm
has "$TARGETS" passthrough && mount_pt
has "$TARGETS" passthrough_wb && mount_ptwb
has "$TARGETS" zfs && zfs_setup "$WORK/zfs" "$WORK/zfs-mnt" "$VOL_GIB"

dir_of() {
  case $1 in
    psmfs) echo "$WORK/psm" ;;
    passthrough) echo "$WORK/pt" ;;
    passthrough_wb) echo "$WORK/ptwb" ;;
    zfs) echo "$WORK/zfs-mnt" ;;
    native) echo "$WORK/native" ;;
  esac
}
on() {  # on TARGET CMD...: run CMD where TARGET's mount is visible
  local t=$1; shift
  if [ "$t" = zfs ]; then zfs_in "$@"; else "$@"; fi
}
cold() {  # cold TARGET: nothing cached, for the target or below it
  sync
  case $1 in
    psmfs) unmount "$WORK/psm" "$PSM_PID"; mount_psm ;;
    passthrough) unmount "$WORK/pt" "$PT_PID"; mount_pt ;;
    passthrough_wb) unmount "$WORK/ptwb" "$PTWB_PID"; mount_ptwb ;;
    zfs) zfs_cold ;;
  esac
  if [ $ROOT = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

RES=$OUT/results.txt
CPU=$OUT/daemon_cpu.txt
: > "$RES"; : > "$CPU"
daemon_pid() {
  case $1 in
    psmfs) echo "$PSM_PID" ;; passthrough) echo "$PT_PID" ;;
    passthrough_wb) echo "$PTWB_PID" ;; zfs) echo "$ZFS_PID" ;;
  esac
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime
TICK=$(getconf CLK_TCK)
bench() {  # bench TARGET psmbench-args...
  local t=$1; shift
  local pid c0="" name
  pid=$(daemon_pid "$t")
  # Create and unlink: also the daemon's CPU time per file.
  if [ -n "$pid" ] && { [ "$1" = create ] || [ "$1" = unlink ]; }; then c0=$(cpu_ticks "$pid"); fi
  if ! on "$t" "$OUT/psmbench" "$@" | while read -r tag name value unit; do
    [ "$tag" = RESULT ] || continue
    echo "$name $t $value $unit" >> "$RES"
    printf '  %-14s %-20s %12s %s\n' "$t" "$name" "$value" "$unit"
  done; then
    die "psmbench $* failed on $t"
  fi
  if [ -n "$c0" ]; then
    name="$1_$4t"; [ "$5" = shared ] && name="${name}_shared"
    awk -v n="$name" -v t="$t" -v d=$(($(cpu_ticks "$pid") - c0)) -v hz="$TICK" -v f="$3" \
      'BEGIN { printf "%s %s %.1f us\n", n, t, d / hz * 1e6 / f }' >> "$CPU"
  fi
}

io() {  # the large-file workloads on TARGET
  local t=$1 d; d=$(dir_of "$1")
  bench "$t" seqwrite "$d/seq" "$SEQ_MIB"
  cold "$t"
  bench "$t" seqread "$d/seq"
  on "$t" rm -f "$d/seq"
  on "$t" "$OUT/psmbench" fill "$d/rand" "$RAND_MIB"
  bench "$t" randwrite "$d/rand" 1 "$RAND_OPS"
  bench "$t" randwrite "$d/rand" 4 "$RAND_OPS"
  cold "$t"
  bench "$t" randread "$d/rand" 1 "$RAND_OPS"
  cold "$t"
  bench "$t" randread "$d/rand" 4 "$RAND_OPS"
  on "$t" rm -f "$d/rand"
}

small() {  # the small-file workloads on TARGET
  local t=$1 d cfg; d=$(dir_of "$1")/small
  on "$t" mkdir -p "$d"
  for cfg in "1 own" "4 own" "8 shared"; do
    # shellcheck disable=SC2086
    bench "$t" create "$d" "$SMALL_N" $cfg
    # shellcheck disable=SC2086
    bench "$t" unlink "$d" "$SMALL_N" $cfg
  done
  bench "$t" create "$d" "$SMALL_N" 16 own
  cold "$t"
  bench "$t" stat "$d" "$SMALL_N" 16 own
  cold "$t"
  bench "$t" readdir "$d"
  cold "$t"
  bench "$t" read "$d" "$SMALL_N" 16 own
  bench "$t" unlink "$d" "$SMALL_N" 16 own
  on "$t" rmdir "$d"
}

[ $ROOT = 1 ] || echo "warning: not root; caches are not dropped, cold reads are warm" >&2
echo "scale $SCALE: seq ${SEQ_MIB} MiB, random ${RAND_MIB} MiB x ${RAND_OPS} ops, ${SMALL_N} small files; targets: $TARGETS; median of $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    if has "$WORKLOADS" io; then io "$t"; fi
    if has "$WORKLOADS" small; then small "$t"; fi
  done
done

# ---------------------------------------------------------------- report
# Both tables: per (workload, target) the median of the rounds' figures
# (input lines "WORKLOAD TARGET VALUE UNIT"), and the targets' names.
AWK_MEDIANS='
  BEGIN {
    nt = split(targets, T, " ")
    name["psmfs"] = "psmfs"; name["passthrough"] = "passthrough_ll"
    name["passthrough_wb"] = "passthrough_ll -o writeback"; name["zfs"] = "zfs-fuse"; name["native"] = "native"
  }
  { k = $1 " " $2; n[k]++; v[k, n[k]] = $3; u[$1] = $4 }
  function median(k,   i, j, m, a, t) {
    m = n[k]; if (!m) return ""
    for (i = 1; i <= m; i++) a[i] = v[k, i] + 0
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
'
disk_dev=$(findmnt -rn -o SOURCE -T "$WORK" | head -1)
machine="$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r), $(findmnt -rn -o FSTYPE -T "$WORK") on $disk_dev ($(lsblk -dno MODEL,ROTA "$disk_dev" 2>/dev/null | awk '{ r = $NF == 1 ? "rotational" : "non-rotational"; $NF = ""; print ($0 == " " || $0 == "" ? "" : $0) r }'))"
{
  echo "scale $SCALE, ${SMALL_N} small files, median of $ROUNDS interleaved rounds; $machine"
  echo
  # Medians per (workload, target); "best FUSE peer" is the highest median
  # among the FUSE targets that ran (passthrough, passthrough_wb, zfs).
  awk -v targets="$TARGETS" "$AWK_MEDIANS"'
    BEGIN {
      nw = split("seqwrite seqread randwrite_1t randwrite_4t randread_1t randread_4t " \
                 "create_1t create_4t create_16t create_8t_shared unlink_1t unlink_4t unlink_16t " \
                 "unlink_8t_shared stat readdir read", W, " ")
    }
    END {
      printf "| workload |"; for (i = 1; i <= nt; i++) printf " %s |", name[T[i]]
      printf " psmfs / best FUSE peer | psmfs / native |\n|---|"
      for (i = 1; i <= nt; i++) printf "---:|"
      printf "---:|---:|\n"
      for (w = 1; w <= nw; w++) {
        wl = W[w]; if (!((wl " psmfs") in n)) continue
        p = median(wl " psmfs"); best = 0; x = ""
        printf "| %s (%s) |", wl, u[wl]
        for (i = 1; i <= nt; i++) {
          m = median(wl " " T[i]); printf " %s |", (m == "" ? "—" : sprintf("%.0f", m))
          if (T[i] == "native") x = m
          else if (T[i] != "psmfs" && m != "" && m > best) best = m
        }
        printf " %s | %s |\n", (best > 0 ? sprintf("%.2f", p / best) : "—"), (x > 0 ? sprintf("%.2f", p / x) : "—")
      }
    }' "$RES"
  echo
  echo "Daemon CPU per file (user + system time of the FUSE daemon over the phase, divided by the files; µs, lower is better; median of $ROUNDS rounds, tick $((1000 / TICK)) ms):"
  echo
  awk -v targets="$TARGETS" "$AWK_MEDIANS"'
    BEGIN {
      delete name["native"]
      nw = split("create_1t create_4t create_16t create_8t_shared unlink_1t unlink_4t unlink_16t unlink_8t_shared", W, " ")
    }
    END {
      printf "| workload |"; for (i = 1; i <= nt; i++) if (T[i] in name) printf " %s |", name[T[i]]
      printf "\n|---|"; for (i = 1; i <= nt; i++) if (T[i] in name) printf "---:|"
      printf "\n"
      for (w = 1; w <= nw; w++) {
        if (!((W[w] " psmfs") in n)) continue
        printf "| %s |", W[w]
        for (i = 1; i <= nt; i++) if (T[i] in name) { m = median(W[w] " " T[i]); printf " %s |", (m == "" ? "—" : sprintf("%.0f", m)) }
        printf "\n"
      }
    }' "$CPU"
} > "$OUT/results.md"
echo
cat "$OUT/results.md"
echo
echo "(also in $OUT/results.md; raw figures of every round in $RES; higher is better everywhere)"

# Checksums on vs off, scrub vs dd (docs/performance.md, "Checksums").
if [ "${BENCH_CHECKSUMS:-1}" != 0 ]; then
  "$REPO/tests/bench/checksum_run.sh" "$BIN"
fi

[ "${BENCH_SNAP:-1}" = 0 ] && exit 0
# Snapshot and scanner benchmarks (docs/performance.md, second part).
if [ -x "$BIN/psmsnapbench" ]; then
  "$REPO/tests/bench/snap_run.sh" "$BIN"
fi
# Backup streams: send/receive vs tar (docs/performance.md).
"$REPO/tests/bench/stream_run.sh" "$BIN"
