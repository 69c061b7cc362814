#!/usr/bin/env bash
# make bench-encoder: rankd's text encoder vs PyTorch + sentence-transformers,
# same machine, same thread count, same run.
#
#   bench/bench_encoder.sh [BUILD_DIR]     (env: THREADS, N, N_B1)
#
# Texts: the first N MovieLens titles (data/movielens/movies.csv, column
# title); batch 1 uses the first N_B1 of them (it is the slow case). Both
# sides tokenize + encode + pool + normalize; neither counts model loading.
# rankd: `rank encode text --batch B --threads THREADS` (seconds printed by
# the CLI cover tokenizing and encoding only). PyTorch: bench/ref/
# torch_encoder.py, SentenceTransformer.encode(batch_size=B) with
# torch.set_num_threads(THREADS), one untimed warm-up batch.
# min_cosine compares rankd's and sentence-transformers' batch-32 vectors.
# Last line:
#   bench-encoder: min_cosine=X sent_per_s_b1=X sent_per_s_b32=X ratio_vs_torch_b1=X ratio_vs_torch_b32=X
set -euo pipefail
BUILD="${1:-build}"
THREADS="${THREADS:-2}"
N="${N:-1000}"
N_B1="${N_B1:-200}"
RANK="$BUILD/bin/rank"
HOME_DIR="${RK_MODEL_HOME:-$HOME/.cache/rankd}"
MODEL="$HOME_DIR/models/all-MiniLM-L6-v2"
PY="$HOME_DIR/venv-encoder/bin/python"
OUT="$BUILD/bench-encoder"
mkdir -p "$OUT"

bash scripts/setup-encoder.sh --python
[ -x "$RANK" ] || { echo "bench-encoder: $RANK missing (make build)" >&2; exit 1; }

echo "bench-encoder: $(nproc) CPUs, THREADS=$THREADS, N=$N titles (batch 1: $N_B1)" >&2
declare -A C
for b in 1 32 256; do
  n=$N; [ "$b" = 1 ] && n=$N_B1
  line=$("$RANK" encode text --model "$MODEL" --input data/movielens/movies.csv --column title \
           --id-column movieId --output "$OUT/rankd_b$b.safetensors" --batch "$b" --threads "$THREADS" \
           --limit "$n" 2>"$OUT/rankd_b$b.log" | tail -1)
  [ "$b" = 1 ] && grep -o 'openblas: .*' "$OUT/rankd_b$b.log" >&2
  echo "rankd: batch=$b $line" >&2
  C[$b]=$(sed -n 's/.*sent_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
done

"$PY" bench/ref/torch_encoder.py --model "$MODEL" --input data/movielens/movies.csv --column title \
  --n "$N" --n-b1 "$N_B1" --batches 1,32,256 --threads "$THREADS" --out "$OUT/torch_b32.safetensors" \
  2>"$OUT/torch.log" | tee "$OUT/torch.txt" >&2
declare -A T
for b in 1 32 256; do
  T[$b]=$(sed -n "s/^torch: impl=st batch=$b .*sent_per_s=\([0-9.]*\).*/\1/p" "$OUT/torch.txt")
done
TV=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)

min_cos=$("$PY" - "$OUT/rankd_b32.safetensors" "$OUT/torch_b32.safetensors" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file
a = load_file(sys.argv[1])["embeddings"].astype(np.float64)
b = load_file(sys.argv[2])["embeddings"].astype(np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print(f"{c.min():.6f}")
EOF
)

r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
{
  echo
  echo "| batch | rankd sent/s | torch $TV + sentence-transformers sent/s | ratio |"
  echo "|---|---|---|---|"
  for b in 1 32 256; do echo "| $b | ${C[$b]} | ${T[$b]} | $(r "${C[$b]}" "${T[$b]}") |"; done
  echo
} >&2
echo "bench-encoder: min_cosine=$min_cos sent_per_s_b1=${C[1]} sent_per_s_b32=${C[32]} ratio_vs_torch_b1=$(r "${C[1]}" "${T[1]}") ratio_vs_torch_b32=$(r "${C[32]}" "${T[32]}")"
