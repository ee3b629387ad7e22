/* A context: one model plus the state of one sequence (KV cache) and the
 * scratch buffers its forward pass needs. */
#ifndef FASA_CONTEXT_H
#define FASA_CONTEXT_H

#include "attn/policy.h"
#include "context_gpu.h"
#include "kv.h"
#include "model.h"

/* Tokens per part when a decode step's attention is split along the cache:
 * large enough that merging parts is negligible, small enough that a few
 * thousand tokens already spread over every core. */
#define CONTEXT_DECODE_PART 256

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
    /* Decode-attention policy (NULL: dense) and the decode step's buffers. */
    attn_policy *policy;
    float *policy_scratch;      /* per thread: policy->scratch_floats */
    int32_t *unit_idx;          /* per selection unit (at most n_heads): n_ctx chosen positions */
    int32_t *unit_count;        /* [n_heads] chosen count, -1 = all */
    float *attn_parts;          /* split-attention partial results, see attention_decode */
    /* Queries of the last ATTN_QUERY_HISTORY positions per layer, a ring
     * indexed by position, replayed to a policy installed mid-sequence. */
    float *q_hist;              /* [n_layers][ATTN_QUERY_HISTORY][n_heads * head_dim] */
    /* Decode attention on a GPU (device != CPU): a copy of the cache there. */
    fasa_device device;
    int32_t cuda_device;
    context_gpu *gpu;
    /* The first GPU failure inside a forward pass; the context refuses
     * further work once it is set, since its caches may disagree. */
    fasa_status fault;
    char fault_msg[256];
};

/* Records the first GPU failure (st != FASA_OK) with its message. */
void context_set_fault(fasa_context *c, fasa_status st);
/* FASA_OK, or the recorded failure as a fresh error for the caller. */
fasa_status context_check_fault(const fasa_context *c);

/* Installs p (taking ownership; NULL = dense), replaying the cached tokens
 * to it. On failure the context keeps dense attention and p is freed. */
fasa_status context_install_policy(fasa_context *c, attn_policy *p);

/* The attention of one layer for n tokens at positions pos0.. whose queries
 * are in c->q and whose keys are already cached; output in c->xb. Part of the
 * forward pass, exposed so benchmarks can time attention alone. */
void forward_attention(fasa_context *c, int32_t layer, int32_t pos0, int32_t n);

/* The shape policies are created for. */
attn_shape context_attn_shape(const fasa_context *c);

#endif
