#!/usr/bin/env bash
# bench/bench_swap.sh BUILD_DIR — the body of `make bench-swap`.
#
# Hot swap under load: rankd serves a model repository (--model-repository,
# latest:1) with one worker on core SERVER_CPU; rank-bench (core CLIENT_CPU)
# first measures the max rate (closed loop, 4 streams, 5 s), then offers 50%
# of it open loop (constant arrivals) for SWAP_S seconds while this script
# publishes a new version every EVERY_S seconds (a staged copy of the bundle
# renamed into the repository, then SIGHUP): rankd opens it, checks its
# schema, warms it up, switches, and drains and closes the old version.
# Every call's intended send time and latency go to a log
# (rank-bench --latency-log); bench/swap_report.py splits the calls into
# "swap" (intended within [SIGHUP, SIGHUP + WINDOW_S)) and "steady" (outside
# [SIGHUP - 0.5 s, SIGHUP + WINDOW_S + 0.5 s) of every swap) and compares
# their p99 (coordinated-omission corrected, from the intended send time).
# Everything under out/bench-swap/. ~2 minutes.
# Last line: bench-swap: swaps=N failed=0 p99_steady_ms=X p99_swap_ms=X ratio=X
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin"
OUT=${OUT:-"$ROOT/out/bench-swap"}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SWAP_S=${SWAP_S:-60}
EVERY_S=${EVERY_S:-5}
WINDOW_S=${WINDOW_S:-2}
LOAD=${LOAD:-0.5}
for b in "$BIN/rank" "$BIN/rankd" "$BUILD/rank-bench"; do
  [ -e "$b" ] || { echo "bench-swap: $b not found (build first: make build)" >&2; exit 1; }
done
say() { echo "bench-swap: $*" >&2; }
rm -rf "$OUT"
mkdir -p "$OUT/staged" "$OUT/repo/ml"
grep -m1 "model name" /proc/cpuinfo | sed 's/^/bench-swap: cpu: /' >&2 || true
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$BIN/rank" data movielens --input "$ROOT/data/movielens" --out "$OUT/ml" >"$OUT/prep.log" 2>&1
"$BIN/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$OUT/ml" --out "$OUT/bundle" \
  --epochs 1 >>"$OUT/prep.log" 2>&1
N=$(( SWAP_S / EVERY_S + 1 ))
for i in $(seq 1 $((N + 1))); do cp -r "$OUT/bundle" "$OUT/staged/$i"; done
mv "$OUT/staged/1" "$OUT/repo/ml/1"

taskset -c "$SERVER_CPU" "$BIN/rankd" --model-repository "$OUT/repo" --listen 127.0.0.1:0 --threads 1 ${RANKD_ARGS:-} \
  --metrics-listen 127.0.0.1:0 >"$OUT/rankd.log" 2>&1 &
RANKD=$!
trap 'kill -TERM $RANKD 2>/dev/null || true; wait $RANKD 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1 600); do
  PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$OUT/rankd.log" | grep -o '[0-9]*$' || true)
  [ -n "$PORT" ] && break
  kill -0 $RANKD 2>/dev/null || { cat "$OUT/rankd.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$PORT" ] || { say "rankd did not start"; exit 1; }
grep -m1 "openblas: core=" "$OUT/rankd.log" | sed 's/^.*openblas: /bench-swap: openblas: /' >&2 || true
BENCH=(taskset -c "$CLIENT_CPU" "$BUILD/rank-bench" --addr "127.0.0.1:$PORT" --model "$OUT/bundle"
       --data "$OUT/ml/test.tsv" --quiet)

"${BENCH[@]}" --closed --streams 4 --duration 5 --warmup 1 --json "$OUT/max.json" >"$OUT/max.txt"
MAX=$(/usr/bin/python3 -c "import json;print(json.load(open('$OUT/max.json'))['achieved_qps'])")
RATE=$(/usr/bin/python3 -c "print(round($MAX * $LOAD, 1))")
say "max_qps=$MAX, offering $RATE/s for ${SWAP_S}s, a new version every ${EVERY_S}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"

"${BENCH[@]}" --rate "$RATE" --duration "$((SWAP_S + 2))" --warmup 2 --latency-log "$OUT/latency.log" \
  --json "$OUT/run.json" >"$OUT/run.txt" &
BENCHPID=$!
sleep 4
: >"$OUT/swaps.log"
for i in $(seq 2 "$N"); do
  mv "$OUT/staged/$i" "$OUT/repo/ml/$i"
  echo "$(date +%s.%N) $i" >>"$OUT/swaps.log"
  kill -HUP $RANKD
  sleep "$EVERY_S"
done
wait $BENCHPID
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
kill -TERM $RANKD
wait $RANKD || true
trap - EXIT
/usr/bin/python3 "$ROOT/bench/swap_report.py" --latency "$OUT/latency.log" --swaps "$OUT/swaps.log" \
  --rankd-log "$OUT/rankd.log" --window "$WINDOW_S" --max-qps "$MAX" --rate "$RATE" --loadavg "$LOADAVG"
