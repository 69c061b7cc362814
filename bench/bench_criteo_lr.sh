#!/usr/bin/env bash
# bench/bench_criteo_lr.sh — regularized logistic regression vs DCNv2 with
# and without regularization on the Criteo sample (issue 15).
#
#   bash bench/bench_criteo_lr.sh [BUILD] [SHARED]     (make bench-criteo-lr)
#
# The issue compares on rows from later in the full Criteo log (a
# regularized LR at AUC 0.7615 beating every unregularized DCNv2 at 0.757).
# ../shared/data/criteo_kaggle holds only the first 8,000 rows of Kaggle's
# train.txt, already cut into train / dev / test (7,200 / 409 / 391 rows):
# there are no later rows here, so this bench answers the question on that
# split only. The three files are joined in that order and converted by the
# product's own converter (rank data log, configs/criteo_schema.json, an
# ordered split whose fractions give back exactly 7,200 / 409 / 391 rows,
# checked).
#
# Models (configs/criteo_dcnv2.json's training settings, threads 1):
#   lr      logistic regression: a "dnn" tower with no hidden layer over
#           embeddings of dim 1, i.e. logit = b + sum over fields of one
#           learned weight per hashed value (I1..I13 as log-squared buckets
#           I<k>_b, C1..C26; tables 16,384 rows, 1,024 for the buckets)
#   dcnv2   configs/criteo_dcnv2.json: I1..I13 dense log1p, C1..C26, 2 cross
#           layers, hidden [128, 64], dim 16
# Selection on dev only (the early-stopping split, valid.tsv): each grid
# setting (train.l2_embed : train.l2_dense : train.dropout) is trained with
# seed 1 and ranked by dev AUC; the test split plays no part. Then seeds
# 1 2 3 of: each model unregularized and with its best regularized setting
# on dev (to show where regularization moves it), scored on test; "chosen"
# is whichever of the two had the better dev AUC. Ends with one line
#   bench-criteo-lr: lr_auc=... (chosen) lr_noreg_auc=... lr_reg_auc=... dcn_auc=... dcn_noreg_auc=... dcn_reg_auc=... dcn_reg_gain=... lr_minus_dcn=... (and loglosses, the settings)
# Environment: SEEDS (default "1 2 3"), LR_GRID, DCN_GRID, BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD:-build}}
SHARED=${2:-../shared/data}
OUT=${BENCH_OUT:-out/bench-criteo-lr}
SEEDS=${SEEDS:-"1 2 3"}
LR_GRID=${LR_GRID:-"0:0:0 1e-4:0:0 1e-3:0:0 1e-2:0:0"}
DCN_GRID=${DCN_GRID:-"0:0:0 1e-5:1e-4:0 1e-4:0:0 1e-3:0:0 0:0:0.2 1e-4:1e-4:0.2 1e-3:1e-3:0.5"}
RANK=$BUILD/bin/rank
SRC=$SHARED/criteo_kaggle
[ -f "$SRC/train.tsv" ] || { echo "bench-criteo-lr: $SRC/train.tsv not found"; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/runs"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load: $(uptime | sed 's/.*load average: //')"
cat "$SRC/train.tsv" "$SRC/dev.tsv" "$SRC/test.tsv" >"$OUT/raw.tsv"
read -r ntr ndev nte < <(wc -l "$SRC/train.tsv" "$SRC/dev.tsv" "$SRC/test.tsv" | awk 'NR<=3 {printf "%s ", $1} END {print ""}')
python3 - "$OUT" "$ntr" "$ndev" "$nte" <<'PY'
import json, sys
out, ntr, ndev, nte = sys.argv[1], *map(int, sys.argv[2:5])
n = ntr + ndev + nte
s = json.load(open("configs/criteo_schema.json"))
# rank data log: n_train = floor(n (1 - valid - test)), n_valid = floor(n (1 - test)) - n_train;
# half a row of slack keeps floor() off the exact boundary
s["split"] = {"method": "ordered", "valid": ndev / n, "test": (nte - 0.5) / n}
json.dump(s, open(out + "/schema.json", "w"), indent=1)
base = json.load(open("configs/criteo_dcnv2.json"))
json.dump(base, open(out + "/dcn.json", "w"), indent=1)
sp = lambda name, ts: {"name": name, "kind": "sparse", "side": "item", "table_size": ts, "dim": 1, "max_values": 1}
lr = dict(base, name="criteo-lr", tower={"type": "dnn", "hidden": []},
          features=[sp("I%d_b" % i, 1024) for i in range(1, 14)] + [sp("C%d" % i, 16384) for i in range(1, 27)])
json.dump(lr, open(out + "/lr.json", "w"), indent=1)
PY
"$RANK" data log --schema "$OUT/schema.json" --input "$OUT/raw.tsv" --out "$OUT/data" 2>&1 | sed 's/^/  /'
for f in train valid test; do printf '  %s.tsv: %d rows\n' $f $(($(wc -l <"$OUT/data/$f.tsv") - 1)); done
[ $(($(wc -l <"$OUT/data/train.tsv") - 1)) -eq "$ntr" ] && [ $(($(wc -l <"$OUT/data/valid.tsv") - 1)) -eq "$ndev" ] &&
    [ $(($(wc -l <"$OUT/data/test.tsv") - 1)) -eq "$nte" ] || { echo "bench-criteo-lr: split is not $ntr/$ndev/$nte"; exit 1; }

mkcfg() { # model l2e l2d dropout -> config path
    local p="$OUT/runs/cfg-$1-$2-$3-$4.json"
    python3 bench/ref/set_train.py "$OUT/$1.json" "$p" "$2" "$3" "$4"
    echo "$p"
}
run() { # model l2e l2d dropout seed
    local cfg
    cfg=$(mkcfg "$1" "$2" "$3" "$4")
    "$RANK" train --config "$cfg" --data "$OUT/data" --out "$OUT/runs/m" --force --seed "$5" \
        --metrics-json "$OUT/runs/$1-$2-$3-$4-s$5.json" >"$OUT/runs/$1-$2-$3-$4-s$5.log" 2>&1
}
choose() { # model grid [nonzero] -> the setting of best dev AUC (seed 1); nonzero: regularized ones only
    python3 - "$OUT/runs" "$1" "$2" "${3:-}" <<'PY'
import json, sys
d, m, grid, nz = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
best = None
for g in grid:
    e, l, o = g.split(":")
    v = json.load(open("%s/%s-%s-%s-%s-s1.json" % (d, m, e, l, o)))["valid"]["auc"]
    if not nz:
        print("  %-5s l2_embed=%-5s l2_dense=%-5s dropout=%-4s dev AUC %.4f" % (m, e, l, o, v), file=sys.stderr)
    if (not nz or any(float(x) for x in (e, l, o))) and (best is None or v > best[0]):
        best = (v, g)
print(best[1])
PY
}
for m in lr dcn; do
    grid=$LR_GRID
    [ $m = dcn ] && grid=$DCN_GRID
    for g in $grid; do
        IFS=: read -r e d o <<<"$g"
        run $m "$e" "$d" "$o" 1
    done
    echo "  $m grid done; load: $(uptime | sed 's/.*load average: //')"
done
grep -m1 "openblas: core" "$OUT/runs/dcn-0-0-0-s1.log" | sed 's/.*openblas: /openblas: /' || true
lr_c=$(choose lr "$LR_GRID")
dcn_c=$(choose dcn "$DCN_GRID")
lr_r=$(choose lr "$LR_GRID" nonzero)
dcn_r=$(choose dcn "$DCN_GRID" nonzero)
echo "  chosen on dev: lr $lr_c, dcn $dcn_c; best regularized on dev: lr $lr_r, dcn $dcn_r"
for s in $SEEDS; do
    [ "$s" = 1 ] && continue # seed 1 of every grid setting already ran
    for x in "lr:0:0:0" "lr:$lr_r" "dcn:0:0:0" "dcn:$dcn_r"; do
        IFS=: read -r m e d o <<<"$x"
        [ -f "$OUT/runs/$m-$e-$d-$o-s$s.json" ] || run "$m" "$e" "$d" "$o" "$s"
    done
done
rm -rf "$OUT/runs/m"
python3 - "$OUT/runs" "$lr_c" "$dcn_c" "$lr_r" "$dcn_r" "$SEEDS" <<'PY'
import json, statistics as st, sys
d, lr_c, dcn_c, lr_r, dcn_r, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6].split()
def get(m, g):
    e, l, o = g.split(":")
    r = [json.load(open("%s/%s-%s-%s-%s-s%s.json" % (d, m, e, l, o, s))) for s in seeds]
    return [x["test"]["auc"] for x in r], [x["test"]["logloss"] for x in r], [x["valid"]["auc"] for x in r]
res = {"lr_noreg": get("lr", "0:0:0"), "lr_reg": get("lr", lr_r), "dcn_noreg": get("dcn", "0:0:0"), "dcn_reg": get("dcn", dcn_r)}
res["lr"] = res["lr_reg"] if lr_c == lr_r else res["lr_noreg"]
res["dcn"] = res["dcn_reg"] if dcn_c == dcn_r else res["dcn_noreg"]
sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
for k, lab in (("lr_noreg", "LR, no regularization"), ("lr_reg", "LR, best regularized on dev " + lr_r),
               ("dcn_noreg", "DCNv2, no regularization"), ("dcn_reg", "DCNv2, best regularized on dev " + dcn_r)):
    a, l, v = res[k]
    print("%-44s test AUC %.4f ± %.4f  logloss %.4f ± %.4f  (dev AUC %.4f; seeds %s)" % (lab, st.mean(a), sd(a), st.mean(l), sd(l), st.mean(v), " ".join(seeds)))
    print("    per seed test AUC: " + " ".join("%.4f" % x for x in a))
g = [x - y for x, y in zip(res["dcn_reg"][0], res["dcn_noreg"][0])]
h = [x - y for x, y in zip(res["lr"][0], res["dcn"][0])]
print("chosen on dev (regularized or not): lr %s, dcn %s" % (lr_c, dcn_c))
print("DCNv2 regularized - unregularized %+.4f ± %.4f AUC (paired by seed); LR - DCNv2 (each as chosen) %+.4f ± %.4f"
      % (st.mean(g), sd(g), st.mean(h), sd(h)))
m = {k: (st.mean(v[0]), st.mean(v[1])) for k, v in res.items()}
print("bench-criteo-lr: lr_auc=%.4f lr_noreg_auc=%.4f lr_reg_auc=%.4f dcn_auc=%.4f dcn_noreg_auc=%.4f dcn_reg_auc=%.4f "
      "dcn_reg_gain=%+.4f lr_minus_dcn=%+.4f lr_logloss=%.4f dcn_logloss=%.4f dcn_reg_logloss=%.4f lr_chosen=%s dcn_chosen=%s dcn_reg=%s"
      % (m["lr"][0], m["lr_noreg"][0], m["lr_reg"][0], m["dcn"][0], m["dcn_noreg"][0], m["dcn_reg"][0], st.mean(g), st.mean(h),
         m["lr"][1], m["dcn"][1], m["dcn_reg"][1], lr_c.replace(":", "/"), dcn_c.replace(":", "/"), dcn_r.replace(":", "/")))
PY
echo "load: $(uptime | sed 's/.*load average: //')"
