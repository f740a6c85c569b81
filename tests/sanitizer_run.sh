#!/usr/bin/env bash
# sanitizer_run.sh REPORT_DIR PROGRAM [ARGS...]
#
# How CTest runs every test program of a sanitizer build (-DPSM_SANITIZE=
# address|thread; tests/CMakeLists.txt). A report of a sanitizer runtime in
# ANY process the test starts fails the test: the test program and its forked
# children, psmfs daemons in the foreground or daemonized (stderr on
# /dev/null), psm-guard, psmctl, a daemon mount(8) started. Exit statuses
# alone cannot show that: a daemon may be SIGKILLed by the test after its
# report, and a test that expects psmctl to fail would take a sanitizer's
# exit status for the refusal it wanted.
#
# So every sanitizer writes its reports to REPORT_DIR/report.PID (log_path,
# appended to ASAN_OPTIONS, TSAN_OPTIONS, UBSAN_OPTIONS and LSAN_OPTIONS, so
# it overrides a log_path given there). After PROGRAM ends this waits (10 s at
# most) for processes still carrying that log_path in their environment — a
# daemonized psmfs finishing its unmount, psm-guard noticing it — then prints
# every report and fails if there is one, whatever PROGRAM's exit status.
# The fixtures (tests/common/mount_fixture.h, psm_mount.h) also read
# REPORT_DIR/report.<daemon pid>, named by PSMFS_SANITIZER_REPORTS, to fail
# the very check that unmounts or kills a daemon that reported.
#
# REPORT_DIR is emptied first and kept afterwards (mode 1777: tests run some
# children as other users).
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT_DIR PROGRAM [ARGS...]" >&2
  exit 2
fi
dir=$1
shift
rm -rf -- "$dir" && mkdir -p -- "$dir" && chmod 1777 "$dir" || exit 2
marker="log_path=$dir/report"
# Only the test gets these variables, not this shell: what looks for
# stragglers below must not find itself.
vars=("PSMFS_SANITIZER_REPORTS=$dir")
for v in ASAN_OPTIONS TSAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
  vars+=("$v=${!v:-} $marker")
done

env "${vars[@]}" "$@"
rc=$?

# Processes of this test that are still ending: their environment holds the
# marker (psm-guard gets the *SAN_OPTIONS variables only).
stragglers() {
  grep -lzF -- "$marker" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | tr '\n' ' '
}
left=$(stragglers)
for _ in $(seq 100); do
  [ -z "$left" ] && break
  sleep 0.1
  left=$(stragglers)
done
[ -z "$left" ] || echo "sanitizer_run: processes of this test still running after 10 s: $left"

n=0
for f in "$dir"/report.*; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  echo "==== sanitizer report of pid ${f##*.}: $f"
  cat -- "$f"
done
if [ "$n" -gt 0 ]; then
  echo "sanitizer_run: $n process(es) of this test wrote sanitizer reports (kept in $dir): FAILED"
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
