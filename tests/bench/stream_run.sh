#!/usr/bin/env bash
# Backup stream benchmarks (issue #6). Called by run.sh (make bench) as:
#   tests/bench/stream_run.sh BUILD/bin
# Output: a table on stdout and BUILD/bench/stream_results.txt.
#
# A tree of STREAMBENCH_FILES files holding STREAMBENCH_MIB MiB of random
# data (default 10,000 files, 1 GiB) is written into a psmfs mount and
# snapshotted. With cold caches each time:
#   tar_create_snapshot   tar -c of .snapshots/full through the mount
#   send_full             psmctl send MNT full > /dev/null
#   tar_extract_mount     tar -x of that tree (from a file) into a fresh mount
#   receive_full          psmctl receive MNT2 < full.stream (a fresh volume)
# (cold: sync + drop_caches, then the programs are paged in again) and, for
# context, tar -c / tar -x of the same tree in a native directory
# on the same disk and through libfuse's passthrough_ll (when run.sh built
# it). Then 1% of the files are rewritten and snapshotted: incremental send
# (--from full) vs a full send of that snapshot, size and time.
# Rates are MB/s of the tree's data (the same numerator for every row, so a
# ratio of rates is a ratio of times). Ratios: psmfs over tar (>= 1 means
# at least as fast), incremental over full (target <= 0.05).
#
# Environment: STREAMBENCH_FILES, STREAMBENCH_MIB, BENCH_DIR (default
# REPO/var/bench).
set -euo pipefail
BIN=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(dirname "$BIN")/bench
WORK=${BENCH_DIR:-$REPO/var/bench}/stream
FILES=${STREAMBENCH_FILES:-10000}
MIB=${STREAMBENCH_MIB:-1024}
RES=$OUT/stream_results.txt
mkdir -p "$OUT" "$WORK"
: > "$RES"
PIDS=()
MNTS=()
cleanup() {
  set +e
  for m in "${MNTS[@]}"; do findmnt -rn -M "$m" >/dev/null 2>&1 && fusermount3 -u "$m"; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ms() { date +%s%N; }
# Cold data and metadata, warm programs: after dropping the caches the
# binaries are paged in again (a cold psmctl, which maps librocksdb, costs
# ~40 ms to start; that is not the stream's cost and would swamp the
# incremental figures).
cold() {
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  "$BIN/psmctl" --version >/dev/null; tar --version >/dev/null; cat --version >/dev/null
}
wait_mount() {
  local i
  for i in $(seq 300); do findmnt -rn -M "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "stream_run.sh: $1 did not get mounted" >&2; exit 1
}
mount_psm() {  # mount_psm NAME: a fresh volume at $WORK/NAME.mnt
  local v=$WORK/$1.vol m=$WORK/$1.mnt
  "$BIN/psmctl" mkfs "$v" --size "$((MIB * 3 + 1024))M" >/dev/null
  mkdir -p "$m"
  "$BIN/psmfs" "$v" "$m" -f >>"$WORK/psmfs.log" 2>&1 &
  PIDS+=($!); MNTS+=("$m")
  wait_mount "$m"
}
BYTES=$((MIB * 1048576))
rate() {  # rate START_NS END_NS -> MB/s of the tree's data
  awk -v b="$BYTES" -v ns=$(($2 - $1)) 'BEGIN { printf "%.1f", b / 1e6 / (ns / 1e9) }'
}
row() { printf '%-30s %12s %s\n' "$1" "$2" "$3" | tee -a "$RES"; }
timed() {  # timed CMD...: prints the elapsed ns
  local a b; a=$(ms); "$@"; b=$(ms); echo $((b - a))
}
tar_c() { tar -cf - -C "$1" . | cat > /dev/null; }  # (GNU tar skips data written to /dev/null)
tar_x() { mkdir -p "$2" && tar -xf "$1" -C "$2"; }

echo "== streams: $FILES files, $MIB MiB"
mount_psm a
A=$WORK/a.mnt
mkdir "$A/tree"
per=$((BYTES / FILES))
head -c "$BYTES" /dev/urandom | (cd "$A/tree" && split -b "$per" -a 6 - f)
"$BIN/psmctl" snapshot create "$A" full >/dev/null
tar -cf "$WORK/tree.tar" -C "$A/.snapshots/full" .
mkdir -p "$WORK/native"; tar_x "$WORK/tree.tar" "$WORK/native/src"

cold; t_tar=$(timed tar_c "$A/.snapshots/full")
row tar_create_snapshot_MBps "$(rate 0 "$t_tar")" "MB/s (tar -c through the mount)"
cold; t_send=$(timed sh -c "'$BIN/psmctl' send -q '$A' full > /dev/null")
row send_full_MBps "$(rate 0 "$t_send")" "MB/s (psmctl send > /dev/null)"
row send_over_tar "$(awk -v a="$t_tar" -v b="$t_send" 'BEGIN { printf "%.2f", a / b }')" "x (target >= 1)"

"$BIN/psmctl" send -q "$A" full > "$WORK/full.stream"
mount_psm x
cold; t_tx=$(timed tar_x "$WORK/tree.tar" "$WORK/x.mnt/tree")
row tar_extract_mount_MBps "$(rate 0 "$t_tx")" "MB/s (tar -x into a mount)"
mount_psm b
cold; t_recv=$(timed sh -c "'$BIN/psmctl' receive -q '$WORK/b.mnt' < '$WORK/full.stream'")
row receive_full_MBps "$(rate 0 "$t_recv")" "MB/s (psmctl receive < file)"
row receive_over_tar_extract "$(awk -v a="$t_tx" -v b="$t_recv" 'BEGIN { printf "%.2f", a / b }')" "x (target >= 1)"

cold; t_ntc=$(timed tar_c "$WORK/native/src")
row tar_create_native_MBps "$(rate 0 "$t_ntc")" "MB/s (native directory, same disk)"
cold; t_ntx=$(timed tar_x "$WORK/tree.tar" "$WORK/native/dst")
row tar_extract_native_MBps "$(rate 0 "$t_ntx")" "MB/s (native directory, same disk)"
if [ -x "$OUT/passthrough_ll" ]; then
  mkdir -p "$WORK/pt"
  "$OUT/passthrough_ll" -f -o "source=$WORK/native,writeback" "$WORK/pt" >>"$WORK/pt.log" 2>&1 &
  PIDS+=($!); MNTS+=("$WORK/pt")
  wait_mount "$WORK/pt"
  cold; t_ptc=$(timed tar_c "$WORK/pt/src")
  row tar_create_passthrough_MBps "$(rate 0 "$t_ptc")" "MB/s (passthrough_ll)"
  cold; t_ptx=$(timed tar_x "$WORK/tree.tar" "$WORK/pt/dst2")
  row tar_extract_passthrough_MBps "$(rate 0 "$t_ptx")" "MB/s (passthrough_ll)"
  row send_over_tar_passthrough "$(awk -v a="$t_ptc" -v b="$t_send" 'BEGIN { printf "%.2f", a / b }')" x
fi
row send_over_tar_native "$(awk -v a="$t_ntc" -v b="$t_send" 'BEGIN { printf "%.2f", a / b }')" x

# Incremental: rewrite 1% of the files.
n=$((FILES / 100)); [ "$n" -ge 1 ] || n=1
all=("$A"/tree/f*)
for f in "${all[@]:0:n}"; do head -c "$per" /dev/urandom > "$f"; done
"$BIN/psmctl" snapshot create "$A" inc >/dev/null
cold; t_inc=$(timed sh -c "'$BIN/psmctl' send -q '$A' inc --from full > '$WORK/inc.stream'")
cold; t_full2=$(timed sh -c "'$BIN/psmctl' send -q '$A' inc > '$WORK/full2.stream'")
s_inc=$(stat -c %s "$WORK/inc.stream"); s_full=$(stat -c %s "$WORK/full2.stream")
row incremental_bytes "$s_inc" "bytes ($n of $FILES files rewritten)"
row full_bytes "$s_full" bytes
row incremental_over_full_size "$(awk -v a="$s_inc" -v b="$s_full" 'BEGIN { printf "%.4f", a / b }')" "x (target <= 0.05)"
row incremental_over_full_time "$(awk -v a="$t_inc" -v b="$t_full2" 'BEGIN { printf "%.4f", a / b }')" "x (target <= 0.05)"
cold; t_irecv=$(timed sh -c "'$BIN/psmctl' receive -q '$WORK/b.mnt' < '$WORK/inc.stream'")
row incremental_receive_over_full "$(awk -v a="$t_irecv" -v b="$t_recv" 'BEGIN { printf "%.4f", a / b }')" x
cmp -s <(cd "$A/.snapshots/inc/tree" && cat f* | md5sum) <(cd "$WORK/b.mnt/.snapshots/inc/tree" && cat f* | md5sum) ||
  { echo "stream_run.sh: the received tree differs" >&2; exit 1; }
echo "(also in $RES)"
