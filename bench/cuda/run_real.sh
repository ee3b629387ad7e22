#!/usr/bin/env bash
# Validates the CUDA decode steps on real K/V/q of the default model: builds
# bench/cuda/real_kv.cu with nvcc (reusing an up-to-date binary) and runs it
# on the folder scripts/dump-real-kv.sh makes (default out/real_kv).
#
#   bench/cuda/run_real.sh [DIR]
#
# BUILD (default build-cuda) holds the binaries, CUDA_ARCH (default sm_90)
# picks the target; the log goes to $OUT/real_kv.log (default
# $BUILD/results). Exit 0 when every check passes.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-$BUILD/results}
ARCH=${CUDA_ARCH:-sm_90}
DIR=${1:-out/real_kv}
mkdir -p "$BUILD" "$OUT"

[ -f "$DIR/header.txt" ] || { echo "run_real: no dump in $DIR; make it with scripts/dump-real-kv.sh" >&2; exit 2; }

fresh() { # the binary exists, runs here, and is newer than every source it is built from
    local bin=$BUILD/real_kv src
    "$bin" --bogus-flag >/dev/null 2>&1
    [ $? -eq 2 ] || return 1
    for src in bench/cuda/real_kv.cu bench/cuda/common.cuh src/cuda/*.cu src/cuda/*.cuh src/cuda/*.h src/error.c; do
        [ "$src" -nt "$bin" ] && return 1
    done
    return 0
}

if fresh; then
    echo "== reusing $BUILD/real_kv"
else
    echo "== build ($ARCH) -> $BUILD"
    nv="nvcc -O3 -std=c++17 -arch=$ARCH -Iinclude -Isrc -Isrc/cuda"
    cc -std=c17 -O2 -Iinclude -Isrc -c src/error.c -o "$BUILD/error.o" &&
        $nv -c src/cuda/fasa_cuda.cu -o "$BUILD/fasa_cuda.o" &&
        $nv bench/cuda/real_kv.cu "$BUILD/fasa_cuda.o" "$BUILD/error.o" -o "$BUILD/real_kv" ||
        { echo "BUILD FAILED"; exit 1; }
fi

"$BUILD/real_kv" "$DIR" 2>&1 | tee "$OUT/real_kv.log"
exit "${PIPESTATUS[0]}"
