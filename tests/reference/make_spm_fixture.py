"""Builds a tiny SentencePiece-style vocabulary, stores it as a GGUF file and
writes the ids the C tokenizer must produce for it.

The vocabulary is learnt here by plain BPE on a short built-in text: each
merge becomes a piece scored minus its merge index, so earlier merges score
higher, followed by the single characters, the byte tokens <0x00>..<0xFF>,
the control tokens <unk> <s> </s> and one user-defined token <|sep|>.

Expected ids come from a direct Python rendering of the SentencePiece
highest-score merge (below, `encode`): start from characters, repeatedly
merge the neighbouring pair whose concatenation is the best-scoring piece
(leftmost on ties), then spell leftover characters with byte tokens. As a
check on that rendering, the same cases are also encoded by the Hugging Face
`tokenizers` BPE model (merges derived from the scores, byte fallback, a
normalizer that marks spaces) and must agree.

    .venv/bin/python tests/reference/make_spm_fixture.py

Outputs: spm_tiny.gguf and tokens_spm.tsv (TSV: name, hex UTF-8 input,
parse_special, add_bos, ids) in --out (default tests/golden). Only the TSV
is kept in git: the test build makes the GGUF file in its own folder before
test_tokenizer runs (a CTest fixture), and the script is deterministic, so
the committed TSV is what that file must produce.
"""

import argparse
import collections
import os

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, models, normalizers

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")
SPACE = "\u2581"
N_MERGES = 240

CORPUS = """
the quick brown fox jumps over the lazy dog while the other dogs sleep in the
warm sun. there is nothing better than a long walk along the river after
lunch, when the water is calm and the birds are singing in the trees. she
said that the weather would turn, and it did: by the evening the rain was
falling hard on the roof of the old house. we sat near the fire and talked
about the things we wanted to do in the summer, the places we wanted to see
and the people we hoped to meet. the cafe on the corner served the best
coffee in town, and the owner knew every one of his customers by name.
reading and writing are the two halves of thinking; the one feeds the other.
""" * 3

CONTROL, USER_DEFINED, BYTE, NORMAL, UNKNOWN = 3, 4, 6, 1, 2

CASES = [
    ("hello_world", "hello world", False, False),
    ("empty", "", False, False),
    ("one_space", " ", False, False),
    ("spaces_inside", "  two  spaces here ", False, False),
    ("corpus_line", "the quick brown fox jumps over the lazy dog", False, False),
    ("sentence", "She said the water was warm, and we talked by the fire.", False, False),
    ("unseen_letters", "zebra quiz xylophone", False, False),
    ("capitals", "The Quick Brown Fox", False, False),
    ("byte_fallback_unicode", "caf\u00e9 \u65e5\u672c \U0001F600!", False, False),
    ("digits", "in 1987 and 2024", False, False),
    ("repeats", "aaaaaaa eeee thethethe", False, False),
    ("newlines_tabs", "line one\nline two\tend", False, False),
    ("with_bos", "the river", False, True),
    ("specials_parsed", "<s>the dog</s>", True, False),
    ("specials_plain", "<s>the dog</s>", False, False),
    ("user_defined", "one<|sep|>two <|sep|> three", False, False),
    ("user_defined_and_control", "<s>one<|sep|>two</s>", True, True),
]


def train(corpus, n_merges):
    """Plain BPE over words that start with the space mark."""
    words = collections.Counter(SPACE + w for w in corpus.split())
    splits = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        # Most frequent; ties broken by the pair itself, for reproducibility.
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append(a + b)
        for w in words:
            s, out, i = splits[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return merges, sorted(set("".join(words)))


def build_vocab():
    merges, chars = train(CORPUS, N_MERGES)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    for i, piece in enumerate(merges):
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(-float(i))
    for j, c in enumerate(chars):
        if c not in tokens:
            tokens.append(c)
            types.append(NORMAL)
            scores.append(-float(len(merges) + j))
    tokens.append("<|sep|>")
    types.append(USER_DEFINED)
    scores.append(0.0)
    assert len(set(tokens)) == len(tokens)
    return tokens, types, scores


def split_specials(text, tokens, types, parse_special):
    """Cuts text at special tokens (longest first); yields (text, None) or (None, id)."""
    matchable = {t: i for i, (t, ty) in enumerate(zip(tokens, types))
                 if ty == USER_DEFINED or (parse_special and ty in (CONTROL, UNKNOWN))}
    start = pos = 0
    while pos < len(text):
        hits = [t for t in matchable if text.startswith(t, pos)]
        if not hits:
            pos += 1
            continue
        best = max(hits, key=len)
        yield text[start:pos], None
        yield None, matchable[best]
        pos += len(best)
        start = pos
    yield text[start:], None


def encode(text, tokens, types, scores, parse_special, add_bos):
    """SentencePiece's greedy highest-score merge, written for clarity."""
    normal = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == NORMAL}
    byte_id = {int(t[3:5], 16): i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == BYTE}
    out = [tokens.index("<s>")] if add_bos else []
    for frag, special in split_specials(text, tokens, types, parse_special):
        if special is not None:
            out.append(special)
            continue
        if not frag:
            continue
        syms = list(SPACE + frag.replace(" ", SPACE))
        while True:
            best = None
            for i in range(len(syms) - 1):
                piece = normal.get(syms[i] + syms[i + 1])
                if piece is not None and (best is None or scores[piece] > best[0]):
                    best = (scores[piece], i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        for s in syms:
            if s in normal:
                out.append(normal[s])
            else:
                out.extend(byte_id[b] for b in s.encode("utf-8"))
    return out


def hf_tokenizer(tokens, types, scores):
    """The same vocabulary as a Hugging Face BPE: merges ranked by score."""
    normal = {t for t, ty in zip(tokens, types) if ty == NORMAL}
    merges = []
    for piece in sorted(normal, key=lambda p: -scores[tokens.index(p)]):
        for k in range(1, len(piece)):
            if piece[:k] in normal and piece[k:] in normal:
                merges.append((piece[:k], piece[k:]))
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               unk_token="<unk>", byte_fallback=True))
    # A normalizer rather than the Metaspace pre-tokenizer: Metaspace skips
    # the prefix when the text already starts with a space, SentencePiece
    # does not.
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                           normalizers.Replace(" ", SPACE)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty in (CONTROL, UNKNOWN)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == USER_DEFINED])
    return tok


def write_gguf(path, tokens, types, scores):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("spm-tiny-test-vocab")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.add_tensor("dummy", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=GOLDEN, help="golden folder")
    args = ap.parse_args()
    tokens, types, scores = build_vocab()
    hf = hf_tokenizer(tokens, types, scores)
    bos = tokens.index("<s>")
    lines = ["# name\thex UTF-8 input\tparse_special\tadd_bos\tids",
             "# made by tests/reference/make_spm_fixture.py for spm_tiny.gguf"]
    for name, text, special, add_bos in CASES:
        ids = encode(text, tokens, types, scores, special, add_bos)
        hf.encode_special_tokens = not special
        check = ([bos] if add_bos else []) + hf.encode(text, add_special_tokens=False).ids
        if ids != check:
            raise SystemExit(f"{name}: reference encoders disagree:\n {ids}\n {check}")
        lines.append(f"{name}\t{text.encode('utf-8').hex()}\t{int(special)}\t{int(add_bos)}\t"
                     f"{' '.join(map(str, ids))}")
    os.makedirs(args.out, exist_ok=True)
    gguf_path = os.path.join(args.out, "spm_tiny.gguf")
    write_gguf(gguf_path, tokens, types, scores)
    with open(os.path.join(args.out, "tokens_spm.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(tokens)} tokens, {os.path.getsize(gguf_path)} bytes in {gguf_path}; "
          f"{len(CASES)} cases")


if __name__ == "__main__":
    main()
