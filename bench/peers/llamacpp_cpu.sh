#!/usr/bin/env bash
# This engine beside llama.cpp's CPU build (scripts/build-llamacpp.sh) on the
# same GGUF and the same number of threads:
#   speed  prefill of 512 tokens and decode at depths 512 and 8192 (ours:
#          bench_engine, the cache at a depth filled directly; llama.cpp:
#          llama-bench, which prefills the depth untimed), ROUNDS times in
#          turn, then ours at 32K; summary: speed_summary.md
#   ppl    perplexity of disjoint windows of CTX tokens scoring the last
#          CTX/2 - 1 tokens of each, as llama-perplexity does (ours:
#          fasa perplexity --score-last), on each TEXT
#
#   bench/peers/llamacpp_cpu.sh [speed] [ppl]
# Environment: MODEL (default Qwen2.5-Coder-1.5B), THREADS (2), ROUNDS (3), CTX (4096),
# CHUNKS (windows per text, 4), TEXTS (Emma and the code corpus), OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
THREADS=${THREADS:-2}
CTX=${CTX:-4096}
CHUNKS=${CHUNKS:-4}
ROUNDS=${ROUNDS:-3}
TEXTS=${TEXTS:-data/austen/emma.txt data/code/python-stdlib.txt}
OUT=${OUT:-out/peers}
LB=build-peers/llama.cpp/build/bin
mkdir -p "$OUT"
stages=${*:-speed ppl}
want() { [[ " $stages " == *" $1 "* ]]; }
[ -x "$LB/llama-bench" ] || bash scripts/build-llamacpp.sh

if want speed; then
    # The machine's speed drifts by 15-30% over minutes (a shared VM), so the
    # two engines alternate, ROUNDS times, and the summary compares medians
    # and the median of the per-round ratios.
    echo "== speed, $THREADS threads, $ROUNDS rounds"
    : >"$OUT/speed_fasa.md"
    : >"$OUT/speed_llamacpp.md"
    for r in $(seq "$ROUNDS"); do
        build/bench_engine -m "$MODEL" -t "$THREADS" --depths 512,8192 --reps 16 --prefill 512 \
            --prefill-depths 512,8192 | tee -a "$OUT/speed_fasa.md"
        "$LB/llama-bench" -m "$MODEL" -t "$THREADS" -p 512 -n 32 -d 512,8192 -r 1 -o md \
            | tee -a "$OUT/speed_llamacpp.md"
    done
    build/bench_engine -m "$MODEL" -t "$THREADS" --depths 32768 --reps 8 --prefill 0 | tee -a "$OUT/speed_fasa.md"
    python3 bench/peers/speed_summary.py "$OUT/speed_fasa.md" "$OUT/speed_llamacpp.md" | tee "$OUT/speed_summary.md"
fi

if want ppl; then
    for text in $TEXTS; do
        name=$(basename "$text" .txt)
        echo "== perplexity, $name, $CHUNKS windows of $CTX"
        build/fasa perplexity -m "$MODEL" -f "$text" -c "$CTX" --score-last $((CTX / 2 - 1)) \
            --max-tokens $((CHUNKS * CTX)) -t "$THREADS" --kv-type f16 --json | tee "$OUT/ppl_${name}_${CTX}_fasa.json"
        "$LB/llama-perplexity" -m "$MODEL" -f "$text" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" \
            >"$OUT/ppl_${name}_${CTX}_llamacpp.log" 2>&1
        grep -E "Final estimate" "$OUT/ppl_${name}_${CTX}_llamacpp.log"
    done
fi
