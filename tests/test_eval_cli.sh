#!/usr/bin/env bash
# fasa eval and fasa report end to end: bad arguments give a one-line error
# and a non-zero exit before any expensive work; a tiny evaluation writes one
# line per cell and a rerun adds nothing; report renders tables.
# usage: test_eval_cli.sh FASA_BINARY MODEL
set -uo pipefail
FASA=$1
MODEL=$2
SRC=${FASA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
source "$(dirname "$0")/cli_lib.sh"

for i in $(seq 1 30); do
    echo "It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled cabbage."
done > "$tmp/text.txt"
E=("$FASA" eval ppl -m "$MODEL" --text "$tmp/text.txt" --out "$tmp/e" -t 1)

expect_ok "eval --help" "$FASA" eval --help
grep -q "usage: fasa eval TASK" "$tmp/out" && ok || bad "eval --help lacks usage"
expect_error "no task" "name a task: ppl, needle, gen, ca or qa" "$FASA" eval
expect_error "unknown task" "unknown task 'bogus' \(known: ppl, needle, gen, ca, qa\)" "$FASA" eval bogus
expect_error "unknown method" "unknown method 'bogus' \(known: full, fasa" "${E[@]}" --attn full,bogus
expect_error "budget 0" "--budget: expected a comma list of integers in \[1, " "${E[@]}" --attn stream --budget 0
expect_error "bad budget list" "--budget" "${E[@]}" --attn stream --budget 64,x
expect_error "context over the limit" "--ctx 8000 \+ --decode 512 = 8512 tokens exceeds the model's context of 8192" \
    "${E[@]}" --attn full --ctx 8000 --decode 512
expect_error "fasa without calibration" "the fasa rows need a calibration: pass --calib FILE" "${E[@]}" --attn fasa
expect_error "missing calibration file" "$tmp/none.json" "${E[@]}" --attn fasa --calib "$tmp/none.json"
expect_error "N_tip too large" "N_tip 64: the model.s heads have 32 frequency chunks" "${E[@]}" --attn fasa --fc 64
expect_error "missing text" "cannot open evaluation text '$tmp/none.txt'.*make-data" \
    "$FASA" eval ppl -m "$MODEL" --text "$tmp/none.txt" --out "$tmp/e" --attn full
expect_error "unknown kind" "--kinds: unknown kind 'haystack'" "$FASA" eval needle -m "$MODEL" --kinds passkey,haystack
expect_error "bad depth" "--depths expects a number in \[0, 1\], got '1.5'" "$FASA" eval needle -m "$MODEL" --depths 0.5,1.5
expect_error "bad haystack" "--haystack expects book or filler" "$FASA" eval needle -m "$MODEL" --haystack sea
expect_error "unknown flag" "unknown option '--bogus'" "$FASA" eval ppl --bogus
expect_error "report without results" "cannot open results file '$tmp/nothing/results.jsonl'" "$FASA" report "$tmp/nothing"
expect_error "report without folder" "give exactly one results folder" "$FASA" report
: > "$tmp/afile"
expect_error "results folder is a file" "results folder '$tmp/afile' exists but is not a folder" \
    "$FASA" eval ppl -m "$MODEL" --text "$tmp/text.txt" --out "$tmp/afile" --attn full --ctx 64 --decode 4
expect_error "results folder under a file" "cannot create results folder '$tmp/afile/x': Not a directory" \
    "$FASA" eval ppl -m "$MODEL" --text "$tmp/text.txt" --out "$tmp/afile/x" --attn full --ctx 64 --decode 4

# qa: a question about a document.
expect_error "qa without doc" "qa needs --doc FILE and --question TEXT" "$FASA" eval qa -m "$MODEL" --question "Why?"
expect_error "qa missing doc" "cannot open the document '$tmp/none.py'" \
    "$FASA" eval qa -m "$MODEL" --doc "$tmp/none.py" --question "Why?" --out "$tmp/qa" --attn full
printf 'x = 1\0y = 2\n' > "$tmp/nul.py"
expect_error "qa doc with NUL" "holds a NUL byte" \
    "$FASA" eval qa -m "$MODEL" --doc "$tmp/nul.py" --question "Why?" --out "$tmp/qa" --attn full
expect_error "doc on another task" "belong to the qa task" "${E[@]}" --attn full --doc "$tmp/nul.py"
printf 'SECRET_NUMBER = 4711\n\ndef f(x):\n    return x + SECRET_NUMBER\n' > "$tmp/doc.py"
expect_ok "qa tiny" "$FASA" eval qa -m "$MODEL" --doc "$tmp/doc.py" --question "What is SECRET_NUMBER?" \
    --expect 4711 --attn full,stream --budget 16 --decode 8 --out "$tmp/qa" -t 1
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["label"] for r in rows] == ["full", "stream"], rows
for r in rows:
    assert r["task"] == "qa" and r["expected"] == ["4711"] and 0 <= r["score"] <= 1 and r["decode_ms"] > 0, r
' "$tmp/qa/results.jsonl" && ok || bad "qa results: $(head -c 400 "$tmp/qa/results.jsonl")"

# A tiny run: 2 cells, then a rerun that measures nothing.
expect_ok "tiny eval" "${E[@]}" --attn full,stream --budget 16 --ctx 64 --decode 4 --samples 1
[ "$(wc -l < "$tmp/e/results.jsonl")" -eq 2 ] && ok || bad "tiny eval wrote $(wc -l < "$tmp/e/results.jsonl") lines, expected 2"
grep -q "2 of 2 cells to measure" "$tmp/err" && ok || bad "no progress summary: $(head -c 300 "$tmp/err")"
grep -qE "ETA" "$tmp/err" && ok || bad "no ETA in progress"
expect_ok "tiny eval again" "${E[@]}" --attn full,stream --budget 16 --ctx 64 --decode 4 --samples 1
[ "$(wc -l < "$tmp/e/results.jsonl")" -eq 2 ] && ok || bad "rerun added lines: $(wc -l < "$tmp/e/results.jsonl")"
grep -q "every cell is already in" "$tmp/err" && ok || bad "rerun did not say it skipped: $(head -c 300 "$tmp/err")"
expect_ok "results folder with missing parents" "$FASA" eval ppl -m "$MODEL" --text "$tmp/text.txt" \
    --out "$tmp/deep/er/e" -t 1 --attn full --ctx 64 --decode 4 --samples 1
[ -s "$tmp/deep/er/e/results.jsonl" ] && ok || bad "no results in a folder made with its parents"
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert {r["label"] for r in rows} == {"full", "stream"}, rows
for r in rows:
    for k in ("task", "method", "budget", "n_tip", "ctx", "sample", "score", "seconds", "nll", "cell"):
        assert k in r, (k, r)
    assert r["task"] == "ppl" and r["ctx"] == 64 and r["decode"] == 4 and r["ppl"] > 1
' "$tmp/e/results.jsonl" && ok || bad "result lines lack documented fields: $(head -c 400 "$tmp/e/results.jsonl")"
expect_ok "report tiny" "$FASA" report --no-plots "$tmp/e"
grep -q "## ppl" "$tmp/out" && grep -q "| stream |" "$tmp/out" && ok || bad "tiny report: $(head -c 400 "$tmp/out")"
[ -s "$tmp/e/report.md" ] && ok || bad "report.md not written"

# The committed small results file.
mkdir -p "$tmp/g"
cp "$SRC/tests/golden/eval_results_small.jsonl" "$tmp/g/results.jsonl"
expect_ok "report golden" "$FASA" report --no-plots "$tmp/g"
grep -qF "| fasa-8 | 1.3404 | **1.0217** |" "$tmp/g/report.md" && ok || bad "golden report: $(head -c 600 "$tmp/g/report.md")"

cli_summary
