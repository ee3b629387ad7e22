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
    uint64_t tensor_hash;  /* FNV-1a over the tensor table (names, types, shapes, offsets) */
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

/* Where a context's whole forward pass runs, chosen once at creation. */
typedef enum fasa_device {
    FASA_DEVICE_CPU = 0,
    /* An NVIDIA GPU: weights (in their block formats), K, V and FASA's
     * labels in device memory (FASA-C). */
    FASA_DEVICE_CUDA = 1,
    /* An NVIDIA GPU with K and V in pinned host memory, read over PCIe row
     * by row; weights and labels in device memory (FASA-M). */
    FASA_DEVICE_CUDA_HOST_KV = 2,
} fasa_device;

typedef struct fasa_context_params {
    int32_t n_ctx;      /* tokens the KV cache holds; 0 = the model's training context */
    int32_t n_threads;  /* 0 = all available cores */
    int32_t n_batch;    /* max tokens per forward call chunk; 0 = the backend's (256 on the CPU, 1024 on a GPU) */
    fasa_kv_type kv_type;
    /* On a GPU: policies that select the top tokens by label scores (full,
     * fasa with one token set per KV group and no forced sinks); others fail
     * in fasa_context_set_attention. The GPU cache holds K, V and labels in
     * fp16 whatever kv_type says. Fails with FASA_E_UNSUPPORTED in a build
     * without CUDA or on a machine without a usable GPU, and with
     * FASA_E_NOMEM, naming the bytes needed, when the model and cache do not
     * fit its memory. */
    fasa_device device;
    int32_t cuda_device; /* CUDA device ordinal [0] */
    /* CPU: decode products on Q4_K and Q6_K weights round their activations
     * to int8 in groups of 32 and take integer dot products (about a third
     * of the f32 kernels' time per weight; an error of a few 1e-3 of a
     * product's largest output, as with llama.cpp's int8 activations; Qwen2.5
     * perplexity moved 0.3%). true keeps them f32:
     * what the float64 references check. Prefill is f32 either way. */
    bool f32_activations;
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
fasa_device fasa_context_device(const fasa_context *c);
/* Bytes of GPU memory the context holds (weights, caches, scratch; 0 on the CPU). */
uint64_t fasa_context_device_bytes(const fasa_context *c);

/* Runs n tokens through the model at positions n_past .. n_past+n-1 and
 * appends them to the KV cache. logits (may be NULL) receives n_vocab floats:
 * for the last token only, or for every token (n * n_vocab) when all_logits.
 * Fails with FASA_E_CONTEXT, leaving the cache unchanged, if the tokens do
 * not fit. On a GPU, a CUDA failure fails this call and every later one on
 * the context (free it). */
fasa_status fasa_eval(fasa_context *c, const int32_t *tokens, int32_t n, float *logits,
                      bool all_logits);

typedef struct fasa_sampler fasa_sampler;
/* One decode step of `token`, then the next token drawn by the sampler from
 * its logits, where they are computed (on a GPU they never leave it). The
 * same draws as fasa_sampler_sample on the same logits. */
fasa_status fasa_decode_sample(fasa_context *c, int32_t token, fasa_sampler *s, int32_t *next);

/* ---- decode attention policies ------------------------------------------ */

/* A calibration: for every (layer, query head), the RoPE frequency chunks
 * ranked by how well each alone predicts the full attention top-k. */
typedef struct fasa_calib fasa_calib;

typedef struct fasa_calib_params {
    int32_t budget;    /* K*: top-k size at which agreement is measured [256] */
    int32_t n_decode;  /* decode steps measured after the dense prefill [128] */
    int32_t greedy;    /* FCs per KV head chosen greedily for the group's compound selection,
                          one more decode pass each [0 = none: rank by each FC's own CA] */
    int32_t n_threads; /* 0 = all cores */
    /* Optional progress callback: called after each decode step. */
    void (*progress)(void *user, int32_t done, int32_t total);
    void *user;
} fasa_calib_params;

fasa_calib_params fasa_calib_default_params(void);

/* Calibrates the model on a token sequence: the first n - n_decode tokens
 * are prefilled densely, then each of the last n_decode tokens is decoded
 * (dense attention) and, at every step, every layer and query head, the
 * Contextual Agreement at budget K* of every frequency chunk is accumulated.
 * With greedy = G, the last n_decode tokens are decoded G more times; pass r
 * adds to each KV group's set the FC whose addition gives the group's
 * summed-score top-K* the most attention mass (mean over its query heads of
 * the share of the exact softmax weight it holds). Progress counts every
 * pass's steps. */
fasa_status fasa_calibrate(fasa_model *m, const int32_t *tokens, int32_t n, const fasa_calib_params *p,
                           fasa_calib **out);
/* JSON file I/O. Loading checks that the file was made for this model. */
fasa_status fasa_calib_save(const fasa_calib *c, const char *path);
fasa_status fasa_calib_load(const char *path, const fasa_model *m, fasa_calib **out);
void fasa_calib_free(fasa_calib *c);
/* Mean CA of frequency chunk fc of a query head, in [0, 1]. */
double fasa_calib_ca(const fasa_calib *c, int32_t layer, int32_t head, int32_t fc);
/* The head's frequency chunks ranked by mean CA, best first (head_dim / 2 entries). */
const int32_t *fasa_calib_ranking(const fasa_calib *c, int32_t layer, int32_t head);

/* How fasa chooses each KV head's frequency chunks from a calibration. */
typedef enum fasa_fc_choice {
    FASA_FC_KV_HEAD = 1, /* the group's n_tip best by mean CA (the greedy order first, when the
                            calibration has one): one label shared by the group */
    FASA_FC_UNION = 2,   /* the union of each query head's own n_tip: a larger label */
    FASA_FC_ALLOC = 3,   /* n_tip per KV head on average, shared out by how much each group's
                            greedy recall gains from one more chunk (calibrate --greedy) */
} fasa_fc_choice;

/* The element type of fasa's label cache (a GPU keeps f16 or int8). */
typedef enum fasa_label_type {
    FASA_LABELS_F32 = 1,  /* exact copies of the key coordinates */
    FASA_LABELS_F16 = 2,  /* half the bytes */
    FASA_LABELS_INT8 = 3, /* rounded to int8 with one f32 scale per token and KV head
                             (max |label| / 127): a quarter of f32 plus the scale */
} fasa_label_type;

/* Which cached tokens each decode step attends to. Prefill is always dense.
 * Zero-initialised fields take the method's default (given in brackets). */
typedef struct fasa_attn_params {
    const char *method;   /* full, fasa, oracle, stream, h2o, snapkv, quest, sparq, random [full] */
    int32_t budget;       /* tokens attended per head per decode step (required unless full) */
    int32_t per_head;     /* 0 method default, 1 select per query head, 2 one set per KV group */
    const char *dense_layers; /* comma list of layers kept dense [fasa: "0", others: ""] */
    /* fasa */
    const fasa_calib *calib;  /* required for fasa */
    int32_t n_tip;        /* dominant frequency chunks per head [head_dim / 8] */
    int32_t fc_union;     /* fasa_fc_choice: 0 method default [FASA_FC_KV_HEAD] */
    int32_t label_type;   /* fasa_label_type: 0 the backend's default [CPU: f32, GPU: f16] */
    /* stream and h2o */
    int32_t n_sink;       /* stream: attention-sink tokens kept [8]; fasa: first tokens always
                             taken, not in the paper [0] */
    int32_t n_recent;     /* h2o: most recent tokens kept [budget / 2]; fasa: last tokens always
                             taken, not in the paper [0] */
    /* snapkv */
    int32_t window;       /* observation window [32] */
    int32_t pool_kernel;  /* max-pooling kernel [7] */
    int32_t refresh;      /* re-select every N decoded tokens, 0 = never [0] */
    /* quest */
    int32_t page;         /* tokens per page [16] */
    /* sparq */
    int32_t sparq_r;      /* query coordinates used for approximate scores [head_dim / 4] */
    /* random */
    uint64_t seed;
} fasa_attn_params;

/* Installs a policy on the context (replacing any earlier one); method NULL
 * or "full" restores dense attention. The cache is kept: a policy set after
 * a prefill sees every cached token (its per-token structures are rebuilt). */
fasa_status fasa_context_set_attention(fasa_context *c, const fasa_attn_params *p);

/* Names of the available methods, NULL-terminated. */
const char *const *fasa_attn_methods(void);

/* ---- one FASA decode step on caller-provided buffers ------------------------
 * For engines that keep their own KV cache: TIP scores every token from its
 * label (the key's coordinates at label_coords), the top `budget` tokens get
 * exact softmax attention with the full q, K and V. All f32, contiguous. */
typedef struct fasa_step {
    int32_t n_heads, n_kv_heads, head_dim; /* query head h uses KV head h / (n_heads / n_kv_heads) */
    int32_t n_tokens;                      /* cached tokens, all visible */
    const float *q;                        /* [n_heads][head_dim], after RoPE */
    const float *k, *v;                    /* [n_kv_heads][n_tokens][head_dim] */
    const float *labels;                   /* [n_kv_heads][n_tokens][n_label] */
    const int32_t *label_coords;           /* [n_kv_heads][n_label]: coordinate of each label entry */
    int32_t n_label;
    int32_t budget;                        /* tokens attended per KV group (or per head) */
    bool per_head;                         /* select per query head instead of per KV group */
    float *out;                            /* [n_heads][head_dim] */
    int32_t *selected;                     /* optional [n_heads][budget]: chosen positions, ascending */
} fasa_step;

fasa_status fasa_attention_step(const fasa_step *s);

/* The label coordinates FASA uses for a KV head: the 2 * n_tip coordinates
 * of the n_tip chunks with the best mean CA over the head's query group,
 * ascending. The model's RoPE layout decides which coordinates pair up. */
fasa_status fasa_calib_label_coords(const fasa_calib *c, int32_t layer, int32_t kv_head, int32_t n_tip,
                                    int32_t *coords);

/* ---- sampling --------------------------------------------------------- */

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
