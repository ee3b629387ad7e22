"""Float64 NumPy reference forward pass for GGUF "llama" and "qwen2" models.

Independent of the C engine: the weights are read and dequantized by the PyPI
`gguf` package, every computation runs in float64, and the tokenizer (when a
text prompt is given) is rebuilt by ref_tokenizer.py with the `tokenizers`
library. The C tests compare their logits against files this script writes.

Command line (see README.md):
    ref_model.py --model M --tokens "1 2 3" --dump-logits OUT.f32
                 [--greedy N --dump-greedy OUT.txt]
    ref_model.py --model M --text "Some sentence." --loss [--rope half]

"qwen2" is the llama block with biases on the Q, K and V products and the
half-split RoPE layout; everything else is shared.
"""

import argparse
import sys
import time

import gguf
import numpy as np

ROPE_LAYOUTS = ("interleaved", "half")
# The RoPE layout each architecture's GGUF conversion leaves the weights in.
ARCH_ROPE = {"llama": "interleaved", "qwen2": "half"}


def read_field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


class Config:
    """Hyperparameters of a GGUF llama or qwen2 model, from its metadata."""

    def __init__(self, reader):
        arch = read_field(reader, "general.architecture")
        if arch not in ARCH_ROPE:
            raise ValueError(f"general.architecture is {arch!r}; the reference "
                             f"implements {', '.join(ARCH_ROPE)}")
        self.arch = arch

        def need(key):
            value = read_field(reader, f"{arch}.{key}")
            if value is None:
                raise ValueError(f"GGUF lacks metadata key {arch}.{key}")
            return value

        self.n_layer = int(need("block_count"))
        self.n_embd = int(need("embedding_length"))
        self.n_ff = int(need("feed_forward_length"))
        self.n_head = int(need("attention.head_count"))
        self.n_head_kv = int(read_field(reader, f"{arch}.attention.head_count_kv",
                                        self.n_head))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(read_field(reader, f"{arch}.rope.dimension_count",
                                    self.head_dim))
        self.rope_base = float(read_field(reader, f"{arch}.rope.freq_base", 10000.0))
        self.eps = float(need("attention.layer_norm_rms_epsilon"))
        self.n_ctx_train = int(read_field(reader, f"{arch}.context_length", 0))
        self.rope_scale = rope_position_scale(reader, arch)
        if self.n_head % self.n_head_kv != 0:
            raise ValueError("head_count is not a multiple of head_count_kv")
        if self.n_rot > self.head_dim or self.n_rot % 2:
            raise ValueError("rope.dimension_count must be even and <= head_dim")


def rope_position_scale(reader, arch):
    """Factor that positions are divided by before RoPE (1.0: no scaling)."""
    kind = read_field(reader, f"{arch}.rope.scaling.type")
    factor = read_field(reader, f"{arch}.rope.scaling.factor")
    if kind is None and factor is None:
        return 1.0
    if kind in (None, "none"):
        return 1.0
    if kind != "linear":
        raise ValueError(f"{arch}.rope.scaling.type {kind!r} is not supported by "
                         "the reference (only 'linear')")
    factor = float(factor if factor is not None else 1.0)
    if factor <= 0:
        raise ValueError(f"{arch}.rope.scaling.factor must be positive")
    return factor


class Weights:
    """Every tensor dequantized, (rows, cols) shaped, handed out in float64.

    gguf's dequantize already returns the GGUF ne=[cols, rows] tensor as a
    (rows, cols) array, so y = W @ x needs no transpose. Its results are
    float32 values, so they are kept in float32 (exactly) and widened when
    used: a 1.5B model then needs 6 GB instead of 12.
    """

    def __init__(self, reader):
        self.t = {}
        for t in reader.tensors:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
            expect = tuple(int(n) for n in reversed(t.shape))
            self.t[t.name] = np.ascontiguousarray(arr.reshape(expect), dtype=np.float32)

    def __getitem__(self, name):
        return self.t[name].astype(np.float64)

    def __contains__(self, name):
        return name in self.t

    def rows(self, name, idx):
        """Rows idx of a matrix, without widening the whole of it."""
        return self.t[name][idx].astype(np.float64)


def load_weights(reader, cfg):
    w = Weights(reader)
    e = w.t["token_embd.weight"]
    if e.shape[1] != cfg.n_embd:
        raise ValueError(f"token_embd.weight has {e.shape[1]} columns, "
                         f"expected {cfg.n_embd}")
    return w


def rmsnorm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_rotate(x, pos, cfg, layout):
    """Rotate the first n_rot dims of each head of x (n, heads, head_dim).

    interleaved: dims (2i, 2i+1) form pair i (GGUF llama, llama.cpp "norm").
    half:        dims (i, i + n_rot/2) form pair i (HF / NeoX layout).
    Pair i turns by angle (pos / scale) * base^(-2i / n_rot).
    """
    half = cfg.n_rot // 2
    inv_freq = cfg.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.n_rot)
    ang = (np.asarray(pos, dtype=np.float64) / cfg.rope_scale)[:, None] * inv_freq
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    out = x.copy()
    if layout == "interleaved":
        a, b = x[..., 0:cfg.n_rot:2], x[..., 1:cfg.n_rot:2]
        out[..., 0:cfg.n_rot:2] = a * cos - b * sin
        out[..., 1:cfg.n_rot:2] = a * sin + b * cos
    elif layout == "half":
        a, b = x[..., :half], x[..., half:cfg.n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:cfg.n_rot] = a * sin + b * cos
    else:
        raise ValueError(f"unknown RoPE layout {layout!r}")
    return out


class KVCache:
    """Rotated keys and values of every past position, per layer and KV head."""

    def __init__(self, cfg, capacity):
        shape = (cfg.n_layer, cfg.n_head_kv, capacity, cfg.head_dim)
        self.k = np.zeros(shape)
        self.v = np.zeros(shape)
        self.n = 0
        self.capacity = capacity


class RefModel:
    def __init__(self, path, rope_layout=None):
        """rope_layout None: the architecture's own (ARCH_ROPE)."""
        if rope_layout is not None and rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}")
        self.reader = gguf.GGUFReader(path)
        self.cfg = Config(self.reader)
        self.w = load_weights(self.reader, self.cfg)
        self.rope_layout = rope_layout or ARCH_ROPE[self.cfg.arch]
        # Tied embeddings: without output.weight the logits reuse the table.
        self.output_name = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        self.n_vocab = self.w.t["token_embd.weight"].shape[0]

    def new_cache(self, capacity):
        return KVCache(self.cfg, capacity)

    def project(self, h, name):
        """h @ W.T, plus the bias where the file has one (qwen2's Q, K, V)."""
        y = h @ self.w[name + ".weight"].T
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        return y

    def attention(self, layer, h, cache, start):
        """Causal GQA attention of the n new rows of h, appending to cache."""
        cfg, w = self.cfg, self.w
        n, hd = h.shape[0], cfg.head_dim
        pre = f"blk.{layer}."
        q, k, v = (self.project(h, pre + "attn_" + x) for x in "qkv")
        q = q.reshape(n, cfg.n_head, hd)
        k = k.reshape(n, cfg.n_head_kv, hd)
        v = v.reshape(n, cfg.n_head_kv, hd)
        pos = np.arange(start, start + n)
        q = rope_rotate(q, pos, cfg, self.rope_layout)
        k = rope_rotate(k, pos, cfg, self.rope_layout)
        end = start + n
        cache.k[layer, :, start:end] = k.transpose(1, 0, 2)
        cache.v[layer, :, start:end] = v.transpose(1, 0, 2)
        keys = cache.k[layer, :, :end]            # (n_kv, T, hd)
        vals = cache.v[layer, :, :end]
        group = cfg.n_head // cfg.n_head_kv       # query head h reads KV head h // group
        qg = q.transpose(1, 0, 2).reshape(cfg.n_head_kv, group, n, hd)
        scores = np.einsum("kgnd,ktd->kgnt", qg, keys) / np.sqrt(hd)
        future = np.arange(end)[None, :] > pos[:, None]    # (n, T)
        scores = np.where(future, -np.inf, scores)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        out = np.einsum("kgnt,ktd->kgnd", p, vals)          # (n_kv, group, n, hd)
        out = out.reshape(cfg.n_head, n, hd).transpose(1, 0, 2).reshape(n, -1)
        return out @ w[pre + "attn_output.weight"].T

    def forward(self, tokens, cache):
        """Logits (n, n_vocab) of the new tokens, which follow cache.n others."""
        cfg, w = self.cfg, self.w
        tokens = np.asarray(tokens, dtype=np.int64)
        start = cache.n
        if start + len(tokens) > cache.capacity:
            raise ValueError("KV cache capacity exceeded")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError("token id out of range")
        x = self.w.rows("token_embd.weight", tokens)
        for layer in range(cfg.n_layer):
            pre = f"blk.{layer}."
            h = rmsnorm(x, w[pre + "attn_norm.weight"], cfg.eps)
            x = x + self.attention(layer, h, cache, start)
            h = rmsnorm(x, w[pre + "ffn_norm.weight"], cfg.eps)
            gate = h @ w[pre + "ffn_gate.weight"].T
            up = h @ w[pre + "ffn_up.weight"].T
            x = x + (silu(gate) * up) @ w[pre + "ffn_down.weight"].T
        cache.n = start + len(tokens)
        x = rmsnorm(x, w["output_norm.weight"], cfg.eps)
        return x @ self.w[self.output_name].T

    def greedy(self, last_logits, cache, n_steps):
        """Greedy-decode n_steps tokens after a prompt whose last logits are given.

        Returns a list of (token, logit, margin to the runner-up logit).
        """
        steps = []
        logits = last_logits
        for i in range(n_steps):
            best = int(np.argmax(logits))       # lowest id wins exact ties
            runner_up = float(np.partition(logits, -2)[-2])
            steps.append((best, float(logits[best]),
                          float(logits[best]) - runner_up))
            if i + 1 < n_steps:
                logits = self.forward([best], cache)[0]
        return steps


def log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))


def mean_nll(logits, tokens):
    """Mean negative log-likelihood of tokens[1:] given the logits before them."""
    lp = log_softmax(logits[:-1])
    return float(-lp[np.arange(len(tokens) - 1), tokens[1:]].mean())


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="GGUF model file")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help="space-separated prompt token ids")
    src.add_argument("--text", help="prompt text, tokenized by ref_tokenizer.py")
    ap.add_argument("--rope", choices=ROPE_LAYOUTS, default=None,
                    help="RoPE pair layout (default: the architecture's, "
                         "interleaved for llama, half for qwen2)")
    ap.add_argument("--dump-logits", metavar="OUT.f32",
                    help="write every prompt position's logits, float32 LE, "
                         "n_tok x n_vocab, no header")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="greedy-decode N tokens after the prompt")
    ap.add_argument("--dump-greedy", metavar="OUT.txt",
                    help="write the greedy steps: 'token logit margin' per line")
    ap.add_argument("--loss", action="store_true",
                    help="print the mean next-token NLL over the prompt")
    args = ap.parse_args(argv)
    if args.dump_greedy and args.greedy <= 0:
        ap.error("--dump-greedy needs --greedy N with N > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    model = RefModel(args.model, rope_layout=args.rope)
    t_load = time.perf_counter() - t0
    if args.tokens is not None:
        tokens = [int(t) for t in args.tokens.split()]
    else:
        from ref_tokenizer import encode, tokenizer_from_gguf
        tokens = encode(tokenizer_from_gguf(model.reader), args.text)
    if not tokens:
        sys.exit("ref_model.py: the prompt has no tokens")

    cache = model.new_cache(len(tokens) + max(args.greedy, 0))
    logits = model.forward(tokens, cache)
    if args.dump_logits:
        logits.astype("<f4").tofile(args.dump_logits)
    if args.loss:
        print(f"mean NLL ({model.rope_layout} RoPE, {len(tokens)} tokens): "
              f"{mean_nll(logits, np.array(tokens)):.6f}")
    steps = model.greedy(logits[-1], cache, args.greedy) if args.greedy > 0 else []
    if args.dump_greedy:
        with open(args.dump_greedy, "w") as f:
            for tok, logit, margin in steps:
                f.write(f"{tok} {logit!r} {margin!r}\n")
    elif steps:
        print(" ".join(str(s[0]) for s in steps))
    print(f"load {t_load:.2f} s, total {time.perf_counter() - t0:.2f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
