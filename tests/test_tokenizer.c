/* Tokenizer tests.
 *
 * Expected ids come from tokenizers outside this project:
 *   golden/tokens_smollm2.tsv  SmolLM2's byte-level BPE, encoded by the
 *                              Hugging Face `tokenizers` library
 *                              (reference/make_token_golden.py)
 *   golden/tokens_qwen2.tsv    Qwen2's (pre-tokenizer qwen2, NFC), the same
 *                              way; checked when the Qwen model is there
 *   golden/pretok_splits.tsv   word splits of the four pre-tokenizer regexes
 *                              by the same library's regex engine
 *   spm_tiny.gguf (made in the build folder) + golden/tokens_spm.tsv
 *                              a small SentencePiece vocabulary and its ids
 *                              (reference/make_spm_fixture.py)
 * Small vocabularies built in memory check merge priority and the errors
 * for metadata this build cannot use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "gguf.h"
#include "gguf_builder.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"

#define GOLDEN(name) FASA_TEST_DIR "/golden/" name
#define MAX_IDS 4096

/* ---- golden files -------------------------------------------------------- */

/* One line of a golden TSV file, split into fields in place. */
typedef struct golden_line {
    char *field[6];
    int n_fields;
} golden_line;

typedef struct golden_file {
    char *data;
    golden_line *lines;
    int n_lines;
} golden_file;

static void golden_load(const char *path, int n_fields, golden_file *gf) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open golden file %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    gf->data = malloc((size_t)size + 1);
    assert_non_null(gf->data);
    assert_int_equal(fread(gf->data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    gf->data[size] = '\0';
    size_t n_lines = 1;
    for (long i = 0; i < size; i++) n_lines += gf->data[i] == '\n';
    gf->lines = calloc(n_lines, sizeof *gf->lines);
    assert_non_null(gf->lines);
    gf->n_lines = 0;
    for (char *line = strtok(gf->data, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        golden_line *gl = &gf->lines[gf->n_lines++];
        /* strsep keeps empty fields (an empty input, an empty id list). */
        char *rest = line;
        while (rest && gl->n_fields < 6) gl->field[gl->n_fields++] = strsep(&rest, "\t");
        if (gl->n_fields != n_fields)
            fail_msg("%s: line '%.40s' has %d fields, expected %d", path, gl->field[0],
                     gl->n_fields, n_fields);
    }
}

static void golden_free(golden_file *gf) {
    free(gf->data);
    free(gf->lines);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    fail_msg("bad hex digit '%c' in golden file", c);
    return 0;
}

/* Decodes hex in place; returns the byte count. */
static size_t unhex(char *s) {
    size_t n = strlen(s);
    assert_int_equal(n % 2, 0);
    for (size_t i = 0; i < n / 2; i++)
        s[i] = (char)(hex_digit(s[2 * i]) * 16 + hex_digit(s[2 * i + 1]));
    return n / 2;
}

static int32_t parse_ints(const char *s, int32_t *out, int32_t cap) {
    int32_t n = 0;
    char *end;
    for (long v = strtol(s, &end, 10); end != s; v = strtol(s, &end, 10)) {
        assert_true(n < cap);
        out[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

static void assert_ids_equal(const char *name, const int32_t *got, int32_t n_got,
                             const int32_t *want, int32_t n_want) {
    for (int32_t i = 0; i < n_got && i < n_want; i++)
        if (got[i] != want[i])
            fail_msg("%s: id %d is %d, expected %d", name, i, got[i], want[i]);
    if (n_got != n_want) fail_msg("%s: %d ids, expected %d", name, n_got, n_want);
}

/* The concatenated pieces of ids (control tokens included) must give back
 * `want`, less the bytes the vocabulary has no token for (they are dropped,
 * see control_chars in the golden file). */
static void assert_round_trip(const fasa_tokenizer *t, const char *name, const int32_t *ids,
                              int32_t n, const char *input, size_t input_len) {
    /* A normalising tokenizer gives back the input's NFC form. */
    utf8proc_uint8_t *nfc = NULL;
    if (t->nfc) {
        const utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)input, (utf8proc_ssize_t)input_len, &nfc,
                                                UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        assert_true(k >= 0);
        input = (const char *)nfc;
        input_len = (size_t)k;
    }
    char *want = malloc(input_len + 1);
    assert_non_null(want);
    size_t want_len = 0;
    for (size_t i = 0; i < input_len; i++)
        if (t->byte_id[(uint8_t)input[i]] >= 0) want[want_len++] = input[i];
    free(nfc);
    size_t cap = want_len + 64, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int32_t i = 0; i < n; i++) {
        char piece[256];
        int32_t k = tokenizer_piece(t, ids[i], true, piece, sizeof piece);
        assert_true(k >= 0);
        if (len + (size_t)k > cap) fail_msg("%s: decoded text is longer than the input", name);
        memcpy(text + len, piece, (size_t)k);
        len += (size_t)k;
    }
    if (len != want_len || memcmp(text, want, len) != 0)
        fail_msg("%s: decoded text differs from the input (%zu vs %zu bytes)", name, len,
                 want_len);
    free(text);
    free(want);
}

/* ---- fixtures ------------------------------------------------------------ */

static fasa_tokenizer *load_tokenizer(const char *path) {
    gguf_file *g = NULL;
    if (fasa_gguf_open(path, &g)) fail_msg("%s", fasa_last_error());
    fasa_tokenizer *t = NULL;
    if (tokenizer_init(g, &t)) fail_msg("%s", fasa_last_error());
    fasa_gguf_close(g); /* the tokenizer keeps copies */
    return t;
}

static int setup_smollm2(void **state) {
    *state = load_tokenizer(FASA_TEST_MODEL);
    return 0;
}

static int teardown(void **state) {
    tokenizer_free(*state);
    return 0;
}

static int32_t encode(const fasa_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool special, int32_t *ids) {
    int32_t n = -1;
    if (tokenizer_encode(t, text, len, add_bos, special, ids, MAX_IDS, &n))
        fail_msg("encode failed: %s", fasa_last_error());
    return n;
}

/* ---- SmolLM2 (byte-level BPE, pre-tokenizer "smollm") --------------------- */

static void test_smollm2_metadata(void **state) {
    const fasa_tokenizer *t = *state;
    assert_int_equal(tokenizer_n_vocab(t), 49152);
    assert_int_equal(tokenizer_bos(t), 1);
    assert_int_equal(tokenizer_eos(t), 2);
    assert_false(tokenizer_add_bos(t));
    assert_true(tokenizer_is_eog(t, 2));  /* <|im_end|> and eos */
    assert_true(tokenizer_is_eog(t, 0));  /* <|endoftext|> */
    assert_false(tokenizer_is_eog(t, 1)); /* <|im_start|> */
    assert_false(tokenizer_is_eog(t, 1000));
    assert_int_equal(tokenizer_find(t, "<|im_start|>"), 1);
    assert_int_equal(tokenizer_find(t, "<|im_end|>"), 2);
    assert_int_equal(tokenizer_find(t, "no-such-token-in-the-vocabulary"), -1);
    assert_int_equal(tokenizer_find(t, ""), -1);
}

static void check_token_golden(const fasa_tokenizer *t, const char *path) {
    golden_file gf = {0};
    golden_load(path, 4, &gf);
    assert_true(gf.n_lines >= 40);
    int32_t ids[MAX_IDS], want[MAX_IDS];
    for (int i = 0; i < gf.n_lines; i++) {
        char **f = gf.lines[i].field;
        size_t len = unhex(f[1]);
        bool special = f[2][0] == '1';
        int32_t n = encode(t, f[1], len, false, special, ids);
        assert_ids_equal(f[0], ids, n, want, parse_ints(f[3], want, MAX_IDS));
        assert_round_trip(t, f[0], ids, n, f[1], len);
    }
    golden_free(&gf);
}

static void test_smollm2_golden(void **state) { check_token_golden(*state, GOLDEN("tokens_smollm2.tsv")); }

/* Qwen2's tokenizer (pre-tokenizer qwen2, NFC, user-defined tokens), when
 * the model has been fetched (scripts/fetch-model.sh qwen2.5-coder-1.5b). */
static void test_qwen2_golden(void **state) {
    (void)state;
    FILE *f = fopen(FASA_QWEN_MODEL, "rb");
    if (!f) {
        print_message("skipped: %s is not there\n", FASA_QWEN_MODEL);
        skip();
    }
    fclose(f);
    fasa_tokenizer *t = load_tokenizer(FASA_QWEN_MODEL);
    assert_int_equal(tokenizer_n_vocab(t), 151936);
    assert_true(t->nfc && t->pre == TOK_PRE_QWEN2);
    assert_true(tokenizer_is_eog(t, 151645)); /* <|im_end|> */
    check_token_golden(t, GOLDEN("tokens_qwen2.tsv"));
    tokenizer_free(t);
}

/* The reference cannot take invalid UTF-8, so these check only that every
 * byte survives: each bad byte is a character of its own. */
static void test_smollm2_invalid_utf8(void **state) {
    const fasa_tokenizer *t = *state;
#define BYTES(s) {s, sizeof(s) - 1}
    static const struct {
        const char *text;
        size_t len;
    } cases[] = {
        BYTES("\xc3"),                     /* truncated 2-byte sequence */
        BYTES("abc\x80\x80" "def"),        /* stray continuation bytes */
        BYTES("\xed\xa0\x80 surrogate"),   /* UTF-16 surrogate */
        BYTES("\xf0\x9f\x98 cut emoji"),   /* truncated 4-byte sequence */
        BYTES("\xc0\xaf overlong"),        /* overlong '/' */
        BYTES("12\xff" "34 \xfe\xfe  x\xf8"),
        BYTES("<|im_\xffstart|>"),
        BYTES("\0nul\0"),
    };
#undef BYTES
    int32_t ids[MAX_IDS];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t n = encode(t, cases[c].text, cases[c].len, false, true, ids);
        assert_true(n > 0);
        assert_round_trip(t, "invalid UTF-8", ids, n, cases[c].text, cases[c].len);
    }
    char all[256];
    for (int b = 0; b < 256; b++) all[b] = (char)b;
    int32_t n = encode(t, all, sizeof all, false, false, ids);
    assert_round_trip(t, "all bytes", ids, n, all, sizeof all);
    /* 0xFF has no token ("\xc3\xbf" is absent) and the unknown token is
     * the control token <|endoftext|>, which must not appear mid-text. */
    assert_int_equal(tokenizer_find(t, "\xc3\xbf"), -1);
    assert_int_equal(encode(t, "\xff", 1, false, false, ids), 0);
    assert_int_equal(encode(t, "x\xff\xffy", 4, false, false, ids), 2);
    assert_true(ids[0] != 0 && ids[1] != 0);
    /* Most bytes of the table do have a token. */
    int spellable = 0;
    for (int b = 0; b < 256; b++) spellable += t->byte_id[b] >= 0;
    assert_true(spellable >= 230);
}

static void test_smollm2_capacity(void **state) {
    const fasa_tokenizer *t = *state;
    const char *text = "Hello world, this is a test of the buffer size.";
    int32_t full[MAX_IDS], part[4] = {-1, -1, -1, -1}, n = -1;
    int32_t n_full = encode(t, text, strlen(text), false, false, full);
    assert_true(n_full > 4);

    assert_int_equal(tokenizer_encode(t, text, strlen(text), false, false, NULL, 0, &n),
                     FASA_E_ARG);
    assert_int_equal(n, n_full);
    n = -1;
    assert_int_equal(tokenizer_encode(t, text, strlen(text), false, false, part, 3, &n),
                     FASA_E_ARG);
    assert_int_equal(n, n_full);
    assert_memory_equal(part, full, 3 * sizeof *part);
    assert_int_equal(part[3], -1); /* nothing written past cap */
    assert_int_equal(tokenizer_encode(t, text, strlen(text), false, false, full, n_full, &n),
                     FASA_OK);
    assert_int_equal(n, n_full);
    assert_int_equal(tokenizer_encode(t, "", 0, false, false, NULL, 0, &n), FASA_OK);
    assert_int_equal(n, 0);
}

/* A text over 4 KiB goes through the encoder's word cache; with thousands
 * of distinct words of one length, cache slots are shared. Every word must
 * still come out as it does alone. */
static void test_smollm2_word_cache(void **state) {
    const fasa_tokenizer *t = *state;
    enum { N_WORDS = 26 * 26 * 26, WORD = 4 };
    char *text = malloc(N_WORDS * WORD);
    int32_t *whole = malloc(N_WORDS * 4 * sizeof *whole), alone[16];
    assert_non_null(text);
    assert_non_null(whole);
    for (int i = 0; i < N_WORDS; i++) {
        char *w = text + i * WORD;
        w[0] = ' ';
        w[1] = (char)('a' + i / 676);
        w[2] = (char)('a' + i / 26 % 26);
        w[3] = (char)('a' + i % 26);
    }
    int32_t n_whole = -1, n_alone, k = 0;
    assert_int_equal(tokenizer_encode(t, text, N_WORDS * WORD, false, false, whole,
                                      N_WORDS * 4, &n_whole), FASA_OK);
    for (int i = 0; i < N_WORDS; i++) {
        assert_int_equal(tokenizer_encode(t, text + i * WORD, WORD, false, false, alone, 16,
                                          &n_alone), FASA_OK);
        assert_true(k + n_alone <= n_whole);
        if (memcmp(whole + k, alone, (size_t)n_alone * sizeof *alone) != 0)
            fail_msg("word '%.*s' encodes differently inside the long text", WORD,
                     text + i * WORD);
        k += n_alone;
    }
    assert_int_equal(k, n_whole);
    free(text);
    free(whole);
}

static void test_smollm2_add_bos(void **state) {
    const fasa_tokenizer *t = *state;
    int32_t plain[MAX_IDS], with_bos[MAX_IDS];
    int32_t n = encode(t, "Hi there", 8, false, false, plain);
    assert_int_equal(encode(t, "Hi there", 8, true, false, with_bos), n + 1);
    assert_int_equal(with_bos[0], 1);
    assert_memory_equal(with_bos + 1, plain, (size_t)n * sizeof *plain);
    assert_int_equal(encode(t, "", 0, true, false, with_bos), 1);
}

static void test_smollm2_pieces(void **state) {
    const fasa_tokenizer *t = *state;
    char buf[64];
    /* Control tokens show their text only when asked to. */
    assert_int_equal(tokenizer_piece(t, 2, false, buf, sizeof buf), 0);
    assert_int_equal(tokenizer_piece(t, 2, true, buf, sizeof buf), 10);
    assert_memory_equal(buf, "<|im_end|>", 10);
    /* "\u0120the" is " the" with GPT-2's byte mapping undone. */
    int32_t the = tokenizer_find(t, "\xc4\xa0the");
    assert_true(the > 16);
    assert_int_equal(tokenizer_piece(t, the, false, buf, sizeof buf), 4);
    assert_memory_equal(buf, " the", 4);
    assert_int_equal(tokenizer_piece(t, the, false, buf, 2), 2); /* truncated to cap */
    assert_memory_equal(buf, " t", 2);
    /* "\u010a" is the newline byte. */
    int32_t nl = tokenizer_find(t, "\xc4\x8a");
    assert_true(nl >= 0);
    assert_int_equal(tokenizer_piece(t, nl, false, buf, sizeof buf), 1);
    assert_int_equal(buf[0], '\n');
    assert_int_equal(tokenizer_piece(t, -1, true, buf, sizeof buf), -1);
    assert_int_equal(tokenizer_piece(t, 49152, true, buf, sizeof buf), -1);
}

/* ---- pre-tokenizers ------------------------------------------------------ */

typedef struct split_list {
    int32_t len[MAX_IDS];
    int32_t n;
} split_list;

static fasa_status collect_split(void *ctx, size_t start, size_t end) {
    split_list *s = ctx;
    assert_true(s->n < MAX_IDS);
    s->len[s->n++] = (int32_t)(end - start);
    return FASA_OK;
}

static tok_pre pre_named(const char *name) {
    if (strcmp(name, "gpt2") == 0) return TOK_PRE_GPT2;
    if (strcmp(name, "smollm") == 0) return TOK_PRE_SMOLLM;
    if (strcmp(name, "qwen2") == 0) return TOK_PRE_QWEN2;
    if (strcmp(name, "llama-bpe") != 0) fail_msg("unknown pre-tokenizer '%s'", name);
    return TOK_PRE_LLAMA3;
}

static void test_pretokenizer_golden(void **state) {
    (void)state;
    golden_file gf = {0};
    golden_load(GOLDEN("pretok_splits.tsv"), 4, &gf);
    int seen[4] = {0};
    for (int i = 0; i < gf.n_lines; i++) {
        char **f = gf.lines[i].field;
        tok_pre pre = pre_named(f[1]);
        seen[pre]++;
        size_t len = unhex(f[2]);
        split_list got = {0};
        int32_t want[MAX_IDS];
        assert_int_equal(tokenizer_pretokenize(pre, f[2], len, collect_split, &got), FASA_OK);
        char name[96];
        snprintf(name, sizeof name, "%s (%s)", f[0], f[1]);
        assert_ids_equal(name, got.len, got.n, want, parse_ints(f[3], want, MAX_IDS));
    }
    for (int p = 0; p < 4; p++) assert_true(seen[p] >= 30);
    golden_free(&gf);
}

/* ---- SentencePiece ------------------------------------------------------- */

static void test_spm_golden(void **state) {
    (void)state;
    fasa_tokenizer *t = load_tokenizer(FASA_SPM_FIXTURE); /* made by the make_spm_fixture test */
    assert_true(tokenizer_add_bos(t));
    assert_int_equal(tokenizer_bos(t), 1);
    assert_int_equal(tokenizer_eos(t), 2);
    assert_true(tokenizer_is_eog(t, 2));
    golden_file gf = {0};
    golden_load(GOLDEN("tokens_spm.tsv"), 5, &gf);
    assert_true(gf.n_lines >= 15);
    int32_t ids[MAX_IDS], want[MAX_IDS];
    char *spaced = malloc(MAX_IDS + 1);
    for (int i = 0; i < gf.n_lines; i++) {
        char **f = gf.lines[i].field;
        size_t len = unhex(f[1]);
        bool special = f[2][0] == '1', add_bos = f[3][0] == '1';
        int32_t n = encode(t, f[1], len, add_bos, special, ids);
        assert_ids_equal(f[0], ids, n, want, parse_ints(f[4], want, MAX_IDS));
        /* Plain text decodes to itself behind the added leading space. */
        if (special || add_bos || len == 0 || memmem(f[1], len, "<|sep|>", 7)) continue;
        assert_true(len < MAX_IDS);
        spaced[0] = ' ';
        memcpy(spaced + 1, f[1], len);
        assert_round_trip(t, f[0], ids, n, spaced, len + 1);
    }
    /* Bytes outside the vocabulary, valid or not, fall back to <0xXX>. */
    const char bad[] = "\xff\xfe q\xc3";
    int32_t n = encode(t, bad, 6, false, false, ids);
    assert_round_trip(t, "SPM invalid UTF-8", ids, n, " \xff\xfe q\xc3", 7);
    assert_int_equal(ids[1], 3 + 0xff); /* <0xFF> */
    free(spaced);
    golden_free(&gf);
    tokenizer_free(t);
}

/* ---- small vocabularies built in memory ----------------------------------- */

/* A GGUF holding only tokenizer metadata. Any of the optional parts may be
 * left out (NULL / negative) to test what is missing. */
typedef struct tiny_vocab {
    const char *model;
    const char *pre;
    const char *const *tokens;
    int n_tokens;
    const int32_t *types;
    int n_types;
    const char *const *merges;
    int n_merges;
    int64_t bos;
} tiny_vocab;

static fasa_status tiny_init(const tiny_vocab *v, fasa_tokenizer **t) {
    gguf_builder b = {0};
    uint64_t n_kv = 2 + (v->pre != NULL) + (v->types != NULL) + (v->merges != NULL) + (v->bos >= 0);
    gb_header(&b, 3, 0, n_kv);
    gb_kv_str(&b, "tokenizer.ggml.model", v->model);
    if (v->pre) gb_kv_str(&b, "tokenizer.ggml.pre", v->pre);
    gb_arr(&b, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, (uint64_t)v->n_tokens);
    for (int i = 0; i < v->n_tokens; i++) gb_str(&b, v->tokens[i]);
    if (v->types) {
        gb_arr(&b, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, (uint64_t)v->n_types);
        for (int i = 0; i < v->n_types; i++) gb_u32(&b, (uint32_t)v->types[i]);
    }
    if (v->merges) {
        gb_arr(&b, "tokenizer.ggml.merges", GGUF_TYPE_STRING, (uint64_t)v->n_merges);
        for (int i = 0; i < v->n_merges; i++) gb_str(&b, v->merges[i]);
    }
    if (v->bos >= 0) gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    gguf_file *g = NULL;
    fasa_status st = fasa_gguf_open_buffer(b.data, b.len, &g);
    if (st) fail_msg("test GGUF does not parse: %s", fasa_last_error());
    st = tokenizer_init(g, t);
    fasa_gguf_close(g);
    gb_free(&b);
    return st;
}

/* "ba" is in the vocabulary, but no merge builds it. */
static const char *const abc_tokens[] = {"a", "b", "aa", "ab", "aab", "<ctl>", "ba"};
static const int32_t abc_types[] = {1, 1, 1, 1, 1, 3, 1};
static const char *const abc_merges[] = {"a a", "a b", "aa b"};

static tiny_vocab abc_vocab(void) {
    return (tiny_vocab){"gpt2", "default", abc_tokens, 7, abc_types, 7, abc_merges, 3, -1};
}

/* Lowest rank merges first wherever it is; equal ranks go left to right. */
static void test_bpe_merge_order(void **state) {
    (void)state;
    tiny_vocab v = abc_vocab();
    fasa_tokenizer *t;
    assert_int_equal(tiny_init(&v, &t), FASA_OK);
    static const struct {
        const char *text;
        int32_t ids[4];
        int32_t n;
    } cases[] = {
        {"aaa", {2, 0}, 2},        /* a a a -> aa a, not a aa */
        {"aaaa", {2, 2}, 2},
        {"aab", {4}, 1},           /* a a b -> aa b -> aab, not a ab */
        {"abaa", {3, 2}, 2},       /* a b aa -> ab aa */
        {"b<ctl>a", {1, 5, 0}, 3}, /* with parse_special */
    };
    int32_t ids[MAX_IDS];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t n = encode(t, cases[c].text, strlen(cases[c].text), false, true, ids);
        assert_ids_equal(cases[c].text, ids, n, cases[c].ids, cases[c].n);
    }
    /* Without parse_special the text "<ctl>" is plain, and no byte of it
     * has a token here (nor is there an unknown token): it is dropped. */
    int32_t n = encode(t, "a<ctl>b", 7, false, false, ids);
    assert_ids_equal("a<ctl>b", ids, n, (const int32_t[]){0, 1}, 2);
    /* No BOS in this vocabulary. */
    assert_int_equal(tokenizer_bos(t), -1);
    assert_int_equal(tokenizer_encode(t, "a", 1, true, false, ids, MAX_IDS, &n), FASA_E_ARG);
    n = encode(t, "ba", 2, false, false, ids);
    assert_ids_equal("ba", ids, n, (const int32_t[]){1, 0}, 2);
    tokenizer_free(t);

    /* Llama 3 takes a word found whole in the vocabulary as it is. */
    v.pre = "llama-bpe";
    assert_int_equal(tiny_init(&v, &t), FASA_OK);
    n = encode(t, "ba", 2, false, false, ids);
    assert_ids_equal("ba (llama-bpe)", ids, n, (const int32_t[]){6}, 1);
    n = encode(t, "aaa", 3, false, false, ids);
    assert_ids_equal("aaa (llama-bpe)", ids, n, (const int32_t[]){2, 0}, 2);
    tokenizer_free(t);
}

static void expect_init_error(const tiny_vocab *v, fasa_status want, const char *in_message) {
    fasa_tokenizer *t = (fasa_tokenizer *)1;
    fasa_status st = tiny_init(v, &t);
    if (st != want) fail_msg("init gave %d, expected %d (%s)", st, want, fasa_last_error());
    assert_null(t);
    if (!strstr(fasa_last_error(), in_message))
        fail_msg("message '%s' does not mention '%s'", fasa_last_error(), in_message);
}

static void test_bad_metadata(void **state) {
    (void)state;
    tiny_vocab v = abc_vocab();
    v.model = "bert";
    expect_init_error(&v, FASA_E_UNSUPPORTED, "'bert'");
    v = abc_vocab();
    v.pre = "deepseek-llm";
    expect_init_error(&v, FASA_E_UNSUPPORTED, "'deepseek-llm'");
    v = abc_vocab();
    v.n_types = 6;
    expect_init_error(&v, FASA_E_FORMAT, "token_type");
    v = abc_vocab();
    v.merges = NULL;
    expect_init_error(&v, FASA_E_FORMAT, "tokenizer.ggml.merges");
    v = abc_vocab();
    v.merges = (const char *const[]){"a a", "ab"};
    v.n_merges = 2;
    expect_init_error(&v, FASA_E_FORMAT, "merges[1]");
    v = abc_vocab();
    v.bos = 7;
    expect_init_error(&v, FASA_E_FORMAT, "bos_token_id");
    v = abc_vocab();
    v.n_tokens = 0;
    v.types = NULL;
    expect_init_error(&v, FASA_E_FORMAT, "tokenizer.ggml.tokens");
}

int main(void) {
    const struct CMUnitTest smollm2[] = {
        cmocka_unit_test(test_smollm2_metadata),
        cmocka_unit_test(test_smollm2_golden),
        cmocka_unit_test(test_smollm2_invalid_utf8),
        cmocka_unit_test(test_smollm2_capacity),
        cmocka_unit_test(test_smollm2_word_cache),
        cmocka_unit_test(test_smollm2_add_bos),
        cmocka_unit_test(test_smollm2_pieces),
    };
    const struct CMUnitTest other[] = {
        cmocka_unit_test(test_pretokenizer_golden),
        cmocka_unit_test(test_qwen2_golden),
        cmocka_unit_test(test_spm_golden),
        cmocka_unit_test(test_bpe_merge_order),
        cmocka_unit_test(test_bad_metadata),
    };
    int failed = cmocka_run_group_tests_name("tokenizer_smollm2", smollm2, setup_smollm2, teardown);
    failed += cmocka_run_group_tests_name("tokenizer", other, NULL, NULL);
    return failed;
}
