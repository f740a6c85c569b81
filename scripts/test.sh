#!/usr/bin/env bash
# Runs every suite (docs/testing.md); prints each suite's wall time and one
# closing line "N passed, N failed".
#
#   build/       unit, fuse
#   build-asan/  unit, fuse        (ASan+UBSan: the core, the daemon, psm-guard, psmctl)
#   build-tsan/  stress, fuse      (TSan: the same)
#
# In the sanitizer trees every test runs through tests/sanitizer_run.sh: a
# sanitizer report of any process a test starts fails that test.
set -uo pipefail
cd "$(dirname "$0")/.."
export PSMFS_STRESS="${PSMFS_STRESS:-1}"
# tsan.supp: only RocksDB-internal races (see its header).
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp ${LSAN_OPTIONS:-}"
pass=0; fail=0; failed=(); times=()
run() {  # run NAME DIR CTEST-ARGS...
  local name=$1 dir=$2; shift 2
  echo "=== $name"
  local log; log=$(mktemp)
  local start=$SECONDS
  (cd "$dir" && ctest --output-on-failure "$@") 2>&1 | tee "$log"
  local secs=$((SECONDS - start))
  times+=("$(printf '%4d:%02d  %s' $((secs / 60)) $((secs % 60)) "$name")")
  echo "=== $name: ${secs} s"
  local total; total=$(grep -oE 'out of [0-9]+' "$log" | grep -oE '[0-9]+' | tail -1)
  local nf; nf=$(grep -oE '[0-9]+ tests failed' "$log" | grep -oE '^[0-9]+' | tail -1)
  total=${total:-0}; nf=${nf:-0}
  if [ "$total" -eq 0 ]; then nf=1; total=1; echo "!!! $name ran no test"; fi
  pass=$((pass + total - nf)); fail=$((fail + nf))
  [ "$nf" -eq 0 ] || failed+=("$name")
  rm -f "$log"
}
# Two tests at a time in every suite (each has its own volume, mount point
# and daemon): the sanitizer suites are CPU-bound and take about half the
# time (240 -> 136 s ASan fuse, 248 -> 129 s TSan fuse, 218 -> 110 s TSan
# stress on 2 cores; the normal fuse suite, 103 -> 60 s). The longest tests
# start first (their COST, tests/CMakeLists.txt), so a clean clone does not
# end on one of them alone.
run "unit" build -L unit -j2
run "fuse (integration, mounts for real)" build -L fuse -j2
run "unit under ASan+UBSan" build-asan -L unit -j2
run "fuse under ASan+UBSan (daemon, psm-guard, psmctl)" build-asan -L fuse -j2
run "concurrency and stress under TSan" build-tsan -L stress -j2
# The daemon keeps serving after a race report (halt_on_error=0): the test
# fails on the report file and on the daemon's exit status 66 at unmount,
# instead of on whatever a vanished mount makes it do next.
TSAN_OPTIONS="$TSAN_OPTIONS halt_on_error=0" run "fuse under TSan (daemon, psm-guard, psmctl)" build-tsan -L fuse -j2
echo
echo "wall time per suite (min:s):"
printf '%s\n' "${times[@]}"
[ ${#failed[@]} -eq 0 ] || echo "failed suites: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
