/* A context: one model plus the state of one sequence (KV cache) and the
 * scratch buffers its forward pass needs. */
#ifndef FASA_CONTEXT_H
#define FASA_CONTEXT_H

#include "attn/policy.h"
#include "kv.h"
#include "model.h"

struct fasa_context {
    fasa_model *model;
    fasa_kv kv;
    int32_t n_threads;
    int32_t n_batch;
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
    /* Decode-attention policy (NULL: dense) and its per-thread buffers. */
    attn_policy *policy;
    float *policy_scratch;      /* per thread: policy->scratch_floats */
    int32_t *policy_idx;        /* per thread: n_ctx positions */
    /* Queries of the last ATTN_QUERY_HISTORY positions per layer, a ring
     * indexed by position, replayed to a policy installed mid-sequence. */
    float *q_hist;              /* [n_layers][ATTN_QUERY_HISTORY][n_heads * head_dim] */
};

/* Installs p (taking ownership; NULL = dense), replaying the cached tokens
 * to it. On failure the context keeps dense attention and p is freed. */
fasa_status context_install_policy(fasa_context *c, attn_policy *p);

/* The shape policies are created for. */
attn_shape context_attn_shape(const fasa_context *c);

#endif
