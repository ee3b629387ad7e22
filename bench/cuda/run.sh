#!/usr/bin/env bash
# The CUDA kernel workbench in one command, for a machine with an NVIDIA GPU:
# builds with nvcc, validates every kernel version against float64 CPU
# references, runs compute-sanitizer (memcheck, racecheck) on a small case,
# benchmarks, times the PyTorch peers and prints the comparison tables.
#
#   bench/cuda/run.sh [build] [validate] [sanitize] [bench] [sweep] [profile] [peers]
#
# No argument runs every stage. Run from anywhere; logs and CSVs go to $OUT
# (default build-cuda/results). BUILD (default build-cuda) holds the
# binaries: when they are there and run, they are reused, else rebuilt.
# CUDA_ARCH (default sm_90) picks the target. QUICK=1 benchmarks fewer
# contexts (4K, 32K, 128K; the peers 32K and 128K).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-$BUILD/results}
ARCH=${CUDA_ARCH:-sm_90}
mkdir -p "$BUILD" "$OUT"
stages=${*:-build validate sanitize bench sweep profile peers}
want() { [[ " $stages " == *" $1 "* ]]; }
status=0
note() { echo "== $*"; }

# A binary is reused only when it runs here and is newer than every source.
runs() {
    "$BUILD/$1" --bogus-flag >/dev/null 2>&1
    [ $? -eq 2 ] || return 1
    local src
    for src in bench/cuda/*.cu bench/cuda/*.cuh src/cuda/*.cu src/cuda/*.cuh src/cuda/*.h src/error.c; do
        [ "$src" -nt "$BUILD/$1" ] && return 1
    done
    return 0
}
# A stage that hangs must not take the whole run with it.
T=${STAGE_TIMEOUT:-300}

build() {
    local nv="nvcc -O3 -std=c++17 -arch=$ARCH -Iinclude -Isrc -Isrc/cuda"
    note "build ($ARCH) -> $BUILD"
    cc -std=c17 -O2 -Iinclude -Isrc -c src/error.c -o "$BUILD/error.o" || return 1
    $nv -c src/cuda/fasa_cuda.cu -o "$BUILD/fasa_cuda.o" &
    local p1=$!
    $nv bench/cuda/dense_decode.cu -o "$BUILD/dense_decode" &
    local p2=$!
    $nv bench/cuda/tip_topk.cu -o "$BUILD/tip_topk" &
    local p3=$!
    $nv bench/cuda/cluster_step.cu -o "$BUILD/cluster_step" &
    local p4=$!
    # the prompt-chunk kernels: the workbench links the block decoders (quant.c) and,
    # when the toolkit has it, cuBLAS to time beside
    local q
    for q in quant quant_simd; do cc -std=c17 -O2 -march=x86-64-v3 -Iinclude -Isrc -c src/$q.c -o "$BUILD/$q.o" || return 1; done
    $nv -DWITH_CUBLAS bench/cuda/prefill.cu "$BUILD/quant.o" "$BUILD/quant_simd.o" "$BUILD/error.o" -lcublas \
        -o "$BUILD/prefill" || $nv bench/cuda/prefill.cu "$BUILD/quant.o" "$BUILD/quant_simd.o" "$BUILD/error.o" \
        -o "$BUILD/prefill" || return 1
    wait $p1 || return 1
    $nv bench/cuda/fasa_step.cu "$BUILD/fasa_cuda.o" "$BUILD/error.o" -o "$BUILD/fasa_step" || return 1
    wait $p2 || return 1
    wait $p3 || return 1
    wait $p4 || return 1
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
    nvcc --version | tail -2
} | tee "$OUT/build.log"

if want build; then
    if runs dense_decode && runs tip_topk && runs cluster_step && runs fasa_step && runs prefill; then
        note "reusing the binaries in $BUILD"
    else
        build 2>&1 | tee -a "$OUT/build.log"
        [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "BUILD FAILED"; exit 1; }
    fi
fi

if want validate; then
    note "validate" | tee "$OUT/validate.log"
    for prog in dense_decode tip_topk cluster_step fasa_step; do
        timeout $T "$BUILD/$prog" --validate >>"$OUT/validate.log" 2>&1 || status=1
        grep -E "validation: (passed|FAILED)" "$OUT/validate.log" | tail -1
    done
    timeout $T "$BUILD/prefill" --check >>"$OUT/validate.log" 2>&1 || status=1
    grep -E "all checks passed|SOME CHECKS FAILED" "$OUT/validate.log" | tail -1
    grep -E "FAIL" "$OUT/validate.log" | head -40
fi

if want sanitize; then
    note "compute-sanitizer (small case)" | tee "$OUT/sanitize.log"
    for tool in memcheck racecheck; do
        timeout $T compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/fasa_step" --small \
            >>"$OUT/sanitize.log" 2>&1
        rc=$?
        echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize.log" | tail -1)"
        [ $rc -eq 0 ] || status=1
    done
fi

if want bench; then
    note "benchmarks" | tee "$OUT/bench.log"
    timeout $T "$BUILD/tip_topk" --bench >>"$OUT/bench.log" 2>&1 || status=1
    timeout $T "$BUILD/cluster_step" --bench >>"$OUT/bench.log" 2>&1 || status=1
    timeout $T "$BUILD/prefill" --bench >>"$OUT/bench.log" 2>&1 || status=1
    timeout $T "$BUILD/fasa_step" --bench ${QUICK:+--quick} --csv "$OUT/ours.csv" >>"$OUT/bench.log" 2>&1 || status=1
fi

if want sweep; then
    timeout $T "$BUILD/dense_decode" --bench --sweep >>"$OUT/bench.log" 2>&1 || status=1
fi

if want profile; then
    # Kernel durations alone (no launch gaps), to say where a step's time goes.
    note "per-kernel durations (ncu)" | tee -a "$OUT/bench.log"
    timeout $T ncu --clock-control none --metrics gpu__time_duration.sum --print-units base --csv --log-file "$OUT/ncu.csv" \
        "$BUILD/fasa_step" --profile >>"$OUT/sanitize.log" 2>&1 || status=1
    python3 - "$OUT/ncu.csv" <<'PY' | tee -a "$OUT/bench.log"
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    sys.exit("no ncu table")
for r in csv.DictReader(lines[start:]):
    name = r.get("Kernel Name", "?").split("(")[0].replace("void ", "")
    unit = r.get("Metric Unit", "nsecond")
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(unit, float("nan"))
    value = float(r.get("Metric Value", "nan").replace(",", ""))
    print("%4s %-30s grid %-14s %9.2f us" % (r.get("ID"), name[:30], r.get("Grid Size", "?"), value * scale))
PY
fi

if want peers; then
    note "PyTorch peers"
    ours=()
    [ -f "$OUT/ours.csv" ] && ours=(--ours "$OUT/ours.csv")
    PYTHONUNBUFFERED=1 timeout $T python3 bench/cuda/peers.py ${QUICK:+--quick} --csv "$OUT/peers.csv" "${ours[@]}" \
        >"$OUT/peers.log" 2>&1 || status=1
fi

if want bench || want sweep; then cat "$OUT/bench.log"; fi
if want peers; then cat "$OUT/peers.log"; fi
exit $status
