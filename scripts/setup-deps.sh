#!/usr/bin/env bash
# Installs the build and test dependencies: Debian packages (when missing) and
# a Python venv in .venv for the reference and plotting tools. Versions are
# pinned in scripts/requirements.txt; Debian packages come from the release.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang-14 with its runtimes (libFuzzer, sanitizers) and OpenMP builds the fuzz targets.
debs=(cmake gcc make pkg-config libcmocka-dev libutf8proc-dev libcjson-dev python3-venv
      clang-14 libclang-rt-14-dev libomp-14-dev)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements.txt .venv/.requirements 2>/dev/null; then
    echo "setup: creating Python venv .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
    cp scripts/requirements.txt .venv/.requirements
fi
