#!/usr/bin/env bash
# make bench-vision: rankd's DINOv2 ViT-S/14 vision encoder vs onnxruntime
# (CPU, the ONNX model itself) and PyTorch (Debian's torch, same weights),
# same machine, same run.
#
#   bench/bench_vision.sh [BUILD_DIR]     (env: ROUNDS=3, ITERS_B1=4, ITERS_B16=1)
#
# Images: real pictures from Debian packages, downloaded with apt-get
# download and unpacked (never installed) into $RK_MODEL_HOME/bench-images:
# python3-skimage (scikit-image's sample photos), python-matplotlib-data
# (grace_hopper.jpg), python3-sklearn (china.jpg, flower.jpg),
# plasma-workspace-wallpapers (KDE's wallpapers, photos and artwork, up to
# 5120x2880) — 52 images; bench/ref/vision_bench.py pick_images lists them.
# Preprocessing: bench_vision --preprocess compares our decoding + transform
# with PIL's pixels in 8-bit levels. Parity: `rank encode image` (our JPEG/PNG decoding + preprocessing +
# encoder, CLS) vs onnxruntime on PIL's preprocessing: min cosine, max |diff|.
# Speed: the encoder alone on the same preprocessed pixels (no decoding), 1
# and 2 threads, batch 1 and 16: build/bench/bench_vision (rankd),
# vision_bench.py speed --impl ort|torch; ROUNDS rounds, each running every
# (impl, threads, batch) once in turn, so load changes hit all alike; the
# median of the rounds is reported with the load average at its run.
# Last line:
#   bench-vision: min_cosine=X max_abs_diff=X img_per_s_b1=X img_per_s_b16=X ratio_vs_ort_b1=X ratio_vs_ort_b16=X ratio_vs_torch_b16=X
# (img_per_s and ratios at 2 threads; the 1-thread figures are printed above it).
set -euo pipefail
BUILD="${1:-build}"
ROUNDS="${ROUNDS:-3}"
ITERS_B1="${ITERS_B1:-4}"
ITERS_B16="${ITERS_B16:-1}"
HOME_DIR="${RK_MODEL_HOME:-$HOME/.cache/rankd}"
MODEL="$HOME_DIR/models/dinov2-vits14"
PY="$HOME_DIR/venv-vision/bin/python"
IMG="$HOME_DIR/bench-images"
OUT="$BUILD/bench-vision"
mkdir -p "$OUT"

bash scripts/setup-vision.sh --python
for b in "$BUILD/bin/rank" "$BUILD/bench/bench_vision"; do
  [ -x "$b" ] || { echo "bench-vision: $b missing (make build)" >&2; exit 1; }
done
if [ ! -f "$IMG/.done" ]; then
  rm -rf "$IMG" && mkdir -p "$IMG/deb"
  (cd "$IMG/deb" && apt-get download python3-skimage python-matplotlib-data python3-sklearn plasma-workspace-wallpapers)
  for d in "$IMG"/deb/*.deb; do dpkg-deb -x "$d" "$IMG/x"; done
  ls "$IMG/deb" > "$IMG/.done"
fi
echo "bench-vision: images from $(tr '\n' ' ' < "$IMG/.done")" >&2
echo "bench-vision: CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs" >&2
[ -f "$OUT/ort.npy" ] && [ -f "$OUT/pixels.f32" ] || "$PY" bench/ref/vision_bench.py prepare --images "$IMG/x" --model "$MODEL" --out "$OUT" >&2
N=$(wc -l < "$OUT/list.csv")

# ---- preprocessing parity (our decode + transform vs PIL's pixels), then
# ---- embedding parity (the whole path: decode + preprocess + encode)
"$BUILD/bench/bench_vision" --preprocess "$OUT/list.csv" "$OUT/pixels.f32" >&2
"$BUILD/bin/rank" encode image --model "$MODEL" --list "$OUT/list.csv" --output "$OUT/rankd.safetensors" --threads 2 \
  2>"$OUT/rank_encode.log" | tail -1 >&2
grep -o 'openblas: .*' "$OUT/rank_encode.log" | head -1 >&2
par=$("$PY" bench/ref/vision_bench.py parity --ref "$OUT/ort.npy" --got "$OUT/rankd.safetensors")
echo "$par" >&2
MINCOS=$(sed -n 's/.*min_cosine=\([^ ]*\).*/\1/p' <<<"$par")
MAXD=$(sed -n 's/.*max_abs_diff=\([^ ]*\).*/\1/p' <<<"$par")

# ---- speed, interleaved rounds
: > "$OUT/speed.txt"
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    for b in 1 16; do
      it=$ITERS_B1; [ "$b" = 16 ] && it=$ITERS_B16
      for impl in rankd ort torch; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if [ "$impl" = rankd ]; then
          line=$("$BUILD/bench/bench_vision" "$MODEL" "$OUT/pixels.f32" "$N" "$t" "$b" "$it" 2>/dev/null)
        else
          line=$("$PY" bench/ref/vision_bench.py speed --impl "$impl" --model "$MODEL" --pixels "$OUT/pixels.f32" \
                   --n "$N" --threads "$t" --batch "$b" --iters "$it" 2>/dev/null)
        fi
        v=$(sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
        echo "round=$r impl=$impl threads=$t batch=$b img_per_s=$v load=$load" | tee -a "$OUT/speed.txt" >&2
      done
    done
  done
done

"$PY" - "$OUT/speed.txt" "$MINCOS" "$MAXD" <<'PYEOF'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in l.split()) for l in open(sys.argv[1]) if l.strip()]
def med(impl, t, b, key="img_per_s"):
    v = [float(r[key]) for r in rows if r["impl"] == impl and r["threads"] == str(t) and r["batch"] == str(b)]
    return statistics.median(v)
for t in (1, 2):
    for b in (1, 16):
        c, o, p = med("rankd", t, b), med("ort", t, b), med("torch", t, b)
        ld = med("rankd", t, b, "load")
        print(f"threads={t} batch={b}: rankd {c:.3f} img/s, onnxruntime {o:.3f}, torch {p:.3f}; "
              f"rankd/ort {c / o:.2f}, rankd/torch {c / p:.2f} (load avg ~{ld:.1f})", file=sys.stderr)
c1, c16 = med("rankd", 2, 1), med("rankd", 2, 16)
print(f"bench-vision: min_cosine={sys.argv[2]} max_abs_diff={sys.argv[3]} img_per_s_b1={c1:.3f} img_per_s_b16={c16:.3f} "
      f"ratio_vs_ort_b1={c1 / med('ort', 2, 1):.2f} ratio_vs_ort_b16={c16 / med('ort', 2, 16):.2f} "
      f"ratio_vs_torch_b16={c16 / med('torch', 2, 16):.2f}")
PYEOF
