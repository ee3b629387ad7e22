#!/usr/bin/env bash
# The main job's commands in short form, in the order a user runs them:
# calibrate, then generate / perplexity / ca with FASA, then every eval task
# and report. Run by both builds, so every command-line path here also runs
# under AddressSanitizer + UBSan; windows are tiny to keep that fast.
# usage: test_workflow.sh FASA_BINARY MODEL
set -uo pipefail
FASA=$1
MODEL=$2
source "$(dirname "$0")/cli_lib.sh"

for i in $(seq 1 40); do
    echo "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. Line $i."
done > "$tmp/text.txt"
C="$tmp/calib.json"

expect_ok "calibrate" "$FASA" calibrate -m "$MODEL" -f "$tmp/text.txt" -o "$C" --tokens 320 --decode 4 --budget 32 -t 2
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "fasa-calibration" and d["model"]["n_layers"] == 30, d.keys()
' "$C" && ok || bad "calibration file: $(head -c 300 "$C")"

fasa=(--attn fasa --budget 32 --fc 8 --calib "$C")
expect_ok "generate fasa -f" "$FASA" generate -m "$MODEL" -f "$tmp/text.txt" -n 4 --temp 0 "${fasa[@]}" -t 2
grep -q "^It is a truth universally acknowledged" "$tmp/out" && ok || bad "generate -f fasa echo: $(head -c 100 "$tmp/out")"
expect_ok "generate chat fasa" "$FASA" generate -m "$MODEL" --chat -p "Name a colour." -n 4 --temp 0 "${fasa[@]}"
expect_ok "perplexity fasa" "$FASA" perplexity -m "$MODEL" -f "$tmp/text.txt" -c 256 --decode 8 "${fasa[@]}" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["attn"] == "fasa" and d["ppl"] > 1, d' "$tmp/out" \
    && ok || bad "perplexity fasa JSON: $(cat "$tmp/out")"
expect_ok "ca fasa" "$FASA" ca -m "$MODEL" -f "$tmp/text.txt" --ctx 200 --decode 2 --methods fasa,oracle --budgets 32 \
    --calib "$C" --json
python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
oracle = [r for r in rows if r["method"] == "oracle"][0]
assert abs(oracle["ca"][0] - 1) < 1e-9, oracle   # the exact top-K agrees with itself
' "$tmp/out" && ok || bad "ca JSON: $(head -c 400 "$tmp/out")"

E=(-m "$MODEL" -t 2 --out "$tmp/e" --calib "$C" --fc 8)
expect_ok "eval ppl" "$FASA" eval ppl "${E[@]}" --text "$tmp/text.txt" --attn full,fasa --budget 32 --ctx 128 --decode 4 --samples 1
expect_ok "eval needle" "$FASA" eval needle "${E[@]}" --kinds passkey --haystack filler --ctx 256 --depths 0.5 \
    --attn full,fasa --budget 32 --samples 1
expect_ok "eval gen" "$FASA" eval gen "${E[@]}" --text "$tmp/text.txt" --attn full,fasa --budget 32 --ctx 128 --decode 8 \
    --samples 1
expect_ok "eval ca" "$FASA" eval ca "${E[@]}" --text "$tmp/text.txt" --attn fasa,stream --budget 32 --ctx 200 --decode 2 \
    --samples 1
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tasks = {r["task"] for r in rows}
assert tasks == {"ppl", "needle", "gen", "ca"}, tasks
assert len(rows) == 2 + 2 + 2 + 2, len(rows)
' "$tmp/e/results.jsonl" && ok || bad "eval results: $(head -c 400 "$tmp/e/results.jsonl")"
expect_ok "report" "$FASA" report --no-plots "$tmp/e"
for t in ppl needle gen ca; do
    grep -q "## $t" "$tmp/e/report.md" && ok || bad "report lacks the $t section"
done
grep -q "## Quality against bytes read per decode step" "$tmp/e/report.md" && ok || bad "report lacks the bytes section"

# Label types and the per-KV-head allocation of chunks (it needs greedy curves).
expect_ok "eval ppl int8 labels" "$FASA" eval ppl "${E[@]}" --text "$tmp/text.txt" --attn fasa --budget 32 --ctx 128 \
    --decode 4 --samples 1 --labels int8
grep -q '"label":"fasa-8-int8"' "$tmp/e/results.jsonl" && ok || bad "int8 row: $(tail -c 400 "$tmp/e/results.jsonl")"
expect_error "alloc without greedy" "needs more greedy chunks than --fc 8 .* --greedy 16" \
    "$FASA" generate -m "$MODEL" -p hi -n 2 "${fasa[@]}" --fc-choice alloc
G="$tmp/greedy.json"
expect_ok "calibrate greedy" "$FASA" calibrate -m "$MODEL" -f "$tmp/text.txt" -o "$G" --tokens 320 --decode 2 --budget 32 \
    --greedy 12 -t 2
expect_ok "perplexity alloc" "$FASA" perplexity -m "$MODEL" -f "$tmp/text.txt" -c 256 --decode 8 --attn fasa --budget 32 \
    --fc 8 --calib "$G" --fc-choice alloc --json
expect_error "bad labels" "--labels expects f32, f16 or int8" "$FASA" generate -m "$MODEL" -p hi "${fasa[@]}" --labels q4

cli_summary
