#!/usr/bin/env bash
# scripts/setup-test-venv.sh — the Python packages tests need that Debian 12
# does not ship, in a venv over Debian's python3 (system site-packages:
# python3-grpcio, python3-protobuf, python3-prometheus-client).
#
#   grpcio-reflection   gRPC's reflection client (tests/e2e_reflection.py),
#                       pinned to the version of Debian's python3-grpcio;
#                       pure Python, installed without its dependencies
#                       (grpcio and protobuf are Debian's).
#
# Into $RK_MODEL_HOME/venv-test (default ~/.cache/rankd/venv-test).
# Idempotent (seconds when present); `make test` runs it. Needs python3-venv
# and python3-pip (scripts/setup.sh installs both).
set -euo pipefail
HOME_DIR="${RK_MODEL_HOME:-$HOME/.cache/rankd}"
VENV="$HOME_DIR/venv-test"
GRPC_VER=$(/usr/bin/python3 -c "import grpc; print(grpc.__version__)")
if "$VENV/bin/python" -c "
import sys, grpc, grpc_reflection, importlib.metadata as md
sys.exit(grpc.__version__ != '$GRPC_VER' or md.version('grpcio-reflection') != '$GRPC_VER')" 2>/dev/null; then
  exit 0
fi
echo "setup-test-venv: grpcio-reflection==$GRPC_VER into $VENV" >&2
rm -rf "$VENV"
mkdir -p "$HOME_DIR"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --no-deps "grpcio-reflection==$GRPC_VER"
"$VENV/bin/python" -c "import grpc_reflection.v1alpha.proto_reflection_descriptor_database"
