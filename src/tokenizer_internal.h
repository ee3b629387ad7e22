/* Private parts of the tokenizer shared by tokenizer.c (vocabulary, special
 * tokens, dispatch), tokenizer_bpe.c (byte-level BPE and its pre-tokenizers)
 * and tokenizer_spm.c (Llama SentencePiece). Tests include it to reach the
 * pre-tokenizer directly. */
#ifndef FASA_TOKENIZER_INTERNAL_H
#define FASA_TOKENIZER_INTERNAL_H

#include "tokenizer.h"

/* tokenizer.ggml.token_type values. */
enum tok_type {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

typedef enum tok_model {
    TOK_MODEL_BPE, /* "gpt2": byte-level BPE with ranked merges */
    TOK_MODEL_SPM, /* "llama": SentencePiece, highest-score merges + byte fallback */
} tok_model;

/* The regex that cuts text into words before BPE (tokenizer.ggml.pre). */
typedef enum tok_pre {
    TOK_PRE_GPT2,   /* GPT-2's regex */
    TOK_PRE_SMOLLM, /* every numeric character alone, then GPT-2's regex */
    TOK_PRE_LLAMA3, /* Llama 3's regex: case-insensitive contractions, digits in threes */
    TOK_PRE_QWEN2,  /* Llama 3's regex with every digit alone, on NFC-normalised text */
} tok_pre;

/* One entry of the merge table: the pair (left id, right id) packed in `key`. */
typedef struct tok_merge {
    uint64_t key;
    int32_t rank;
    int32_t id; /* the merged token */
} tok_merge;

#define TOK_MAX_EOG 8

struct fasa_tokenizer {
    tok_model model;
    tok_pre pre;
    int32_t n_vocab;

    /* Token i's vocabulary string is text[text_off[i] .. text_off[i+1]) and
     * the bytes it decodes to are piece[piece_off[i] .. piece_off[i+1]). */
    char *text;
    uint32_t *text_off;
    char *piece;
    uint32_t *piece_off;
    uint8_t *type;  /* enum tok_type */
    float *score;   /* SentencePiece only, else NULL */

    /* Open-addressing hash of vocabulary strings: slots hold ids, -1 empty. */
    int32_t *vocab_slots;
    uint32_t vocab_mask;

    /* BPE: open-addressing hash of merges keyed by the id pair. */
    tok_merge *merge_slots;
    uint32_t merge_mask;
    bool ignore_merges; /* a word found whole in the vocabulary is one token */
    bool nfc;           /* normalise text to Unicode NFC before splitting it */

    /* BPE: the token of each byte's mapped character. SPM: the <0xXX> token.
     * Where the vocabulary lacks it, the unknown token, else -1 (dropped). */
    int32_t byte_id[256];

    /* Tokens matched literally in the text before BPE/SPM runs, grouped by
     * first byte (special_ids[special_first[b] .. special_first[b+1])) and
     * longest first within a group. */
    int32_t *special_ids;
    uint32_t special_first[257];
    bool has_user_defined; /* else plain text needs no special-token scan */

    int32_t bos, eos, unk; /* -1 when absent */
    bool add_bos;
    bool add_space_prefix;
    int32_t eog[TOK_MAX_EOG];
    int32_t n_eog;
};

/* ---- encoding state (tokenizer.c) --------------------------------------- */

/* A run of bytes being merged: a node of a doubly linked list over an array,
 * so that a merge is O(1) and indices stay stable. len == 0 marks a symbol
 * absorbed into its left neighbour. */
typedef struct tok_symbol {
    int32_t prev, next;
    int32_t id; /* -1: not in the vocabulary (SPM falls back to bytes) */
    uint32_t start, len;
} tok_symbol;

/* A possible merge of symbol `left` with its right neighbour `right`, valid
 * only while the two are still neighbours with lengths summing to `len`. */
typedef struct tok_cand {
    float key; /* smaller merges first: BPE rank, or minus the SPM score */
    int32_t left, right;
    uint32_t len;
    int32_t id;
} tok_cand;

/* A remembered BPE word: natural text repeats its words so often that
 * looking them up beats merging them again. Direct-mapped, fixed size. */
#define TOK_CACHE_WORD 22
#define TOK_CACHE_IDS 10
typedef struct tok_cache_entry {
    uint8_t len;   /* bytes of word; 0 = empty */
    uint8_t n_ids;
    char word[TOK_CACHE_WORD];
    int32_t ids[TOK_CACHE_IDS];
} tok_cache_entry;

/* Scratch buffers and the output sink of one tokenizer_encode call. The
 * tokenizer itself stays read-only, so threads may share it. */
typedef struct tok_encoder {
    const fasa_tokenizer *t;
    int32_t *ids;
    int32_t cap;
    int64_t n; /* ids produced so far, including those past cap */
    tok_symbol *sym;
    size_t sym_cap;
    tok_cand *heap;
    size_t heap_len, heap_cap;
    char *buf;
    size_t buf_cap;
    tok_cache_entry *cache; /* BPE, for long texts only */
} tok_encoder;

/* Scores a candidate merge of symbols l and r; false when they do not merge. */
typedef bool (*tok_pair_fn)(const tok_encoder *e, const tok_symbol *l, const tok_symbol *r,
                            float *key, int32_t *id);

uint32_t tokenizer_hash(const char *s, size_t len);
uint32_t tokenizer_table_size(size_t n);
int32_t tokenizer_lookup(const fasa_tokenizer *t, const char *s, size_t len);
int32_t tokenizer_unknown(const fasa_tokenizer *t);
/* Appends an id; ids past the caller's capacity are only counted. */
void tokenizer_emit(tok_encoder *e, int32_t id);
/* Makes room for n symbols and the candidates their merging can create. */
fasa_status tokenizer_reserve(tok_encoder *e, size_t n_sym);
fasa_status tokenizer_reserve_buf(tok_encoder *e, size_t n);
/* Merges e->sym[0 .. n) (linked in order) smallest key first, ties to the
 * left, until no neighbouring pair merges. */
void tokenizer_merge_symbols(tok_encoder *e, int32_t n, tok_pair_fn pair);

/* ---- byte-level BPE (tokenizer_bpe.c) ------------------------------------ */

fasa_status tokenizer_bpe_init(fasa_tokenizer *t, const gguf_file *g);
/* Writes the bytes a byte-level vocabulary string stands for into out (at
 * least len bytes); returns their count, or -1 if s uses a character outside
 * the byte mapping (such a token is taken literally). */
int64_t tokenizer_bpe_unmap(const char *s, size_t len, char *out);
fasa_status tokenizer_bpe_encode(tok_encoder *e, const char *text, size_t len);

/* Calls word(ctx, start, end) for each pre-token of text[0 .. len) in order;
 * stops early, returning its status, when word fails. */
typedef fasa_status (*tok_word_fn)(void *ctx, size_t start, size_t end);
fasa_status tokenizer_pretokenize(tok_pre pre, const char *text, size_t len, tok_word_fn word,
                                  void *ctx);

/* ---- SentencePiece (tokenizer_spm.c) ------------------------------------- */

fasa_status tokenizer_spm_init(fasa_tokenizer *t, const gguf_file *g);
fasa_status tokenizer_spm_encode(tok_encoder *e, const char *text, size_t len);

#endif
