/* libFuzzer target for tokenizer_encode on arbitrary bytes, with two
 * vocabularies: the default model's byte-level BPE and the tiny
 * SentencePiece vocabulary that tests/reference/make_spm_fixture.py makes.
 * The first input byte picks the vocabulary (bit 0), parse_special (bit 1)
 * and add_bos (bit 2); the rest is the text.
 *
 * Each input is encoded, every id is checked to be in the vocabulary and
 * decoded back with tokenizer_piece, and the pieces must spell the text.
 * Encoding loses nothing but the bytes the vocabulary cannot spell: SmolLM2
 * has no token for 21 bytes, among them the controls 0x04 0x06 0x13 0x14
 * 0x16 0x1D and the UTF-8 lead bytes 0xF1 0xF2, and no unknown token to
 * stand in, so they are dropped, as the reference tokenizer drops them.
 * This holds for invalid UTF-8 too: both models fall back to one symbol
 * per byte.
 *
 * The expected text is built here independently: the input cut at special
 * tokens (longest match first; control tokens only with parse_special,
 * user-defined ones always), each stretch between them spelled as is (BPE;
 * in Unicode NFC when the vocabulary asks for it and the stretch is valid
 * UTF-8) or with one space in front (SentencePiece's add_space_prefix), each
 * special token as its text. SentencePiece pieces show U+2581 as a space, so
 * that comparison treats the two as equal. A too-small id buffer must report
 * the full count.
 *
 * The vocabularies come from FASA_FUZZ_MODEL and FASA_FUZZ_SPM (environment,
 * else the paths compiled in). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "gguf.h"
#include "tokenizer_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fasa_tokenizer *vocab[2]; /* 0: byte-level BPE, 1: SentencePiece */
static int32_t *specials[2];      /* ids of the tokens matched in the text */
static int32_t n_specials[2];

/* A growing byte string. */
typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes;

static void die(const char *what) {
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

static void put(bytes *b, const char *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n) + 64;
        if (!(b->p = realloc(b->p, b->cap))) die("out of memory");
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}

static fasa_tokenizer *load(const char *env, const char *dflt, const char *what) {
    const char *path = getenv(env) ? getenv(env) : dflt;
    gguf_file *g = NULL;
    fasa_tokenizer *t = NULL;
    if (fasa_gguf_open(path, &g) != FASA_OK || tokenizer_init(g, &t) != FASA_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the %s vocabulary from '%s': %s\n(set %s, or make it: see "
                "tests/fuzz/README.md)\n", what, path, fasa_last_error(), env);
        exit(1);
    }
    fasa_gguf_close(g);
    return t;
}

/* The oracle below assumes a byte either has its own token spelling it or
 * is dropped; a vocabulary with an unknown token standing in for missing
 * bytes would need another rule. */
static void check_byte_tokens(const fasa_tokenizer *t, bool spm) {
    for (int b = 0; b < 256; b++) {
        char piece[8];
        const int32_t id = t->byte_id[b];
        if (id < 0 && spm) die("the SentencePiece fixture lacks a byte token");
        if (id >= 0 && (tokenizer_piece(t, id, true, piece, sizeof piece) != 1 || (uint8_t)piece[0] != b))
            die("a byte's token does not spell that byte");
    }
}

/* Control, unknown and user-defined tokens with some text. */
static void list_specials(int which) {
    const fasa_tokenizer *t = vocab[which];
    if (!(specials[which] = malloc((size_t)t->n_vocab * sizeof *specials[which]))) die("out of memory");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const uint8_t ty = t->type[id];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_USER_DEFINED) &&
            t->text_off[id + 1] > t->text_off[id])
            specials[which][n_specials[which]++] = id;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    vocab[0] = load("FASA_FUZZ_MODEL", FASA_FUZZ_MODEL, "byte-level BPE");
    vocab[1] = load("FASA_FUZZ_SPM", FASA_FUZZ_SPM, "SentencePiece");
    if (vocab[0]->model != TOK_MODEL_BPE || vocab[1]->model != TOK_MODEL_SPM)
        die("FASA_FUZZ_MODEL must be a byte-level BPE vocabulary and FASA_FUZZ_SPM a SentencePiece one");
    check_byte_tokens(vocab[0], false);
    check_byte_tokens(vocab[1], true);
    list_specials(0);
    list_specials(1);
    return 0;
}

/* The longest special token at s[0 .. n) that the mode lets match, or -1. */
static int32_t special_at(const fasa_tokenizer *t, const char *s, size_t n, bool parse_special, size_t *len) {
    const int which = t == vocab[1];
    int32_t best = -1;
    *len = 0;
    for (int32_t k = 0; k < n_specials[which]; k++) {
        const int32_t id = specials[which][k];
        const size_t m = t->text_off[id + 1] - t->text_off[id];
        const bool matchable = parse_special || t->type[id] == TOK_TYPE_USER_DEFINED;
        if (matchable && m > *len && m <= n && !memcmp(s, t->text + t->text_off[id], m)) best = id, *len = m;
    }
    return best;
}

static void put_stretch(const fasa_tokenizer *t, const char *s, size_t n, bytes *out) {
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t k = -1;
    if (t->nfc && n && (k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                         UTF8PROC_STABLE | UTF8PROC_COMPOSE)) >= 0)
        s = (const char *)nfc, n = (size_t)k;
    if (n && t->add_space_prefix) put(out, " ", 1);
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[(uint8_t)s[i]] >= 0) put(out, s + i, 1);
    free(nfc);
}

/* What the pieces must spell, from the rules in the header comment. */
static void expected_text(const fasa_tokenizer *t, const char *s, size_t n, bool parse_special, bytes *out) {
    size_t start = 0, len;
    for (size_t pos = 0; pos < n;) {
        if (special_at(t, s + pos, n - pos, parse_special, &len) < 0) {
            pos++;
            continue;
        }
        put_stretch(t, s + start, pos - start, out);
        put(out, s + pos, len);
        start = pos += len;
    }
    put_stretch(t, s + start, n - start, out);
}

/* SentencePiece's space mark U+2581 read as a space, in place. */
static void spaces_as_marks(bytes *b) {
    size_t w = 0;
    for (size_t i = 0; i < b->n; i++) {
        const bool mark = i + 3 <= b->n && !memcmp(b->p + i, "\xE2\x96\x81", 3);
        b->p[w++] = mark ? ' ' : b->p[i];
        i += mark ? 2 : 0;
    }
    b->n = w;
}

/* Where the decoded text first differs from the expected one, in hex. */
static void report_difference(const bytes *got, const bytes *want) {
    size_t i = 0;
    while (i < got->n && i < want->n && got->p[i] == want->p[i]) i++;
    fprintf(stderr, "pieces: %zu bytes, expected: %zu; first difference at byte %zu\n", got->n, want->n, i);
    const bytes *side[2] = {got, want};
    for (int k = 0; k < 2; k++) {
        fprintf(stderr, "%s", k ? "expected:" : "pieces:  ");
        for (size_t j = i > 8 ? i - 8 : 0; j < side[k]->n && j < i + 8; j++)
            fprintf(stderr, "%s%02x", j == i ? " [" : " ", (uint8_t)side[k]->p[j]);
        fprintf(stderr, "\n");
    }
}

/* Encodes twice: once to learn the count, once for the ids; then once more
 * into half the room, which must fail with the same count and prefix. */
static int32_t *encode(const fasa_tokenizer *t, const char *s, size_t n, bool bos, bool special, int32_t *n_ids) {
    fasa_status st = tokenizer_encode(t, s, n, bos, special, NULL, 0, n_ids);
    if (bos && t->bos < 0) {
        if (st != FASA_E_ARG) die("BOS requested without a BOS token must fail");
        return NULL;
    }
    if (st != (*n_ids ? FASA_E_ARG : FASA_OK)) die(fasa_last_error());
    int32_t *ids = malloc(((size_t)*n_ids + 1) * sizeof *ids), again;
    if (!ids) die("out of memory");
    if (tokenizer_encode(t, s, n, bos, special, ids, *n_ids, &again) != FASA_OK || again != *n_ids)
        die("encoding into a buffer of the reported size failed");
    const int32_t half = *n_ids / 2;
    int32_t *part = malloc(((size_t)half + 1) * sizeof *part);
    if (!part) die("out of memory");
    st = tokenizer_encode(t, s, n, bos, special, part, half, &again);
    if (half && (st != FASA_E_ARG || again != *n_ids || memcmp(part, ids, (size_t)half * sizeof *ids)))
        die("a short buffer must fail with the full count and hold the first ids");
    free(part);
    return ids;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t mode = size ? data[0] : 0;
    const fasa_tokenizer *t = vocab[mode & 1];
    const bool special = mode & 2, bos = mode & 4;
    const char *s = size ? (const char *)data + 1 : "";
    const size_t n = size ? size - 1 : 0;
    int32_t n_ids;
    int32_t *ids = encode(t, s, n, bos, special, &n_ids);
    if (!ids) return 0;
    if (bos && (n_ids < 1 || ids[0] != t->bos)) die("BOS missing");
    bytes got = {0}, want = {0};
    char piece[4096];
    for (int32_t i = bos; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) die("an id outside the vocabulary");
        const int32_t k = tokenizer_piece(t, ids[i], true, piece, sizeof piece);
        if (k < 0 || k >= (int32_t)sizeof piece) die("a piece that is invalid or too long to check");
        put(&got, piece, (size_t)k);
    }
    expected_text(t, s, n, special, &want);
    if (t->model == TOK_MODEL_SPM) spaces_as_marks(&got), spaces_as_marks(&want);
    if (got.n != want.n || (got.n && memcmp(got.p, want.p, got.n))) {
        report_difference(&got, &want);
        die("the pieces do not spell the input");
    }
    free(got.p);
    free(want.p);
    free(ids);
    return 0;
}
