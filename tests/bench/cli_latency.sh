#!/usr/bin/env bash
# psmctl latency, process start to exit (issue #16 item 5: <= 5 ms each).
#
#   tests/bench/cli_latency.sh BUILD/bin [N]
#
# Makes a fresh 256 MiB volume with 10 small files, mounts it with psmfs,
# and times N (default 50) runs of each of
#   psmctl status MNT
#   psmctl snapshot list MNT
#   psmctl snapshot create MNT cliN     (N snapshots)
#   psmctl snapshot delete MNT cliN     (the same N snapshots)
# Each run is timed from just before posix_spawn (vfork + exec) to waitpid's
# return, output to /dev/null; prints min, median and p90 per command in ms.
# Needs python3, fusermount3 and FUSE. Work directory: BENCH_DIR (default
# REPO/var/bench)/cli.
set -euo pipefail
BIN=$(cd "$1" && pwd)
N=${2:-50}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-$REPO/var/bench}/cli
MNT=$WORK/mnt
VOL=$WORK/vol
PID=""
cleanup() {
  set +e
  findmnt -rn -M "$MNT" >/dev/null 2>&1 && fusermount3 -u "$MNT"
  [ -n "$PID" ] && wait "$PID" 2>/dev/null
  rm -rf "$VOL"
}
trap cleanup EXIT
mkdir -p "$WORK" "$MNT"
rm -rf "$VOL"
"$BIN/psmctl" mkfs "$VOL" --size 256M >/dev/null
"$BIN/psmfs" "$VOL" "$MNT" -f >>"$WORK/psmfs.log" 2>&1 &
PID=$!
for _ in $(seq 300); do findmnt -rn -M "$MNT" >/dev/null 2>&1 && break; sleep 0.1; done
findmnt -rn -M "$MNT" >/dev/null || { echo "psmfs did not mount $MNT" >&2; exit 1; }
for i in $(seq 10); do echo "file $i" > "$MNT/small$i"; done

echo "psmctl latency, exec to exit, $N runs each, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$BIN/psmctl" "$MNT" "$N" <<'EOF'
import os, sys, time
psmctl, mnt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
devnull = os.open(os.devnull, os.O_WRONLY)
def run(args):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(psmctl, [psmctl] + args, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, st = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    if os.waitstatus_to_exitcode(st) != 0:
        sys.exit("psmctl %s failed (exit %d)" % (" ".join(args), os.waitstatus_to_exitcode(st)))
    return (t1 - t0) / 1e6
def row(label, argsf):
    run(argsf(-1))  # warm the page cache; not counted
    t = sorted(run(argsf(i)) for i in range(n))
    print("%-24s min %6.2f  median %6.2f  p90 %6.2f ms" %
          (label, t[0], t[len(t) // 2], t[min(len(t) - 1, (len(t) * 9) // 10)]))
row("status", lambda i: ["status", mnt])
row("snapshot list", lambda i: ["snapshot", "list", mnt])
row("snapshot create", lambda i: ["snapshot", "create", mnt, "cli%d" % (i + 1000)])
row("snapshot delete", lambda i: ["snapshot", "delete", mnt, "cli%d" % (i + 1000)])
EOF
