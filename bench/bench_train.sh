#!/usr/bin/env bash
# bench/bench_train.sh — training quality and speed on MovieLens, C vs PyTorch.
#
#   bash bench/bench_train.sh [BUILD]        (make bench-train BUILD=build)
#
# For seeds 1, 2, 3 it trains, on the time-ordered split written by
# `rank data movielens`:
#   dcnv2  rank train, configs/movielens_dcnv2.json
#   dnn    rank train, configs/movielens_dnn.json
#   lr     rank train, configs/movielens_lr.json (logistic regression on
#          user_id and movie_id: dim-1 embeddings, no hidden layer)
#   torch_dcnv2, torch_dnn, torch_lr
#          bench/ref/torch_movielens.py with the same configs (same
#          featurization, architecture, init scheme, optimizers, early
#          stopping); skipped with a message when torch is not importable
# (each C run followed at once by its PyTorch twin, so both see the same load),
# and once (deterministic) the item-popularity baselines of bench/baselines.py.
# It prints mean ± std (sample std over the seeds) of test AUC and logloss
# per model, the C - PyTorch difference of mean test AUC per tower, training
# examples/s of C and PyTorch measured in this run, and one last line
#   bench-train: dcnv2_auc=... dnn_auc=... lr_auc=... pop_auc=... torch_dcnv2_auc=...
#                torch_dnn_auc=... c_examples_per_s=... torch_examples_per_s=... speedup=...
#                pop_ctr_auc=...
# (one line). *_auc are mean test AUCs; pop_auc is the item-count baseline,
# pop_ctr_auc the smoothed item-CTR one; examples/s are medians over the
# seeds of the DCNv2 runs; speedup = C / PyTorch.
# Everything goes to out/bench-train/ (logs, per-run JSON, summary.txt).
# Environment: TORCH_PYTHON (default /usr/bin/python3), SEEDS (default "1 2 3"),
# BENCH_OUT (default out/bench-train).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:-${BUILD:-build}}
RANK=${BUILD}/bin/rank
OUT=${BENCH_OUT:-out/bench-train}
SEEDS=${SEEDS:-"1 2 3"}
TORCH_PYTHON=${TORCH_PYTHON:-/usr/bin/python3}
PY=${PYTHON:-python3}

if [ ! -x "$RANK" ]; then
    echo "bench-train: $RANK not found; build first (make build BUILD=$BUILD)" >&2
    exit 1
fi
mkdir -p "$OUT/runs" "$OUT/logs"
rm -f "$OUT"/runs/*.json

# Other work on the machine skews examples/s, PyTorch's more than C's (so the
# ratio too); say how busy it was.
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) CPUs, load average $(load), rank: $RANK"
echo "== data"
"$RANK" data movielens --input data/movielens --out "$OUT/ml" 2>"$OUT/logs/data.log" | tail -n 1
grep -o 'test users unseen.*' "$OUT/logs/data.log" | sed 's/; [0-9.]* s -> .*//' || true

# The progress bars redraw with '\r'; keep only the finished lines in the logs.
clean() { tr '\r' '\n' | grep -v '%' || true; }

train_c() { # name config seed [extra args]
    local name=$1 cfg=$2 seed=$3
    shift 3
    local log=$OUT/logs/$name-s$seed.log
    if ! "$RANK" train --config "$cfg" --data "$OUT/ml" --out "$OUT/bundles/$name-s$seed" --force \
        --seed "$seed" --metrics-json "$OUT/runs/$name-s$seed.json" "$@" >"$log.raw" 2>&1; then
        clean <"$log.raw" | tail -n 20 >&2
        echo "bench-train: rank train $name seed $seed failed (log: $log.raw)" >&2
        exit 1
    fi
    clean <"$log.raw" >"$log" && rm -f "$log.raw"
    printf '  %-12s seed %s: %s\n' "$name" "$seed" "$(grep '^test:' "$OUT/logs/$name-s$seed.log")"
}

train_torch() { # name config seed tower
    local name=$1 cfg=$2 seed=$3 tower=$4
    local log=$OUT/logs/$name-s$seed.log
    if ! "$TORCH_PYTHON" bench/ref/torch_movielens.py --config "$cfg" --data "$OUT/ml" --seed "$seed" \
        --tower "$tower" --json-out "$OUT/runs/$name-s$seed.json" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "bench-train: PyTorch reference $name seed $seed failed (log: $log)" >&2
        exit 1
    fi
    printf '  %-12s seed %s: %s\n' "$name" "$seed" "$(grep '^test:' "$OUT/logs/$name-s$seed.log")"
}

have_torch=0
if "$TORCH_PYTHON" -c 'import torch, numpy, xxhash' 2>/dev/null; then have_torch=1; fi

# C and PyTorch runs alternate (same seed, same tower, back to back) so that
# both see the same load when the machine is shared; examples/s is compared
# between runs made minutes apart rather than at opposite ends of the script.
if [ "$have_torch" = 1 ]; then
    echo "== C (rank train) and PyTorch reference ($("$TORCH_PYTHON" -c 'import torch; print("torch", torch.__version__)')), seeds: $SEEDS"
else
    echo "== C (rank train), seeds: $SEEDS; PyTorch reference: skipped ($TORCH_PYTHON cannot import torch, numpy and xxhash)"
fi
pair() { # name config seed tower
    train_c "$1" "$2" "$3"
    if [ "$have_torch" = 1 ]; then train_torch "torch_$1" "$2" "$3" "$4"; fi
}
for s in $SEEDS; do
    pair dcnv2 configs/movielens_dcnv2.json "$s" dcnv2
    pair dnn configs/movielens_dnn.json "$s" dnn
    pair lr configs/movielens_lr.json "$s" dnn
done
grep -h -o 'openblas: core=[A-Za-z0-9_]*' "$OUT/logs/dcnv2-s${SEEDS%% *}.log" | head -n 1 || true

echo "== item-popularity baselines"
"$PY" bench/baselines.py --data "$OUT/ml" --json-out "$OUT/runs/baselines.json" | sed 's/^/  /'

echo "== load average at the end: $(load)"

"$PY" - "$OUT" "$have_torch" <<'EOF' | tee "$OUT/summary.txt"
import glob, json, os, statistics as st, sys

out, have_torch = sys.argv[1], sys.argv[2] == "1"
runs = {}
for p in sorted(glob.glob(os.path.join(out, "runs", "*-s*.json"))):
    name = os.path.basename(p).rsplit("-s", 1)[0]
    with open(p) as f:
        runs.setdefault(name, []).append(json.load(f))
with open(os.path.join(out, "runs", "baselines.json")) as f:
    base = json.load(f)

def ms(xs):
    return (st.mean(xs), st.stdev(xs) if len(xs) > 1 else 0.0)

def col(name, key):
    return [r[key] for r in runs.get(name, [])]

rows = []
print()
print(f"{'model':<13}{'impl':<7}{'test AUC':>18}{'test logloss':>20}{'valid AUC':>11}{'examples/s':>12}  best epochs")
for name, impl in (("dcnv2", "C"), ("torch_dcnv2", "torch"), ("dnn", "C"), ("torch_dnn", "torch"),
                   ("lr", "C"), ("torch_lr", "torch")):
    rs = runs.get(name)
    if not rs:
        print(f"{name:<13}{impl:<7}{'skipped':>18}")
        continue
    a = ms([r["test"]["auc"] for r in rs])
    l = ms([r["test"]["logloss"] for r in rs])
    v = st.mean([r["valid"]["auc"] for r in rs])
    ep = ",".join(str(r["best_epoch"]) for r in rs)
    eps = st.median([r["train_examples_per_s"] for r in rs])
    print(f"{name:<13}{impl:<7}{a[0]:>9.4f} ± {a[1]:.4f}{l[0]:>11.5f} ± {l[1]:.5f}{v:>11.4f}{eps:>12.0f}  {ep}")
t, vb = base["test"], base["valid"]
print(f"{'pop_count':<13}{'py':<7}{t['pop_count']['auc']:>9.4f}{'':>9}{'-':>11}{'':>9}{vb['pop_count']['auc']:>11.4f}")
print(f"{'pop_ctr':<13}{'py':<7}{t['pop_ctr']['auc']:>9.4f}{'':>9}{t['pop_ctr']['logloss']:>11.5f}{'':>9}{vb['pop_ctr']['auc']:>11.4f}")
print("(mean ± sample std over seeds; valid AUC = mean of the chosen epochs'; examples/s = median)")
print()

def mean_auc(name):
    rs = runs.get(name)
    return st.mean(r["test"]["auc"] for r in rs) if rs else None

fmt = lambda x, d=4: "skipped" if x is None else f"{x:.{d}f}"
pop, popc = t["pop_count"]["auc"], t["pop_ctr"]["auc"]
lr = mean_auc("lr")
for tower in ("dcnv2", "dnn"):
    c, p = mean_auc(tower), mean_auc("torch_" + tower)
    beats = [f"{'beats' if c > x else 'does NOT beat'} {n} ({x:.4f})"
             for n, x in (("lr", lr), ("pop_count", pop), ("pop_ctr", popc)) if x is not None]
    print(f"{tower}: C test AUC {c:.4f}; " + ", ".join(beats))
    if p is not None:
        d = c - p
        print(f"{tower}: C - torch mean test AUC = {d:+.4f} ({'within' if abs(d) <= 0.01 else 'NOT within'} 0.01)")
if have_torch and runs.get("torch_lr") and lr is not None:
    print(f"lr: C - torch mean test AUC = {lr - mean_auc('torch_lr'):+.4f}")

def med_eps(name):
    rs = runs.get(name)
    return st.median(r["train_examples_per_s"] for r in rs) if rs else None

for tower in ("dcnv2", "dnn", "lr"):
    c, p = med_eps(tower), med_eps("torch_" + tower)
    if c is not None:
        ratio = f"{c / p:.1f}x" if p else "n/a"
        print(f"{tower}: training examples/s C {c:.0f}, torch {fmt(p, 0)}, C/torch {ratio}")
c_eps, t_eps = med_eps("dcnv2"), med_eps("torch_dcnv2")
speed = f"{c_eps / t_eps:.2f}" if c_eps and t_eps else "skipped"
print(f"bench-train: dcnv2_auc={fmt(mean_auc('dcnv2'))} dnn_auc={fmt(mean_auc('dnn'))} lr_auc={fmt(lr)} "
      f"pop_auc={pop:.4f} torch_dcnv2_auc={fmt(mean_auc('torch_dcnv2'))} torch_dnn_auc={fmt(mean_auc('torch_dnn'))} "
      f"c_examples_per_s={fmt(c_eps, 0)} torch_examples_per_s={fmt(t_eps, 0)} speedup={speed} "
      f"pop_ctr_auc={popc:.4f}")
EOF
