"""Byte-level BPE tokenizer rebuilt from a GGUF file's own vocabulary and merges.

This is the reference tokenizer for the golden files. It is built with the
Hugging Face `tokenizers` library so that it shares no code with the C
tokenizer it checks. Only the GGUF "gpt2" tokenizer model (byte-level BPE) is
supported, with the pre-tokenizers (tokenizer.ggml.pre) of SmolLM2 ("smollm")
and Qwen2 ("qwen2"), each as the model's own tokenizer.json defines it.

Usage as a module:
    from ref_tokenizer import tokenizer_from_gguf
    tok = tokenizer_from_gguf(gguf.GGUFReader(path))
    ids = tok.encode("<|im_start|>user\\nHi", add_special_tokens=False).ids
"""

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# GGUF token types (tokenizer.ggml.token_type) that name a control token: such
# tokens are matched whole in the input text and never merged from bytes.
GGUF_TOKEN_CONTROL = 3
GGUF_TOKEN_USER_DEFINED = 4

# Qwen2's split regex: Llama 3's with every digit alone.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def set_pre_tokenizer(tok, pre):
    """The normalizer and pre-tokenizer of tokenizer.ggml.pre `pre`."""
    if pre == "smollm":
        # Every digit stands alone, then the GPT-2 regex splits words; no
        # space is inserted before the first word.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise ValueError(f"tokenizer.ggml.pre {pre!r} is not in the reference "
                         "(smollm, qwen2)")


def read_field(reader, key, default=None):
    """Return the decoded value of metadata key `key`, or `default` if absent."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def tokenizer_from_gguf(reader):
    """Build a `tokenizers.Tokenizer` equal to the one described by the GGUF."""
    model_kind = read_field(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"tokenizer.ggml.model is {model_kind!r}; only 'gpt2' "
                         "(byte-level BPE) is supported by the reference")
    tokens = read_field(reader, "tokenizer.ggml.tokens")
    merges = read_field(reader, "tokenizer.ggml.merges")
    types = read_field(reader, "tokenizer.ggml.token_type",
                       [1] * len(tokens))

    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("GGUF vocabulary has duplicate token strings")
    merge_pairs = [tuple(m.split(" ", 1)) for m in merges]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs,
                               fuse_unk=False, byte_fallback=False))
    set_pre_tokenizer(tok, read_field(reader, "tokenizer.ggml.pre", "smollm"))
    tok.decoder = decoders.ByteLevel()

    # Control tokens are special: matched in a text only on request. User-
    # defined ones (Qwen's <tool_call>) are added tokens that are always
    # matched. normalized=False: match the literal text, "<|im_start|>".
    control = [tokens[i] for i, t in enumerate(types) if t == GGUF_TOKEN_CONTROL]
    user = [tokens[i] for i, t in enumerate(types) if t == GGUF_TOKEN_USER_DEFINED]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in control])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in user])
    for s in control + user:
        if tok.token_to_id(s) != vocab[s]:
            raise ValueError(f"added token {s!r} changed id when added")
    return tok


def encode(tok, text):
    """Token ids of `text`, control tokens written literally become their ids."""
    return tok.encode(text, add_special_tokens=False).ids


def decode(tok, ids):
    """Text of `ids`, control tokens included as their literal text."""
    return tok.decode(list(ids), skip_special_tokens=False)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Tokenize text with the GGUF's BPE")
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("text", help="text to tokenize")
    args = ap.parse_args()
    t = tokenizer_from_gguf(gguf.GGUFReader(args.model))
    ids = encode(t, args.text)
    print(" ".join(map(str, ids)))
    print(repr(decode(t, ids)))
