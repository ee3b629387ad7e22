"""Write tests/golden/quant_blocks.bin: blocks of the q5_0, q5_1, q2_k, q3_k
and q5_k formats with their values as the PyPI `gguf` package decodes them.

The blocks are made by this script, not taken from a model: for each format
one block of all-zero code bytes, one of all-one code bytes (the extreme
codes), then random bytes; the f16 scale fields are random finite halfs of
any exponent, subnormals included, so that no NaN or infinity enters. For
q5_0 and q5_1, half of the blocks come from `gguf.quants.quantize` of
normally distributed floats instead (gguf 0.19.0 has no quantizer for the
k-quants). The values are `gguf.quants.dequantize`, float32.

File layout, all little-endian: the 8 bytes "fasaqgb1", then one record per
format until the end of the file:
    u32 ggml type id, u32 block count n,
    n * block_bytes bytes of blocks,
    n * block_size float32 values.
`--check` rebuilds the records and fails if the file differs.
"""

import argparse
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "golden", "quant_blocks.bin"))
MAGIC = b"fasaqgb1"
SEED = 0x66617361  # the bytes of "fasa"

# type -> (blocks, byte offsets of the f16 scale fields in a block)
FORMATS = {
    T.Q5_0: (16, (0,)),
    T.Q5_1: (16, (0, 2)),
    T.Q2_K: (4, (80, 82)),
    T.Q3_K: (4, (108,)),
    T.Q5_K: (4, (0, 2)),
}


def random_halfs(rng, n):
    """Finite f16 bit patterns: any sign, exponent 0..30, any mantissa."""
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    exp = rng.integers(0, 31, n, dtype=np.uint16) << 10
    mant = rng.integers(0, 1024, n, dtype=np.uint16)
    return (sign | exp | mant).astype("<u2")


def synthetic_blocks(rng, qtype, n):
    """n blocks of random code bytes (the first all 0x00, the second all
    0xff) with random finite halfs in the scale fields."""
    _, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (n, block_bytes), dtype=np.uint8)
    blocks[0, :] = 0x00
    blocks[1, :] = 0xFF
    for off in FORMATS[qtype][1]:
        blocks[:, off:off + 2] = random_halfs(rng, n).view(np.uint8).reshape(n, 2)
    return blocks


def quantized_blocks(rng, qtype, n):
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    x = rng.standard_normal(n * block_size).astype(np.float32)
    return quants.quantize(x, qtype).reshape(n, block_bytes)


def make_blocks(rng, qtype):
    n = FORMATS[qtype][0]
    if qtype in (T.Q5_0, T.Q5_1):
        return np.concatenate([synthetic_blocks(rng, qtype, n // 2),
                               quantized_blocks(rng, qtype, n - n // 2)])
    return synthetic_blocks(rng, qtype, n)


def build():
    rng = np.random.default_rng(SEED)
    out = bytearray(MAGIC)
    for qtype in FORMATS:
        blocks = make_blocks(rng, qtype)
        values = quants.dequantize(blocks.reshape(-1), qtype).astype("<f4")
        if not np.all(np.isfinite(values)):
            sys.exit(f"{qtype.name}: a decoded value is not finite")
        out += struct.pack("<II", int(qtype), blocks.shape[0])
        out += blocks.tobytes()
        out += values.tobytes()
    return bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="compare with the existing file instead of writing")
    args = ap.parse_args()
    data = build()
    if args.check:
        with open(args.out, "rb") as f:
            if f.read() != data:
                sys.exit(f"{args.out} differs from what the reference makes now")
        print(f"{args.out}: matches ({len(data)} bytes)")
        return
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
