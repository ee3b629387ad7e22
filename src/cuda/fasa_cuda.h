/* fasa_cuda: decode attention on an NVIDIA GPU (dense, FASA-C, FASA-M).
 *
 * One fasa_cuda_ctx per model: it fixes the attention shape, where K and V
 * live, the label cache format, and owns the scratch that every layer's
 * decode step shares (one stream, so layers run one after another).
 * One fasa_cuda_layer per transformer layer: its K, V and label cache.
 *
 * Layout (per layer): K and V as [n_kv_heads][n_ctx][head_dim] fp16, one
 * contiguous block per KV head so that a head's cache streams in one sweep;
 * labels as [n_kv_heads][n_ctx][n_lab], the dominant-FC coordinates of each
 * token side by side so that token importance prediction (TIP) reads only
 * them. In mode M, K and V sit in pinned host memory that the GPU reads
 * directly over PCIe, and only the labels occupy device memory.
 *
 * Steps are enqueued on the context's stream and never synchronize, so a
 * whole multi-layer decode step can be captured in a CUDA graph;
 * fasa_cuda_ctx_sync() waits and reports a fault. Errors follow fasa.h:
 * a fasa_status plus fasa_last_error(). Free a context's layers before the
 * context; one host thread drives a context. */
#ifndef FASA_CUDA_H
#define FASA_CUDA_H

#include "fasa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fasa_cuda_ctx fasa_cuda_ctx;
typedef struct fasa_cuda_layer fasa_cuda_layer;

typedef enum fasa_cuda_mode {
    FASA_CUDA_MODE_C = 0, /* K, V and labels in device memory (compute-optimized) */
    FASA_CUDA_MODE_M = 1, /* labels on the device, K and V in pinned host memory */
} fasa_cuda_mode;

typedef enum fasa_cuda_label_type {
    FASA_CUDA_LABEL_F16 = 0, /* the coordinates as stored in K */
    FASA_CUDA_LABEL_I8 = 1,  /* int8 with one fp32 scale per token: half the TIP bytes */
} fasa_cuda_label_type;

typedef struct fasa_cuda_params {
    int32_t n_heads;    /* query heads */
    int32_t n_kv_heads; /* n_heads / n_kv_heads query heads share a KV head (at most 8) */
    int32_t head_dim;   /* 64 or 128 */
    int32_t n_ctx;      /* tokens each layer's cache holds */
    fasa_cuda_mode mode;
    int32_t n_lab;      /* label coordinates per token (2 per dominant FC); 0 = dense only */
    fasa_cuda_label_type label_type;
    bool per_head_select; /* one token set per query head instead of one per KV group */
    int32_t n_fac_max;  /* largest token budget a FASA step will ask for */
    int32_t device;     /* CUDA device ordinal */
} fasa_cuda_params;

fasa_cuda_params fasa_cuda_default_params(void);

fasa_status fasa_cuda_ctx_init(const fasa_cuda_params *p, fasa_cuda_ctx **out);
void fasa_cuda_ctx_free(fasa_cuda_ctx *ctx);
/* The stream every step is enqueued on (a cudaStream_t). */
void *fasa_cuda_ctx_stream(fasa_cuda_ctx *ctx);
/* Waits for all enqueued work; returns the first fault with a message. */
fasa_status fasa_cuda_ctx_sync(fasa_cuda_ctx *ctx);
/* Device bytes of the shared scratch (scores, candidates, partial outputs). */
uint64_t fasa_cuda_ctx_device_bytes(const fasa_cuda_ctx *ctx);

/* lab_idx: [n_kv_heads][n_lab] coordinates into head_dim (host memory); the
 * label of a token is K at those coordinates. NULL when n_lab is 0. */
fasa_status fasa_cuda_layer_init(fasa_cuda_ctx *ctx, const int32_t *lab_idx, fasa_cuda_layer **out);
/* The same with this layer's K and V where kv_mode says, whatever the
 * context's mode: a layer a FASA-M model keeps dense reads its whole cache
 * every step, which over PCIe would cost more than all the sparse layers. */
fasa_status fasa_cuda_layer_init_kv(fasa_cuda_ctx *ctx, const int32_t *lab_idx, fasa_cuda_mode kv_mode,
                                    fasa_cuda_layer **out);
void fasa_cuda_layer_free(fasa_cuda_layer *l);
int32_t fasa_cuda_layer_n_past(const fasa_cuda_layer *l);
/* Device bytes this layer holds (K, V and labels; in mode M labels only, unless
 * fasa_cuda_layer_init_kv put its K and V on the device). */
uint64_t fasa_cuda_layer_device_bytes(const fasa_cuda_layer *l);
/* Host bytes of pinned memory this layer holds (mode M: K and V). */
uint64_t fasa_cuda_layer_host_bytes(const fasa_cuda_layer *l);

/* Appends n tokens: k and v are host arrays [n][n_kv_heads][head_dim] fp32
 * (post-RoPE K). Converts to fp16 and derives the labels from K. Synchronous
 * with respect to the host arrays (they may be reused on return).
 * FASA_E_CONTEXT when the cache would overflow (the cache is left unchanged). */
fasa_status fasa_cuda_layer_append(fasa_cuda_layer *l, const float *k, const float *v, int32_t n);
/* The same from DEVICE arrays [n][n_kv_heads][head_dim] fp32, enqueued only
 * (the arrays must stay valid until the stream reaches the append). */
fasa_status fasa_cuda_layer_append_dev(fasa_cuda_layer *l, const float *k, const float *v, int32_t n);
/* dst (a layer of another context of the same shape) takes src's cached
 * tokens: K and V copied on the device, dst's labels derived from them. */
fasa_status fasa_cuda_layer_copy(fasa_cuda_layer *dst, const fasa_cuda_layer *src);
/* Forgets every cached token. */
void fasa_cuda_layer_reset(fasa_cuda_layer *l);
/* Keeps the first n cached tokens (0 <= n <= n_past). */
fasa_status fasa_cuda_layer_truncate(fasa_cuda_layer *l, int32_t n);

/* One decode step over every cached token. q and out are DEVICE arrays
 * [n_heads][head_dim] fp32; q is the post-RoPE query of the new token (its
 * own K and V must already be appended). Enqueued only. */
fasa_status fasa_cuda_dense_step(fasa_cuda_layer *l, const float *q, float *out);
/* Dense attention of one query over the first n_rows cached tokens (a
 * prompt token's causal attention during a prefill). Enqueued only. */
fasa_status fasa_cuda_dense_rows(fasa_cuda_layer *l, int32_t n_rows, const float *q, float *out);
/* Causal attention of a prompt chunk: the last n cached tokens attend to
 * every cached token up to their own (flash attention on tensor cores).
 * q: DEVICE [n][n_heads][head_dim] fp32 post-RoPE; out: DEVICE
 * [n][n_heads][head_dim] fp16. For chunks of many tokens; a few tokens deep
 * in a long cache run faster through fasa_cuda_dense_rows, which splits
 * the keys over CTAs. Enqueued only. */
fasa_status fasa_cuda_prefill_attn(fasa_cuda_layer *l, int32_t n, const float *q, void *out);
/* One FASA decode step: TIP over the label cache, top-n_fac token selection,
 * exact attention over the selected tokens. Where n_fac covers every cached
 * token this is the dense step. Enqueued only. */
fasa_status fasa_cuda_fasa_step(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out);

/* Device buffer helpers so that callers need not include the CUDA runtime. */
fasa_status fasa_cuda_alloc(fasa_cuda_ctx *ctx, size_t bytes, void **out);
void fasa_cuda_free(void *p);
fasa_status fasa_cuda_upload(fasa_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
fasa_status fasa_cuda_download(fasa_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
