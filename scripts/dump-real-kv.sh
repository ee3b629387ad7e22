#!/usr/bin/env bash
# Dumps real attention inputs of the default model and the CPU engine's
# outputs (bench/dump_kv.c) into out/real_kv/ (git-ignored, about 9 MB):
# layers 1, 15 and 29 after 2048 tokens of Emma plus one decode step.
# bench/cuda/run_real.sh validates the CUDA kernels on them.
#
#   scripts/dump-real-kv.sh [DUMP_KV OPTIONS...]     e.g. -n 4096 --layers 2,20
#
# BUILD (default build) is the CMake build directory; OUT_DIR (default
# out/real_kv) the folder written. Needs the model (scripts/fetch-model.sh),
# the text (scripts/make-data.sh) and a calibration, made if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT_DIR=${OUT_DIR:-out/real_kv}
CALIB=calib/smollm2-k256.json

[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || scripts/fetch-model.sh
[ -s data/austen/emma.txt ] || scripts/make-data.sh

build() { cmake -S . -B "$BUILD" >/dev/null && cmake --build "$BUILD" -j "$(nproc)" --target "$@"; }
if [ ! -f "$CALIB" ]; then
    echo "dump-real-kv: making the calibration $CALIB (K* = 256, on Persuasion)"
    [ -x "$BUILD/fasa" ] || build fasa_cli
    mkdir -p calib
    "$BUILD/fasa" calibrate -f data/austen/persuasion.txt -o "$CALIB"
fi
if [ ! -x "$BUILD/dump_kv" ] || [ bench/dump_kv.c -nt "$BUILD/dump_kv" ]; then
    build dump_kv
fi

mkdir -p "$OUT_DIR"
"$BUILD/dump_kv" --calib "$CALIB" -o "$OUT_DIR" "$@"
du -sh "$OUT_DIR"
