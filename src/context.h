/* A context: one model plus the state of one sequence (KV cache) and the
 * scratch buffers its forward pass needs. */
#ifndef FASA_CONTEXT_H
#define FASA_CONTEXT_H

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
};

#endif
