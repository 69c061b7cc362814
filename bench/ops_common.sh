# bench/ops_common.sh — sourced by bench_swap.sh and bench_ops.sh (issue 17):
# the MovieLens bundle they serve, and a rankd started on core SERVER_CPU.
#
#   ops_prepare OUT            data + a 1-epoch DCNv2 bundle in OUT/ml, OUT/bundle
#   ops_start_rankd NAME ARGS  rankd ARGS on 127.0.0.1:0 (log OUT/rankd.log);
#                              sets RANKD (pid), PORT and MPORT (metrics, if any)
# Needs ROOT, BIN, OUT, SERVER_CPU; prints the CPU model and OpenBLAS core.

ops_prepare() {
  grep -m1 "model name" /proc/cpuinfo | sed "s/^/$BENCH_NAME: cpu: /" >&2 || true
  "$BIN/rank" data movielens --input "$ROOT/data/movielens" --out "$1/ml" >"$1/prep.log" 2>&1
  "$BIN/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$1/ml" --out "$1/bundle" \
    --epochs 1 >>"$1/prep.log" 2>&1
}

ops_start_rankd() {
  taskset -c "$SERVER_CPU" "$BIN/rankd" --listen 127.0.0.1:0 "$@" >"$OUT/rankd.log" 2>&1 &
  RANKD=$!
  trap 'kill -TERM $RANKD 2>/dev/null || true; wait $RANKD 2>/dev/null || true' EXIT
  PORT=""
  for _ in $(seq 1 600); do
    PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$OUT/rankd.log" | grep -o '[0-9]*$' || true)
    [ -n "$PORT" ] && break
    kill -0 $RANKD 2>/dev/null || { cat "$OUT/rankd.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "$BENCH_NAME: rankd did not start" >&2; exit 1; }
  MPORT=$(grep -o 'metrics on http://127.0.0.1:[0-9]*' "$OUT/rankd.log" | grep -o '[0-9]*$' || true)
  grep -m1 "openblas: core=" "$OUT/rankd.log" | sed "s/^.*openblas: /$BENCH_NAME: openblas: /" >&2 || true
}
