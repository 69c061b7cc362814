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
# "swap" (intended within [SIGHUP, SIGHUP + WINDOW_S), extended to 1 s after
# the old version's unload when the load took longer) and "steady" (outside
# every swap window widened by 0.5 s on each side) and compares their p99
# (coordinated-omission corrected, from the intended send time); it also
# prints the median and longest SIGHUP-to-unload time (switch_s). The
# publisher (rename, SIGHUP) is one process on CLIENT_CPU beside rank-bench.
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
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

BENCH_NAME=bench-swap
. "$ROOT/bench/ops_common.sh"
ops_prepare "$OUT"
N=$(( SWAP_S / EVERY_S + 1 ))
for i in $(seq 1 $((N + 1))); do cp -r "$OUT/bundle" "$OUT/staged/$i"; done
mv "$OUT/staged/1" "$OUT/repo/ml/1"

ops_start_rankd --model-repository "$OUT/repo" --threads 1 --metrics-listen 127.0.0.1:0 ${RANKD_ARGS:-}
BENCH=(taskset -c "$CLIENT_CPU" "$BUILD/rank-bench" --addr "127.0.0.1:$PORT" --model "$OUT/bundle"
       --data "$OUT/ml/test.tsv" --quiet)

"${BENCH[@]}" --closed --streams 4 --duration 5 --warmup 1 --json "$OUT/max.json" >"$OUT/max.txt"
MAX=$(/usr/bin/python3 -c "import json;print(json.load(open('$OUT/max.json'))['achieved_qps'])")
RATE=$(/usr/bin/python3 -c "print(round($MAX * $LOAD, 1))")
say "max_qps=$MAX, offering $RATE/s for ${SWAP_S}s, a new version every ${EVERY_S}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"

"${BENCH[@]}" --rate "$RATE" --duration "$((SWAP_S + 2))" --warmup 2 --latency-log "$OUT/latency.log" \
  --json "$OUT/run.json" >"$OUT/run.txt" &
BENCHPID=$!
# the publisher: one process on the client's core that renames each staged
# version into the repository and sends SIGHUP, forking nothing per swap (a
# shell's mv/date/sleep cost a fork and exec each, 3-5 ms of a core, inside
# every swap window and never in the steady windows)
taskset -c "$CLIENT_CPU" /usr/bin/python3 - "$OUT" "$N" "$EVERY_S" "$RANKD" <<'PYEOF'
import os, signal, sys, time
out, n, every, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
time.sleep(4)
with open(os.path.join(out, "swaps.log"), "w") as log:
    for i in range(2, n + 1):
        os.rename(os.path.join(out, "staged", str(i)), os.path.join(out, "repo", "ml", str(i)))
        log.write("%.6f %d\n" % (time.time(), i))
        log.flush()
        os.kill(pid, signal.SIGHUP)
        time.sleep(every)
PYEOF
wait $BENCHPID
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
kill -TERM $RANKD
wait $RANKD || true
trap - EXIT
/usr/bin/python3 "$ROOT/bench/swap_report.py" --latency "$OUT/latency.log" --swaps "$OUT/swaps.log" \
  --rankd-log "$OUT/rankd.log" --window "$WINDOW_S" --max-qps "$MAX" --rate "$RATE" --loadavg "$LOADAVG"
