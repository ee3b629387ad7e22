/* The CPU backend's state: the KV cache, the installed policy and the
 * scratch buffers of the forward pass (forward.c). CPU-only tools (the
 * calibration, the CA probes, benchmarks) reach it through context_cpu. */
#ifndef FASA_BACKEND_CPU_H
#define FASA_BACKEND_CPU_H

#include "attn/policy.h"
#include "context.h"
#include "kv.h"

/* Tokens per part when a decode step's attention is split along the cache:
 * large enough that merging parts is negligible, small enough that a few
 * thousand tokens already spread over every core. */
#define CPU_DECODE_PART 256

typedef struct cpu_backend {
    const fasa_model *model;
    fasa_kv kv;
    int32_t n_threads;
    int32_t n_batch;
    bool f32_activations; /* fasa_context_params.f32_activations */
    /* Activations for up to n_batch tokens, row-major per token. */
    float *x;       /* [n_batch][n_embd] residual stream */
    float *xb;      /* [n_batch][max(n_embd, n_heads*head_dim)] normed input / attention out */
    float *q;       /* [n_batch][n_heads*head_dim] */
    float *k, *v;   /* [n_batch][n_kv_heads*head_dim] */
    float *gate;    /* [n_batch][n_ff] */
    float *up;      /* [n_batch][n_ff] */
    float *proj;    /* [n_batch][n_embd] output of wo / w_down before the residual add */
    float *rope_cos, *rope_sin; /* [n_batch][head_dim/2] */
    float *attn_scratch;        /* per thread: attn_dense_scratch(group, n_ctx, head_dim) */
    int64_t attn_scratch_stride;
    /* Decode-attention policy (NULL: dense) and the decode step's buffers. */
    attn_policy *policy;
    float *policy_scratch;      /* per thread: policy->scratch_floats */
    int32_t *unit_idx;          /* per selection unit (at most n_heads): n_ctx chosen positions */
    int32_t *unit_count;        /* [n_heads] chosen count, -1 = all */
    float *attn_parts;          /* split-attention partial results, see attention_decode */
    /* Queries of the last ATTN_QUERY_HISTORY positions per layer, a ring
     * indexed by position, replayed to a policy installed mid-sequence. */
    float *q_hist;              /* [n_layers][ATTN_QUERY_HISTORY][n_heads * head_dim] */
} cpu_backend;

/* The CPU state of a context, or NULL with an error naming `what` (the
 * CPU-only feature asked for) when the context runs elsewhere. */
cpu_backend *context_cpu(const fasa_context *c, const char *what);

/* forward.c: runs n tokens at positions b->kv.n_tokens .. (a prefill chunk
 * of at most n_batch, or one decode step when n == 1), appends them to the
 * cache, and writes logits (NULL: none; the last token's, or all n). */
void cpu_forward(cpu_backend *b, const int32_t *tokens, int32_t n, float *logits, bool all_logits);

/* The attention of one layer for n tokens at positions pos0.. whose queries
 * are in b->q and whose keys are already cached; output in b->xb. Part of
 * the forward pass, exposed so benchmarks can time attention alone. */
void forward_attention(cpu_backend *b, int32_t layer, int32_t pos0, int32_t n);

#endif
