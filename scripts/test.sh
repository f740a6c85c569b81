#!/usr/bin/env bash
# Runs every suite; prints one closing line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PSMFS_STRESS="${PSMFS_STRESS:-1}"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp ${LSAN_OPTIONS:-}"
pass=0; fail=0; failed=()
run() {  # run NAME DIR CTEST-ARGS...
  local name=$1 dir=$2; shift 2
  echo "=== $name"
  local log; log=$(mktemp)
  (cd "$dir" && ctest --output-on-failure "$@") 2>&1 | tee "$log"
  local p f
  p=$(grep -oE '[0-9]+ tests passed' "$log" | head -1 || true)  # "100% tests passed, 0 tests failed out of N"
  local total; total=$(grep -oE 'out of [0-9]+' "$log" | grep -oE '[0-9]+' | tail -1)
  local nf; nf=$(grep -oE '[0-9]+ tests failed' "$log" | grep -oE '^[0-9]+' | tail -1)
  total=${total:-0}; nf=${nf:-0}
  if [ "$total" -eq 0 ]; then nf=1; total=1; echo "!!! $name ran no test"; fi
  pass=$((pass + total - nf)); fail=$((fail + nf))
  [ "$nf" -eq 0 ] || failed+=("$name")
  rm -f "$log"
}
run "unit" build -L unit -j2
run "fuse (integration, mounts for real)" build -L fuse
run "unit under ASan+UBSan" build-asan -L unit -j2
run "concurrency and stress under TSan" build-tsan -L stress
echo
[ ${#failed[@]} -eq 0 ] || echo "failed suites: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
