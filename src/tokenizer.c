/* Tokenizer: vocabulary, special tokens, pieces and the encode dispatch.
 *
 * Init copies everything it needs out of the GGUF into a few flat arrays
 * (all token strings in one arena, all decoded pieces in another) plus hash
 * tables, so that encoding never scans the vocabulary. Encoding first cuts
 * the text at special tokens, then hands each stretch between them to the
 * model (BPE or SentencePiece), which merges symbols with the shared
 * priority-queue loop at the end of this file. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer_internal.h"

/* ---- hashing ------------------------------------------------------------- */

/* FNV-1a: vocabulary strings are short, so a byte loop is cheap enough. */
uint32_t tokenizer_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Smallest power of two >= 2n, so that tables stay at most half full
 * (n <= 2^30, checked by the callers). */
uint32_t tokenizer_table_size(size_t n) {
    uint32_t size = 16;
    while (size < 2 * n) size *= 2;
    return size;
}

static const char *token_text(const fasa_tokenizer *t, int32_t id, size_t *len) {
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

int32_t tokenizer_lookup(const fasa_tokenizer *t, const char *s, size_t len) {
    for (uint32_t i = tokenizer_hash(s, len) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        size_t n;
        const char *text = token_text(t, id, &n);
        if (n == len && memcmp(text, s, len) == 0) return id;
    }
}

/* The token standing for text the vocabulary cannot spell, or -1. Only a
 * real unknown token qualifies: some GGUFs name a control token such as
 * <|endoftext|> here, and emitting that mid-text would end the text. */
int32_t tokenizer_unknown(const fasa_tokenizer *t) {
    return t->unk >= 0 && t->type[t->unk] == TOK_TYPE_UNKNOWN ? t->unk : -1;
}

/* ---- vocabulary ---------------------------------------------------------- */

static fasa_status read_model(fasa_tokenizer *t, const gguf_file *g) {
    gguf_str model;
    fasa_status st = fasa_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (st) return st;
    if (fasa_gguf_str_eq(model, "gpt2")) {
        t->model = TOK_MODEL_BPE;
    } else if (fasa_gguf_str_eq(model, "llama")) {
        t->model = TOK_MODEL_SPM;
    } else {
        return fasa_error(FASA_E_UNSUPPORTED,
                          "tokenizer.ggml.model is '%.*s', which this build cannot run "
                          "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)",
                          (int)(model.len > 64 ? 64 : model.len), model.data);
    }
    return FASA_OK;
}

static fasa_status read_types(fasa_tokenizer *t, const gguf_file *g) {
    t->type = fasa_malloc((size_t)t->n_vocab, 1, "token types");
    if (!t->type) return FASA_E_NOMEM;
    memset(t->type, TOK_TYPE_NORMAL, (size_t)t->n_vocab);
    if (!fasa_gguf_find_kv(g, "tokenizer.ggml.token_type")) return FASA_OK;
    const gguf_kv *kv;
    fasa_status st = fasa_gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &kv);
    if (st) return st;
    if (kv->arr_len != (uint64_t)t->n_vocab)
        return fasa_error(FASA_E_FORMAT,
                          "tokenizer.ggml.token_type has %llu entries but there are %d tokens",
                          (unsigned long long)kv->arr_len, t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int32_t v;
        memcpy(&v, kv->arr_data + 4 * (size_t)i, 4);
        /* 0 ("undefined") and unknown values behave as ordinary text. */
        t->type[i] = v >= TOK_TYPE_UNKNOWN && v <= TOK_TYPE_BYTE ? (uint8_t)v : TOK_TYPE_NORMAL;
    }
    return FASA_OK;
}

static fasa_status read_vocab(fasa_tokenizer *t, const gguf_file *g) {
    const gguf_kv *kv;
    fasa_status st = fasa_gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &kv);
    if (st) return st;
    if (kv->arr_len == 0 || kv->arr_len > (1u << 30))
        return fasa_error(FASA_E_FORMAT, "tokenizer.ggml.tokens has %llu entries",
                          (unsigned long long)kv->arr_len);
    t->n_vocab = (int32_t)kv->arr_len;
    uint64_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) total += kv->arr_str[i].len;
    if (total >= UINT32_MAX)
        return fasa_error(FASA_E_FORMAT, "tokenizer.ggml.tokens holds %llu bytes of text",
                          (unsigned long long)total);
    t->text = fasa_malloc(total, 1, "vocabulary text");
    t->text_off = fasa_malloc((size_t)t->n_vocab + 1, sizeof *t->text_off, "vocabulary");
    if (!t->text || !t->text_off) return FASA_E_NOMEM;
    uint32_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->text_off[i] = off;
        if (kv->arr_str[i].len) memcpy(t->text + off, kv->arr_str[i].data, kv->arr_str[i].len);
        off += (uint32_t)kv->arr_str[i].len;
    }
    t->text_off[t->n_vocab] = off;
    return read_types(t, g);
}

/* A string listed twice keeps its first id. */
static fasa_status build_vocab_index(fasa_tokenizer *t) {
    uint32_t size = tokenizer_table_size((size_t)t->n_vocab);
    t->vocab_mask = size - 1;
    t->vocab_slots = fasa_malloc(size, sizeof *t->vocab_slots, "vocabulary index");
    if (!t->vocab_slots) return FASA_E_NOMEM;
    memset(t->vocab_slots, 0xff, (size_t)size * sizeof *t->vocab_slots);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = token_text(t, id, &len);
        if (tokenizer_lookup(t, s, len) >= 0) continue;
        uint32_t i = tokenizer_hash(s, len) & t->vocab_mask;
        while (t->vocab_slots[i] >= 0) i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = id;
    }
    return FASA_OK;
}

/* "<0x41>" -> 0x41; -1 if s is not of that form. */
static int parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* SentencePiece marks spaces with U+2581 (3 bytes); its pieces show a space. */
static size_t spm_unescape(const char *s, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
            out[n++] = ' ';
            i += 3;
        } else {
            out[n++] = s[i++];
        }
    }
    return n;
}

/* Decoding a token never makes it longer than its vocabulary string, so the
 * pieces fit in an arena the size of the text arena. */
static size_t decode_piece(const fasa_tokenizer *t, int32_t id, char *out) {
    size_t len;
    const char *s = token_text(t, id, &len);
    switch (t->type[id]) {
    case TOK_TYPE_BYTE: {
        int b = parse_byte_token(s, len);
        if (b >= 0) {
            out[0] = (char)b;
            return 1;
        }
        break;
    }
    case TOK_TYPE_NORMAL: {
        if (t->model == TOK_MODEL_SPM) return spm_unescape(s, len, out);
        int64_t n = tokenizer_bpe_unmap(s, len, out);
        if (n >= 0) return (size_t)n;
        break;
    }
    default: /* control, unknown, unused and user-defined tokens are literal text */
        break;
    }
    if (len) memcpy(out, s, len);
    return len;
}

static fasa_status build_pieces(fasa_tokenizer *t) {
    t->piece = fasa_malloc(t->text_off[t->n_vocab], 1, "token pieces");
    t->piece_off = fasa_malloc((size_t)t->n_vocab + 1, sizeof *t->piece_off, "token pieces");
    if (!t->piece || !t->piece_off) return FASA_E_NOMEM;
    uint32_t off = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->piece_off[id] = off;
        off += (uint32_t)decode_piece(t, id, t->piece + off);
    }
    t->piece_off[t->n_vocab] = off;
    return FASA_OK;
}

/* ---- special tokens ------------------------------------------------------ */

/* An optional token id; absent keys give -1, ids past the vocabulary are an error. */
static fasa_status read_token_id(const fasa_tokenizer *t, const gguf_file *g, const char *key,
                                 int32_t *out) {
    *out = -1;
    if (!fasa_gguf_find_kv(g, key)) return FASA_OK;
    int64_t v;
    fasa_status st = fasa_gguf_get_i64(g, key, &v);
    if (st) return st;
    if (v < 0 || v >= t->n_vocab)
        return fasa_error(FASA_E_FORMAT, "%s is %lld but the vocabulary has %d tokens", key,
                          (long long)v, t->n_vocab);
    *out = (int32_t)v;
    return FASA_OK;
}

static fasa_status read_bool(const gguf_file *g, const char *key, bool dflt, bool *out) {
    *out = dflt;
    return fasa_gguf_find_kv(g, key) ? fasa_gguf_get_bool(g, key, out) : FASA_OK;
}

static void add_eog(fasa_tokenizer *t, int32_t id) {
    if (id < 0 || t->n_eog == TOK_MAX_EOG) return;
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

static fasa_status read_special_ids(fasa_tokenizer *t, const gguf_file *g) {
    int32_t eot, eom;
    fasa_status st = read_token_id(t, g, "tokenizer.ggml.bos_token_id", &t->bos);
    if (!st) st = read_token_id(t, g, "tokenizer.ggml.eos_token_id", &t->eos);
    if (!st) st = read_token_id(t, g, "tokenizer.ggml.unknown_token_id", &t->unk);
    if (!st) st = read_token_id(t, g, "tokenizer.ggml.eot_token_id", &eot);
    if (!st) st = read_token_id(t, g, "tokenizer.ggml.eom_token_id", &eom);
    /* SentencePiece models expect BOS and a leading space unless told otherwise. */
    bool spm = t->model == TOK_MODEL_SPM;
    if (!st) st = read_bool(g, "tokenizer.ggml.add_bos_token", spm, &t->add_bos);
    if (!st) st = read_bool(g, "tokenizer.ggml.add_space_prefix", spm, &t->add_space_prefix);
    if (st) return st;
    /* Chat models end a turn with a marker of their own rather than EOS. */
    static const char *const eog_names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>",
                                            "<end_of_turn>", "<|endoftext|>"};
    add_eog(t, t->eos);
    add_eog(t, eot);
    add_eog(t, eom);
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++)
        add_eog(t, tokenizer_find(t, eog_names[i]));
    return FASA_OK;
}

static bool is_special(const fasa_tokenizer *t, int32_t id) {
    uint8_t ty = t->type[id];
    return (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
           t->text_off[id + 1] > t->text_off[id];
}

typedef struct special_key {
    uint8_t first;
    uint32_t len;
    int32_t id;
} special_key;

/* By first byte, then longest first so that the first match is the longest. */
static int compare_special(const void *pa, const void *pb) {
    const special_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static fasa_status build_special_index(fasa_tokenizer *t) {
    int32_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) n += is_special(t, id);
    special_key *keys = fasa_malloc((size_t)n, sizeof *keys, "special token index");
    t->special_ids = fasa_malloc((size_t)n, sizeof *t->special_ids, "special token index");
    if (!keys || !t->special_ids) {
        free(keys);
        return FASA_E_NOMEM;
    }
    int32_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!is_special(t, id)) continue;
        size_t len;
        const char *s = token_text(t, id, &len);
        keys[k++] = (special_key){(uint8_t)s[0], (uint32_t)len, id};
    }
    qsort(keys, (size_t)n, sizeof *keys, compare_special);
    memset(t->special_first, 0, sizeof t->special_first);
    for (int32_t i = 0; i < n; i++) {
        t->special_ids[i] = keys[i].id;
        t->special_first[keys[i].first + 1]++;
        t->has_user_defined |= t->type[keys[i].id] == TOK_TYPE_USER_DEFINED;
    }
    for (int b = 0; b < 256; b++) t->special_first[b + 1] += t->special_first[b];
    free(keys);
    return FASA_OK;
}

/* The special token that text[0 .. n) starts with (the longest), or -1.
 * User-defined tokens are ordinary words spelled as one token, so they match
 * whether or not control tokens are being parsed. */
static int32_t match_special(const fasa_tokenizer *t, const char *s, size_t n, bool parse_special,
                             size_t *len) {
    uint8_t b = (uint8_t)s[0];
    for (uint32_t k = t->special_first[b]; k < t->special_first[b + 1]; k++) {
        int32_t id = t->special_ids[k];
        if (!parse_special && t->type[id] != TOK_TYPE_USER_DEFINED) continue;
        const char *text = token_text(t, id, len);
        if (*len <= n && memcmp(s, text, *len) == 0) return id;
    }
    return -1;
}

/* ---- init / free --------------------------------------------------------- */

fasa_status tokenizer_init(const gguf_file *g, fasa_tokenizer **out) {
    *out = NULL;
    if (!g) return fasa_error(FASA_E_ARG, "tokenizer_init: no GGUF file");
    fasa_tokenizer *t = fasa_calloc(1, sizeof *t, "tokenizer");
    if (!t) return FASA_E_NOMEM;
    fasa_status st = read_model(t, g);
    if (!st) st = read_vocab(t, g);
    if (!st) st = build_vocab_index(t);
    if (!st) st = read_special_ids(t, g);
    if (!st) st = t->model == TOK_MODEL_BPE ? tokenizer_bpe_init(t, g) : tokenizer_spm_init(t, g);
    if (!st) st = build_pieces(t);
    if (!st) st = build_special_index(t);
    if (st) {
        tokenizer_free(t);
        return st;
    }
    *out = t;
    return FASA_OK;
}

void tokenizer_free(fasa_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->score);
    free(t->vocab_slots);
    free(t->merge_slots);
    free(t->special_ids);
    free(t);
}

/* ---- queries ------------------------------------------------------------- */

int32_t tokenizer_n_vocab(const fasa_tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const fasa_tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const fasa_tokenizer *t) { return t->eos; }
bool tokenizer_add_bos(const fasa_tokenizer *t) { return t->add_bos; }

bool tokenizer_is_eog(const fasa_tokenizer *t, int32_t id) {
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

int32_t tokenizer_find(const fasa_tokenizer *t, const char *text) {
    return text ? tokenizer_lookup(t, text, strlen(text)) : -1;
}

int32_t tokenizer_piece(const fasa_tokenizer *t, int32_t id, bool special, char *buf, int32_t cap) {
    if (id < 0 || id >= t->n_vocab) return -1;
    uint8_t ty = t->type[id];
    bool hidden = ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_UNUSED;
    if (hidden && !special) return 0;
    uint32_t len = t->piece_off[id + 1] - t->piece_off[id];
    int32_t n = cap <= 0 ? 0 : len < (uint32_t)cap ? (int32_t)len : cap;
    if (n) memcpy(buf, t->piece + t->piece_off[id], (size_t)n);
    return n;
}

/* ---- encoding ------------------------------------------------------------ */

void tokenizer_emit(tok_encoder *e, int32_t id) {
    if (e->n < e->cap) e->ids[e->n] = id;
    e->n++;
}

static fasa_status grow(void **p, size_t *cap, size_t need, size_t elem, const char *what) {
    if (need <= *cap) return FASA_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need) n = n > SIZE_MAX / 2 ? need : n * 2;
    void *q = fasa_malloc(n, elem, what);
    if (!q) return FASA_E_NOMEM;
    free(*p); /* scratch: old contents are never needed after a resize */
    *p = q;
    *cap = n;
    return FASA_OK;
}

fasa_status tokenizer_reserve(tok_encoder *e, size_t n_sym) {
    if (n_sym > INT32_MAX / 3)
        return fasa_error(FASA_E_ARG, "a stretch of %zu characters is too long to tokenize", n_sym);
    /* Each merge removes a symbol and queues at most two candidates. */
    fasa_status st = grow((void **)&e->sym, &e->sym_cap, n_sym, sizeof *e->sym, "token symbols");
    if (!st)
        st = grow((void **)&e->heap, &e->heap_cap, 3 * n_sym, sizeof *e->heap, "token merges");
    return st;
}

fasa_status tokenizer_reserve_buf(tok_encoder *e, size_t n) {
    return grow((void **)&e->buf, &e->buf_cap, n, 1, "token text");
}

static void encoder_free(tok_encoder *e) {
    free(e->sym);
    free(e->heap);
    free(e->buf);
    free(e->cache);
}

static fasa_status encode_fragment(tok_encoder *e, const char *s, size_t n) {
    if (n == 0) return FASA_OK;
    return e->t->model == TOK_MODEL_BPE ? tokenizer_bpe_encode(e, s, n)
                                        : tokenizer_spm_encode(e, s, n);
}

/* Special tokens cut the text into fragments that are encoded separately. */
static fasa_status encode_text(tok_encoder *e, const char *text, size_t len, bool parse_special) {
    if (!parse_special && !e->t->has_user_defined) return encode_fragment(e, text, len);
    size_t start = 0;
    for (size_t pos = 0; pos < len;) {
        size_t n;
        int32_t id = match_special(e->t, text + pos, len - pos, parse_special, &n);
        if (id < 0) {
            pos++;
            continue;
        }
        fasa_status st = encode_fragment(e, text + start, pos - start);
        if (st) return st;
        tokenizer_emit(e, id);
        pos += n;
        start = pos;
    }
    return encode_fragment(e, text + start, len - start);
}

fasa_status tokenizer_encode(const fasa_tokenizer *t, const char *text, size_t len, bool add_bos,
                             bool parse_special, int32_t *ids, int32_t cap, int32_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || !n_out || (!text && len) || cap < 0 || (!ids && cap > 0))
        return fasa_error(FASA_E_ARG, "tokenizer_encode: invalid arguments");
    if (add_bos && t->bos < 0)
        return fasa_error(FASA_E_ARG, "BOS requested but the model defines no BOS token");
    tok_encoder e = {.t = t, .ids = ids, .cap = cap};
    if (add_bos) tokenizer_emit(&e, t->bos);
    fasa_status st = encode_text(&e, text, len, parse_special);
    encoder_free(&e);
    if (st) return st;
    if (e.n > INT32_MAX)
        return fasa_error(FASA_E_ARG, "the text gives %lld tokens, more than one call can return",
                          (long long)e.n);
    *n_out = (int32_t)e.n;
    if (e.n > cap)
        return fasa_error(FASA_E_ARG, "the text gives %d tokens but the buffer holds %d",
                          *n_out, cap);
    return FASA_OK;
}

/* ---- merging ------------------------------------------------------------- */

static bool cand_before(const tok_cand *a, const tok_cand *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(tok_encoder *e, tok_cand c) {
    size_t i = e->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = c;
}

static tok_cand heap_pop(tok_encoder *e) {
    tok_cand top = e->heap[0], last = e->heap[--e->heap_len];
    size_t i = 0, n = e->heap_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && cand_before(&e->heap[child + 1], &e->heap[child])) child++;
        if (!cand_before(&e->heap[child], &last)) break;
        e->heap[i] = e->heap[child];
        i = child;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void queue_pair(tok_encoder *e, int32_t left, tok_pair_fn pair) {
    const tok_symbol *l = &e->sym[left];
    if (l->next < 0) return;
    const tok_symbol *r = &e->sym[l->next];
    tok_cand c = {.left = left, .right = l->next, .len = l->len + r->len};
    if (e->heap_len < e->heap_cap && pair(e, l, r, &c.key, &c.id)) heap_push(e, c);
}

void tokenizer_merge_symbols(tok_encoder *e, int32_t n, tok_pair_fn pair) {
    e->heap_len = 0;
    for (int32_t i = 0; i + 1 < n; i++) queue_pair(e, i, pair);
    while (e->heap_len) {
        tok_cand c = heap_pop(e);
        tok_symbol *l = &e->sym[c.left];
        /* Stale: one side merged elsewhere since this candidate was queued. */
        if (l->len == 0 || l->next != c.right || l->len + e->sym[c.right].len != c.len) continue;
        tok_symbol *r = &e->sym[c.right];
        l->id = c.id;
        l->len = c.len;
        l->next = r->next;
        r->len = 0;
        if (l->next >= 0) e->sym[l->next].prev = c.left;
        if (l->prev >= 0) queue_pair(e, l->prev, pair);
        queue_pair(e, c.left, pair);
    }
}
