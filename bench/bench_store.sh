#!/usr/bin/env bash
# bench/bench_store.sh BUILD — `make bench-store`: the codecs' accuracy cost on
# the MovieLens test split (train fp32, convert to int8 and fp16, score all
# three), then bench_store (cache vs raw RocksDB, bytes per key, RSS), whose
# last line is the summary.
set -euo pipefail
BUILD=${1:-build}
B=$BUILD/bin
O=$BUILD/bench-store-auc
mkdir -p "$O"
[ -f "$O/ml/test.tsv" ] || "$B/rank" data movielens --input data/movielens --out "$O/ml" >/dev/null
"$B/rank" train --config configs/movielens_dcnv2.json --data "$O/ml" --out "$O/fp32" --force >/dev/null 2>&1
for c in int8 fp16; do
  "$B/rank" store convert --model "$O/fp32" --codec $c --out "$O/$c" --force >/dev/null
done
auc() { grep -o '"auc": [0-9.]*' "$1" | awk '{print $2}'; }
for c in fp32 int8 fp16; do
  "$B/rank" score --model "$O/$c" --input "$O/ml/test.tsv" --output "$O/$c.tsv" --metrics-json "$O/$c.json" >/dev/null 2>&1
done
a32=$(auc "$O/fp32.json"); a8=$(auc "$O/int8.json"); a16=$(auc "$O/fp16.json")
r8=$(awk -v a="$a8" -v b="$a32" 'BEGIN{printf "%.5f", a/b}')
r16=$(awk -v a="$a16" -v b="$a32" 'BEGIN{printf "%.5f", a/b}')
echo "bench-store: MovieLens test AUC (dcnv2): fp32=$a32 int8=$a8 (ratio $r8) fp16=$a16 (ratio $r16)"
echo "bench-store: machine load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
# One core for the measuring thread and RocksDB's (idle) background threads,
# as bench_serve.sh pins its processes: no migrations mid-batch.
PIN=""; command -v taskset >/dev/null && PIN="taskset -c ${STORE_CPU:-1}"
# The mmap lever (opts.mmap_reads, both handles), the 90 % row alone, with
# the same row alone with pread beside it (a lone row lands at a slightly
# different hit rate than in the full table): reported, not the default (a
# disk error would be SIGBUS instead of a status).
for m in "" --mmap; do
  echo "bench-store: 90 % row alone, ${m:-pread}:"
  $PIN "$BUILD/bench/bench_store" --dir "$BUILD/bench-store-db" --levels 1028 $m | grep -E "^\| 90%"
done
$PIN "$BUILD/bench/bench_store" --dir "$BUILD/bench-store-db" --rss-only | grep RSS
$PIN "$BUILD/bench/bench_store" --dir "$BUILD/bench-store-db" --no-rss --int8-auc-ratio "$r8" --fp16-auc-ratio "$r16"
