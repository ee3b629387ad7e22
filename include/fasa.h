/* fasa: long-context inference for RoPE language models with frequency-aware
 * sparse attention (FASA).
 *
 * Conventions: every fallible call returns a fasa_status; on failure
 * fasa_last_error() gives a one-line message meant for the user (it is kept
 * per thread). Handles are opaque and come in _init/_load and _free pairs.
 * All sizes in the API are fixed-width integers. */
#ifndef FASA_H
#define FASA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FASA_VERSION "0.1.0"

typedef enum fasa_status {
    FASA_OK = 0,
    FASA_E_ARG = 1,         /* a caller passed something invalid */
    FASA_E_IO = 2,          /* a file could not be opened, read or mapped */
    FASA_E_FORMAT = 3,      /* a file is malformed or inconsistent */
    FASA_E_UNSUPPORTED = 4, /* well-formed but not something this build runs */
    FASA_E_NOMEM = 5,
    FASA_E_CONTEXT = 6,     /* the context window is full */
    FASA_E_INTERNAL = 7,
} fasa_status;

const char *fasa_last_error(void);
void fasa_clear_error(void);
const char *fasa_status_name(fasa_status s);

/* ---- model ------------------------------------------------------------ */

typedef struct fasa_model fasa_model;

/* RoPE layout: which coordinates of a head vector rotate together.
 * INTERLEAVED pairs (2i, 2i+1) (GGUF "llama"); HALF pairs (i, i + d/2). */
typedef enum fasa_rope_layout {
    FASA_ROPE_INTERLEAVED = 0,
    FASA_ROPE_HALF = 1,
} fasa_rope_layout;

typedef struct fasa_model_info {
    char arch[32];
    char name[96];
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t n_embd;
    int32_t n_ff;
    int32_t n_vocab;
    int32_t n_ctx_train;
    float rope_base;
    float rope_scale; /* linear position scaling factor (1 = none) */
    fasa_rope_layout rope_layout;
    uint64_t n_params;
    uint64_t weight_bytes; /* bytes of tensor data read per decoded token */
} fasa_model_info;

fasa_status fasa_model_load(const char *path, fasa_model **out);
void fasa_model_free(fasa_model *m);
void fasa_model_get_info(const fasa_model *m, fasa_model_info *info);

/* ---- tokens ----------------------------------------------------------- */

/* Tokenizes UTF-8 text. Writes at most cap ids and sets *n_out to the count
 * needed; returns FASA_E_ARG when cap was too small. parse_special makes
 * control-token strings such as "<|im_start|>" map to their ids. */
fasa_status fasa_tokenize(const fasa_model *m, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t *ids, int32_t cap, int32_t *n_out);
/* Bytes of one token; returns their count (truncated to cap) or -1 for a bad id. */
int32_t fasa_token_piece(const fasa_model *m, int32_t id, char *buf, int32_t cap);
int32_t fasa_token_bos(const fasa_model *m);
int32_t fasa_token_eos(const fasa_model *m);
bool fasa_token_is_eog(const fasa_model *m, int32_t id);
bool fasa_model_add_bos(const fasa_model *m);

/* Formats one user turn (and an optional system prompt) with the model's chat
 * template, ending where the assistant's answer begins. Returns a malloc'd
 * string the caller frees, or NULL with an error set. */
char *fasa_chat_prompt(const fasa_model *m, const char *system, const char *user);

/* ---- context (KV cache + scratch) ------------------------------------- */

typedef struct fasa_context fasa_context;

typedef enum fasa_kv_type {
    FASA_KV_F32 = 0,
    FASA_KV_F16 = 1,
} fasa_kv_type;

typedef struct fasa_context_params {
    int32_t n_ctx;      /* tokens the KV cache holds; 0 = the model's training context */
    int32_t n_threads;  /* 0 = all available cores */
    int32_t n_batch;    /* max tokens per forward call chunk; 0 = 256 */
    fasa_kv_type kv_type;
} fasa_context_params;

fasa_context_params fasa_context_default_params(void);
fasa_status fasa_context_init(fasa_model *m, const fasa_context_params *p, fasa_context **out);
void fasa_context_free(fasa_context *c);
/* Forgets every cached token. */
void fasa_context_reset(fasa_context *c);
int32_t fasa_context_n_past(const fasa_context *c);
int32_t fasa_context_n_ctx(const fasa_context *c);
/* Drops cached tokens so that n_past becomes `n` (n <= n_past). */
fasa_status fasa_context_truncate(fasa_context *c, int32_t n);

/* Runs n tokens through the model at positions n_past .. n_past+n-1 and
 * appends them to the KV cache. logits (may be NULL) receives n_vocab floats:
 * for the last token only, or for every token (n * n_vocab) when all_logits.
 * Fails with FASA_E_CONTEXT, leaving the cache unchanged, if the tokens do
 * not fit. */
fasa_status fasa_eval(fasa_context *c, const int32_t *tokens, int32_t n, float *logits,
                      bool all_logits);

/* ---- sampling --------------------------------------------------------- */

typedef struct fasa_sampler fasa_sampler;

typedef struct fasa_sampler_params {
    float temp;    /* 0 = greedy */
    float top_p;   /* 1 = off */
    int32_t top_k; /* 0 = off */
    uint64_t seed;
} fasa_sampler_params;

fasa_sampler_params fasa_sampler_default_params(void);
fasa_status fasa_sampler_init(const fasa_sampler_params *p, int32_t n_vocab, fasa_sampler **out);
void fasa_sampler_free(fasa_sampler *s);
/* Picks a token from logits (n_vocab floats; the array is left unchanged). */
int32_t fasa_sampler_sample(fasa_sampler *s, const float *logits);

#ifdef __cplusplus
}
#endif

#endif
