#!/usr/bin/env bash
# bench/device-pack.sh [BUILD_DIR] — packs what bench/device.sh needs on the
# GPU machine into .device/payload.tar.xz (ignored by git; name `.device` in
# the device tool's `carry`).
#
# The GPU machine is bare: it has the CUDA toolkit, cuBLAS and PyTorch but
# none of rankd's Debian libraries and no package registry. So the payload
# holds the built executables (rank, rankd, rank-bench, test_cuda, test_e2e,
# bench_gpu), librankd_cuda.so, and every shared library they load here
# except glibc's own and CUDA's (those come from the GPU machine, so the
# driver and the runtime match): about 20 MB compressed. It also records the
# build's source and binary directories, which the tests have compiled in;
# device.sh links them to the copies there.
#
# Run from the repository root after `make build` (nvcc must have been found:
# build/lib/librankd_cuda.so exists).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
say() { echo "device-pack: $*" >&2; }

EXES=(bin/rank bin/rankd rank-bench tests/test_cuda tests/test_e2e bench/bench_gpu)
for f in "${EXES[@]}" lib/librankd_cuda.so; do
  [ -e "$BUILD/$f" ] || { say "$BUILD/$f missing (make build with nvcc present first)"; exit 1; }
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/build/bin" "$STAGE/build/tests" "$STAGE/build/bench" "$STAGE/build/lib" "$STAGE/deps"
for f in "${EXES[@]}" lib/librankd_cuda.so; do cp -L "$BUILD/$f" "$STAGE/build/$f"; done

# Every library the executables load, but glibc's, the dynamic loader and
# CUDA's (the GPU machine's own, matching its driver).
skip='^(libc|libm|libpthread|libdl|librt|libresolv|ld-linux-x86-64|libcuda|libcudart|libcublas|libcublasLt|linux-vdso)\.so'
for f in "${EXES[@]}" lib/librankd_cuda.so; do
  ldd "$BUILD/$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  base=$(basename "$lib")
  [[ "$base" =~ $skip ]] && continue
  cp -L "$lib" "$STAGE/deps/$base"
done

SRC=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")
printf 'RK_SOURCE_DIR=%s\nRK_BINARY_DIR=%s\nBUILT=%s\nGIT=%s\n' "$SRC" "$BUILD" "$(date -u +%FT%TZ)" \
  "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$STAGE/paths.env"

mkdir -p "$ROOT/.device"
say "compressing $(du -sh "$STAGE" | cut -f1) (xz; a minute or two)"
tar -C "$STAGE" -cf - . | xz -6 -T2 >"$ROOT/.device/payload.tar.xz.tmp"
mv "$ROOT/.device/payload.tar.xz.tmp" "$ROOT/.device/payload.tar.xz"
say "wrote .device/payload.tar.xz ($(du -h "$ROOT/.device/payload.tar.xz" | cut -f1)); run bench/device.sh there with carry [\".device\"]"
