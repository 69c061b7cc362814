#!/usr/bin/env bash
# tests/fuzz/run.sh — build the libFuzzer targets (tests/fuzz/fuzz_*.c) with
# clang in BUILD (default build-fuzz) and run each from the committed seed
# corpus (tests/fuzz/corpus/TARGET/) for SECONDS seconds.
#   run.sh smoke      10 s per target (make test / CI), a scratch corpus
#   run.sh long       FUZZ_SECONDS (default 600) per target (make fuzz); the
#                     corpus grows in BUILD/corpus/TARGET and is kept
# Prints one line per target (executions, crashes) and a last line
#   fuzz: targets=N seconds_each=S execs=E crashes=C
# A crash leaves its input as BUILD/crash-TARGET-* and fails the run.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
MODE="${1:-smoke}"
BUILD="${BUILD_FUZZ:-$SRC/build-fuzz}"
case "$MODE" in
  smoke) SECS="${FUZZ_SECONDS:-10}" ;;
  long) SECS="${FUZZ_SECONDS:-600}" ;;
  *) echo "usage: run.sh smoke|long" >&2; exit 2 ;;
esac
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DRK_FUZZ=ON -DRK_WERROR=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"${JOBS:-2}" --target fuzz_all >/dev/null
total=0 crashes=0 n=0
for bin in "$BUILD"/fuzz/fuzz_*; do
  t="$(basename "$bin")"
  corpus="$BUILD/corpus/$t"
  if [ "$MODE" = smoke ]; then rm -rf "$corpus"; fi
  mkdir -p "$corpus"
  log="$BUILD/$t.log"
  set +e
  # leaks are reported by ASan at exit of each input's process; -rss_limit
  # bounds a runaway input; one worker (the machine is shared)
  (cd "$BUILD" && "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$BUILD/crash-$t-" -print_final_stats=1 "$corpus" "$SRC/tests/fuzz/corpus/$t") >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || echo 0)
  c=0
  if [ "$rc" -ne 0 ]; then c=1; tail -n 40 "$log" >&2; fi
  echo "fuzz $t: execs=${execs:-0} seconds=$SECS crashes=$c"
  total=$((total + ${execs:-0})) crashes=$((crashes + c)) n=$((n + 1))
done
rm -f /tmp/rk_fuzz_[0-9]* 2>/dev/null || true
rm -rf /tmp/rk_fuzz_req_[0-9]* 2>/dev/null || true
echo "fuzz: targets=$n seconds_each=$SECS execs=$total crashes=$crashes"
[ "$crashes" -eq 0 ]
