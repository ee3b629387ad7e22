"""Summary of bench/peers/llamacpp_cpu.sh speed: medians of each engine's
rounds and the median of the per-round ratios (ours / llama.cpp).

usage: speed_summary.py speed_fasa.md speed_llamacpp.md"""
import re
import statistics
import sys
from collections import defaultdict


def ours(path):
    """{(kind, depth): [tok/s per round]} from bench_engine's output."""
    runs = defaultdict(list)
    for line in open(path):
        m = re.match(r"prefill of (\d+) tokens at depth (\d+): ([\d.]+) tok/s", line)
        if m:
            runs[("prefill", int(m.group(2)))].append(float(m.group(3)))
            continue
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) >= 3 and cells[0].isdigit() and cells[1] == "full":
            runs[("decode", int(cells[0]))].append(float(cells[2]))
    return runs


def llamacpp(path):
    """The same keys from llama-bench's markdown (pp512 @ dD, tg32 @ dD)."""
    runs = defaultdict(list)
    for line in open(path):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 2:
            continue
        m = re.match(r"(pp|tg)\d+ @ d(\d+)", cells[-2])
        if m:
            kind = "prefill" if m.group(1) == "pp" else "decode"
            runs[(kind, int(m.group(2)))].append(float(cells[-1].split()[0]))
    return runs


def main():
    a, b = ours(sys.argv[1]), llamacpp(sys.argv[2])
    print("| measure | depth | ours tok/s (rounds) | llama.cpp tok/s (rounds) | ratio of medians | median of round ratios |")
    print("|---|---:|---|---|---:|---:|")
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, []), b.get(key, [])
        row = [key[0], str(key[1]), ", ".join(f"{v:.1f}" for v in x) or "-", ", ".join(f"{v:.1f}" for v in y) or "-"]
        if x and y:
            pairs = [p / q for p, q in zip(x, y)]
            row += [f"{statistics.median(x) / statistics.median(y):.2f}", f"{statistics.median(pairs):.2f}"]
        else:
            row += ["-", "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
