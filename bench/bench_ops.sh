#!/usr/bin/env bash
# bench/bench_ops.sh BUILD_DIR — the body of `make bench-ops` (issue 17).
#
# What operating rankd costs, each figure against its baseline measured in
# the same run, interleaved (A B A B ...), ROUNDS rounds:
#  1. metrics: max throughput (rank-bench closed loop, 4 streams, RUN_S s)
#     with a scrape of GET /metrics every second (bench/ops_load.py scrape)
#     vs without; cost = 1 - median(with) / median(without).
#  2. updates: Rank p99 at 50% of the max rate (open loop, RUN_S s) while
#     bench/ops_load.py streams Admin/ApplyUpdates (64 rows of 'genres' per
#     call, back to back, one stream) vs without; ratio = median p99 with /
#     median p99 without. Updates run on rankd's admin thread, not on the
#     Rank workers.
# rankd: one worker, --updates, on core SERVER_CPU; the load generators on
# CLIENT_CPU. Prints the CPU model, the OpenBLAS core and the load average.
# Also rankd's own CPU time per scrape (2000 scrapes of an idle server, from
# /proc/PID/stat), which the neighbours' load does not distort: at one scrape
# a second it is scrape_cpu_ms / 1000 of the one core rankd's worker uses.
# Last line: bench-ops: metrics_cost_pct=X updates_p99_ratio=X p99_ms=X p99_updates_ms=X updates_per_s=X
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin"
OUT=${OUT:-"$ROOT/out/bench-ops"}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
RUN_S=${RUN_S:-8}
ROUNDS=${ROUNDS:-3}
PY=/usr/bin/python3
say() { echo "bench-ops: $*" >&2; }
rm -rf "$OUT"
mkdir -p "$OUT"
BENCH_NAME=bench-ops
. "$ROOT/bench/ops_common.sh"
ops_prepare "$OUT"
ops_start_rankd --model "$OUT/bundle" --threads 1 --updates --metrics-listen 127.0.0.1:0
BENCH=(taskset -c "$CLIENT_CPU" "$BUILD/rank-bench" --addr "127.0.0.1:$PORT" --model "$OUT/bundle"
       --data "$OUT/ml/test.tsv" --quiet --warmup 1 --duration "$RUN_S")
field() { $PY -c "import json,sys;d=json.load(open(sys.argv[1]));print(eval(sys.argv[2]))" "$1" "$2"; }
side() { # side KIND SECONDS: a background load of ops_load.py, its pid in SIDE; at nice 19
  # beside rank-bench on CLIENT_CPU, so that the Python client does not delay
  # the load generator's sends (its latencies count from the intended send)
  taskset -c "$CLIENT_CPU" nice -n 19 $PY "$ROOT/bench/ops_load.py" "$1" --addr "127.0.0.1:$PORT" --metrics-port "$MPORT" \
    --bundle "$OUT/bundle" --source-dir "$ROOT" --seconds "$2" --out "$OUT/$1.$3.json" &
  SIDE=$!
}
# 0. rankd's own CPU time per scrape (idle server, 2000 scrapes back to back,
#    /proc/PID/stat utime + stime): robust to the neighbours' load.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$RANKD/stat"; }
T0=$(cpu_ticks)
taskset -c "$CLIENT_CPU" $PY "$ROOT/bench/ops_load.py" scrape --metrics-port "$MPORT" --seconds 600 --count 2000 \
  --interval 0 --out "$OUT/scrape.cpu.json"
T1=$(cpu_ticks)
SCRAPE_CPU_MS=$($PY -c "print(($T1 - $T0) * 1000.0 / $(getconf CLK_TCK) / 2000)")
say "rankd CPU per scrape: $SCRAPE_CPU_MS ms (2000 scrapes)"
echo "round kind qps p99_ms loadavg" >"$OUT/runs.txt"
for r in $(seq 1 "$ROUNDS"); do
  "${BENCH[@]}" --closed --streams 4 --json "$OUT/max.$r.plain.json" >/dev/null
  side scrape $((RUN_S + 2)) "$r"
  "${BENCH[@]}" --closed --streams 4 --json "$OUT/max.$r.scrape.json" >/dev/null
  wait $SIDE
  for k in plain scrape; do
    echo "$r max_$k $(field "$OUT/max.$r.$k.json" "d['achieved_qps']") - $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/runs.txt"
  done
done
MAX=$($PY -c "
import json,statistics
print(statistics.median(json.load(open('$OUT/max.%d.plain.json' % r))['achieved_qps'] for r in range(1, $ROUNDS + 1)))")
RATE=$($PY -c "print(round($MAX * 0.5, 1))")
say "max_qps=$MAX (median of $ROUNDS); open loop at $RATE/s"
for r in $(seq 1 "$ROUNDS"); do
  "${BENCH[@]}" --rate "$RATE" --json "$OUT/p99.$r.plain.json" >/dev/null
  side updates $((RUN_S + 2)) "$r"
  "${BENCH[@]}" --rate "$RATE" --json "$OUT/p99.$r.updates.json" >/dev/null
  wait $SIDE
  for k in plain updates; do
    echo "$r p99_$k - $(field "$OUT/p99.$r.$k.json" "d['latency_ms_corrected']['p99']") $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/runs.txt"
  done
done
cat "$OUT/runs.txt" >&2
$PY - "$OUT" "$ROUNDS" "$SCRAPE_CPU_MS" <<'EOF'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
ld = lambda p: json.load(open(p))
med = statistics.median
mp = med(ld("%s/max.%d.plain.json" % (out, r))["achieved_qps"] for r in range(1, n + 1))
ms = med(ld("%s/max.%d.scrape.json" % (out, r))["achieved_qps"] for r in range(1, n + 1))
pp = med(ld("%s/p99.%d.plain.json" % (out, r))["latency_ms_corrected"]["p99"] for r in range(1, n + 1))
pu = med(ld("%s/p99.%d.updates.json" % (out, r))["latency_ms_corrected"]["p99"] for r in range(1, n + 1))
ups = med(ld("%s/updates.%d.json" % (out, r))["calls_per_s"] for r in range(1, n + 1))
scr = med(ld("%s/scrape.%d.json" % (out, r))["scrapes"] for r in range(1, n + 1))
cpu_ms = float(sys.argv[3])
print("bench-ops: max_qps_plain=%.0f max_qps_scraped=%.0f scrapes_per_run=%d scrape_cpu_ms=%.3f "
      "scrape_cpu_pct_of_one_core_at_1_per_s=%.3f" % (mp, ms, scr, cpu_ms, cpu_ms / 10.0))
print("bench-ops: metrics_cost_pct=%.2f updates_p99_ratio=%.2f p99_ms=%.3f p99_updates_ms=%.3f updates_per_s=%.0f"
      % (100 * (1 - ms / mp), pu / pp, pp, pu, ups))
EOF
