#!/usr/bin/env bash
# scripts/demo.sh BUILD_DIR — the body of `make demo`.
#
# MovieLens end to end: convert the bundled ml-latest-small into CTR
# examples, train the DCNv2 model, serve it with rankd on a free loopback
# port, score the whole test split through gRPC (`rank query`) and offline
# (`rank score`), print the first rows side by side, and check that served
# and offline pCTRs agree within 1e-6. Everything goes under out/demo/.
# The last line is the summary:
#   demo: model=dcnv2 test_auc=0.6760 test_logloss=0.6427 served_requests=10040 max_abs_diff_vs_offline=1.2e-07
# Exits non-zero if any step fails or the difference exceeds 1e-6.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin"
OUT="$ROOT/out/demo"
TOL=1e-6

for b in rank rankd; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b not found (build first: make build)" >&2; exit 1; }
done

say() { echo "demo: $*" >&2; }

rm -rf "$OUT"
mkdir -p "$OUT"

say "1/5 converting MovieLens -> $OUT/ml"
"$BIN/rank" data movielens --input "$ROOT/data/movielens" --out "$OUT/ml"

say "2/5 training configs/movielens_dcnv2.json -> $OUT/bundle"
metrics="$OUT/train_metrics.json"
TRAIN_HELP=$("$BIN/rank" train --help 2>&1 || true)
if [[ "$TRAIN_HELP" == *--metrics-json* ]]; then
  "$BIN/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$OUT/ml" \
    --out "$OUT/bundle" --metrics-json "$metrics"
else
  "$BIN/rank" train --config "$ROOT/configs/movielens_dcnv2.json" --data "$OUT/ml" --out "$OUT/bundle"
fi

say "3/5 scoring the test split offline (rank score)"
"$BIN/rank" score --model "$OUT/bundle" --input "$OUT/ml/test.tsv" --output "$OUT/offline.tsv" \
  --metrics-json "$OUT/score_metrics.json"

say "4/5 serving with rankd on a free loopback port"
"$BIN/rankd" --model "$OUT/bundle" --listen 127.0.0.1:0 >"$OUT/rankd.log" 2>&1 &
RANKD_PID=$!
stop_rankd() {
  if [ -n "${RANKD_PID:-}" ] && kill -0 "$RANKD_PID" 2>/dev/null; then
    kill -TERM "$RANKD_PID" 2>/dev/null || true
    wait "$RANKD_PID" 2>/dev/null || true
  fi
}
trap stop_rankd EXIT
PORT=""
for _ in $(seq 1 600); do
  PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$OUT/rankd.log" | head -n1)
  [ -n "$PORT" ] && break
  kill -0 "$RANKD_PID" 2>/dev/null || { cat "$OUT/rankd.log" >&2; say "rankd exited at start"; exit 1; }
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$OUT/rankd.log" >&2; say "rankd did not start within 60 s"; exit 1; }
say "rankd is listening on 127.0.0.1:$PORT"

say "5/5 scoring the test split through gRPC (rank query)"
"$BIN/rank" query --addr "127.0.0.1:$PORT" --model "$OUT/bundle" --input "$OUT/ml/test.tsv" \
  --output "$OUT/served.tsv" | tee "$OUT/query.log"
REQUESTS=$(sed -n 's/.*requests=\([0-9][0-9]*\).*/\1/p' "$OUT/query.log" | head -n1)

# Stop the server now: a clean SIGTERM shutdown (exit 0) is part of the demo.
kill -TERM "$RANKD_PID"
RC=0
wait "$RANKD_PID" || RC=$?
RANKD_PID=""
tail -n 1 "$OUT/rankd.log" >&2
[ "$RC" -eq 0 ] || { say "rankd exited $RC after SIGTERM"; exit 1; }

echo
paste "$OUT/ml/test.tsv" "$OUT/served.tsv" "$OUT/offline.tsv" | awk -F'\t' '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i
            printf "%-8s %-8s %-5s %-12s %-12s\n", "user", "movie", "label", "served", "offline"; next }
  NR <= 11 { printf "%-8s %-8s %-5s %-12s %-12s\n", $col["user_id"], $col["movie_id"], $col["label"], $(NF-1), $NF }'
echo

MAXDIFF=$(paste "$OUT/served.tsv" "$OUT/offline.tsv" | awk -F'\t' '
  NR == 1 { next }
  { d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; n++ }
  END { if (n == 0) { print "nan"; exit } printf "%.3g\n", m }')
SERVED_ROWS=$(($(wc -l <"$OUT/served.tsv") - 1))
OFFLINE_ROWS=$(($(wc -l <"$OUT/offline.tsv") - 1))
[ "$SERVED_ROWS" -eq "$OFFLINE_ROWS" ] || { say "served $SERVED_ROWS rows, offline $OFFLINE_ROWS"; exit 1; }

# Test metrics: from `rank train --metrics-json` ({"test": {...}}) when it
# wrote one, else from `rank score --metrics-json` on the test split.
read -r AUC LOGLOSS < <(python3 - "$metrics" "$OUT/score_metrics.json" <<'EOF'
import json, os, sys
for p in sys.argv[1:]:
    if os.path.exists(p):
        d = json.load(open(p))
        d = d.get("test", d)
        if d.get("auc") is not None and d.get("logloss") is not None:
            print("%.4f %.4f" % (d["auc"], d["logloss"]))
            break
else:
    print("nan nan")
EOF
)

OK=$(awk -v d="$MAXDIFF" -v t="$TOL" 'BEGIN { print (d == d + 0 && d <= t) ? 1 : 0 }')
if [ "$OK" != 1 ]; then
  say "served and offline pCTRs differ by $MAXDIFF (> $TOL)"
fi
echo "demo: model=dcnv2 test_auc=$AUC test_logloss=$LOGLOSS served_requests=${REQUESTS:-0} max_abs_diff_vs_offline=$MAXDIFF"
[ "$OK" = 1 ]
