#!/usr/bin/env bash
# bench/bench_sid.sh — Semantic IDs (issue 5): the paper's claims measured on
# MovieLens ml-latest-small.
#
#   bash bench/bench_sid.sh [BUILD]            (make bench-sid BUILD=build)
#
# 1. `rank data movielens`: time-ordered 80/10/10 split + items.csv (title,
#    genres, tags.csv joined per movie, in C).
# 2. `rank encode text` (all-MiniLM-L6-v2, ~/.cache/rankd/models) over
#    "{title} | {genres} | {tags}" -> 384-d content embeddings of all movies.
# 3. `rank sid build` (RQ-KMeans, L = LEVELS, K = CODES, seed 1) on the
#    movies' embeddings; A/A: 1% of the movies that occur in the test split
#    are copied under new raw ids (id + 10,000,000) with identical
#    embeddings, and `rank sid assign` gives every movie and copy its codes
#    from those codebooks (the records used by all runs).
# 4. Per parameterization of the item feature movie_id (hash = random
#    hashing, individual, all_bigrams, trigram, prefix_ngram) and seed
#    (SEEDS): configs/movielens_sid.json with that "param", the same DCNv2
#    tower and dim, the same H for movie_id (H = #movies / 3; individual:
#    #records + 1, one row per id + OOV), one pass over the training stream
#    in time order (max_epochs 1, shuffle false); `rank score` on test.tsv and
#    on the A/A copy of the test rows of the duplicated movies. prefix_hist:
#    prefix_ngram for movie_id and for the user history (same H as hashing).
# 4b. Table 2 check on the valid split: prefix_ngram for K x L in SWEEP
#    (K:L pairs, default "8:3 32:2 32:4 128:3"), fourgram and all_bigrams at
#    32:4; codebooks built on the same embeddings (the A/A copies are absent
#    there: their records are not needed on valid.tsv).
# 4c. prefix_sel: prefix_ngram with the K x L of lowest valid NE among the
#    sweep and the main runs (chosen on valid only), evaluated on test + A/A.
# 5. bench/sid_report.py: NE and AUC overall, head / torso / tail (25/50/25%
#    of cumulative training impressions) and new items (not in train or
#    valid), mean ± std over seeds, NE gain vs random hashing, and the A/A
#    mean |score(item) - score(copy)|; table into out/bench-sid/summary.md.
# Last line:
#   bench-sid: ne_all_rh=X ne_all_prefix=X ne_new_rh=X ne_new_prefix=X auc_new_rh=X
#              auc_new_prefix=X aa_diff_sid=X aa_diff_rh=X
# Environment: SEEDS (default "1 2 3"), LEVELS (3), CODES (32), SWEEP, BENCH_OUT
# (default out/bench-sid). Heavy steps run under nice -n 19.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:-${BUILD:-build}}
RANK=${BUILD}/bin/rank
OUT=${BENCH_OUT:-out/bench-sid}
SEEDS=${SEEDS:-"1 2 3"}
LEVELS=${LEVELS:-3}
CODES=${CODES:-32}
PARAMS=${PARAMS:-"hash individual all_bigrams trigram prefix_ngram prefix_hist"}
SWEEP=${SWEEP:-"8:3 32:2 32:4 128:3"}
MODEL=${ENCODER_MODEL:-$HOME/.cache/rankd/models/all-MiniLM-L6-v2}
PY=${PYTHON:-/usr/bin/python3}
NICE="nice -n 19"
T0=$(date +%s)

if [ ! -x "$RANK" ]; then
    echo "bench-sid: $RANK not found; build first (make build BUILD=$BUILD)" >&2
    exit 1
fi
if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "bench-sid: encoder weights missing in $MODEL (run scripts/setup-encoder.sh)" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -rf "$OUT/runs" "$OUT/logs" "$OUT/bundles" "$OUT/configs"
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/bundles" "$OUT/configs"
echo "bench-sid: $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"

# 1. data
$RANK data movielens --input data/movielens --out "$OUT/ml" > "$OUT/logs/data.log" 2>&1

# 2. content embeddings (cached: the text recipe and model do not change between runs)
if [ ! -f "$OUT/emb.safetensors" ] || ! cmp -s "$OUT/ml/items.csv" "$OUT/emb.items.csv"; then
    $NICE $RANK encode text --model "$MODEL" --input "$OUT/ml/items.csv" \
        --text-template "{title} | {genres} | {tags}" --id-column movieId \
        --output "$OUT/emb.safetensors" --threads 2 2>&1 | tr '\r' '\n' | grep -v '%' | tail -1
    cp "$OUT/ml/items.csv" "$OUT/emb.items.csv"
fi

# 3. codebooks, A/A copies, records
$PY bench/sid_report.py prepare --out "$OUT" --seed 1
$NICE $RANK sid build --embeddings "$OUT/emb.safetensors" --levels "$LEVELS" --codes "$CODES" --seed 1 \
    --out "$OUT/codebooks.sid" 2>&1 | grep -v '^rankd I' | tail -8
$NICE $RANK sid assign --codebooks "$OUT/codebooks.sid" --embeddings "$OUT/emb_all.safetensors" \
    --out "$OUT/items.sid" 2>&1 | tail -1

# run NAME PARAM SID SPLITS: train one variant per seed, score it on SPLITS
# (test, aa, valid), remove the bundle.
run() {
    local name=$1 p=$2 sid=$3 splits=$4 seed
    for seed in $SEEDS; do
        local cfg="$OUT/configs/${name}_s${seed}.json" b="$OUT/bundles/${name}_s${seed}" sp in
        $PY bench/sid_report.py config --out "$OUT" --param "$p" --seed "$seed" --sid "$sid" > "$cfg"
        $NICE $RANK train --config "$cfg" --data "$OUT/ml" --out "$b" --force > "$OUT/logs/train_${name}_s${seed}.log" 2>&1
        for sp in $splits; do
            in="$OUT/ml/$sp.tsv"
            [ "$sp" = aa ] && in="$OUT/aa.tsv"
            $NICE $RANK score --model "$b" --input "$in" --output "$OUT/runs/${name}_s${seed}.$sp.tsv" \
                >> "$OUT/logs/score_${name}_s${seed}.log" 2>&1
        done
        rm -rf "$b"
    done
    echo "  $name done ($(( $(date +%s) - T0 )) s)"
}

# 4. train + score every parameterization (K = CODES, L = LEVELS)
for p in $PARAMS; do
    run "$p" "$p" "$OUT/items.sid" "test aa valid"
done

# 4b. codebook size / depth (papers.md Table 2, claim 2), scored on the VALID
# split only: prefix_ngram for K x L in SWEEP, plus fourgram and all_bigrams at
# K = 32, L = 4; same H, seeds, model.
for kl in $SWEEP; do
    k=${kl%:*}
    l=${kl#*:}
    sid="$OUT/sweep_K${k}_L${l}.sid"
    $NICE $RANK sid build --embeddings "$OUT/emb.safetensors" --levels "$l" --codes "$k" --seed 1 \
        --out "$sid" 2>&1 | grep '^sid:' | sed "s/^/  K=$k L=$l: /"
    ps="prefix_ngram"
    [ "$kl" = "32:4" ] && ps="prefix_ngram fourgram all_bigrams"
    for p in $ps; do
        run "sweep_${p}_K${k}_L${l}" "$p" "$sid" "valid"
    done
done

# 4c. prefix_ngram with the K x L of lowest valid NE (selected on valid only),
# then evaluated on test and A/A like the others.
sel=$($PY bench/sid_report.py select --out "$OUT" --seeds "$SEEDS" --sweep "$SWEEP $CODES:$LEVELS")
k=${sel%:*}
l=${sel#*:}
echo "  selected on valid: K=$k L=$l"
$NICE $RANK sid build --embeddings "$OUT/emb.safetensors" --levels "$l" --codes "$k" --seed 1 \
    --out "$OUT/codebooks_sel.sid" 2>&1 | grep '^sid:' | sed "s/^/  selected: /"
$NICE $RANK sid assign --codebooks "$OUT/codebooks_sel.sid" --embeddings "$OUT/emb_all.safetensors" \
    --out "$OUT/items_sel.sid" > /dev/null 2>&1
echo "$k:$l" > "$OUT/selected.txt"
run prefix_sel prefix_ngram "$OUT/items_sel.sid" "test aa valid"

# 5. report
$PY bench/sid_report.py report --out "$OUT" --seeds "$SEEDS" --params "$PARAMS prefix_sel" --sweep "$SWEEP" \
    --seconds $(( $(date +%s) - T0 ))
