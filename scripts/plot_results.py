#!/usr/bin/env python3
"""Plots of a `fasa eval` results folder: PNG files next to DIR/results.jsonl.

usage: .venv/bin/python scripts/plot_results.py DIR

  ppl_ratio_P<P>.png      perplexity ratio to full vs budget, one line per method
  ppl_bytes_P<P>.png      the same ratio vs the KV and label bytes a decode step reads
  needle_accuracy.png     retrieval accuracy vs budget, one panel per needle kind
  needle_heatmap_<kind>.png  accuracy by depth x prompt length: full and each method at one budget
  gen.png                 agreement with full and KL vs budget
  ca.png                  contextual agreement vs budget
`fasa report DIR` runs this and links the images from DIR/report.md.
"""
import collections
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

ORDER = ["full", "oracle", "fasa", "stream", "h2o", "snapkv", "quest", "sparq", "random"]
COLORS = {"oracle": "#555555", "stream": "#d62728", "h2o": "#9467bd", "snapkv": "#ff7f0e",
          "quest": "#2ca02c", "sparq": "#8c564b", "random": "#bbbbbb"}
FASA_COLORS = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict) and "task" in d and "label" in d:
                rows.append(d)
    return rows


def row_key(r):
    m = r.get("method", "")
    return (ORDER.index(m) if m in ORDER else len(ORDER), r.get("n_tip", 0), r["label"])


def labels_of(rows):
    seen = {}
    for r in rows:
        seen.setdefault(r["label"], r)
    return [seen[k]["label"] for k in sorted(seen, key=lambda k: row_key(seen[k]))]


def style(label, rows):
    """Colour and line style of a label: fasa variants in blues, darker for more FCs."""
    fasa = sorted({r.get("n_tip", 0) for r in rows if r.get("method") == "fasa"})
    if label.startswith("fasa"):
        tip = int(label.split("-")[1]) if "-" in label else 0
        i = fasa.index(tip) if tip in fasa else 0
        return dict(color=FASA_COLORS[min(i + (4 - len(fasa)), 3)], linewidth=2.4, marker="o")
    if label == "oracle":
        return dict(color=COLORS["oracle"], linestyle="--", marker=".")
    return dict(color=COLORS.get(label, None), linewidth=1.4, marker=".")


def budget_axis(ax, budgets):
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("budget (tokens attended per head)")
    ax.grid(True, alpha=0.3)


def plain_log_y(ax, fmt="%.2f"):
    """Log scale with plain numbers, not powers of ten. Minor ticks are
    labelled only over less than two decades: over more they overlap."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter(fmt))
    lo, hi = ax.get_ylim()
    minor = FormatStrFormatter(fmt) if lo > 0 and hi / lo < 100 else NullFormatter()
    ax.yaxis.set_minor_formatter(minor)


def mean(v):
    return sum(v) / len(v) if v else float("nan")


def plot_lines(ax, rows, value, full_value=None):
    """One line per non-full label: value(list of records) per budget."""
    budgets = sorted({r["budget"] for r in rows if r["budget"] > 0})
    for lab in labels_of(rows):
        if lab == "full":
            continue
        ys = [value([r for r in rows if r["label"] == lab and r["budget"] == b]) for b in budgets]
        ax.plot(budgets, ys, label=lab, **style(lab, rows))
    if full_value is not None and not math.isnan(full_value):
        ax.axhline(full_value, color="black", linewidth=1.2, label="full")
    if budgets:
        budget_axis(ax, budgets)


def ppl_ratio_of(rp):
    """exp(mean NLL difference to full over the same windows) of a list of records."""
    full = {(r["sample"], r.get("decode")): r["nll"] for r in rp if r["method"] == "full"}

    def ratio(recs):
        diffs = [(r["nll"] - full[(r["sample"], r.get("decode"))], r.get("decode", 1)) for r in recs
                 if (r["sample"], r.get("decode")) in full]
        return math.exp(sum(d for d, _ in diffs) / sum(n for _, n in diffs)) if diffs else float("nan")
    return ratio


def plot_ppl_bytes(rp, P, out):
    """Quality against bytes: one line per method through its budgets."""
    rp = [r for r in rp if "kv_bytes_per_token" in r]
    if not rp:
        return []
    ratio = ppl_ratio_of(rp)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for lab in labels_of(rp):
        budgets = sorted({r["budget"] for r in rp if r["label"] == lab})
        pts = []
        for b in budgets:
            recs = [r for r in rp if r["label"] == lab and r["budget"] == b]
            pts.append((mean([r["kv_bytes_per_token"] for r in recs]) / 1e6, ratio(recs)))
        pts.sort()
        st = dict(color="black", marker="s") if lab == "full" else style(lab, rp)
        ax.plot([x for x, _ in pts], [y for _, y in pts], label=lab, **st)
    ax.set_xscale("log")
    ax.set_xlabel("MB of KV cache, labels and summaries read per decode step (log)")
    plain_log_y(ax)
    ax.set_ylabel("perplexity / full's perplexity (log)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"ppl at P = {P}: quality against bytes read (lower left is better)")
    ax.legend(fontsize=8, ncol=2)
    name = f"ppl_bytes_P{P}.png"
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return [name]


def plot_ppl(rows, out):
    rows = [r for r in rows if r["task"] == "ppl" and "nll" in r]
    made = []
    for P in sorted({r["ctx"] for r in rows}):
        rp = [r for r in rows if r["ctx"] == P]
        ratio = ppl_ratio_of(rp)
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        plot_lines(ax, rp, ratio, 1.0)
        plain_log_y(ax)
        ax.set_ylabel("perplexity / full's perplexity (log)")
        n_win = len({r["sample"] for r in rp if r["method"] == "full"})
        ax.set_title(f"ppl: dense prefill of {P} tokens, decoded tokens scored ({n_win} windows)")
        ax.legend(fontsize=8, ncol=2)
        name = f"ppl_ratio_P{P}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        made.append(name)
        made += plot_ppl_bytes(rp, P, out)
    return made


def plot_needle(rows, out):
    rows = [r for r in rows if r["task"] == "needle"]
    if not rows:
        return []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    cols = min(3, len(kinds))
    nrows = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        rk = [r for r in rows if r["kind"] == kind]
        full = mean([r["score"] for r in rk if r["method"] == "full"])
        plot_lines(ax, rk, lambda recs: 100 * mean([r["score"] for r in recs]), 100 * full)
        ax.set_ylim(-3, 103)
        ax.set_ylabel("accuracy (%)")
        flag = " (full < 50%: uninformative)" if full < 0.5 else ""
        ax.set_title(f"{kind}{flag}", fontsize=10)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle("needle: question decoded through each method")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "needle_accuracy.png"), dpi=110)
    plt.close(fig)
    made = ["needle_accuracy.png"]
    for kind in kinds:
        made.append(plot_heatmap([r for r in rows if r["kind"] == kind], kind, out))
    return made


def plot_heatmap(rows, kind, out):
    depths = sorted({round(r["depth"], 3) for r in rows})
    lengths = sorted({r["ctx"] for r in rows})
    budgets = sorted({r["budget"] for r in rows if r["budget"] > 0})
    shown_budget = 256 if 256 in budgets else (budgets[len(budgets) // 2] if budgets else 0)
    panels = [lab for lab in labels_of(rows)
              if lab == "full" or any(r["label"] == lab and r["budget"] == shown_budget for r in rows)]
    cols = min(4, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(1.5 + (1.2 + 0.9 * len(lengths)) * cols,
                                                   1.2 + (0.9 + 0.3 * len(depths)) * nrows),
                             squeeze=False, layout="constrained")
    im = None
    for ax, lab in zip(axes.flat, panels):
        grid = []
        for d in depths:
            line = []
            for L in lengths:
                v = [r["score"] for r in rows if r["label"] == lab and r["ctx"] == L and round(r["depth"], 3) == d
                     and (lab == "full" or r["budget"] == shown_budget)]
                line.append(100 * mean(v) if v else float("nan"))
            grid.append(line)
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([str(L) for L in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)))
        ax.set_yticklabels([f"{d:.2f}" for d in depths], fontsize=7)
        ax.set_title(lab if lab == "full" else f"{lab} @ {shown_budget}", fontsize=9)
        ax.set_xlabel("prompt tokens", fontsize=7)
        ax.set_ylabel("needle depth", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy (%)")
    fig.suptitle(f"needle {kind}: accuracy by depth and length", fontsize=10)
    name = f"needle_heatmap_{kind}.png"
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return name


def plot_gen(rows, out):
    rows = [r for r in rows if r["task"] == "gen"]
    if not rows:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    plot_lines(a1, rows, lambda recs: 100 * mean([r["agreement"] for r in recs]), 100.0)
    a1.set_ylabel("argmax agreement with full (%)")
    a1.set_title("teacher-forced on full's generation")
    plot_lines(a2, rows, lambda recs: mean([r["kl"] for r in recs]))
    plain_log_y(a2, "%.3g")
    a2.set_ylabel("mean KL(full || method), nats")
    a2.set_title("next-token distribution distance")
    a1.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gen.png"), dpi=110)
    plt.close(fig)
    return ["gen.png"]


def plot_ca(rows, out):
    rows = [r for r in rows if r["task"] == "ca"]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    plot_lines(ax, rows, lambda recs: 100 * mean([r["score"] for r in recs]))
    ax.set_ylabel("overlap with the exact top-K (%)")
    ax.set_title("contextual agreement (every layer and head)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ca.png"), dpi=110)
    plt.close(fig)
    return ["ca.png"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    path = os.path.join(out, "results.jsonl")
    if not os.path.exists(path):
        sys.exit(f"plot_results: {path} not found (run `fasa eval TASK --out {out}` first)")
    rows = load(path)
    made = plot_ppl(rows, out) + plot_needle(rows, out) + plot_gen(rows, out) + plot_ca(rows, out)
    by_task = collections.Counter(r["task"] for r in rows)
    print(f"plot_results: {len(rows)} results ({dict(by_task)}) -> {', '.join(made) or 'no plots'}")


if __name__ == "__main__":
    main()
