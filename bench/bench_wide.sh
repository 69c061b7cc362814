#!/usr/bin/env bash
# bench/bench_wide.sh — what a model of 1,000 sparse and 200 dense features
# costs (issue 15: no fixed caps). A first record, no target.
#
#   bash bench/bench_wide.sh [BUILD]        (make bench-wide BUILD=build)
#
# bench/ref/gen_wide.py writes 20,000 / 2,000 / 2,000 rows of a synthetic
# wide log and a DNN config (sparse: table 1024, dim 8, max_values 1); then
#   rank train      training examples/s (rank's own figure, 2 threads) and
#                   the wall time of the whole command (save included)
#   du              bundle size on disk
#   rank-bench --inprocess --candidates 500
#                   model open time and score latency per 500-candidate
#                   request (rk_scorer, tables read from RocksDB, 1 thread)
# and ends with one line
#   bench-wide: train_examples_per_s=... train_wall_s=... bundle_mb=... open_ms=... score_p50_ms=... score_p99_ms=...
# The CPU model, the OpenBLAS core and the load average are printed first.
# Environment: BENCH_OUT (default out/bench-wide), SPARSE, DENSE (defaults
# 1000, 200), SECONDS_SCORE (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:-${BUILD:-build}}
OUT=${BENCH_OUT:-out/bench-wide}
SPARSE=${SPARSE:-1000}
DENSE=${DENSE:-200}
SECS=${SECONDS_SCORE:-10}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load: $(uptime | sed 's/.*load average: //')"
python3 bench/ref/gen_wide.py "$OUT" --sparse "$SPARSE" --dense "$DENSE"
t0=$(date +%s.%N)
"$BUILD/bin/rank" train --config "$OUT/config.json" --data "$OUT/data" --out "$OUT/bundle" >"$OUT/train.out" 2>"$OUT/train.log"
t1=$(date +%s.%N)
grep -m1 "openblas: core" "$OUT/train.log" | sed 's/.*openblas: /openblas: /' || true
cat "$OUT/train.out"
eps=$(sed -n 's/.*train_examples_per_s=\([0-9.]*\).*/\1/p' "$OUT/train.out" | head -1)
wall=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
mb=$(du -sk "$OUT/bundle" | awk '{printf "%.1f", $1 / 1024}')
echo "load: $(uptime | sed 's/.*load average: //')"
"$BUILD/rank-bench" --inprocess --model "$OUT/bundle" --data "$OUT/data/test.tsv" --candidates 500 \
    --warmup 2 --duration "$SECS" --quiet --json "$OUT/score.json" | tee "$OUT/score.out"
open_ms=$(sed -n 's/.*model open \([0-9.]*\) ms.*/\1/p' "$OUT/score.out" | head -1)
read -r p50 p99 < <(python3 -c "
import json; j = json.load(open('$OUT/score.json'))
l = j['latency_ms_corrected']
print(l.get('p50', 'nan'), l.get('p99', 'nan'))")
echo "load: $(uptime | sed 's/.*load average: //')"
echo "bench-wide: train_examples_per_s=$eps train_wall_s=$wall bundle_mb=$mb open_ms=$open_ms score_p50_ms=$p50 score_p99_ms=$p99"
