#!/usr/bin/env bash
# bench/bench_criteo_reg.sh — where regularization moves DCNv2 on the Criteo
# sample (issue 15), after bench/bench_criteo.sh (it reuses that run's folds
# and its "log1p" layout: 39 fields, I1..I13 dense log1p).
#
#   bash bench/bench_criteo_reg.sh [BUILD]     (make bench-criteo runs it last)
#
# Selection on validation only: each setting of a small grid (train.l2_embed,
# train.l2_dense, train.dropout) is trained on every fold with seed 1 and
# ranked by mean VALID AUC (the early-stopping split); the test folds play no
# part. The chosen setting then runs the same 5 folds x 3 seeds as the
# unregularized log1p layout, and the paired test AUC / logloss gain is
# reported. One last line:
#   bench-criteo-reg: chosen=l2e..._l2d..._do... reg_auc=... noreg_auc=... gain=... reg_logloss=... noreg_logloss=...
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD:-build}}
OUT=${BENCH_OUT:-out/bench-criteo}
SEEDS=${SEEDS:-"1 2 3"}
FOLDS=${FOLDS:-5}
GRID=${GRID:-"1e-4:0:0 1e-5:1e-4:0 1e-4:1e-4:0.2 0:0:0.2"}
RANK=$BUILD/bin/rank
[ -f "$OUT/configs/log1p.json" ] || { echo "bench-criteo-reg: run bench/bench_criteo.sh first"; exit 1; }
mkdir -p "$OUT/reg"
echo "load: $(uptime | sed 's/.*load average: //')"
mkcfg() { # l2e l2d dropout -> config path
    local p="$OUT/reg/cfg-$1-$2-$3.json"
    python3 bench/ref/set_train.py "$OUT/configs/log1p.json" "$p" "$1" "$2" "$3"
    echo "$p"
}
for g in $GRID; do
    IFS=: read -r e d o <<<"$g"
    cfg=$(mkcfg "$e" "$d" "$o")
    for f in $(seq 0 $((FOLDS - 1))); do
        "$RANK" train --config "$cfg" --data "$OUT/data/criteo/fold$f" --out "$OUT/reg/m" --force --seed 1 \
            --metrics-json "$OUT/reg/sel-$e-$d-$o-f$f.json" >"$OUT/reg/sel-$e-$d-$o-f$f.log" 2>&1
    done
done
chosen=$(python3 - "$OUT/reg" "$GRID" <<'PY'
import glob, json, statistics as st, sys
d, grid = sys.argv[1], sys.argv[2].split()
best = None
for g in grid:
    e, l, o = g.split(":")
    v = [json.load(open(p))["valid"]["auc"] for p in glob.glob("%s/sel-%s-%s-%s-f*.json" % (d, e, l, o))]
    m = st.mean(v)
    print("  l2_embed=%s l2_dense=%s dropout=%s: mean valid AUC %.4f (%d folds)" % (e, l, o, m, len(v)), file=sys.stderr)
    if best is None or m > best[0]:
        best = (m, g)
print(best[1])
PY
)
IFS=: read -r e d o <<<"$chosen"
echo "  chosen on validation: l2_embed=$e l2_dense=$d dropout=$o"
cfg=$(mkcfg "$e" "$d" "$o")
for f in $(seq 0 $((FOLDS - 1))); do
    for s in $SEEDS; do
        "$RANK" train --config "$cfg" --data "$OUT/data/criteo/fold$f" --out "$OUT/reg/m" --force --seed "$s" \
            --metrics-json "$OUT/reg/reg-f$f-s$s.json" >"$OUT/reg/reg-f$f-s$s.log" 2>&1
    done
done
rm -rf "$OUT/reg/m"
python3 - "$OUT" "$e" "$d" "$o" <<'PY'
import glob, json, statistics as st, sys
out, e, d, o = sys.argv[1:5]
reg, base = {}, {}
for p in glob.glob(out + "/reg/reg-*.json"):
    k = p.rsplit("/", 1)[1][4:]
    reg[k] = json.load(open(p))["test"]
for k in reg:
    base[k] = json.load(open("%s/runs/log1p-%s" % (out, k)))["test"]
ra = [reg[k]["auc"] for k in reg]; ba = [base[k]["auc"] for k in reg]
rl = [reg[k]["logloss"] for k in reg]; bl = [base[k]["logloss"] for k in reg]
g = [a - b for a, b in zip(ra, ba)]
print("log1p + reg  test AUC %.4f ± %.4f  logloss %.4f ± %.4f" % (st.mean(ra), st.stdev(ra), st.mean(rl), st.stdev(rl)))
print("log1p        test AUC %.4f ± %.4f  logloss %.4f ± %.4f" % (st.mean(ba), st.stdev(ba), st.mean(bl), st.stdev(bl)))
print("gain %+.4f ± %.4f (paired, %d/%d runs better), logloss %+.4f" % (st.mean(g), st.stdev(g), sum(x > 0 for x in g), len(g), st.mean(rl) - st.mean(bl)))
print("bench-criteo-reg: chosen=l2e%s_l2d%s_do%s reg_auc=%.4f noreg_auc=%.4f gain=%+.4f reg_logloss=%.4f noreg_logloss=%.4f"
      % (e, d, o, st.mean(ra), st.mean(ba), st.mean(g), st.mean(rl), st.mean(bl)))
PY
echo "load: $(uptime | sed 's/.*load average: //')"
