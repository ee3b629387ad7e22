/* Byte-level BPE (GGUF tokenizer model "gpt2").
 *
 * The vocabulary spells every byte as a printable character (GPT-2's
 * bytes-to-unicode table: the 188 printable Latin-1 bytes stand for
 * themselves, the other 68 are moved to U+0100..U+0143), so a token string
 * such as "Ġthe" means the bytes " the". Text is cut into words by a
 * pre-tokenizer regex, each word starts as one symbol per byte, and adjacent
 * symbols merge lowest merge rank first until no listed merge applies.
 *
 * The pre-tokenizer regexes are implemented by hand below: each is an
 * ordered list of alternatives, and trying them in order at the current
 * position gives exactly the leftmost-first match a backtracking regex
 * engine returns. Character classes come from utf8proc. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "tokenizer_internal.h"

/* ---- the byte <-> character table ---------------------------------------- */

static bool byte_is_printable(int32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* Non-printable bytes take U+0100 onwards in byte order: 0x00-0x20 first,
 * then 0x7F-0xA0, then 0xAD. */
static int32_t byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xA0) return 0x100 + 0x21 + (b - 0x7F);
    return 0x100 + 0x43; /* 0xAD */
}

static int cp_to_byte(int32_t cp) {
    if (cp < 0x100) return byte_is_printable(cp) ? cp : -1;
    int32_t k = cp - 0x100;
    if (k <= 0x20) return k;
    if (k < 0x43) return 0x7F + (k - 0x21);
    return k == 0x43 ? 0xAD : -1;
}

/* UTF-8 of a mapped byte: every mapped code point is below U+0800. */
static size_t put_mapped(uint8_t b, char *out) {
    int32_t cp = byte_to_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

int64_t tokenizer_bpe_unmap(const char *s, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        int b = k > 0 ? cp_to_byte(cp) : -1;
        if (b < 0) return -1;
        out[n++] = (char)b;
        i += (size_t)k;
    }
    return (int64_t)n;
}

/* ---- characters ---------------------------------------------------------- */

enum { CH_OTHER, CH_LETTER, CH_NUMBER, CH_SPACE, CH_NONE };

typedef struct tok_char {
    int32_t cp; /* -1 for a byte that is not valid UTF-8 */
    uint32_t len;
    int cls;
} tok_char;

/* \p{L}, \p{N}, and \s as Unicode's White_Space property (Z* plus the
 * controls TAB..CR and NEL), which is what the reference regex engines use. */
static int char_class(int32_t cp) {
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return CH_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return CH_NUMBER;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: return CH_SPACE;
    default: return (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 ? CH_SPACE : CH_OTHER;
    }
}

/* The same classes for ASCII, without a table lookup: most text is ASCII. */
static int ascii_class(uint8_t b) {
    if ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') return CH_LETTER;
    if (b >= '0' && b <= '9') return CH_NUMBER;
    if (b == ' ' || (b >= 0x09 && b <= 0x0D)) return CH_SPACE;
    return CH_OTHER;
}

/* An invalid byte stands alone as an "other" character, like punctuation. */
static __attribute__((noinline)) tok_char char_decode(const uint8_t *s, size_t pos, size_t end) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(s + pos, (utf8proc_ssize_t)(end - pos), &cp);
    if (n <= 0) return (tok_char){-1, 1, CH_OTHER};
    return (tok_char){cp, (uint32_t)n, char_class(cp)};
}

/* Inlined so that the common ASCII case costs a few instructions. */
static inline tok_char char_at(const uint8_t *s, size_t pos, size_t end) {
    if (pos >= end) return (tok_char){-1, 0, CH_NONE};
    if (s[pos] < 0x80) return (tok_char){s[pos], 1, ascii_class(s[pos])};
    return char_decode(s, pos, end);
}

/* End of the run of `cls` characters from pos; *last gets the start of its
 * final character (pos if the run is empty). */
static size_t run_class(const uint8_t *s, size_t pos, size_t end, int cls, size_t *last) {
    size_t prev = pos;
    for (tok_char c; (c = char_at(s, pos, end)).cls == cls; pos += c.len) prev = pos;
    if (last) *last = prev;
    return pos;
}

/* \s+(?!\S)|\s+ : whitespace, but the last one of a run that a word follows
 * is left to prefix that word (" world"). */
static size_t space_run(const uint8_t *s, size_t pos, size_t end) {
    size_t last, e = run_class(s, pos, end, CH_SPACE, &last);
    return e == end || last == pos ? e : last;
}

/* 's 't 're 've 'm 'll 'd : bytes of the suffix after the apostrophe, or 0. */
static size_t contraction(const uint8_t *s, size_t pos, size_t end, bool fold_case) {
    int a = pos < end ? s[pos] : 0, b = pos + 1 < end ? s[pos + 1] : 0;
    /* Unicode case folding also maps U+017F (long s, C5 BF) to 's'. */
    if (fold_case && a == 0xC5 && b == 0xBF) return 2;
    if (fold_case) {
        a = a >= 'A' && a <= 'Z' ? a + 32 : a;
        b = b >= 'A' && b <= 'Z' ? b + 32 : b;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 1;
    if (((a == 'r' || a == 'v') && b == 'e') || (a == 'l' && b == 'l')) return 2;
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------ */

/* GPT-2:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * The three " ?X+" alternatives share one shape: an optional space, then a
 * run of one class. */
static size_t gpt2_word(const uint8_t *s, size_t pos, size_t end) {
    tok_char c = char_at(s, pos, end);
    size_t p1 = pos + c.len;
    if (c.cp == '\'') {
        size_t k = contraction(s, p1, end, false);
        if (k) return p1 + k;
    }
    if (c.cls != CH_SPACE) return run_class(s, p1, end, c.cls, NULL);
    tok_char n = char_at(s, p1, end);
    if (c.cp == ' ' && n.cls != CH_SPACE && n.cls != CH_NONE)
        return run_class(s, p1 + n.len, end, n.cls, NULL);
    return space_run(s, pos, end);
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t llama3_like_word(const uint8_t *s, size_t pos, size_t end, int max_digits) {
    tok_char c = char_at(s, pos, end);
    size_t p1 = pos + c.len;
    bool newline = c.cp == '\r' || c.cp == '\n';
    if (c.cp == '\'') {
        size_t k = contraction(s, p1, end, true);
        if (k) return p1 + k;
    }
    if (c.cls == CH_LETTER) return run_class(s, p1, end, CH_LETTER, NULL);
    tok_char n = char_at(s, p1, end);
    /* One leading non-letter, non-digit, non-newline character joins a word. */
    if (c.cls != CH_NUMBER && !newline && n.cls == CH_LETTER)
        return run_class(s, p1 + n.len, end, CH_LETTER, NULL);
    if (c.cls == CH_NUMBER) {
        size_t q = p1;
        for (int k = 1; k < max_digits; k++) {
            tok_char d = char_at(s, q, end);
            if (d.cls != CH_NUMBER) break;
            q += d.len;
        }
        return q;
    }
    size_t q = 0;
    if (c.cls == CH_OTHER)
        q = run_class(s, p1, end, CH_OTHER, NULL);
    else if (c.cp == ' ' && n.cls == CH_OTHER)
        q = run_class(s, p1 + n.len, end, CH_OTHER, NULL);
    if (q) {
        while (q < end && (s[q] == '\r' || s[q] == '\n')) q++;
        return q;
    }
    /* \s*[\r\n]+ : whitespace up to and including its last line break. */
    size_t e = pos, nl_end = 0;
    for (tok_char w; (w = char_at(s, e, end)).cls == CH_SPACE;) {
        e += w.len;
        if (w.cp == '\r' || w.cp == '\n') nl_end = e;
    }
    return nl_end ? nl_end : space_run(s, pos, end);
}

static size_t llama3_word(const uint8_t *s, size_t pos, size_t end) { return llama3_like_word(s, pos, end, 3); }
static size_t qwen2_word(const uint8_t *s, size_t pos, size_t end) { return llama3_like_word(s, pos, end, 1); }

typedef size_t (*word_end_fn)(const uint8_t *s, size_t pos, size_t end);

static fasa_status split_words(word_end_fn word_end, const uint8_t *s, size_t start, size_t end,
                               tok_word_fn word, void *ctx) {
    for (size_t pos = start; pos < end;) {
        size_t e = word_end(s, pos, end);
        fasa_status st = word(ctx, pos, e);
        if (st) return st;
        pos = e;
    }
    return FASA_OK;
}

fasa_status tokenizer_pretokenize(tok_pre pre, const char *text, size_t len, tok_word_fn word,
                                  void *ctx) {
    const uint8_t *s = (const uint8_t *)text;
    if (pre == TOK_PRE_LLAMA3) return split_words(llama3_word, s, 0, len, word, ctx);
    if (pre == TOK_PRE_QWEN2) return split_words(qwen2_word, s, 0, len, word, ctx);
    if (pre == TOK_PRE_GPT2) return split_words(gpt2_word, s, 0, len, word, ctx);
    /* SmolLM: every numeric character is a word of its own, and the GPT-2
     * regex runs on the stretches between them (so " 42" loses its space to
     * the text before). */
    size_t start = 0;
    for (size_t pos = 0; pos < len;) {
        tok_char c = char_at(s, pos, len);
        if (c.cls == CH_NUMBER) {
            fasa_status st = split_words(gpt2_word, s, start, pos, word, ctx);
            if (!st) st = word(ctx, pos, pos + c.len);
            if (st) return st;
            start = pos + c.len;
        }
        pos += c.len;
    }
    return split_words(gpt2_word, s, start, len, word, ctx);
}

/* ---- merges -------------------------------------------------------------- */

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static uint32_t pair_hash(uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32);
}

static const tok_merge *merge_find(const fasa_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    for (uint32_t i = pair_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge *m = &t->merge_slots[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
    }
}

/* A repeated pair keeps its first (best) rank. */
static void merge_insert(fasa_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = pair_key(a, b);
    uint32_t i = pair_hash(key) & t->merge_mask;
    for (; t->merge_slots[i].rank >= 0; i = (i + 1) & t->merge_mask)
        if (t->merge_slots[i].key == key) return;
    t->merge_slots[i] = (tok_merge){key, rank, id};
}

/* Each merge is "left right"; its rank is its index. A merge naming strings
 * outside the vocabulary can never apply and is dropped. */
static fasa_status read_merges(fasa_tokenizer *t, const gguf_file *g) {
    const gguf_kv *kv;
    fasa_status st = fasa_gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &kv);
    if (st) return st;
    /* Ranks are compared as floats (shared with SentencePiece scores). */
    if (kv->arr_len >= (1u << 24))
        return fasa_error(FASA_E_UNSUPPORTED, "tokenizer.ggml.merges has %llu entries (at most %u)",
                          (unsigned long long)kv->arr_len, (1u << 24) - 1);
    uint32_t size = tokenizer_table_size(kv->arr_len);
    t->merge_mask = size - 1;
    t->merge_slots = fasa_malloc(size, sizeof *t->merge_slots, "merge table");
    size_t longest = 1;
    for (uint64_t r = 0; r < kv->arr_len; r++)
        if (kv->arr_str[r].len > longest) longest = kv->arr_str[r].len;
    char *joined = fasa_malloc(longest, 1, "merge text");
    if (!t->merge_slots || !joined) {
        free(joined);
        return FASA_E_NOMEM;
    }
    for (uint32_t i = 0; i < size; i++) t->merge_slots[i] = (tok_merge){0, -1, -1};
    for (uint64_t r = 0; r < kv->arr_len; r++) {
        gguf_str m = kv->arr_str[r];
        const char *sp = m.len ? memchr(m.data, ' ', m.len) : NULL;
        if (!sp) {
            free(joined);
            return fasa_error(FASA_E_FORMAT,
                              "tokenizer.ggml.merges[%llu] has no space between its two parts",
                              (unsigned long long)r);
        }
        size_t na = (size_t)(sp - m.data), nb = m.len - na - 1;
        memcpy(joined, m.data, na);
        memcpy(joined + na, sp + 1, nb);
        int32_t a = tokenizer_lookup(t, m.data, na), b = tokenizer_lookup(t, sp + 1, nb);
        int32_t id = tokenizer_lookup(t, joined, na + nb);
        if (a >= 0 && b >= 0 && id >= 0) merge_insert(t, a, b, (int32_t)r, id);
    }
    free(joined);
    return FASA_OK;
}

static fasa_status read_pre(fasa_tokenizer *t, const gguf_file *g) {
    static const struct {
        const char *name;
        tok_pre pre;
    } known[] = {{"default", TOK_PRE_GPT2},    {"gpt2", TOK_PRE_GPT2},
                 {"", TOK_PRE_GPT2},           {"smollm", TOK_PRE_SMOLLM},
                 {"llama-bpe", TOK_PRE_LLAMA3}, {"llama3", TOK_PRE_LLAMA3},
                 {"qwen2", TOK_PRE_QWEN2}};
    t->pre = TOK_PRE_GPT2;
    if (!fasa_gguf_find_kv(g, "tokenizer.ggml.pre")) return FASA_OK;
    gguf_str name;
    fasa_status st = fasa_gguf_get_str(g, "tokenizer.ggml.pre", &name);
    if (st) return st;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (fasa_gguf_str_eq(name, known[i].name)) {
            t->pre = known[i].pre;
            /* Llama 3's tokenizer looks a word up whole before merging. */
            t->ignore_merges = t->pre == TOK_PRE_LLAMA3;
            /* Qwen2's normalises text to NFC first. */
            t->nfc = t->pre == TOK_PRE_QWEN2;
            return FASA_OK;
        }
    }
    return fasa_error(FASA_E_UNSUPPORTED,
                      "tokenizer.ggml.pre is '%.*s', a pre-tokenizer this build does not know "
                      "(supported: default, gpt2, smollm, llama-bpe, llama3, qwen2)",
                      (int)(name.len > 64 ? 64 : name.len), name.data);
}

fasa_status tokenizer_bpe_init(fasa_tokenizer *t, const gguf_file *g) {
    fasa_status st = read_pre(t, g);
    if (!st) st = read_merges(t, g);
    if (st) return st;
    /* Vocabularies may lack bytes that never occur in their training text
     * (SmolLM2 has no 0x04 or 0xFF): those become the unknown token, or are
     * dropped as the reference tokenizer drops them. */
    for (int b = 0; b < 256; b++) {
        char mapped[2];
        t->byte_id[b] = tokenizer_lookup(t, mapped, put_mapped((uint8_t)b, mapped));
        if (t->byte_id[b] < 0) t->byte_id[b] = tokenizer_unknown(t);
    }
    return FASA_OK;
}

/* ---- encoding ------------------------------------------------------------ */

static bool bpe_pair(const tok_encoder *e, const tok_symbol *l, const tok_symbol *r, float *key,
                     int32_t *id) {
    const tok_merge *m = merge_find(e->t, l->id, r->id);
    if (!m) return false;
    *key = (float)m->rank;
    *id = m->id;
    return true;
}

/* The id of the word spelled whole in the vocabulary, or -1. */
static fasa_status whole_word(tok_encoder *e, const uint8_t *w, size_t n, int32_t *id) {
    fasa_status st = tokenizer_reserve_buf(e, 2 * n);
    if (st) return st;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += put_mapped(w[i], e->buf + len);
    *id = tokenizer_lookup(e->t, e->buf, len);
    if (*id >= 0 && e->t->type[*id] != TOK_TYPE_NORMAL) *id = -1;
    return FASA_OK;
}

typedef struct bpe_text {
    tok_encoder *e;
    const uint8_t *s;
} bpe_text;

#define CACHE_ENTRIES 16384 /* 1 MiB */
#define CACHE_MIN_TEXT 4096 /* below this, clearing the cache costs more than it saves */

static tok_cache_entry *cache_slot(const tok_encoder *e, const uint8_t *w, size_t n) {
    if (!e->cache || n > TOK_CACHE_WORD) return NULL;
    return &e->cache[tokenizer_hash((const char *)w, n) & (CACHE_ENTRIES - 1)];
}

static bool cache_get(tok_encoder *e, const tok_cache_entry *c, const uint8_t *w, size_t n) {
    if (!c || c->len != n || memcmp(c->word, w, n) != 0) return false;
    for (int i = 0; i < c->n_ids; i++) tokenizer_emit(e, c->ids[i]);
    return true;
}

/* Emits the merged symbols and remembers them in c when they fit. */
static void emit_word(tok_encoder *e, tok_cache_entry *c, const uint8_t *w, size_t n) {
    int n_ids = 0;
    for (int32_t i = 0; i >= 0; i = e->sym[i].next, n_ids++) {
        tokenizer_emit(e, e->sym[i].id);
        if (c && n_ids < TOK_CACHE_IDS) c->ids[n_ids] = e->sym[i].id;
    }
    if (!c) return;
    c->len = n_ids <= TOK_CACHE_IDS ? (uint8_t)n : 0;
    c->n_ids = (uint8_t)n_ids;
    memcpy(c->word, w, n);
}

static fasa_status bpe_word(void *ctx, size_t start, size_t end) {
    bpe_text *bt = ctx;
    tok_encoder *e = bt->e;
    const fasa_tokenizer *t = e->t;
    const uint8_t *w = bt->s + start;
    size_t n = end - start;
    if (t->ignore_merges && n > 1) {
        int32_t id;
        fasa_status st = whole_word(e, w, n, &id);
        if (st) return st;
        if (id >= 0) {
            tokenizer_emit(e, id);
            return FASA_OK;
        }
    }
    tok_cache_entry *c = cache_slot(e, w, n);
    if (cache_get(e, c, w, n)) return FASA_OK;
    fasa_status st = tokenizer_reserve(e, n);
    if (st) return st;
    int32_t n_sym = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->byte_id[w[i]] < 0) continue; /* a byte without a token */
        e->sym[n_sym] = (tok_symbol){n_sym - 1, n_sym + 1, t->byte_id[w[i]], (uint32_t)i, 1};
        n_sym++;
    }
    if (n_sym == 0) return FASA_OK;
    e->sym[n_sym - 1].next = -1;
    tokenizer_merge_symbols(e, n_sym, bpe_pair);
    emit_word(e, c, w, n);
    return FASA_OK;
}

static fasa_status bpe_encode_raw(tok_encoder *e, const char *text, size_t len) {
    if (!e->cache && len >= CACHE_MIN_TEXT) {
        e->cache = fasa_calloc(CACHE_ENTRIES, sizeof *e->cache, "word cache");
        if (!e->cache) return FASA_E_NOMEM;
    }
    bpe_text bt = {e, (const uint8_t *)text};
    return tokenizer_pretokenize(e->t->pre, text, len, bpe_word, &bt);
}

/* NFC composes only non-ASCII characters, so ASCII text skips it. Text that
 * is not valid UTF-8 has no normal form and is tokenized as it is. */
fasa_status tokenizer_bpe_encode(tok_encoder *e, const char *text, size_t len) {
    size_t i = 0;
    while (e->t->nfc && i < len && (uint8_t)text[i] < 0x80) i++;
    if (!e->t->nfc || i == len) return bpe_encode_raw(e, text, len);
    utf8proc_uint8_t *nfc = NULL;
    const utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                            UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n == UTF8PROC_ERROR_NOMEM) return fasa_error(FASA_E_NOMEM, "out of memory normalising text to NFC");
    fasa_status st = n < 0 ? bpe_encode_raw(e, text, len) : bpe_encode_raw(e, (const char *)nfc, (size_t)n);
    free(nfc);
    return st;
}
