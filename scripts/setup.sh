#!/usr/bin/env bash
# Installs every Debian package rankd needs to build, test and run its demo.
# Idempotent: does nothing when everything is present. Needs root or sudo.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libgrpc-dev libabsl-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler grpc-proto
      librocksdb-dev libopenblas-dev libcriterion-dev libjansson-dev libxxhash-dev
      libhiredis-dev redis-server redis-tools
      libjpeg62-turbo-dev libpng-dev
      libmicrohttpd-dev libssl-dev openssl zlib1g-dev python3-prometheus-client
      python3 python3-grpcio python3-protobuf python3-grpc-tools
      clang libclang-rt-14-dev
      python3-venv python3-setuptools python3-wheel python3-pip help2man dpkg-dev file)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
