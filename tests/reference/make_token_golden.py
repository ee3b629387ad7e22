"""Writes the tokenizer golden files from an independent tokenizer.

The ids come from the Hugging Face `tokenizers` library, rebuilt from the
GGUF's own vocabulary and merges by ref_tokenizer.py (BPE, byte-level, the
model's normalizer and pre-tokenizer), so they share no code with
src/tokenizer*.c. Pre-token splits come from the same library's
pre-tokenizers and its regex engine.

    .venv/bin/python tests/reference/make_token_golden.py \
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf
    .venv/bin/python tests/reference/make_token_golden.py \
        --model models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

Outputs (TSV, one case per line, '#' lines are comments):
  tests/golden/tokens_smollm2.tsv  name, hex UTF-8 input, parse_special (0/1),
  tests/golden/tokens_qwen2.tsv    space-separated ids (by the model's
                                   tokenizer.ggml.pre: smollm or qwen2)
  tests/golden/pretok_splits.tsv   name, tokenizer.ggml.pre value, hex input,
                                   space-separated byte lengths of the words
"""

import argparse
import os
import sys

import gguf
from tokenizers import Regex, pre_tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_tokenizer import QWEN2_REGEX, read_field, tokenizer_from_gguf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")

PARAGRAPH = (
    "The committee met on a grey Tuesday morning to decide, once and for all, "
    "whether the old lighthouse should be restored or pulled down. Opinions "
    "differed sharply: the fishermen wanted its lamp relit, the council worried "
    "about the cost, and the children simply wanted somewhere to climb. After "
    "three hours of argument, somebody suggested they ask the lighthouse keeper's "
    "granddaughter, who had kept the logbooks since 1987. She said nothing for a "
    "long while, then opened the oldest book and read aloud the entry for the "
    "night of the storm."
)

C_CODE = (
    "#include <stdio.h>\n\nint main(void) {\n    for (int i = 0; i < 10; i++) {\n"
    "        printf(\"%d\\n\", i * i);\n    }\n    return 0;\n}\n"
)

PY_CODE = (
    "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\n"
    "if __name__ == '__main__':\n\tprint(fib(30))\n"
)

CHATML = "<|im_start|>user\nHi<|im_end|>"

# (name, text, parse_special)
CASES = [
    ("empty", "", False),
    ("one_space", " ", False),
    ("many_spaces", "          ", False),
    ("leading_spaces", "   leading spaces", False),
    ("trailing_spaces", "trailing spaces   ", False),
    ("both_ends", "  both ends  ", False),
    ("space_before_word_run", "a     b", False),
    ("tabs_newlines", "\tindented\n\ttext\r\n\t\tmore \t mixed\n", False),
    ("three_newlines", "\n\n\n", False),
    ("paragraph_breaks", "line one\nline two\n\nline four\n \n", False),
    ("crlf", "a\r\nb\r\n\r\nc", False),
    ("digits_long", "12345678901234567890", False),
    ("pi", "3.14159", False),
    ("numbers_in_text", "In 2024, about 1,000,000 people paid $12.50 each.", False),
    ("mixed_case", "HeLLo WoRLD, hello world, HELLO WORLD", False),
    ("identifiers", "camelCaseIdentifier snake_case_name SCREAMING_CASE", False),
    ("contraction_im", "I'm", False),
    ("contraction_theyll", "they'll", False),
    ("contraction_dont_upper", "DON'T", False),
    ("contractions_mixed", "it's we've you'd I've she'll 'tis rock'n'roll", False),
    ("punctuation_run", "!!!???...", False),
    ("punctuation_mix", "Wait... what?! (yes) [no] {maybe} -- ok; fine: done.", False),
    ("quotes_unicode", "\u00abquoted\u00bb \u201ccurly\u201d \u2018single\u2019 \u2014 dash", False),
    ("accented_latin", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u0141\u00f3d\u017a", False),
    ("greek", "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5", False),
    ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", False),
    ("cjk", "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4",
     False),
    ("emoji", "\U0001F44D great \U0001F600\U0001F389!", False),
    ("emoji_zwj", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family, "
     "\U0001F3F3\ufe0f\u200d\U0001F308 flag, \U0001F469\U0001F3FD\u200d\U0001F4BB", False),
    ("combining_marks", "e\u0301 a\u0308 n\u0303 \u0915\u093f Z\u0351\u0352\u0353", False),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 "
     "\u0661\u0662\u0663", False),
    ("devanagari", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
     False),
    ("math_numbers", "x\u00b2 + y\u00b2 = z\u00b2; \u00bd \u2153 \u216b", False),
    ("unicode_spaces", "a\u00a0b\u2009c\u3000d\u2028e", False),
    # SmolLM2's vocabulary has no token for the bytes 0x04 and 0x1D: both
    # tokenizers drop them.
    ("control_chars", "a\x04b\x1dc\x07d\x00e", False),
    ("code_c", C_CODE, False),
    ("code_python", PY_CODE, False),
    ("url", "https://example.com/path/to/page?q=tokenizer&lang=en#section-2", False),
    ("email_json", "Mail bob@example.org: {\"id\": 42, \"ok\": true, \"tags\": [\"a\", \"b\"]}",
     False),
    ("paragraph", PARAGRAPH, False),
    # Over 4 KiB, so that the encoder's word cache is in play.
    ("long_text", "\n\n".join([PARAGRAPH, C_CODE, PARAGRAPH.upper(), PY_CODE] * 4), False),
    ("chatml_special", CHATML, True),
    ("chatml_plain", CHATML, False),
    ("chatml_full_special",
     "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n<|im_start|>assistant\n", True),
    ("adjacent_specials", "<|im_end|><|im_start|><|endoftext|>", True),
    ("partial_special", "<|im_start <|im_end| |im_end|>", True),
    ("special_in_words", "before<|endoftext|>after  <|im_end|>  ", True),
    # Qwen2 normalises to NFC: a decomposed accent composes first.
    ("nfc_compose", "Cafe\u0301 A\u030angstro\u0308m \u1100\u1161 \u212b", False),
    # Qwen2's <tool_call> is a user-defined token: matched even without parse_special.
    ("user_defined", "call <tool_call>{}</tool_call> done", False),
]

# Extra inputs for the pre-tokenizer splits only: they target alternatives of
# the regexes that the cases above reach rarely.
SPLIT_ONLY = [
    # An apostrophe after a space joins the space, so these follow letters.
    ("contractions_upper", "I'Sx it'ſx WE'LLama you'Re they'VEry x'D y'Mm z'Tt q'x"),
    ("newline_runs", "!!!\n\n\nbar  \n  hello\r\n\r\n  x\n"),
    ("digit_runs", "abc1234567 12 3 \u0661\u0662\u0663\u0664 x\u00b2\u00b3\u00b9"),
    ("tab_word", " \tfoo\tbar \u00a0baz"),
    ("trailing_space_end", "end   "),
]

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    """GPT-2's byte -> character table, written out from its definition."""
    printable = (list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) +
                 list(range(0xAE, 0x100)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def split_lengths(pre_tokenizer, text, byte_level):
    """Byte lengths of the words the pre-tokenizer cuts text into."""
    words = [w for w, _ in pre_tokenizer.pre_tokenize_str(text)]
    if byte_level:
        return [len(bytes(UNICODE_TO_BYTE[c] for c in w)) for w in words]
    return [len(w.encode("utf-8")) for w in words]


def write_tokens(tok, path):
    lines = ["# name\thex UTF-8 input\tparse_special\tids",
             "# made by tests/reference/make_token_golden.py (Hugging Face tokenizers)"]
    vocab = tok.get_vocab()
    spellable = {b for b, c in bytes_to_unicode().items() if c in vocab}
    for name, text, special in CASES:
        tok.encode_special_tokens = not special
        ids = tok.encode(text, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
        # What comes back is the normalised text (NFC leaves the ASCII of
        # control tokens alone, so the whole text can be normalised).
        norm = tok.normalizer.normalize_str(text) if tok.normalizer else text
        if back != bytes(b for b in norm.encode("utf-8") if b in spellable):
            raise SystemExit(f"{name}: reference does not round-trip: {back!r}")
        lines.append(f"{name}\t{text.encode('utf-8').hex()}\t{int(special)}\t"
                     f"{' '.join(map(str, ids))}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")


def write_splits(path):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pres = [
        ("gpt2", byte_level, True),
        ("smollm", pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), byte_level]), True),
        ("llama-bpe", pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"), False),
        ("qwen2", pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"), False),
    ]
    inputs = [(n, t) for n, t, _ in CASES if "<|" not in t and n != "long_text"] + SPLIT_ONLY
    lines = ["# name\ttokenizer.ggml.pre\thex UTF-8 input\tbyte lengths of the words",
             "# made by tests/reference/make_token_golden.py (Hugging Face tokenizers)"]
    for pre_name, pre, is_byte_level in pres:
        for name, text in inputs:
            lengths = split_lengths(pre, text, is_byte_level)
            assert sum(lengths) == len(text.encode("utf-8")), name
            lines.append(f"{name}\t{pre_name}\t{text.encode('utf-8').hex()}\t"
                         f"{' '.join(map(str, lengths))}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 2} splits to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the SmolLM2 or Qwen2 GGUF file")
    ap.add_argument("--out", default=GOLDEN, help="golden folder")
    args = ap.parse_args()
    reader = gguf.GGUFReader(args.model)
    name = {"smollm": "smollm2", "qwen2": "qwen2"}[read_field(reader, "tokenizer.ggml.pre")]
    write_tokens(tokenizer_from_gguf(reader), os.path.join(args.out, f"tokens_{name}.tsv"))
    write_splits(os.path.join(args.out, "pretok_splits.tsv"))


if __name__ == "__main__":
    main()
