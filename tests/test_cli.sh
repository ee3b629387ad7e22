#!/usr/bin/env bash
# The command-line tool end to end: help, version, bad arguments and bad
# files give a one-line error and a non-zero exit; generation and perplexity
# produce their documented output.
# usage: test_cli.sh FASA_BINARY MODEL
set -uo pipefail
FASA=$1
MODEL=$2
source "$(dirname "$0")/cli_lib.sh"

expect_ok version "$FASA" --version
grep -q '^fasa [0-9]' "$tmp/out" && ok || bad "version output: $(cat "$tmp/out")"
expect_ok help "$FASA" --help
for c in generate perplexity; do
    expect_ok "$c --help" "$FASA" $c --help
    grep -q "usage: fasa $c" "$tmp/out" && ok || bad "$c --help lacks usage"
done

expect_error "no command" "usage" "$FASA"
expect_error "unknown command" "unknown command 'frobnicate'" "$FASA" frobnicate
expect_error "unknown flag" "unknown option '--bogus'" "$FASA" generate --bogus -p hi -m "$MODEL"
expect_error "missing value" "needs a value" "$FASA" generate -m "$MODEL" -p
expect_error "bad number" "-n expects an integer" "$FASA" generate -m "$MODEL" -p hi -n 12x
expect_error "bad temp" "--temp expects a number" "$FASA" generate -m "$MODEL" -p hi --temp -1
expect_error "no prompt" "exactly one of -p PROMPT or -f FILE" "$FASA" generate -m "$MODEL"
expect_error "missing model" "cannot open|No such file" "$FASA" generate -m "$tmp/none.gguf" -p hi
expect_error "missing prompt file" "cannot open '$tmp/none.txt'" "$FASA" generate -m "$MODEL" -f "$tmp/none.txt"
expect_error "bad kv type" "--kv-type expects f32 or f16" "$FASA" generate -m "$MODEL" -p hi --kv-type q8

# Not a GGUF file, and a truncated model.
echo "hello" > "$tmp/text.gguf"
expect_error "not gguf" "text.gguf.*(magic|too small|truncated|GGUF)" "$FASA" generate -m "$tmp/text.gguf" -p hi
head -c 1000000 "$MODEL" > "$tmp/trunc.gguf"
expect_error "truncated model" "trunc.gguf" "$FASA" generate -m "$tmp/trunc.gguf" -p hi
head -c 40 "$MODEL" > "$tmp/trunc40.gguf"
expect_error "truncated header" "trunc40.gguf" "$FASA" generate -m "$tmp/trunc40.gguf" -p hi

# A prompt longer than the context.
yes "the quick brown fox jumps over the lazy dog" | head -n 200 > "$tmp/long.txt"
expect_error "prompt over context" "prompt has [0-9]+ tokens but the context holds 64" \
    "$FASA" generate -m "$MODEL" -f "$tmp/long.txt" -c 64 -n 4

# A context past the training length is warned about; one past the machine's
# memory is refused before anything is allocated, naming what to lower.
expect_error "context over memory" "a context of 16000000 tokens needs [0-9.]+ GB .* lower the context size \(-c" \
    "$FASA" generate -m "$MODEL" -p hi -c 16000000 -n 1
grep -q "longer than the 8192 the model was trained on" "$tmp/err" && ok || bad "no warning past the training context"
expect_ok "context past training" "$FASA" generate -m "$MODEL" -p hi -c 8300 -n 1 --temp 0
grep -q "warning: a context of 8300 tokens is longer than the 8192" "$tmp/err" && ok || bad "no warning for -c 8300: $(head -c 300 "$tmp/err")"

# Generation: greedy is deterministic and says something.
expect_ok "generate greedy" "$FASA" generate -m "$MODEL" -p "The capital of France is" -n 8 --temp 0 -t 2
cp "$tmp/out" "$tmp/gen1"
grep -q "^The capital of France is" "$tmp/gen1" && ok || bad "generate does not echo the prompt"
grep -q "decode:" "$tmp/err" && grep -q "prefill:" "$tmp/err" && ok || bad "generate prints no speed"
expect_ok "generate greedy again" "$FASA" generate -m "$MODEL" -p "The capital of France is" -n 8 --temp 0 -t 2
cmp -s "$tmp/out" "$tmp/gen1" && ok || bad "greedy generation is not deterministic"
# The default model is Q4_1, which has no int8 decode kernel: --f32-act changes nothing.
expect_ok "generate --f32-act" "$FASA" generate -m "$MODEL" -p "The capital of France is" -n 8 --temp 0 -t 2 --f32-act
cmp -s "$tmp/out" "$tmp/gen1" && ok || bad "--f32-act changed a Q4_1 model's greedy text"
expect_error "ca --f32-act" "applies to generate, perplexity and eval" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --f32-act --methods stream
expect_ok "generate chat" "$FASA" generate -m "$MODEL" --chat -p "What is the capital of France?" -n 24 --temp 0
grep -qi "paris" "$tmp/out" && ok || bad "chat answer lacks Paris: $(cat "$tmp/out")"
# A prompt from a file is echoed before the continuation: the echo must be the
# file's bytes (it once read freed memory, printing garbage; the sanitizer
# build reports that as a heap-use-after-free).
printf 'The capital of France is' > "$tmp/prompt.txt"
expect_ok "generate -f" "$FASA" generate -m "$MODEL" -f "$tmp/prompt.txt" -n 4 --temp 0 -t 2
head -c 24 "$tmp/out" | cmp -s - "$tmp/prompt.txt" && ok || bad "generate -f echo: $(head -c 80 "$tmp/out" | od -c | head -3)"
expect_ok "generate sampled" "$FASA" generate -m "$MODEL" -p "Once upon a time" -n 8 --temp 0.8 --top-p 0.9 --seed 7
expect_ok "generate f16 kv" "$FASA" generate -m "$MODEL" -p "Once upon a time" -n 8 --temp 0 --kv-type f16

# Perplexity: JSON with the documented keys; bad windows are errors.
yes "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife." \
    | head -n 40 > "$tmp/ppl.txt"
expect_ok "perplexity json" "$FASA" perplexity -m "$MODEL" -f "$tmp/ppl.txt" -c 128 --json
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ppl"] > 1 and d["tokens"] > 0 and d["ctx"] == 128' "$tmp/out"; then ok; else bad "perplexity JSON: $(cat "$tmp/out")"; fi
# Repeated text is easy to predict: a sliding window must find it nearly certain.
expect_ok "perplexity sliding" "$FASA" perplexity -m "$MODEL" -f "$tmp/ppl.txt" -c 128 --stride 32 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ppl"] < 1.5, d' "$tmp/out" && ok || bad "repeated text perplexity: $(cat "$tmp/out")"
expect_error "stride over ctx" "--stride 256 is larger than the window" "$FASA" perplexity -m "$MODEL" -f "$tmp/ppl.txt" -c 128 --stride 256
expect_error "text shorter than window" "fewer than one window" "$FASA" perplexity -m "$MODEL" -f "$tmp/ppl.txt" -c 4096

# Attention policies and calibration files.
expect_error "unknown attn" "unknown --attn method 'bogus'" "$FASA" generate -m "$MODEL" -p hi --attn bogus
expect_error "budget zero" "--budget expects an integer" "$FASA" generate -m "$MODEL" -p hi --attn stream --budget 0
expect_error "budget missing" "token budget must be >= 1" "$FASA" generate -m "$MODEL" -p hi --attn stream
expect_error "fasa without calib" "needs a calibration" "$FASA" generate -m "$MODEL" -p hi --attn fasa --budget 16
expect_error "missing calib file" "cannot open calibration" "$FASA" generate -m "$MODEL" -p hi --attn fasa --budget 16 --calib "$tmp/none.json"
echo '{"format": "fasa-calibration", "version": 1, "model": {"arch": "llama", "n_layers": 2' > "$tmp/trunc.json"
expect_error "truncated calib" "not valid JSON" "$FASA" generate -m "$MODEL" -p hi --attn fasa --budget 16 --calib "$tmp/trunc.json"
expect_error "calibrate no output" "give the calibration text" "$FASA" calibrate -m "$MODEL" -f "$tmp/ppl.txt"
expect_error "calibrate short text" "too short" "$FASA" calibrate -m "$MODEL" -f "$tmp/ppl.txt" -o "$tmp/c.json" --tokens 300 --budget 256
expect_error "ca without calib" "need a calibration" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --ctx 256
expect_error "ca ctx over text" "needs more" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --ctx 4000 --methods stream
expect_ok "perplexity stream decode" "$FASA" perplexity -m "$MODEL" -f "$tmp/ppl.txt" -c 256 --decode 16 --attn stream --budget 32 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["attn"] == "stream" and d["tokens"] == 16 * d["windows"], d' "$tmp/out" && ok || bad "sparse perplexity JSON: $(cat "$tmp/out")"
expect_ok "ca stream" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --ctx 200 --decode 2 --methods stream,random --budgets 16,64 --json --per-layer
python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); r = d["rows"]
assert [x["method"] for x in r] == ["stream", "random"], d
for x in r:
    assert all(0 <= v <= 1 for v in x["ca"]) and all(0 <= v <= 1 + 1e-5 for v in x["mass"]), x
    assert x["mass"][0] <= x["mass"][1] + 1e-9 or x["method"] == "random", x  # stream keeps a superset at K=64
    assert [p["budget"] for p in x["per_layer"]] == [16, 64] and all(len(p["mass"]) == 30 for p in x["per_layer"]), x
    for b, p in enumerate(x["per_layer"]):
        assert abs(sum(p["ca"]) / 30 - x["ca"][b]) < 1e-5 and abs(sum(p["mass"]) / 30 - x["mass"][b]) < 1e-5, x
' "$tmp/out" && ok || bad "ca JSON: $(head -c 600 "$tmp/out")"
expect_ok "ca table" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --ctx 200 --decode 2 --methods stream --budgets 16 --per-layer
grep -q "attention-mass recall" "$tmp/out" && grep -q "per layer at K=16" "$tmp/out" && grep -qE "^\| 29 \|" "$tmp/out" && ok || bad "ca table: $(head -c 600 "$tmp/out")"

# Decode attention on a GPU. Where the build or the machine has no usable GPU,
# --device cuda must fail with a CUDA message; where it has one, greedy text
# must equal the CPU's (fp16 K/V on both sides, so only summation order differs).
expect_error "bad device" "--device expects cpu, cuda or cuda-m" "$FASA" generate -m "$MODEL" -p hi --device gpu
expect_error "eval on gpu" "runs on the CPU only" "$FASA" eval ppl -m "$MODEL" --device cuda
expect_error "ca on gpu" "runs on the CPU only" "$FASA" ca -m "$MODEL" -f "$tmp/ppl.txt" --device cuda-m --methods stream
expect_error "cpu-only method on gpu" "CUDA|callbacks on a CPU cache" "$FASA" generate -m "$MODEL" -p hi --device cuda --attn stream --budget 16
gen=(generate -m "$MODEL" -p "The three primary colours are" -n 24 --temp 0 --kv-type f16)
expect_ok "generate cpu f16" "$FASA" "${gen[@]}"
cp "$tmp/out" "$tmp/cpu.txt"
for dev in cuda cuda-m; do
    if "$FASA" "${gen[@]}" --device $dev >"$tmp/out" 2>"$tmp/err" </dev/null; then
        cmp -s "$tmp/out" "$tmp/cpu.txt" && ok || bad "--device $dev text differs from the CPU's: $(head -c 200 "$tmp/out")"
    else
        rc=$?
        [ $rc -lt 128 ] && grep -q "CUDA" "$tmp/err" && ok || bad "--device $dev without a GPU: rc $rc, $(head -c 300 "$tmp/err")"
    fi
done

cli_summary
