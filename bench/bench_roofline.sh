#!/usr/bin/env bash
# bench/bench_roofline.sh BUILD_DIR — the body of `make bench-roofline` (issue 16).
#
# rankd's scorer beside ONNX Runtime (PyPI onnxruntime, its MLAS kernels) on
# the same weights, and both beside the machine's roofline:
#   demo   configs/movielens_dcnv2.json trained on the bundled MovieLens
#          (97-d input, 2 cross layers, MLP 128-64), 200 and 1,000 candidates
#   large  configs/bench_large_dcnv2.json on synthetic data (bench/ref/gen_large.py:
#          32 sparse features x dim 32 = 1,024-d input, 3 cross layers,
#          MLP 1024-512-256), 500 candidates
# Each bundle is exported to ONNX twice (bench/ref/ort_bench.py: the tower
# alone, and the whole graph = Gather/bag pooling + tower) and its scores are
# checked against rankd's (tower: build/bench/roofline tower-dump; whole graph:
# `rank score` on the same rows) before anything is timed.
#
# Every timed process runs alone on core SERVER_CPU (taskset), one at a time,
# interleaved (rankd, ORT, rankd, ...) REPS times; medians are reported, with
# the load average (uptime) of each repetition. Throughput is candidates per
# CPU-second of the measured process (the machine is shared by several
# people: time a neighbour holds the core is not charged to either side);
# per wall-second figures are in the JSON files. rankd in-process = rank-bench
# --inprocess (the request unpacked by protobuf-c before the clock, its values
# fed to the scorer: hashing, RAM-table lookups, tower, sigmoid; no wire bytes,
# no validation, no response); ORT is given table indices (hashing done
# outside its clock). gRPC: rankd --threads 1 --blas-threads 1 on SERVER_CPU,
# rank-bench closed loop (4 streams) on CLIENT_CPU; candidates per CPU-second
# of the rankd process (everything: gRPC, the kernel's TCP, reading and
# checking the request, the response). Each repetition starts one rankd
# and times PAIRS back-to-back pairs (a gRPC run, then the same request mix
# in-process on the same core): grpc_over_inproc_b200 is the median over
# all REPS x PAIRS pairs of gRPC / in-process, so a neighbour's burst on
# the shared host moves one pair, not the figure (their spread is printed).
# FMA peak and sgemm (OpenBLAS vs rk_gemm; on an AVX-512 CPU its AVX2 kernel too,
# the fallback of CPUs without AVX-512) at the towers' shapes: roofline.
# PyTorch (Debian's python3-torch, 1 thread) times the tower alone, for
# context, when /usr/bin/python3 has it (bench/ref/torch_tower.py).
# OPENBLAS_CORETYPE is never set here; the one the machine has is printed.
#
# ORT runs in a venv this script makes on first use (~/.cache/rankd/venv-ort:
# onnxruntime, onnx, numpy, xxhash from PyPI; about a minute).
# Everything under out/bench-roofline/. ~6 minutes with REPS=3, PAIRS=3, RUN_S=4.
# Last line: bench-roofline: demo_vs_ort_b200=X demo_vs_ort_b1000=X
#            large_vs_ort_b500=X large_peak_frac=X grpc_over_inproc_b200=X
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin"
OUT="$ROOT/out/bench-roofline"
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
REPS=${REPS:-3}
RUN_S=${RUN_S:-4}
PAIRS=${PAIRS:-3}
case "$REPS$PAIRS" in *[!0-9]*) echo "bench-roofline: REPS and PAIRS must be whole numbers" >&2; exit 1 ;; esac
[ "$REPS" -ge 1 ] && [ "$PAIRS" -ge 1 ] || { echo "bench-roofline: REPS and PAIRS must be at least 1" >&2; exit 1; }
VENV=${RK_ORT_VENV:-$HOME/.cache/rankd/venv-ort}
PY="$VENV/bin/python"
RF="$BUILD/bench/roofline"

say() { echo "bench-roofline: $*" >&2; }
for b in "$BIN/rank" "$BIN/rankd" "$BUILD/rank-bench" "$BUILD/bench/dump_tables" "$RF"; do
  [ -e "$b" ] || { say "$b not found (build first: make build)"; exit 1; }
done
command -v taskset >/dev/null || { say "taskset (util-linux) is required"; exit 1; }
if ! "$PY" -c 'import onnxruntime, onnx, numpy, xxhash' 2>/dev/null; then
  say "installing onnxruntime, onnx, numpy, xxhash into $VENV (PyPI)"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q onnxruntime onnx numpy xxhash
fi

rm -rf "$OUT"
mkdir -p "$OUT"
"$RF" info | tee "$OUT/info.txt" >&2
"$PY" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)' | tee -a "$OUT/info.txt" >&2

say "1/4 bundles: demo (MovieLens) and large (synthetic)"
"$BIN/rank" data movielens --input "$ROOT/data/movielens" --out "$OUT/demo_data" >"$OUT/prep.log" 2>&1
"$BIN/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$OUT/demo_data" --out "$OUT/demo" >>"$OUT/prep.log" 2>&1
"$PY" "$ROOT/bench/ref/gen_large.py" "$OUT/large_data"
"$BIN/rank" train --config "$ROOT/configs/bench_large_dcnv2.json" --data "$OUT/large_data" --out "$OUT/large" >>"$OUT/prep.log" 2>&1

say "2/4 ONNX export and parity"
for m in demo large; do
  "$BUILD/bench/dump_tables" "$OUT/$m" "$OUT/${m}_tables.safetensors" >>"$OUT/prep.log"
  ORT_ARGS=(--model "$OUT/$m" --tables "$OUT/${m}_tables.safetensors" --data "$OUT/${m}_data/test.tsv")
  "$PY" "$ROOT/bench/ref/ort_bench.py" export "${ORT_ARGS[@]}" --out "$OUT/${m}_onnx" >>"$OUT/prep.log"
  "$PY" "$ROOT/bench/ref/ort_bench.py" parity "${ORT_ARGS[@]}" --dir "$OUT/${m}_onnx" --rows 1000 \
    --roofline "$RF" --rank "$BIN/rank" 2>>"$OUT/prep.log" | tee -a "$OUT/parity.txt" >&2
done

ON() { taskset -c "$SERVER_CPU" "$@"; }
TCK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TCK" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }
inproc() { # MODEL CANDIDATES JSON
  ON "$BUILD/rank-bench" --inprocess --model "$OUT/$1" --data "$OUT/$1_data/test.tsv" --candidates "$2" \
    --ram-tables-mb 1024 --warmup 1 --duration "$RUN_S" --quiet --json "$3" >/dev/null
}
ort() { # MODEL BATCH JSON
  ON "$PY" "$ROOT/bench/ref/ort_bench.py" time --model "$OUT/$1" --tables "$OUT/$1_tables.safetensors" \
    --data "$OUT/$1_data/test.tsv" --dir "$OUT/$1_onnx" --batch "$2" --seconds "$RUN_S" --json "$3" >/dev/null 2>&1
}
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1
torch_tower() { # MODEL BATCH OUT
  [ "$HAVE_TORCH" = 1 ] || return 0
  ON /usr/bin/python3 "$ROOT/bench/ref/torch_tower.py" --model "$OUT/$1" --batch "$2" --seconds "$RUN_S" >"$3" 2>/dev/null
}
RKPID=""
trap '[ -n "$RKPID" ] && kill -TERM "$RKPID" 2>/dev/null; true' EXIT # no rankd left behind on an error
grpc_pairs() { # DIR: PAIRS x (grpc_demo_200_pJ.json + .cpu, then rk2_demo_200_pJ.json)
  taskset -c "$SERVER_CPU" "$BIN/rankd" --model "$OUT/demo" --listen 127.0.0.1:0 --threads 1 --blas-threads 1 --ram-tables-mb 1024 \
    >"$OUT/rankd.log" 2>&1 &
  local pid=$! port="" c0 j # taskset execs rankd: the same pid
  RKPID=$pid
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$OUT/rankd.log" | head -n1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/rankd.log" >&2; say "rankd exited at start"; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { kill -TERM "$pid"; say "rankd did not start"; exit 1; }
  for j in $(seq 1 "$PAIRS"); do
    c0=$(cpu_of "$pid")
    taskset -c "$CLIENT_CPU" "$BUILD/rank-bench" --addr "127.0.0.1:$port" --model "$OUT/demo" \
      --data "$OUT/demo_data/test.tsv" --candidates 200 --closed --streams 4 --deadline-ms 10000 --warmup 1 --duration "$RUN_S" \
      --quiet --json "$1/grpc_demo_200_p$j.json" >/dev/null
    awk -v a="$(cpu_of "$pid")" -v b="$c0" 'BEGIN { print a - b }' >"$1/grpc_demo_200_p$j.cpu"
    inproc demo 200 "$1/rk2_demo_200_p$j.json" # its in-process baseline, right after it (rankd idle)
  done
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  RKPID=""
}

say "3/4 timing: $REPS interleaved repetitions on core $SERVER_CPU"
for r in $(seq 1 "$REPS"); do
  D="$OUT/rep$r"
  mkdir -p "$D"
  uptime >"$D/load.txt"
  say "rep $r/$REPS: $(cat "$D/load.txt")"
  ON "$RF" peak >"$D/peak.txt"
  inproc demo 200 "$D/rk_demo_200.json";    ort demo 200 "$D/ort_demo_200.json"
  inproc demo 1000 "$D/rk_demo_1000.json";  ort demo 1000 "$D/ort_demo_1000.json"
  inproc large 500 "$D/rk_large_500.json";  ort large 500 "$D/ort_large_500.json"
  ON "$RF" tower "$OUT/large" 500 "$RUN_S" >"$D/tower_large_500.txt"
  ON "$RF" tower "$OUT/demo" 200 "$RUN_S" >"$D/tower_demo_200.txt"
  ON "$RF" tower "$OUT/demo" 1000 "$RUN_S" >"$D/tower_demo_1000.txt"
  torch_tower demo 200 "$D/torch_demo_200.txt"; torch_tower demo 1000 "$D/torch_demo_1000.txt"
  torch_tower large 500 "$D/torch_large_500.txt"
  ON "$RF" peak >>"$D/peak.txt"
  grpc_pairs "$D"
  uptime >>"$D/load.txt"
done

say "4/4 sgemm at the towers' shapes (OpenBLAS vs rk_gemm, core $SERVER_CPU)"
for s in "200 97 97" "200 97 128" "200 128 64" "1000 97 97" "500 1024 1024" "500 1024 512" "500 512 256"; do
  ON "$RF" gemm $s
done | tee "$OUT/gemm.txt" >&2

"$PY" - "$OUT" "$REPS" "$PAIRS" <<'PYEOF'
import json, os, re, statistics, sys
out, reps, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
med = statistics.median
def J(r, n): return json.load(open(os.path.join(out, "rep%d" % r, n)))
def kv(text, key): return float(re.search(key + r"=([0-9.]+)", text).group(1))
def T(r, n): return open(os.path.join(out, "rep%d" % r, n)).read()
cpu_cps = lambda d: d["ok_total"] * d["candidates"] / d["cpu_s"]   # rank-bench: warm-up included on both sides
rows, fig = [], {}
for name, model, b in (("demo", "demo", 200), ("demo", "demo", 1000), ("large", "large", 500)):
    rk = [cpu_cps(J(r, "rk_%s_%d.json" % (model, b))) for r in range(1, reps + 1)]
    og = [J(r, "ort_%s_%d.json" % (model, b))["graph"]["candidates_per_cpu_s"] for r in range(1, reps + 1)]
    ot = [J(r, "ort_%s_%d.json" % (model, b))["tower"]["candidates_per_cpu_s"] for r in range(1, reps + 1)]
    tw = [kv(T(r, "tower_%s_%d.txt" % (model, b)), "candidates_per_s") for r in range(1, reps + 1)] \
        if os.path.exists(os.path.join(out, "rep1", "tower_%s_%d.txt" % (model, b))) else None
    tt = [os.path.join(out, "rep%d" % r, "torch_%s_%d.txt" % (model, b)) for r in range(1, reps + 1)]
    tt = [kv(open(p).read(), "candidates_per_cpu_s") for p in tt if os.path.exists(p) and os.path.getsize(p)]
    ratio = med([a / c for a, c in zip(rk, og)])
    fig["%s_vs_ort_b%d" % (name, b)] = ratio
    rows.append((name, b, med(rk), med(og), med(ot), med(tw) if tw else None, med(tt) if tt else None, ratio))
peak = [max(kv(l, "fma_peak_gflops") for l in T(r, "peak.txt").splitlines()) for r in range(1, reps + 1)]
tgf = [kv(T(r, "tower_large_500.txt"), "gflops") for r in range(1, reps + 1)]
fig["large_peak_frac"] = med([g / p for g, p in zip(tgf, peak)])
fpc = kv(T(1, "tower_large_500.txt"), "flop_per_candidate")
RP = [(r, j) for r in range(1, reps + 1) for j in range(1, pairs + 1)]
g_cps = [J(r, "grpc_demo_200_p%d.json" % j)["ok_total"] * 200 / float(T(r, "grpc_demo_200_p%d.cpu" % j)) for r, j in RP]
i_cps = [cpu_cps(J(r, "rk2_demo_200_p%d.json" % j)) for r, j in RP]
g_ratio = [g / i for g, i in zip(g_cps, i_cps)]
fig["grpc_over_inproc_b200"] = med(g_ratio)
L = []
P = L.append
P(open(os.path.join(out, "info.txt")).read().strip().replace("\n", "; "))
P("")
P(open(os.path.join(out, "parity.txt")).read().strip())
P("")
P("Load average (uptime) before/after each repetition:")
for r in range(1, reps + 1):
    P("  rep %d: %s" % (r, " | ".join(l.split("load average:")[1].strip() for l in T(r, "load.txt").splitlines())))
P("")
P("Candidates per CPU-second, one core, medians of %d interleaved repetitions:" % reps)
P("")
P("| model | batch | rankd in-process (hash+lookup+tower) | ORT whole graph | ORT tower only | rankd tower only | PyTorch tower only | rankd / ORT whole graph |")
P("|---|---|---|---|---|---|---|---|")
for name, b, rk, og, ot, tw, tt, ratio in rows:
    P("| %s | %d | %.0f | %.0f | %.0f | %s | %s | %.2f |" % (name, b, rk, og, ot, "%.0f" % tw if tw else "-", "%.0f" % tt if tt else "-", ratio))
P("")
P("FMA peak (one core, CPU time): median %.1f GFLOP/s; large tower: %.0f FLOP/candidate, median %.1f GFLOP/s = %.1f%% of peak; "
  "roofline of the large model = %.0f candidates/s" % (med(peak), fpc, med(tgf), 100 * fig["large_peak_frac"], med(peak) * 1e9 / fpc))
P("gRPC (demo, 200 candidates): rankd %.0f candidates per rankd CPU-second vs in-process %.0f (medians); "
  "median of %d pairs' ratios %.3f (min %.3f, max %.3f; CPU-us per call, gRPC/in-process: %s)" %
  (med(g_cps), med(i_cps), len(g_ratio), fig["grpc_over_inproc_b200"], min(g_ratio), max(g_ratio),
   " ".join("%.0f/%.0f" % (200e6 / g, 200e6 / i) for g, i in zip(g_cps, i_cps))))
P("")
P("sgemm GFLOP/s (CPU time, median of 5), OpenBLAS vs rk_gemm (the kernel in use; on an AVX-512 CPU also its AVX2 kernel):")
P(open(os.path.join(out, "gemm.txt")).read().strip())
P("")
P("bench-roofline: demo_vs_ort_b200=%.3f demo_vs_ort_b1000=%.3f large_vs_ort_b500=%.3f large_peak_frac=%.3f grpc_over_inproc_b200=%.3f" %
  (fig["demo_vs_ort_b200"], fig["demo_vs_ort_b1000"], fig["large_vs_ort_b500"], fig["large_peak_frac"], fig["grpc_over_inproc_b200"]))
open(os.path.join(out, "summary.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
PYEOF
