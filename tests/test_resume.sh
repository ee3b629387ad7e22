#!/usr/bin/env bash
# Kill and resume: fasa eval is killed with SIGKILL in the middle of a grid,
# again and again, and resumed each time; the finished results.jsonl must
# hold every cell of the grid exactly once, each line whole, with the same
# cells an uninterrupted run writes. A partial last line (a write cut short)
# is removed on resume and its cell measured again.
# usage: test_resume.sh FASA_BINARY MODEL
set -uo pipefail
FASA=$1
MODEL=$2
source "$(dirname "$0")/cli_lib.sh"

for i in $(seq 1 30); do
    echo "It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled cabbage."
done > "$tmp/text.txt"
grid=(eval ppl -m "$MODEL" --text "$tmp/text.txt" -t 1 --attn full,stream,h2o,random --budget 8,16,32
      --ctx 64 --decode 4 --samples 1)
n_cells=10 # full once, three methods at three budgets

# cells DIR: the sorted cell keys of a results file.
cells() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)["cell"])' "$1/results.jsonl" | sort; }

# The reference: one uninterrupted run.
expect_ok "uninterrupted run" "$FASA" "${grid[@]}" --out "$tmp/ref"
cells "$tmp/ref" > "$tmp/ref.cells"
[ "$(wc -l < "$tmp/ref.cells")" -eq $n_cells ] && ok || bad "the grid has $(wc -l < "$tmp/ref.cells") cells, expected $n_cells"

# Kill the run as soon as it has written one more line than before, until
# it finishes on its own.
kills=0
for round in $(seq 1 $((2 * n_cells))); do
    before=$( [ -f "$tmp/k/results.jsonl" ] && wc -l < "$tmp/k/results.jsonl" || echo 0)
    "$FASA" "${grid[@]}" --out "$tmp/k" >/dev/null 2>"$tmp/k.err" &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        now=$( [ -f "$tmp/k/results.jsonl" ] && wc -l < "$tmp/k/results.jsonl" || echo 0)
        if [ "$now" -gt "$before" ]; then
            kill -KILL $pid 2>/dev/null && kills=$((kills + 1))
            break
        fi
        sleep 0.02
    done
    { wait $pid; } 2>/dev/null
    rc=$?
    [ $rc -eq 0 ] && break
    [ $rc -eq 137 ] || { bad "round $round: exit $rc, not killed: $(head -c 300 "$tmp/k.err")"; break; }
done
[ $kills -ge 3 ] && ok || bad "only $kills kills landed in the middle of the grid"
expect_ok "resume after the kills" "$FASA" "${grid[@]}" --out "$tmp/k"
grep -q "every cell is already in" "$tmp/err" && ok || bad "the last resume measured more: $(head -c 300 "$tmp/err")"
python3 -c '
import json, sys
for n, line in enumerate(open(sys.argv[1], "rb")):
    assert line.endswith(b"\n"), ("line without newline", n)
    json.loads(line)
' "$tmp/k/results.jsonl" && ok || bad "results.jsonl holds a partial or unreadable line"
cells "$tmp/k" > "$tmp/k.cells"
cmp -s "$tmp/k.cells" "$tmp/ref.cells" && ok || bad "cells after kills differ from an uninterrupted run: $(diff "$tmp/k.cells" "$tmp/ref.cells" | head -5)"

# A write cut short: the last line loses its end; resume removes it and measures its cell again.
last=$(tail -n 1 "$tmp/k/results.jsonl")
head -n -1 "$tmp/k/results.jsonl" > "$tmp/cut"
printf '%s' "${last:0:40}" >> "$tmp/cut"
cp "$tmp/cut" "$tmp/k/results.jsonl"
expect_ok "resume after a partial line" "$FASA" "${grid[@]}" --out "$tmp/k"
grep -q "removed the unfinished last line" "$tmp/err" && ok || bad "no note about the partial line: $(head -c 300 "$tmp/err")"
grep -q "1 of $n_cells cells to measure" "$tmp/err" && ok || bad "the cut cell was not measured again: $(head -c 300 "$tmp/err")"
cells "$tmp/k" > "$tmp/k.cells"
cmp -s "$tmp/k.cells" "$tmp/ref.cells" && ok || bad "cells after the partial line differ: $(diff "$tmp/k.cells" "$tmp/ref.cells" | head -5)"

cli_summary
