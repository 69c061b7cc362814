#!/usr/bin/env bash
# bench/bench_embsum.sh — EmbSum (issue 12; papers.md §4, §6.6) on MovieLens
# ml-latest-small, 3 seeds, side by side in one run:
#   (a) EmbSum m = k = 4         (b) the same with m = k = 1
#   (c) no training: mean of the history's encoder vectors · the candidate's
#   (d) the demo's ID DCNv2 (configs/movielens_dcnv2.json) on the same examples
#   (e) that DCNv2 with the EmbSum matching score as a dense input
#   (f) bench/ref/embsum_torch.py: (a) in PyTorch, same inputs, same hyper-parameters
# plus (a) with the stand-in summary loss (λ = 0.1), the session pooling choice
# (first token vs mean, on valid, seed 1), per-codec bytes and AUC, the
# store-path scores vs the in-memory ones, the time to score 1,000
# candidates in-process (bench/embsum_cost.c), and the bundle served by rankd
# over gRPC (bench/embsum_serve.py: served_max_diff vs `rank embsum score`,
# score_us_1k = rankd's own time per 1,000-candidate request, p50).
#
#   bash bench/bench_embsum.sh [BUILD]        (make bench-embsum)
#
# Protocol (rank/embsum_data.c): per user, time-ordered events; train targets
# = events [40%, 80%), valid [80%, 90%), test the last 10%; positives =
# rating >= 4; each evaluation impression = a user's positives of the period
# + 4 items they never rated per positive (data seed 0, the same for every
# run). Metrics: MIND's AUC, MRR, nDCG@5, nDCG@10 averaged over impressions.
# The encoder states are computed once into $OUT/cache (~15 min on a loaded
# 2-core VM) and reused.
set -euo pipefail
BUILD=${1:-build}
OUT=${OUT:-$BUILD/bench-embsum}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-3}
RANK=$BUILD/bin/rank
PY=/usr/bin/python3
ENC=${RK_ENCODER_MODEL:-${RK_MODEL_HOME:-$HOME/.cache/rankd}/models/all-MiniLM-L6-v2}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
bash scripts/setup-encoder.sh >/dev/null
mkdir -p "$OUT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "load at start: $(uptime)"
T0=$(date +%s)

$RANK data movielens --input data/movielens --out "$OUT/ml" >/dev/null
$PY bench/embsum_report.py summaries "$OUT/ml" "$OUT/summaries.tsv"
COMMON=(--data "$OUT/ml" --encoder "$ENC" --cache "$OUT/cache" --epochs "$EPOCHS" --force --quiet)

# session pooling: first token vs mean, chosen on valid AUC (seed 1)
for sp in mean first; do
  dump=(); [ $sp = mean ] && dump=(--dump "$OUT/dump.safetensors")  # holds both poolings' session vectors
  nice $RANK embsum train "${COMMON[@]}" "${dump[@]}" --seed 1 --session-pool $sp --out "$OUT/a1_$sp" \
    --report "$OUT/pool_$sp.json" --impressions "$OUT/impressions.tsv" --scores "$OUT/scores_a1_$sp.tsv" \
    | grep -E '^embsum (valid|test)|^embsum:' | sed "s/^/[$sp] /"
done
SP=$($PY -c "import json,sys; m=json.load(open('$OUT/pool_mean.json'))['valid']['auc']; f=json.load(open('$OUT/pool_first.json'))['valid']['auc']; print('first' if f > m else 'mean')")
echo "session pooling chosen on valid: $SP"
cp "$OUT/pool_$SP.json" "$OUT/a_seed1.json"
rm -rf "$OUT/a1" && mv "$OUT/a1_$SP" "$OUT/a1"
cp "$OUT/scores_a1_$SP.tsv" "$OUT/scores_a1.tsv"

for s in $SEEDS; do
  if [ "$s" != 1 ]; then
    nice $RANK embsum train "${COMMON[@]}" --seed "$s" --session-pool $SP --out "$OUT/a$s" --report "$OUT/a_seed$s.json" \
      | grep -E '^embsum test' | sed "s/^/[a seed $s] /"
  fi
  nice $RANK embsum train "${COMMON[@]}" --seed "$s" --session-pool $SP --m 1 --k 1 --out "$OUT/b$s" \
    --report "$OUT/b_seed$s.json" | grep -E '^embsum test' | sed "s/^/[b seed $s] /"
  nice $RANK embsum train "${COMMON[@]}" --seed "$s" --session-pool $SP --summaries "$OUT/summaries.tsv" --lambda 0.1 \
    --out "$OUT/sum$s" --report "$OUT/sum_seed$s.json" | grep -E '^embsum test' | sed "s/^/[a+summary seed $s] /"
  nice $PY bench/ref/embsum_torch.py --dump "$OUT/dump.safetensors" --out "$OUT/f_seed$s.json" --seed "$s" \
    --epochs "$EPOCHS" --session-pool $SP 2>&1 | tail -1 | sed "s/^/[f seed $s] /"
  # (d) ID DCNv2 and (e) + EmbSum score, on the same examples
  $PY bench/embsum_report.py dcn-data "$OUT/ml" "$OUT/impressions.tsv" "$OUT/dcn$s" "$s"
  nice $RANK embsum pairs --model "$OUT/a$s" --data "$OUT/ml" --encoder "$ENC" --cache "$OUT/cache" --quiet \
    --input "$OUT/dcn$s/pairs.tsv" --output "$OUT/pairs_scores$s.tsv"
  $PY bench/embsum_report.py dcn-data "$OUT/ml" "$OUT/impressions.tsv" "$OUT/dcne$s" "$s" "$OUT/pairs_scores$s.tsv"
  for v in d e; do
    dir=$OUT/dcn$s; cfg=configs/movielens_dcnv2.json
    if [ $v = e ]; then dir=$OUT/dcne$s; cfg=configs/movielens_dcnv2_embsum.json; fi
    nice $RANK train --config $cfg --data "$dir" --out "$OUT/${v}model$s" --seed "$s" --force >/dev/null 2>&1
    $RANK score --model "$OUT/${v}model$s" --input "$dir/test.tsv" --output "$OUT/${v}scores$s.tsv" >/dev/null 2>&1
    $PY bench/embsum_report.py dcn-metrics "$dir" "$OUT/${v}scores$s.tsv" "$OUT/${v}_seed$s.json"
  done
  echo "seed $s done at +$(( $(date +%s) - T0 )) s; load: $(uptime | sed 's/.*load average: //')"
done

# codecs: bytes per user / item, test AUC from the stored vectors, store path vs in-memory
awk -F'\t' 'NR == 1 || $1 == "test"' "$OUT/impressions.tsv" > "$OUT/test_rows.tsv"
for c in fp32 fp16 int8; do
  bundle=$OUT/a1
  if [ $c != fp32 ]; then
    $RANK embsum build --model "$OUT/a1" --data "$OUT/ml" --encoder "$ENC" --cache "$OUT/cache" --codec $c \
      --out "$OUT/a1_$c" --force --quiet >/dev/null
    bundle=$OUT/a1_$c
  fi
  $RANK embsum inspect --model "$bundle" | grep bytes | tr '\n' ' ' | sed "s/^/[$c] /"; echo
  $RANK embsum score --model "$bundle" --input "$OUT/test_rows.tsv" --output "$OUT/served_$c.tsv"
  du -sb "$bundle/tables" | awk -v c=$c '{print "[" c "] tables on disk: " $1 " bytes"}'
done
$PY - "$OUT" <<'EOF'
import csv, json, sys
import numpy as np
sys.path.insert(0, "bench")
from embsum_report import mind  # noqa: E402
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/impressions.tsv"), delimiter="\t"))
mem = [float(x) for x in open(out + "/scores_a1.tsv").read().split()[1:]]
test = [(r, m) for r, m in zip(rows, mem) if r["split"] == "test"]
res = {}
for c in ("fp32", "fp16", "int8"):
    srv = [float(l.split("\t")[1]) for l in open(out + "/served_%s.tsv" % c).read().split("\n")[1:] if l]
    diff = max(abs(a - m) for a, (_, m) in zip(srv, test))
    imp = {}
    for (r, _), y in zip(test, srv):
        imp.setdefault(r["impression"], []).append((y, int(r["label"])))
    auc = np.mean([mind([a for a, _ in v], [b for _, b in v])[0] for v in imp.values()])
    res[c] = {"max_abs_diff_vs_memory": diff, "test_auc": auc}
    print("[%s] store-path score vs in-memory: max |diff| %.3g; test AUC from stored vectors %.4f" % (c, diff, auc))
json.dump(res, open(out + "/codecs.json", "w"), indent=1)
EOF
# cost: 1,000 candidates for one user, from the fp32 bundle (store RAM cache warm)
awk -F'\t' 'NR > 1 && NR <= 1001 {print $4}' "$OUT/impressions.tsv" > "$OUT/items1k.txt"
U=$(awk -F'\t' 'NR == 2 {print $3}' "$OUT/test_rows.tsv")
for c in fp32 fp16 int8; do
  b=$OUT/a1; [ $c != fp32 ] && b=$OUT/a1_$c
  $BUILD/bench/embsum_cost "$b" "$U" "$OUT/items1k.txt" 1000 50 | tee "$OUT/cost_$c.txt"
done
# served by rankd over real gRPC (rank embsum export; bench/embsum_serve.py): every test row vs
# `rank embsum score` (served_max_diff), and 1,000 candidates per request, the server's stage times
# (score_us_1k = the server's total per request, p50)
echo "load before the gRPC step: $(uptime)"
/usr/bin/python3 bench/embsum_serve.py --bin-dir "$BUILD/bin" --source-dir . --bundle "$OUT/a1" \
  --rows "$OUT/test_rows.tsv" --offline "$OUT/served_fp32.tsv" --items "$OUT/items1k.txt" --user "$U" \
  --out "$OUT/serve.json" --reps 200
echo "load at end: $(uptime)"
# MIND (the paper's data): the same pipeline on ../shared/data/mind_small_sample when present (read
# from there, never copied; bench/embsum_mind.py); not part of the last line
MIND=${MIND:-../shared/data/mind_small_sample}
if [ -d "$MIND" ]; then
  nice $PY bench/embsum_mind.py --rank "$RANK" --mind "$MIND" --encoder "$ENC" --out "$OUT/mind" --seeds "$SEEDS" \
    | grep '^\[mind\]'
fi
$PY bench/embsum_report.py report "$OUT"
$PY - "$OUT" <<'EOF'
import json, re, sys
out = sys.argv[1]
s = json.load(open(out + "/summary.json"))
c = json.load(open(out + "/codecs.json"))
g = json.load(open(out + "/serve.json"))
us = g["total_us_p50"]
print("bench-embsum: auc_embsum=%.4f auc_single=%.4f auc_meanpool=%.4f auc_dcnv2=%.4f auc_dcnv2_embsum=%.4f "
      "ndcg10_embsum=%.4f torch_auc_diff=%.4f served_max_diff=%.3g score_us_1k=%.1f" % (
          s["a_auc"], s["b_auc"], s["c_auc"], s["d_auc"], s["e_auc"], s["a_ndcg10"], s["torch_auc_diff"],
          g["served_max_diff"], us))
EOF
