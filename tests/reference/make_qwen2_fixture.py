"""Writes a small random-weight "qwen2" GGUF model for the tests.

Shape: 3 layers, n_embd 512, 4 query heads and 2 KV heads of dimension 128
(the real Qwen2.5's head size), n_ff 768, a byte-level BPE vocabulary of 256
byte tokens, 64 merges learnt from a short text and three ChatML control
tokens, pre-tokenizer "qwen2", RoPE base 1e6, RMS eps 1e-6, biases on Q, K
and V, a separate output matrix. Every block format the engine reads appears
at least once (see TYPES), so the test that runs this model through the
engine and through ref_model.py checks all of them inside a real forward
pass.

Weights: formats that the gguf package can quantize are quantized from
Gaussian values; for the K-quants (which it only dequantizes) the blocks are
random bytes whose scale fields are then set so that the values have the
wanted RMS. Deterministic for a given seed.

    .venv/bin/python tests/reference/make_qwen2_fixture.py --out DIR
"""

import argparse
import collections
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF = 3, 512, 4, 2, 128, 768
SEED = 20261203

# Per layer: wq, wk, wv, wo, gate, up, down.
TYPES = [
    [T.Q4_K, T.Q4_K, T.Q6_K, T.Q4_K, T.Q4_K, T.Q4_K, T.Q6_K],
    [T.Q5_K, T.Q3_K, T.Q2_K, T.Q5_0, T.Q5_1, T.Q8_0, T.F16],
    [T.Q4_0, T.Q4_1, T.BF16, T.F32, T.Q2_K, T.Q3_K, T.Q5_K],
]
MATRICES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]

# Byte offsets of the f16 scale fields (d, and dmin where the format has one)
# in one block of each K-quant, from the ggml block layouts.
K_SCALES = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}

TEXT = ("def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n"
        "        self.x = x\n        self.y = y\n\nprint(add(2, 3))\n") * 4


def bytes_to_unicode():
    """GPT-2's byte -> character table, written out from its definition."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


def vocabulary(n_merges=64):
    """Byte tokens, merges learnt greedily on TEXT (words split at spaces), specials."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = [[b2u[b] for b in w.encode()] for w in TEXT.replace("\n", " \n ").split(" ") if w]
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter((w[i], w[i + 1]) for w in words for i in range(len(w) - 1))
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    types = [1] * len(tokens) + [3, 3, 3]
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return tokens, types, merges


def k_quant(rng, qtype, rows, cols, rms):
    """Random blocks of a K-quant with their scales set for the given RMS.

    A block's value is d * A - dmin * B with A, B >= 0 fixed by its other
    bytes: dmin is chosen per block to centre it, since a matrix whose
    entries share one sign maps every input onto nearly the same output.
    """
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)

    def with_scales(d, dmin):
        r = raw.copy()
        fields = K_SCALES[qtype]
        r[:, fields[0]:fields[0] + 2] = np.asarray(d, np.float16).reshape(-1, 1).view(np.uint8)
        if len(fields) > 1:
            r[:, fields[1]:fields[1] + 2] = np.asarray(dmin, np.float16).reshape(-1, 1).view(np.uint8)
        return r

    def values(r):
        return gguf.quants.dequantize(r.reshape(rows, -1), qtype).astype(np.float64).reshape(n_blocks, block)

    ones, zeros = np.ones(n_blocks), np.zeros(n_blocks)
    a = values(with_scales(ones, zeros))
    ratio = zeros
    if len(K_SCALES[qtype]) > 1:
        b = -values(with_scales(zeros, ones))
        mb = b.mean(axis=1)
        ratio = np.where(mb > 0, a.mean(axis=1) / np.where(mb > 0, mb, 1), 0.0)
        a = a - ratio[:, None] * b
    d = rms / np.sqrt(np.mean(a ** 2))
    return with_scales(np.full(n_blocks, d), d * ratio).reshape(rows, -1)


def matrix(rng, qtype, rows, cols, rms):
    """A rows x cols weight in format qtype, as the array GGUFWriter stores."""
    if qtype in K_SCALES:
        return k_quant(rng, qtype, rows, cols, rms)
    w = (rng.standard_normal((rows, cols)) * rms).astype(np.float32)
    if qtype == T.F32:
        return w
    if qtype == T.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w, qtype)


def write(path):
    rng = np.random.default_rng(SEED)
    tokens, types, merges = vocabulary()
    n_vocab, q_dim, kv_dim = len(tokens), N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("qwen2-tiny-random-test-model")
    w.add_block_count(N_LAYER)
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                        "'<|im_end|>\\n'}}{% endfor %}{{ '<|im_start|>assistant\\n' }}")

    def add(name, qtype, rows, cols, rms):
        data = matrix(rng, qtype, rows, cols, rms)
        w.add_tensor(name, data, raw_dtype=None if qtype in (T.F32, T.F16) else qtype)

    def vector(name, n, mean, sd):
        w.add_tensor(name, (mean + sd * rng.standard_normal(n)).astype(np.float32))

    add("token_embd.weight", T.Q4_K, n_vocab, N_EMBD, 1.0)
    for layer, row in enumerate(TYPES):
        pre = f"blk.{layer}."
        vector(pre + "attn_norm.weight", N_EMBD, 1.0, 0.1)
        vector(pre + "ffn_norm.weight", N_EMBD, 1.0, 0.1)
        dims = {"attn_q": (q_dim, N_EMBD), "attn_k": (kv_dim, N_EMBD), "attn_v": (kv_dim, N_EMBD),
                "attn_output": (N_EMBD, q_dim), "ffn_gate": (N_FF, N_EMBD), "ffn_up": (N_FF, N_EMBD),
                "ffn_down": (N_EMBD, N_FF)}
        for name, qtype in zip(MATRICES, row):
            rows, cols = dims[name]
            # 1/sqrt(fan-in) keeps activations of order one; larger Q and K
            # weights give the attention sharp, non-uniform patterns.
            gain = 4.0 if name in ("attn_q", "attn_k") else 1.0
            add(pre + name + ".weight", qtype, rows, cols, gain / np.sqrt(cols))
        vector(pre + "attn_q.bias", q_dim, 0.0, 0.5)
        vector(pre + "attn_k.bias", kv_dim, 0.0, 0.5)
        vector(pre + "attn_v.bias", kv_dim, 0.0, 0.1)
    vector("output_norm.weight", N_EMBD, 1.0, 0.1)
    add("output.weight", T.Q6_K, n_vocab, N_EMBD, 2.0 / np.sqrt(N_EMBD))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for qwen2_tiny.gguf")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "qwen2_tiny.gguf")
    write(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
