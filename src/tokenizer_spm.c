/* Llama SentencePiece (GGUF tokenizer model "llama").
 *
 * Spaces are written as U+2581 ("▁"), and with add_space_prefix one more is
 * put in front of each stretch of text, as SentencePiece does to a sentence.
 * The stretch starts as one symbol per UTF-8 character; the neighbouring pair
 * whose concatenation is the highest-scoring vocabulary piece merges first
 * (ties to the left), until no concatenation is a piece. A symbol still
 * outside the vocabulary is spelled with the byte tokens <0xXX>, or with the
 * unknown token where the vocabulary lacks them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "tokenizer_internal.h"

static const char space_mark[3] = {'\xE2', '\x96', '\x81'}; /* U+2581 */

static fasa_status read_scores(fasa_tokenizer *t, const gguf_file *g) {
    t->score = fasa_calloc((size_t)t->n_vocab, sizeof *t->score, "token scores");
    if (!t->score) return FASA_E_NOMEM;
    if (!fasa_gguf_find_kv(g, "tokenizer.ggml.scores")) return FASA_OK; /* merges go left to right */
    const gguf_kv *kv;
    fasa_status st = fasa_gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &kv);
    if (st) return st;
    if (kv->arr_len != (uint64_t)t->n_vocab)
        return fasa_error(FASA_E_FORMAT,
                          "tokenizer.ggml.scores has %llu entries but there are %d tokens",
                          (unsigned long long)kv->arr_len, t->n_vocab);
    memcpy(t->score, kv->arr_data, (size_t)t->n_vocab * sizeof *t->score);
    /* A NaN would make the merge order depend on heap layout: rank it last. */
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (isnan(t->score[i])) t->score[i] = -INFINITY;
    return FASA_OK;
}

fasa_status tokenizer_spm_init(fasa_tokenizer *t, const gguf_file *g) {
    fasa_status st = read_scores(t, g);
    if (st) return st;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = tokenizer_lookup(t, name, 6);
        if (t->byte_id[b] < 0) t->byte_id[b] = tokenizer_unknown(t);
    }
    return FASA_OK;
}

/* Only ordinary pieces take part in merges: control and byte tokens are
 * never spelled out by text. */
static int32_t piece_id(const fasa_tokenizer *t, const char *s, size_t len) {
    int32_t id = tokenizer_lookup(t, s, len);
    return id >= 0 && t->type[id] == TOK_TYPE_NORMAL ? id : -1;
}

static bool spm_pair(const tok_encoder *e, const tok_symbol *l, const tok_symbol *r, float *key,
                     int32_t *id) {
    *id = piece_id(e->t, e->buf + l->start, l->len + r->len);
    if (*id < 0) return false;
    *key = -e->t->score[*id];
    return true;
}

/* Writes the escaped text into e->buf; returns its length in *n. */
static fasa_status escape(tok_encoder *e, const char *text, size_t len, size_t *n) {
    if (len > (SIZE_MAX - sizeof space_mark) / sizeof space_mark)
        return fasa_error(FASA_E_ARG, "text of %zu bytes is too long to tokenize", len);
    fasa_status st = tokenizer_reserve_buf(e, sizeof space_mark * (len + 1));
    if (st) return st;
    char *out = e->buf;
    size_t k = 0;
    if (e->t->add_space_prefix) {
        memcpy(out, space_mark, sizeof space_mark);
        k = sizeof space_mark;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(out + k, space_mark, sizeof space_mark);
            k += sizeof space_mark;
        } else {
            out[k++] = text[i];
        }
    }
    *n = k;
    return FASA_OK;
}

/* One symbol per UTF-8 character; an invalid byte is a character of its own. */
static int32_t split_chars(tok_encoder *e, size_t n) {
    const uint8_t *s = (const uint8_t *)e->buf;
    int32_t count = 0;
    for (size_t pos = 0; pos < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + pos, (utf8proc_ssize_t)(n - pos), &cp);
        size_t len = k > 0 ? (size_t)k : 1;
        e->sym[count] = (tok_symbol){count - 1, pos + len < n ? count + 1 : -1,
                                     piece_id(e->t, e->buf + pos, len), (uint32_t)pos,
                                     (uint32_t)len};
        count++;
        pos += len;
    }
    return count;
}

/* A byte without a token (and no unknown token to stand in) is dropped. */
static void emit_bytes(tok_encoder *e, const tok_symbol *sym) {
    for (uint32_t i = 0; i < sym->len; i++) {
        int32_t id = e->t->byte_id[(uint8_t)e->buf[sym->start + i]];
        if (id >= 0) tokenizer_emit(e, id);
    }
}

fasa_status tokenizer_spm_encode(tok_encoder *e, const char *text, size_t len) {
    size_t n = 0;
    fasa_status st = escape(e, text, len, &n);
    if (!st) st = tokenizer_reserve(e, n);
    if (st) return st;
    int32_t count = split_chars(e, n);
    tokenizer_merge_symbols(e, count, spm_pair);
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) {
        if (e->sym[i].id >= 0)
            tokenizer_emit(e, e->sym[i].id);
        else
            emit_bytes(e, &e->sym[i]);
    }
    return FASA_OK;
}
