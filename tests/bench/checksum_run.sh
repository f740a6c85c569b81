#!/usr/bin/env bash
# The cost of data checksums (issue #15 item 8, docs/integrity.md). Called
# by run.sh (make bench) as: tests/bench/checksum_run.sh BUILD/bin, after
# run.sh has built BUILD/bench/psmbench; `BENCH_ONLY=checksums make bench`
# (or tests/bench/run.sh BUILD/bin with it) runs this section alone.
# Output: a table on stdout and BUILD/bench/checksum_results.txt.
#
# Two volumes in the same run, on the same disk: "on" (psmctl mkfs, the
# default: checksums, every write redirected to a new block) and "off"
# (mkfs --checksum=off: overwrites in place, nothing verified), both
# mounted with default options. Rounds interleave (on, off, on, off, ...);
# each row is the median of the rounds. psmbench's workloads:
#   seqwrite   CK_SEQ_MIB (512) MiB in 1 MiB writes, then fsync      MB/s
#   seqread    that file, cold (sync, unmount + mount, drop_caches)  MB/s
#   randwrite  CK_RAND_OPS (20,000) 4 KiB pwrites at random aligned
#              offsets of a CK_RAND_MIB (256) MiB file written before
#              (preallocated), one thread, no fsync per write, one fsync
#              at the end (timed)                                    IOPS
#   randread   the same number of random 4 KiB preads of that file
#              (fragmented by the random writes on "on"), cold      IOPS
#   seqread_frag  that file read whole in 1 MiB reads, cold: on "on"
#              a quarter of its blocks were moved by the random writes
#              (every overwrite redirected), on "off" none          MB/s
# Scrub: a fresh volume of CK_SCRUB_MIB (512) MiB of data plus 32 MiB
# (so the sparse image is nearly all data), the data written and synced,
# the volume remounted and the caches dropped; then `psmctl scrub MNT
# --wait --json`; its rate is the verified bytes over the daemon's own
# started..finished time (the JSON's started_ns, finished_ns,
# checked_blocks). Against it, after unmounting and dropping the caches,
# `dd if=VOLUME/image of=/dev/null bs=1M`: image bytes over dd's time.
# The scrub is repeated CK_ROUNDS times like the rows (each time the volume
# is remounted and the caches dropped), as is dd.
#
# Environment: CK_SEQ_MIB, CK_RAND_MIB, CK_RAND_OPS, CK_SCRUB_MIB,
# CK_ROUNDS (default 3), BENCH_SCALE (scales the sizes, as in run.sh),
# BENCH_DIR (default REPO/var/bench; this uses BENCH_DIR/ck).
set -euo pipefail
die() { echo "checksum_run.sh: $*" >&2; exit 1; }
BIN=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(dirname "$BIN")/bench
PSMBENCH=$OUT/psmbench
[ -x "$PSMBENCH" ] || die "$PSMBENCH missing (run.sh builds it)"
WORK=${BENCH_DIR:-$REPO/var/bench}/ck
SCALE=${BENCH_SCALE:-1}
scaled() { awk -v x="$1" -v s="$SCALE" 'BEGIN { v = int(x * s); if (v < 1) v = 1; print v }'; }
SEQ_MIB=${CK_SEQ_MIB:-$(scaled 512)}
RAND_MIB=${CK_RAND_MIB:-$(scaled 256)}
RAND_OPS=${CK_RAND_OPS:-$(scaled 20000)}
SCRUB_MIB=${CK_SCRUB_MIB:-$(scaled 512)}
ROUNDS=${CK_ROUNDS:-3}
ROOT=0; [ "$(id -u)" = 0 ] && ROOT=1
RES=$OUT/checksum_results.txt
mkdir -p "$OUT"
: > "$RES"

declare -A PID=()
is_mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }
mount_v() {  # mount_v NAME: WORK/NAME.vol at WORK/NAME.mnt
  local v=$1
  "$BIN/psmfs" "$WORK/$v.vol" "$WORK/$v.mnt" -f >>"$WORK/$v.log" 2>&1 &
  PID[$v]=$!
  for _ in $(seq 300); do is_mounted "$WORK/$v.mnt" && return 0; sleep 0.1; done
  die "$WORK/$v.mnt did not get mounted; see $WORK/$v.log"
}
umount_v() {
  local v=$1
  if is_mounted "$WORK/$v.mnt"; then fusermount3 -u "$WORK/$v.mnt" 2>/dev/null || fusermount3 -uz "$WORK/$v.mnt" || true; fi
  if [ -n "${PID[$v]:-}" ]; then wait "${PID[$v]}" 2>/dev/null || true; PID[$v]=""; fi
}
drop() { sync; if [ $ROOT = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
cold() { sync; umount_v "$1"; drop; mount_v "$1"; }
cleanup() {
  set +e
  for v in on off scrub; do umount_v "$v"; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for v in on off scrub; do is_mounted "$WORK/$v.mnt" && fusermount3 -uz "$WORK/$v.mnt"; done
rm -rf "$WORK"
mkdir -p "$WORK/on.mnt" "$WORK/off.mnt" "$WORK/scrub.mnt"
VOL_MIB=$((2 * (SEQ_MIB + RAND_MIB) + 1024))
"$BIN/psmctl" mkfs "$WORK/on.vol" --size "${VOL_MIB}M" >/dev/null
"$BIN/psmctl" mkfs "$WORK/off.vol" --size "${VOL_MIB}M" --checksum=off >/dev/null
"$BIN/psmctl" mkfs "$WORK/scrub.vol" --size "$((SCRUB_MIB + 32))M" >/dev/null
mount_v on; mount_v off

bench() {  # [ROW=name] bench VOLUME psmbench-args...: appends "ROW VOLUME VALUE UNIT"
  local v=$1 tag name value unit; shift
  "$PSMBENCH" "$@" > "$WORK/out" || die "psmbench $* failed on $v"
  while read -r tag name value unit; do
    [ "$tag" = RESULT ] || continue
    name=${ROW:-${name%_1t}}
    echo "$name $v $value $unit" >> "$RES"
    printf '  %-4s %-10s %12s %s\n' "$v" "$name" "$value" "$unit"
  done < "$WORK/out"
}
io() {
  local v=$1 d=$WORK/$1.mnt
  bench "$v" seqwrite "$d/seq" "$SEQ_MIB"
  cold "$v"
  bench "$v" seqread "$d/seq"
  rm -f "$d/seq"
  "$PSMBENCH" fill "$d/rand" "$RAND_MIB"
  drop
  bench "$v" randwrite "$d/rand" 1 "$RAND_OPS"
  cold "$v"
  bench "$v" randread "$d/rand" 1 "$RAND_OPS"
  cold "$v"
  ROW=seqread_frag bench "$v" seqread "$d/rand"
  rm -f "$d/rand"
}
json_num() { sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" "$2" | head -1; }
scrub_round() {
  local mnt=$WORK/scrub.mnt a b bytes
  umount_v scrub; drop; mount_v scrub
  "$BIN/psmctl" scrub "$mnt" --wait --json > "$WORK/scrub.json" || die "scrub failed: $(cat "$WORK/scrub.json")"
  a=$(json_num started_ns "$WORK/scrub.json"); b=$(json_num finished_ns "$WORK/scrub.json")
  bytes=$(( $(json_num checked_blocks "$WORK/scrub.json") * 4096 ))
  awk -v n="$bytes" -v ns=$((b - a)) 'BEGIN { printf "scrub scrub %.1f MB/s\n", n / 1048576 / (ns / 1e9) }' >> "$RES"
  tail -1 "$RES" | awk '{ printf "  %-4s %-10s %12s %s (%d MiB verified)\n", "on", "scrub", $3, $4, '"$bytes"' / 1048576 }'
  umount_v scrub; drop
  a=$(date +%s%N)
  dd if="$WORK/scrub.vol/image" of=/dev/null bs=1M status=none
  b=$(date +%s%N)
  bytes=$(stat -c %s "$WORK/scrub.vol/image")
  awk -v n="$bytes" -v ns=$((b - a)) 'BEGIN { printf "scrub dd %.1f MB/s\n", n / 1048576 / (ns / 1e9) }' >> "$RES"
  tail -1 "$RES" | awk '{ printf "  %-4s %-10s %12s %s (image)\n", "dd", "scrub", $3, $4 }'
}

[ $ROOT = 1 ] || echo "warning: not root; caches are not dropped, cold reads are warm" >&2
echo "== checksums: on vs --checksum=off; seq ${SEQ_MIB} MiB, random ${RAND_MIB} MiB x ${RAND_OPS} ops, scrub ${SCRUB_MIB} MiB; median of $ROUNDS rounds"
T0=$(date +%s)
mount_v scrub
"$PSMBENCH" fill "$WORK/scrub.mnt/data" "$SCRUB_MIB"
for _ in $(seq "$ROUNDS"); do
  io on
  io off
  scrub_round
done
umount_v on; umount_v off

{
  echo "checksums on vs off: seq ${SEQ_MIB} MiB, random ${RAND_MIB} MiB x ${RAND_OPS} ops (1 thread), scrub of ${SCRUB_MIB} MiB; median of $ROUNDS interleaved rounds, $(($(date +%s) - T0)) s"
  echo
  awk '
    { k = $1 " " $2; n[k]++; v[k, n[k]] = $3; u[$1] = $4 }
    function median(k,   i, j, m, a, t) {
      m = n[k]; if (!m) return ""
      for (i = 1; i <= m; i++) a[i] = v[k, i] + 0
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
      print "| workload | checksums on | --checksum=off | on / off | target |"
      print "|---|---:|---:|---:|---:|"
      nt = split("seqwrite 0.9 seqread 0.9 randwrite 0.8 randread 0.9 seqread_frag —", T, " ")
      for (i = 1; i < nt; i += 2) {
        w = T[i]; on = median(w " on"); off = median(w " off")
        printf "| %s (%s) | %.0f | %.0f | %.2f | %s |\n", w, u[w], on, off, (off > 0 ? on / off : 0), (T[i + 1] == "—" ? "—" : ">= " T[i + 1])
      }
      s = median("scrub scrub"); d = median("scrub dd")
      printf "| scrub vs dd of the image (MB/s) | %.0f | %.0f (dd) | %.2f | >= 0.8 |\n", s, d, (d > 0 ? s / d : 0)
    }' "$RES"
} > "$OUT/checksum_results.md"
echo
cat "$OUT/checksum_results.md"
echo "(also in $OUT/checksum_results.md; every round's figures in $RES)"
