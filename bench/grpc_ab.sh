#!/usr/bin/env bash
# bench/grpc_ab.sh BUILD_A BUILD_B [ROUNDS] — two builds' gRPC cost per
# request, interleaved (issue 16): for each round and each build, the grpc
# step of bench-roofline (rankd --threads 1 --blas-threads 1 on SERVER_CPU,
# rank-bench --closed --streams 4 at 200 candidates on CLIENT_CPU, rankd's
# CPU time from /proc/PID/stat, warm-up included) and then rank-bench
# --inprocess on the same bundle. Prints per run: rankd CPU-us per request,
# in-process us per request, their ratio (grpc_over_inproc_b200's
# definition) and the load average. Needs the demo bundle of a previous
# `make bench-roofline` (out/bench-roofline/demo, demo_data) or BUNDLE_DIR.
set -euo pipefail
A=${1:?usage: grpc_ab.sh BUILD_A BUILD_B [ROUNDS]}; B=${2:?usage: grpc_ab.sh BUILD_A BUILD_B [ROUNDS]}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${BUNDLE_DIR:-$ROOT/out/bench-roofline}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
RUN_S=${RUN_S:-3}
TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
RKPID=""
trap '[ -n "$RKPID" ] && kill -TERM "$RKPID" 2>/dev/null; rm -rf "$TMP"' EXIT
cpu_of() { awk -v t="$TCK" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }
one() { # BUILD LABEL
  local bin=$1 port="" c0 c1
  taskset -c "$SERVER_CPU" "$bin/bin/rankd" --model "$DATA/demo" --listen 127.0.0.1:0 --threads 1 --blas-threads 1 \
    --ram-tables-mb 1024 >"$TMP/rankd.log" 2>&1 &
  RKPID=$!
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/rankd.log" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$TMP/rankd.log" >&2; exit 1; }
  c0=$(cpu_of "$RKPID")
  taskset -c "$CLIENT_CPU" "$bin/rank-bench" --addr "127.0.0.1:$port" --model "$DATA/demo" --data "$DATA/demo_data/test.tsv" \
    --candidates 200 --closed --streams 4 --deadline-ms 10000 --warmup 1 --duration "$RUN_S" --quiet --json "$TMP/g.json" >/dev/null
  c1=$(cpu_of "$RKPID")
  kill -TERM "$RKPID"; wait "$RKPID" 2>/dev/null || true; RKPID=""
  taskset -c "$SERVER_CPU" "$bin/rank-bench" --inprocess --model "$DATA/demo" --data "$DATA/demo_data/test.tsv" --candidates 200 \
    --ram-tables-mb 1024 --warmup 1 --duration "$RUN_S" --quiet --json "$TMP/i.json" >/dev/null
  python3 - "$TMP" "$c0" "$c1" "$2" "$(uptime | sed 's/.*average: //')" <<'PY'
import json, sys
d, c0, c1, label, load = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
g, i = json.load(open(d + "/g.json")), json.load(open(d + "/i.json"))
g_us = (c1 - c0) / g["ok_total"] * 1e6
i_us = i["cpu_s"] / i["ok_total"] * 1e6
print("%s: rankd_cpu_us_per_request=%.1f inprocess_us_per_request=%.1f grpc_over_inproc=%.3f load=%s" % (label, g_us, i_us, i_us / g_us, load))
PY
}
for r in $(seq 1 "$ROUNDS"); do
  one "$A" "A round $r"
  one "$B" "B round $r"
done
