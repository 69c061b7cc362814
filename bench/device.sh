#!/usr/bin/env bash
# bench/device.sh — the GPU checks of the CUDA backend, in one run on the
# device machine (an H200), within 8 minutes:
#
#   here:   make build && bash bench/device-pack.sh      (-> .device/payload.tar.xz)
#   device: run(command="bash bench/device.sh", carry=[".device"], timeout_s=540)
#
# It unpacks the payload (executables + rankd's runtime libraries, built
# here; CUDA comes from the device machine), prints `ldd` of what it runs,
# then:
#   1. tests/test_cuda: every CUDA op against its CPU op (towers <= 1e-5,
#      encoder ops cosine >= 0.99999), the DCNv2 tower end to end;
#   2. tests/test_e2e --filter 'e2e_device/*': rankd --device cuda serves
#      `rank score`'s pCTRs within 1e-5, rank score --device cuda too;
#   3. bench_gpu: towers at 200 / 1,000 / 10,000 candidates and a
#      MiniLM-shaped encoder stack at batch 64, CPU (this machine's cores)
#      against the GPU in the same run;
#   4. rankd end to end: a bundle trained on the bundled MovieLens, rankd
#      --device cpu and --device cuda (4 workers each) under rank-bench
#      closed loop (16 streams) at 200 and 1,000 candidates: requests/s, p99.
# Everything is logged under $OUT (or out/device when $OUT is unset). Last
# line:
#   bench-gpu: parity_max_diff=X tower_speedup_b1000=X tower_cand_per_s_b10000=X
#              rankd_speedup=X rankd_p99_ms=X text_speedup_b64=X
# (rankd_speedup: GPU over CPU requests/s at 1,000 candidates; rankd_p99_ms:
# the GPU server's p99 at 200 candidates.)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/device}
mkdir -p "$OUT"
LOG="$OUT/device.log"
exec > >(tee -a "$LOG") 2>&1
say() { echo "device: $*"; }
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 ))s; }

if [ -f "$ROOT/.device/payload.tar.xz" ]; then
  WORK=$(mktemp -d /tmp/rankd-device.XXXXXX)
  tar -C "$WORK" -xJf "$ROOT/.device/payload.tar.xz" || { say "cannot unpack the payload"; exit 1; }
  # shellcheck disable=SC1091
  . "$WORK/paths.env"
  say "payload built $BUILT at $GIT; unpacked into $WORK ($(elapsed))"
  # The tests have the build's source and binary directories compiled in:
  # make those paths lead to this copy (a fresh machine has neither).
  for pair in "$RK_SOURCE_DIR:$ROOT" "$RK_BINARY_DIR:$WORK/build"; do
    want=${pair%%:*} have=${pair#*:}
    if [ ! -e "$want" ]; then mkdir -p "$(dirname "$want")" && ln -s "$have" "$want"; fi
  done
  B="$RK_BINARY_DIR"
  DEPS="$WORK/deps"
else
  # `make bench-gpu` on a machine with the build tree (and its libraries).
  B=${BUILD_DIR:-$ROOT/build}
  DEPS=""
  [ -x "$B/bench/bench_gpu" ] || { say "no .device/payload.tar.xz and no build in $B: make build (or bench/device-pack.sh)"; exit 1; }
  say "no payload: using the build tree $B"
fi
CUDA_LIB=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | head -1)
LP="${DEPS}${CUDA_LIB:+:$CUDA_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH="${LP#:}"
export RK_CUDA_LIBRARY="$B/lib/librankd_cuda.so"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
for f in bin/rankd lib/librankd_cuda.so; do say "ldd $f"; ldd "$B/$f"; done
if ldd "$B/bin/rankd" "$B/lib/librankd_cuda.so" | grep -q 'not found'; then
  say "missing libraries above: fix the payload (bench/device-pack.sh) or LD_LIBRARY_PATH"; exit 1
fi

# 1. ops against the CPU
say "1/4 test_cuda ($(elapsed))"
(cd "$B" && timeout 120 ./tests/test_cuda -j1 --verbose) >"$OUT/test_cuda.log" 2>&1
TC=$?
tail -25 "$OUT/test_cuda.log"
# 2. rankd / rank score --device cuda end to end
say "2/4 test_e2e e2e_device ($(elapsed))"
(cd "$B" && timeout 240 ./tests/test_e2e -j1 --verbose --filter 'e2e_device/*') >"$OUT/test_e2e_device.log" 2>&1
TE=$?
tail -8 "$OUT/test_e2e_device.log"
# 3. towers and the encoder stack, CPU vs GPU
say "3/4 bench_gpu ($(elapsed))"
(cd "$ROOT" && timeout 180 "$B/bench/bench_gpu" --seconds 1.5) >"$OUT/bench_gpu.log" 2>&1
cat "$OUT/bench_gpu.log"
OPS=$(grep '^bench-gpu-ops:' "$OUT/bench_gpu.log" | tail -1)
kv() { echo "$OPS" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# 4. rankd end to end, CPU vs GPU
say "4/4 rankd cpu vs cuda ($(elapsed))"
D=$(mktemp -d /tmp/rankd-e2e.XXXXXX)
"$B/bin/rank" data movielens --input "$ROOT/data/movielens" --out "$D/ml" >"$OUT/train.log" 2>&1 &&
  "$B/bin/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$D/ml" --out "$D/bundle" --epochs 1 \
    >>"$OUT/train.log" 2>&1 || { say "training failed (see train.log)"; tail -5 "$OUT/train.log"; }
serve_bench() { # device candidates -> "qps p99_ms"
  local dev=$1 k=$2 log="$OUT/rankd_$1_$2.log" json="$OUT/bench_$1_$2.json"
  "$B/bin/rankd" --model "$D/bundle" --listen 127.0.0.1:0 --threads 4 --device "$dev" >"$log" 2>&1 &
  local pid=$! port="" i
  for i in $(seq 1 300); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then echo "0 0"; tail -3 "$log" >&2; kill $pid 2>/dev/null; return; fi
  timeout 60 "$B/rank-bench" --addr "127.0.0.1:$port" --model "$D/bundle" --data "$D/ml/test.tsv" \
    --candidates "$k" --closed --streams 16 --warmup 2 --duration 8 --quiet --json "$json" >"$OUT/rank_bench_$1_$2.txt" 2>&1
  kill -TERM $pid; wait $pid 2>/dev/null
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f %.3f" % (j["achieved_qps"], j["latency_ms_corrected"]["p99"]))' "$json" 2>/dev/null || echo "0 0"
}
declare -A QPS P99
for k in 200 1000; do
  for dev in cpu cuda; do
    read -r q p < <(serve_bench $dev $k)
    QPS[$dev$k]=$q P99[$dev$k]=$p
    say "rankd --device $dev, $k candidates: ${q} requests/s, p99 ${p} ms"
  done
done
rm -rf "$D"
speed=$(python3 -c "import sys; c,g=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (g/c if c>0 else 0))" \
  "${QPS[cpu1000]}" "${QPS[cuda1000]}")
say "tests: test_cuda exit $TC, e2e_device exit $TE; total $(elapsed)"
if echo "$OPS" | grep -q 'gpu=none'; then
  echo "bench-gpu: gpu=none (see bench_gpu.log) tower_cpu_cand_per_s_b1000=$(kv tower_cpu_cand_per_s_b1000)" \
    "rankd_cpu_qps_b1000=${QPS[cpu1000]} rankd_cpu_p99_ms_b200=${P99[cpu200]}"
else
  echo "bench-gpu: parity_max_diff=$(kv parity_max_diff) tower_speedup_b1000=$(kv tower_speedup_b1000)" \
    "tower_cand_per_s_b10000=$(kv tower_cand_per_s_b10000) rankd_speedup=$speed rankd_p99_ms=${P99[cuda200]}" \
    "text_speedup_b64=$(kv text_speedup_b64)"
fi
[ $TC -eq 0 ] && [ $TE -eq 0 ]
