"""Write the golden logit files (tests/golden/ref_*.json) from the reference.

For each prompt the file holds, per prompt position, summaries of the full
float64 logit vector (top-20, logsumexp, L2 norm, sum, four fixed random
projections) and the greedy continuation with each step's logit and margin.
README.md describes every field; `--check` recomputes and compares instead of
writing, to show that the committed files still match the reference.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from ref_model import RefModel
from ref_tokenizer import decode, encode, tokenizer_from_gguf

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "..", "..", "models",
                             "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(HERE, "..", "golden")

N_TOP = 20
N_GREEDY = 32
N_PROJ = 4
PROJ_SEED = 0x66617361  # the bytes of "fasa"

PROJ_RECIPE = (
    "splitmix64: state = seed (uint64); each draw: state += 0x9E3779B97F4A7C15; "
    "z = state; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; "
    "z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31 (all mod 2^64); "
    "u = (double)(z >> 11) * 2^-53 * 2 - 1, in [-1, 1). Draws are taken in order: "
    "vector j element i (0-based) is draw number j * n_vocab + i. "
    "proj[j] = sum_i logits[i] * vector_j[i]."
)

# name -> (text, number of leading tokens kept or None for all), per architecture.
PROMPTS = {
    "prose": (
        "It is a truth universally acknowledged, that a single man in possession "
        "of a good fortune, must be in want of a wife. However little known the "
        "feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of "
        "some one or other of their daughters.",
        64),
    "code": (
        "def fibonacci(n):\n"
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n",
        None),
    "chat": (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n",
        None),
}

# The long-context model (scripts/fetch-model.sh qwen2.5-coder-1.5b): its
# goldens are checked by test_reference when the model file is there.
QWEN2_PROMPTS = {
    "qwen2_code": (
        "import heapq\n\n\ndef dijkstra(graph, source):\n"
        "    \"\"\"Shortest distances from source in a graph of {node: [(neighbour, weight)]}.\"\"\"\n"
        "    dist = {source: 0}\n    queue = [(0, source)]\n    while queue:\n",
        None),
    "qwen2_chat": (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n"
        "<|im_start|>assistant\n",
        None),
}


def splitmix64_uniform(seed, count):
    """`count` draws of the PROJ_RECIPE generator, as float64 in [-1, 1)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    steps = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + steps * golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0


def projection_vectors(n_vocab):
    return splitmix64_uniform(PROJ_SEED, N_PROJ * n_vocab).reshape(N_PROJ, n_vocab)


def logsumexp(v):
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def summarize_position(logits, proj):
    # Stable sort on -logit: equal logits keep ascending id order.
    order = np.argsort(-logits, kind="stable")[:N_TOP]
    return {
        "top": [[int(i), float(logits[i])] for i in order],
        "lse": logsumexp(logits),
        "l2": float(np.sqrt(np.dot(logits, logits))),
        "sum": float(logits.sum()),
        "proj": [float(x) for x in proj @ logits],
    }


def prompt_tokens(tok, text, keep):
    """Tokens of `text` (cut to `keep`) and a text that encodes to exactly them."""
    ids = encode(tok, text)
    if keep is not None:
        if len(ids) < keep:
            raise ValueError(f"prompt gives {len(ids)} tokens, fewer than {keep}")
        ids = ids[:keep]
        text = decode(tok, ids)
    if encode(tok, text) != ids:
        raise ValueError("the truncated prompt does not re-encode to its tokens")
    return text, ids


def golden_for(model, tok, name, text, keep, model_file):
    text, ids = prompt_tokens(tok, text, keep)
    proj = projection_vectors(model.n_vocab)
    cache = model.new_cache(len(ids) + N_GREEDY)
    logits = model.forward(ids, cache)
    steps = model.greedy(logits[-1], cache, N_GREEDY)
    return {
        "name": name,
        "model": model_file,
        "reference": "tests/reference/ref_model.py, float64, "
                     f"{model.rope_layout} RoPE",
        "proj_seed": PROJ_SEED,
        "proj_recipe": PROJ_RECIPE,
        "prompt": text,
        "tokens": [int(t) for t in ids],
        "n_vocab": int(model.n_vocab),
        "positions": [summarize_position(row, proj) for row in logits],
        "greedy": [{"token": t, "logit": l, "margin": m} for t, l, m in steps],
        "greedy_text": decode(tok, [s[0] for s in steps]),
    }


def dump_json(doc):
    """JSON with one prompt position or greedy step per line, for readable diffs."""
    lines = ["{"]
    items = list(doc.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n + 1 < len(items) else ""
        if key in ("positions", "greedy"):
            rows = [json.dumps(v, separators=(",", ":")) for v in value]
            lines.append(f" {json.dumps(key)}: [")
            lines += ["  " + r + ("," if i + 1 < len(rows) else "")
                      for i, r in enumerate(rows)]
            lines.append(" ]" + comma)
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def max_rel_diff(a, b):
    """Largest |a - b| / max(1, |b|) over the numbers of two equal-shaped JSONs."""
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((max_rel_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        if len(a) != len(b):
            return float("inf")
        return max((max_rel_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) / max(1.0, abs(b))
    return 0.0 if a == b else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="GGUF model file")
    ap.add_argument("--out", default=DEFAULT_OUT, help="golden directory")
    ap.add_argument("--check", action="store_true",
                    help="compare with the files in --out instead of writing")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = RefModel(args.model)
    tok = tokenizer_from_gguf(model.reader)
    failed = False
    prompts = QWEN2_PROMPTS if model.cfg.arch == "qwen2" else PROMPTS
    for name, (text, keep) in prompts.items():
        doc = golden_for(model, tok, name, text, keep, os.path.basename(args.model))
        path = os.path.join(args.out, f"ref_{name}.json")
        top1 = [p["top"][0][0] for p in doc["positions"]]
        print(f"{name}: {len(doc['tokens'])} tokens; greedy: {doc['greedy_text']!r}")
        print(f"  top-1 along the prompt: {decode(tok, top1)!r}")
        if args.check:
            with open(path) as f:
                diff = max_rel_diff(doc, json.load(f))
            ok = diff < 1e-9
            failed |= not ok
            print(f"  {path}: max relative difference {diff:.3g} "
                  f"{'ok' if ok else 'MISMATCH'}")
        else:
            with open(path, "w") as f:
                f.write(dump_json(doc))
            print(f"  wrote {path} ({os.path.getsize(path)} bytes)")
    print(f"total {time.perf_counter() - t0:.1f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
