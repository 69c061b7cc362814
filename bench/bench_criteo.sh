#!/usr/bin/env bash
# bench/bench_criteo.sh — Criteo with all 39 fields vs the 13 integers packed
# into one bag (issue 15), DCNv2, on the Criteo sample of ../shared/data
# (8,000 rows of Kaggle train.txt; read there, written only under out/).
#
#   bash bench/bench_criteo.sh [BUILD] [SHARED]     (make bench-criteo)
#
# The project's CV (bench/ref/prep_ctr.py: 5 seeded folds; per fold, test =
# the fold, valid = the last 1/8 of the rest for early stopping) x seeds
# 1 2 3, three feature layouts of the same DCNv2 (cross 2, hidden [128, 64],
# dim 16, configs/criteo_cetnet.json's training settings):
#   packed    C1..C26 + the 13 integers as one bag of "I<k>=<bucket>" tokens
#             (27 features: how the bench worked around the old 32-feature cap)
#   buckets   39 fields: I1..I13 as sparse Criteo-winner buckets + C1..C26
#   log1p     39 fields: I1..I13 dense, log1p after clamping negatives at 0,
#             standardized on the training split + C1..C26
# Settings were chosen on validation data only (early stopping); the test
# folds are only scored. Prints mean ± std over the 15 runs of test AUC and
# logloss and the paired gains over packed, and one line
#   bench-criteo: packed_auc=... buckets_auc=... log1p_auc=... buckets_gain=... log1p_gain=... packed_logloss=... ...
# Environment: SEEDS (default "1 2 3"), FOLDS (default 5), BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD:-build}}
SHARED=${2:-../shared/data}
OUT=${BENCH_OUT:-out/bench-criteo}
SEEDS=${SEEDS:-"1 2 3"}
FOLDS=${FOLDS:-5}
RANK=$BUILD/bin/rank
if [ ! -d "$SHARED/criteo_kaggle" ]; then
    echo "bench-criteo: $SHARED/criteo_kaggle not found (pass the shared data folder as the 2nd argument)"
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT/configs" "$OUT/runs"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load: $(uptime | sed 's/.*load average: //')"
python3 bench/ref/prep_ctr.py --data "$SHARED" --out "$OUT/data" --folds "$FOLDS" --seed 0 --datasets criteo | sed 's/^/  /'
python3 - "$OUT/configs" <<'PY'
import json, sys
out = sys.argv[1]
base = json.load(open("configs/criteo_dcnv2.json"))
sp = lambda n, ts=16384: {"name": n, "kind": "sparse", "side": "item", "table_size": ts, "dim": 16, "max_values": 1}
C = [sp("C%d" % i) for i in range(1, 27)]
lay = {
    "packed": C + [{"name": "ints", "kind": "sparse", "side": "item", "table_size": 16384, "dim": 16}],
    "buckets": [sp("I%d" % i, 1024) for i in range(1, 14)] + C,
    "log1p": [{"name": "I%d" % i, "column": "D%d" % i, "kind": "dense", "side": "item", "log1p": True} for i in range(1, 14)] + C,
}
for k, f in lay.items():
    c = dict(base, name="criteo-" + k, features=f)
    json.dump(c, open("%s/%s.json" % (out, k), "w"), indent=1)
    print("  %s: %d features" % (k, len(f)))
PY
for f in $(seq 0 $((FOLDS - 1))); do
    for s in $SEEDS; do
        for v in packed buckets log1p; do
            "$RANK" train --config "$OUT/configs/$v.json" --data "$OUT/data/criteo/fold$f" --out "$OUT/runs/m" --force \
                --seed "$s" --metrics-json "$OUT/runs/$v-f$f-s$s.json" >"$OUT/runs/$v-f$f-s$s.log" 2>&1
        done
    done
    echo "  fold $f done; load: $(uptime | sed 's/.*load average: //')"
done
grep -m1 "openblas: core" "$OUT/runs/packed-f0-s1.log" | sed 's/.*openblas: /openblas: /' || true
rm -rf "$OUT/runs/m"
python3 - "$OUT/runs" <<'PY'
import glob, json, statistics as st, sys
d = sys.argv[1]
res = {}
for v in ("packed", "buckets", "log1p"):
    for p in sorted(glob.glob("%s/%s-*.json" % (d, v))):
        j = json.load(open(p))
        key = p.rsplit("/", 1)[1].split("-", 1)[1]
        res.setdefault(v, {})[key] = (j["test"]["auc"], j["test"]["logloss"])
line = []
for v in ("packed", "buckets", "log1p"):
    a = [x[0] for x in res[v].values()]
    l = [x[1] for x in res[v].values()]
    print("%-8s test AUC %.4f ± %.4f  logloss %.4f ± %.4f  (%d runs)" % (v, st.mean(a), st.stdev(a), st.mean(l), st.stdev(l), len(a)))
    line += ["%s_auc=%.4f" % (v, st.mean(a)), "%s_logloss=%.4f" % (v, st.mean(l))]
for v in ("buckets", "log1p"):
    g = [res[v][k][0] - res["packed"][k][0] for k in res["packed"]]
    gl = [res[v][k][1] - res["packed"][k][1] for k in res["packed"]]
    wins = sum(x > 0 for x in g)
    print("%-8s vs packed: AUC gain %+.4f ± %.4f (paired, %d/%d runs better), logloss %+.4f" % (v, st.mean(g), st.stdev(g), wins, len(g), st.mean(gl)))
    line += ["%s_gain=%+.4f" % (v, st.mean(g))]
print("bench-criteo: " + " ".join(line))
PY
echo "load: $(uptime | sed 's/.*load average: //')"
