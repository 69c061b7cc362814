#!/usr/bin/env bash
# bench/bench_cetnet.sh — CETNet ensembles (issue 7): the paper's claims measured.
#
#   bash bench/bench_cetnet.sh [BUILD] [SHARED_DATA]      (make bench-cetnet BUILD=build)
#
# MovieLens, time-ordered split of `rank data movielens`, seeds 1 2 3:
#   dnn, dcnv2, deepfm     each member alone (configs/movielens_{dnn,dcnv2,deepfm}.json,
#                          checked equal to the members of configs/movielens_cetnet.json)
#   cet_conf               configs/movielens_cetnet.json: 3 members, confidence fusion, lambda 0.5
#   cet_mean               the same, mean fusion
#   cet_nocollab           the same, confidence fusion, lambda 0 (no collaborative pull)
#   cet_indep              the same, lambda 0 and w_fused 0 (members trained independently)
#   cet_tau01              the same, confidence fusion with tau 0.1
#   cet2_half, cet2_full   dnn + dcnv2 with embedding dim 8 each / 16 each
#   dnn_half, dcnv2_half   those members alone with dim 8
#   fusion check: the seed-1 cet_conf bundle's pCTRs vs papers.md §6.4 recomputed
#   in Python from its members' pCTRs (each member folder scored on its own)
#   serving: `rank score` rows/s on the test split of the seed-1 bundles of
#   dnn, dcnv2, deepfm and cet_conf (REPS interleaved repeats; best and median)
# Criteo and Avazu samples, read from SHARED_DATA (default ../shared/data; the
# whole part is skipped with a message when it is absent; never copied into
# the repository: the folds are written under out/), 5-fold CV x seeds 1 2 3:
#   dnn, dcnv2, deepfm alone, cet_conf, cet_mean, cet_nocollab
#   (configs/{criteo,avazu}_cetnet.json and variants derived from them).
# Variant configs are derived by bench/cetnet_report.py from the ensemble
# config, so every hyper-parameter is shared; all runs use --threads 1.
# Tables: bench/cetnet_report.py (mean ± sample std); last line:
#   bench-cetnet: ml_auc_best_member=X ml_auc_fused=X ml_auc_mean_fusion=X
#                 criteo_auc_best_member=X criteo_auc_fused=X avazu_auc_best_member=X avazu_auc_fused=X
# Everything goes to out/bench-cetnet/ (configs, folds, per-run JSON, logs, summary.md).
# Environment: SEEDS (default "1 2 3"), FOLDS (default 5), REPS (default 9),
# CTR_SETS (default "criteo avazu"), BENCH_OUT (default out/bench-cetnet).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:-${BUILD:-build}}
SHARED=${2:-../shared/data}
RANK=${BUILD}/bin/rank
OUT=${BENCH_OUT:-out/bench-cetnet}
SEEDS=${SEEDS:-"1 2 3"}
FOLDS=${FOLDS:-5}
REPS=${REPS:-9}
CTR_SETS=${CTR_SETS:-"criteo avazu"}
PY=${PYTHON:-python3}
T0=$(date +%s)

if [ ! -x "$RANK" ]; then
    echo "bench-cetnet: $RANK not found; build first (make build BUILD=$BUILD)" >&2
    exit 1
fi
rm -rf "$OUT/runs" "$OUT/logs" "$OUT/bundles" "$OUT/configs" "$OUT/score.tsv" "$OUT/fusecheck.json"
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/bundles" "$OUT/configs"

# The progress bars redraw with '\r'; keep only the finished lines in the logs.
clean() { tr '\r' '\n' | grep -v '%' || true; }

# train DS VARIANT CONFIG DATA FOLD SEED [keep]: one `rank train` run; the
# bundle is removed afterwards unless "keep" (the serving check needs some).
train() {
    local ds=$1 v=$2 cfg=$3 data=$4 fold=$5 seed=$6 keep=${7:-}
    local tag="$ds-$v-f$fold-s$seed" bundle="$OUT/bundles/$ds-$v-f$fold-s$seed"
    mkdir -p "$OUT/runs/$ds/$v"
    if ! "$RANK" train --config "$cfg" --data "$data" --out "$bundle" --force --seed "$seed" --threads 1 \
        --metrics-json "$OUT/runs/$ds/$v/f$fold-s$seed.json" >"$OUT/logs/$tag.log" 2>&1; then
        clean <"$OUT/logs/$tag.log" | tail -n 5 >&2
        echo "bench-cetnet: rank train failed for $tag (log: $OUT/logs/$tag.log)" >&2
        exit 1
    fi
    clean <"$OUT/logs/$tag.log" >"$OUT/logs/$tag.tmp" && mv "$OUT/logs/$tag.tmp" "$OUT/logs/$tag.log"
    if grep -qi 'nan' "$OUT/runs/$ds/$v/f$fold-s$seed.json"; then
        echo "bench-cetnet: NaN in the metrics of $tag ($OUT/runs/$ds/$v/f$fold-s$seed.json)" >&2
        exit 1
    fi
    [ -n "$keep" ] || rm -rf "$bundle"
    printf '  %-7s %-13s fold %s seed %s: %s\n' "$ds" "$v" "$fold" "$seed" "$(grep '^test:' "$OUT/logs/$tag.log" |
        sed 's/ base_rate=[^ ]*//; s/ ne=.*//')"
}

# ------------------------------------------------------------------ MovieLens
echo "== MovieLens: data"
"$RANK" data movielens --input data/movielens --out "$OUT/ml" 2>"$OUT/logs/data-ml.log" | tail -n 1
C="$OUT/configs/ml"
"$PY" bench/cetnet_report.py derive --config configs/movielens_cetnet.json --out "$C" --pair dnn,dcnv2 \
    --check dnn=configs/movielens_dnn.json --check dcnv2=configs/movielens_dcnv2.json \
    --check deepfm=configs/movielens_deepfm.json | sed 's/^/  /'
echo "== MovieLens: training, seeds $SEEDS"
for s in $SEEDS; do
    keep=
    [ "$s" = "${SEEDS%% *}" ] && keep=keep
    train ml dnn configs/movielens_dnn.json "$OUT/ml" 0 "$s" $keep
    train ml dcnv2 configs/movielens_dcnv2.json "$OUT/ml" 0 "$s" $keep
    train ml deepfm configs/movielens_deepfm.json "$OUT/ml" 0 "$s" $keep
    train ml cet_conf configs/movielens_cetnet.json "$OUT/ml" 0 "$s" $keep
    for v in cet_mean cet_nocollab cet_indep cet_tau01 cet2_half cet2_full dnn_half dcnv2_half; do
        train ml "$v" "$C/$v.json" "$OUT/ml" 0 "$s"
    done
done

echo "== MovieLens: serving cost, rank score on the test split, $REPS interleaved repeats"
s1=${SEEDS%% *}
for r in $(seq 1 "$REPS"); do
    for v in dnn dcnv2 deepfm cet_conf; do
        line=$("$RANK" score --model "$OUT/bundles/ml-$v-f0-s$s1" --input "$OUT/ml/test.tsv" \
            --output "$OUT/bundles/score-$v.tsv" 2>>"$OUT/logs/score.log" | grep '^scored')
        rps=$(echo "$line" | sed -n 's/.*(\([0-9.]*\) rows\/s).*/\1/p')
        echo "$v $r $rps" >>"$OUT/score.tsv"
    done
done
awk '{a[$1]=a[$1]" "$3} END {for (v in a) printf "  %-9s rows/s:%s\n", v, a[v]}' "$OUT/score.tsv" | sort
ens="$OUT/bundles/ml-cet_conf-f0-s$s1"
members=()
for m in dnn dcnv2 deepfm; do
    "$RANK" score --model "$ens/members/$m" --input "$OUT/ml/test.tsv" --output "$OUT/bundles/member-$m.tsv" \
        >>"$OUT/logs/score.log" 2>&1
    members+=(--member "$m=$OUT/bundles/member-$m.tsv")
done
"$PY" bench/cetnet_report.py fusecheck --ensemble-scores "$OUT/bundles/score-cet_conf.tsv" "${members[@]}" \
    --tau "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ensemble"]["tau"])' configs/movielens_cetnet.json)" \
    --out "$OUT/fusecheck.json" | sed 's/^/  /'

# ------------------------------------------------------------- Criteo, Avazu
if [ -d "$SHARED/criteo_kaggle" ] && [ -d "$SHARED/avazu" ]; then
    echo "== Criteo and Avazu samples from $SHARED: $FOLDS folds (read there, written only under $OUT/data)"
    "$PY" bench/ref/prep_ctr.py --data "$SHARED" --out "$OUT/data" --folds "$FOLDS" --seed 0 \
        --datasets "${CTR_SETS// /,}" | sed 's/^/  /'
    for ds in $CTR_SETS; do
        C="$OUT/configs/$ds"
        "$PY" bench/cetnet_report.py derive --config "configs/${ds}_cetnet.json" --out "$C" | sed 's/^/  /'
        echo "== $ds: training, $FOLDS folds x seeds $SEEDS"
        for f in $(seq 0 $((FOLDS - 1))); do
            for s in $SEEDS; do
                for v in dnn dcnv2 deepfm cet_conf cet_mean cet_nocollab; do
                    train "$ds" "$v" "$C/$v.json" "$OUT/data/$ds/fold$f" "$f" "$s"
                done
            done
        done
    done
else
    echo "== Criteo and Avazu: skipped ($SHARED/criteo_kaggle or $SHARED/avazu not found; pass the shared data folder as the 2nd argument)"
fi
rm -rf "$OUT/bundles"

echo "== runtime $(($(date +%s) - T0)) s on $(nproc) cores"
"$PY" bench/cetnet_report.py report --out "$OUT" --serve-seed "$s1"
