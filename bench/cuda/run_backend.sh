#!/usr/bin/env bash
# The whole model on a GPU (src/cuda/backend_cuda.cu), in stages, for a
# machine with an NVIDIA GPU:
#   synth     random-weight GGUFs: Llama-3.1-8B shape (Q4_K_M mix) and a tiny one,
#             with random calibrations (fasa synth)
#   memcheck  compute-sanitizer memcheck: 128 decode steps on the tiny model,
#             full and fasa on cuda, fasa on cuda-m
#   bench     bench_engine on the 8B model: prefill of 512 tokens, decode at depths
#             0 / 4K / 32K / 128K: full and fasa (N_tip 8, 16; budget 256) on cuda,
#             full and fasa 16 on cuda-m
#   check     the default model against the CPU (same binary, 16 cores): greedy text
#             (chat and plain, 64 tokens), perplexity of a 4K window (full, fasa),
#             test_model's GPU branch and the CLI tests
#   llama     llama.cpp's CUDA build on the same 8B GGUF: llama-bench -ngl 99 -fa 1 at
#             the same depths. Its source: $LLAMA_SRC, or the tarball $LLAMA_TAR (the
#             llama-cpp-python sdist's vendor/llama.cpp that scripts/build-llamacpp.sh
#             unpacks, without docs, models, tests and the backends not built)
#
#   bench/cuda/run_backend.sh [stages...]      (default: synth memcheck bench)
#
# Binaries come from $BUILD (default build-gpu; configure it with
# -DFASA_NATIVE=OFF -DCMAKE_C_FLAGS=-march=x86-64-v3 -DFASA_CUDA_ARCHITECTURES=90
# to carry it to another machine). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$BUILD/results}
WORK=${WORK:-/tmp/fasa-gpu}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CALIB=${CALIB:-calib/smollm2.json}
TEXT=${TEXT:-data/austen/emma.txt}
BW=${BW:-4.25e12}
DEPTHS=${DEPTHS:-0,4096,32768,131072}
mkdir -p "$OUT" "$WORK"
stages=${*:-synth memcheck bench}
want() { [[ " $stages " == *" $1 "* ]]; }
fails=0
note() { echo "== $*"; }
run() { # run NAME CMD...: log to $OUT/NAME.log, count a failure
    local name=$1; shift
    if ! "$@" >"$OUT/$name.log" 2>&1; then echo "FAIL: $name (see $name.log)"; tail -5 "$OUT/$name.log"; fails=$((fails + 1)); return 1; fi
}
check() { if "$@"; then echo "ok: $CHECK"; else echo "FAIL: $CHECK"; fails=$((fails + 1)); fi; }
F=$BUILD/fasa
L8=$WORK/llama-3.1-8b-q4_k_m.gguf
TINY=$WORK/tiny.gguf

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"

if want synth; then
    note "synth"
    [ -s "$L8" ] || run synth_8b "$F" synth ${SYNTH_TOKENIZER:+--tokenizer "$SYNTH_TOKENIZER"} -o "$L8" --preset llama-3.1-8b --mix q4_k_m --calib "$L8.calib.json"
    [ -s "$TINY" ] || run synth_tiny "$F" synth ${SYNTH_TOKENIZER:+--tokenizer "$SYNTH_TOKENIZER"} -o "$TINY" --preset tiny --calib "$TINY.calib.json"
    ls -la "$WORK"
fi

if want memcheck; then
    note "compute-sanitizer memcheck, 128 decode steps on the tiny model"
    cs="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
    g=(generate -m "$TINY" -p "The tiny model" -n 128 --temp 0 -t 4 -c 256)
    run memcheck_full $cs "$F" "${g[@]}" --device cuda
    run memcheck_fasa $cs "$F" "${g[@]}" --device cuda --attn fasa --budget 32 --fc 8 --calib "$TINY.calib.json"
    run memcheck_fasa_m $cs "$F" "${g[@]}" --device cuda-m --attn fasa --budget 32 --fc 8 --calib "$TINY.calib.json"
    run memcheck_sample $cs "$F" generate -m "$TINY" -p "The tiny model" -n 64 --temp 0.8 --top-k 40 --top-p 0.9 -t 4 --device cuda
    grep -h "ERROR SUMMARY" "$OUT"/memcheck_*.log
fi

if want bench; then
    note "decode and prefill, $L8 (cache filled with random K/V at each depth)"
    B=("$BUILD/bench_engine" -m "$L8" --reps 24 --bw "$BW" -t 8)
    run bench_full "${B[@]}" --device cuda --depths "$DEPTHS" --prefill 512
    run bench_fasa16 "${B[@]}" --device cuda --depths "$DEPTHS" --prefill 0 --attn fasa --fc 16 --budget 256 --calib "$L8.calib.json"
    run bench_fasa8 "${B[@]}" --device cuda --depths "$DEPTHS" --prefill 0 --attn fasa --fc 8 --budget 256 --calib "$L8.calib.json"
    run bench_m_fasa16 "${B[@]}" --device cuda-m --depths "$DEPTHS" --prefill 0 --attn fasa --fc 16 --budget 256 --calib "$L8.calib.json"
    run bench_m_full "${B[@]}" --device cuda-m --depths 0,4096 --prefill 0
    cat "$OUT"/bench_*.log
fi

if want check; then
    note "the default model: GPU against CPU"
    prompt="Write a short story about a lighthouse keeper who finds a message in a bottle."
    for mode in chat plain; do
        args=(generate -m "$MODEL" -p "$prompt" -n 64 --temp 0 --kv-type f16)
        [ $mode = chat ] && args+=(--chat)
        for dev in cpu cuda cuda-m; do
            "$F" "${args[@]}" --device $dev >"$OUT/gen_${mode}_$dev.txt" 2>"$OUT/gen_${mode}_$dev.err" || fails=$((fails + 1))
        done
        for dev in cuda cuda-m; do
            CHECK="greedy text ($mode) on $dev equals the CPU's" check test -s "$OUT/gen_${mode}_cpu.txt" -a \
                "$(cat "$OUT/gen_${mode}_cpu.txt")" = "$(cat "$OUT/gen_${mode}_$dev.txt")"
        done
    done
    ppl=(perplexity -m "$MODEL" -f "$TEXT" -c 4096 --max-tokens 4096 --decode 256 --kv-type f16 --json)
    for cfg in "full" "fasa --budget 256 --fc 8 --calib $CALIB"; do
        name=${cfg%% *}
        for dev in cpu cuda cuda-m; do
            # shellcheck disable=SC2086
            "$F" "${ppl[@]}" --attn $cfg --device $dev >"$OUT/ppl_${name}_$dev.json" 2>"$OUT/ppl_${name}_$dev.err" ||
                fails=$((fails + 1))
        done
        for dev in cuda cuda-m; do
            CHECK="$name perplexity on $dev within 1e-3 of the CPU's" check python3 - "$OUT/ppl_${name}_cpu.json" \
                "$OUT/ppl_${name}_$dev.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
rel = abs(b["ppl"] / a["ppl"] - 1)
print(f"  cpu {a['ppl']:.5f}  {b.get('device', '?')} {b['ppl']:.5f}  relative difference {rel:.2e}")
sys.exit(0 if rel < 1e-3 and a["tokens"] == b["tokens"] else 1)
PY
        done
    done
    run test_model "$BUILD/tests/test_model" && grep -h "GPU\|error" "$OUT/test_model.log" | head
    run test_cli bash tests/test_cli.sh "$F" "$MODEL" && tail -1 "$OUT/test_cli.log"
fi

if want llama; then
    note "llama.cpp (CUDA) on the same GGUF"
    LB=$WORK/llama-build
    if [ -z "${LLAMA_SRC:-}" ]; then
        tar -xJf "${LLAMA_TAR:-.gpu/llama-src.tar.xz}" -C "$WORK" && LLAMA_SRC=$WORK/llama.cpp
    fi
    if [ ! -x "$LB/bin/llama-bench" ]; then
        run llama_build bash -c "cmake -S '$LLAMA_SRC' -B '$LB' -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
            -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF && cmake --build '$LB' -j 16 --target llama-bench"
    fi
    run llama_bench "$LB/bin/llama-bench" -m "$L8" -ngl 99 -fa 1 -p 512 -n 64 -r 3 -d "$DEPTHS" -o md
    cat "$OUT/llama_bench.log"
fi

echo "run_backend: $fails failed"
[ $fails -eq 0 ]
