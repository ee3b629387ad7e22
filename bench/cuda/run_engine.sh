#!/usr/bin/env bash
# Checks the engine's decode attention on a GPU (--device cuda, cuda-m)
# against its CPU path, on the real model and real text:
#   1. greedy text, full attention: identical on cpu, cuda and cuda-m;
#   2. perplexity of D tokens decoded one by one after a dense prefill
#      (full, and fasa at budget 256 with 8 FCs): cuda and cuda-m within
#      2e-3 (relative) of the CPU's;
#   3. the time of each run (the rest of the forward pass is on the CPU
#      either way, so this shows the engine's total, not the kernel's).
# Every run uses fp16 K/V on the CPU too, so the two paths attend to the same
# numbers and differ only in summation order (and, for fasa, in which of two
# near-equal scores wins a tie).
#
#   bench/cuda/run_engine.sh [FASA] [MODEL] [CALIB] [TEXT]
#
# Logs and JSON go to $OUT (default build-cuda/results). Exit 0 when every
# check passes.
set -uo pipefail
cd "$(dirname "$0")/../.."
FASA=${1:-build/fasa}
MODEL=${2:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CALIB=${3:-calib/smollm2.json}
TEXT=${4:-data/austen/emma.txt}
OUT=${OUT:-build-cuda/results}
CTX=${CTX:-4096}
DECODE=${DECODE:-256}
mkdir -p "$OUT"
fails=0
check() { if "$@"; then echo "ok: ${CHECK}"; else echo "FAIL: ${CHECK}"; fails=$((fails + 1)); fi; }

echo "== greedy text, full attention"
prompt="Write a short story about a lighthouse keeper who finds a message in a bottle."
for dev in cpu cuda cuda-m; do
    "$FASA" generate -m "$MODEL" --chat -p "$prompt" -n 128 --temp 0 --kv-type f16 --device $dev \
        >"$OUT/engine_gen_$dev.txt" 2>"$OUT/engine_gen_$dev.err" || { cat "$OUT/engine_gen_$dev.err"; fails=$((fails + 1)); }
    tail -2 "$OUT/engine_gen_$dev.err" | sed "s/^/  $dev /"
done
for dev in cuda cuda-m; do
    CHECK="greedy text on $dev equals the CPU's" check cmp -s "$OUT/engine_gen_cpu.txt" "$OUT/engine_gen_$dev.txt"
done

echo "== perplexity, $DECODE tokens decoded after a dense prefill of $((CTX - DECODE))"
ppl_args=(perplexity -m "$MODEL" -f "$TEXT" -c "$CTX" --max-tokens "$CTX" --decode "$DECODE" --kv-type f16 --json)
for cfg in "full" "fasa --budget 256 --fc 8 --calib $CALIB"; do
    name=${cfg%% *}
    for dev in cpu cuda cuda-m; do
        # shellcheck disable=SC2086
        "$FASA" "${ppl_args[@]}" --attn $cfg --device $dev >"$OUT/engine_ppl_${name}_$dev.json" \
            2>"$OUT/engine_ppl_${name}_$dev.err" || { cat "$OUT/engine_ppl_${name}_$dev.err"; fails=$((fails + 1)); }
        echo "  $name $dev: $(cat "$OUT/engine_ppl_${name}_$dev.json")"
    done
    for dev in cuda cuda-m; do
        CHECK="$name perplexity on $dev within 2e-3 of the CPU's" check python3 - "$OUT/engine_ppl_${name}_cpu.json" \
            "$OUT/engine_ppl_${name}_$dev.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
rel = abs(b["ppl"] / a["ppl"] - 1)
print(f"  cpu {a['ppl']:.5f}  {b['device']} {b['ppl']:.5f}  relative difference {rel:.2e}")
sys.exit(0 if rel < 2e-3 and a["tokens"] == b["tokens"] else 1)
PY
    done
done
echo "engine checks: $fails failed"
[ $fails -eq 0 ]
