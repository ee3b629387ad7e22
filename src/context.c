#include "context.h"

#include <omp.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "attn/dense.h"
#include "error.h"

fasa_context_params fasa_context_default_params(void) {
    return (fasa_context_params){.n_ctx = 0, .n_threads = 0, .n_batch = 256, .kv_type = FASA_KV_F32};
}

static fasa_status alloc_scratch(fasa_context *c) {
    const fasa_model_info *in = &c->model->info;
    const size_t B = (size_t)c->n_batch, HD = (size_t)in->n_heads * in->head_dim;
    const size_t KVD = (size_t)in->n_kv_heads * in->head_dim;
    const size_t E = (size_t)in->n_embd, wide = E > HD ? E : HD;
    const int32_t group = in->n_heads / in->n_kv_heads;
    c->attn_scratch_stride = attn_dense_scratch(group, c->kv.n_ctx, in->head_dim);
    if (!(c->x = fasa_malloc(B, E * sizeof(float), "activations")) ||
        !(c->xb = fasa_malloc(B, wide * sizeof(float), "activations")) ||
        !(c->q = fasa_malloc(B, HD * sizeof(float), "queries")) ||
        !(c->k = fasa_malloc(B, KVD * sizeof(float), "keys")) ||
        !(c->v = fasa_malloc(B, KVD * sizeof(float), "values")) ||
        !(c->gate = fasa_malloc(B, (size_t)in->n_ff * sizeof(float), "feed-forward buffer")) ||
        !(c->up = fasa_malloc(B, (size_t)in->n_ff * sizeof(float), "feed-forward buffer")) ||
        !(c->proj = fasa_malloc(B, E * sizeof(float), "projection buffer")) ||
        !(c->rope_cos = fasa_malloc(B, (size_t)in->head_dim / 2 * sizeof(float), "RoPE table")) ||
        !(c->rope_sin = fasa_malloc(B, (size_t)in->head_dim / 2 * sizeof(float), "RoPE table")) ||
        !(c->attn_scratch = fasa_malloc((size_t)c->n_threads * (size_t)c->attn_scratch_stride,
                                        sizeof(float), "attention scratch")) ||
        !(c->unit_idx = fasa_malloc((size_t)in->n_heads * (size_t)c->kv.n_ctx, sizeof(int32_t),
                                    "attention index buffer")) ||
        !(c->unit_count = fasa_malloc((size_t)in->n_heads, sizeof(int32_t), "attention counts")) ||
        !(c->attn_parts = fasa_malloc((size_t)in->n_heads * ((size_t)c->kv.n_ctx / CONTEXT_DECODE_PART + 1),
                                      (size_t)(in->head_dim + 2) * sizeof(float), "attention parts")) ||
        !(c->q_hist = fasa_malloc((size_t)in->n_layers * ATTN_QUERY_HISTORY, HD * sizeof(float),
                                  "query history")))
        return FASA_E_NOMEM;
    return FASA_OK;
}

/* Bytes a context of n_ctx tokens holds that grow with n_ctx: the KV cache
 * and the per-thread attention buffers (alloc_scratch). */
static double context_bytes(const fasa_model_info *in, int32_t n_ctx, fasa_kv_type type, int32_t n_threads) {
    const double elem = type == FASA_KV_F32 ? 4.0 : 2.0;
    const double kv = 2.0 * in->n_layers * in->n_kv_heads * (double)n_ctx * in->head_dim * elem;
    const double scratch = 4.0 * n_ctx * ((double)n_threads * (in->n_heads / in->n_kv_heads) + in->n_heads);
    return kv + scratch;
}

/* Linux overcommits memory, so a context larger than the machine would fail
 * late (or get the process killed) instead of here: refuse it up front,
 * saying what to lower. */
static fasa_status check_memory(const fasa_model_info *in, int32_t n_ctx, fasa_kv_type type, int32_t n_threads) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return FASA_OK;
    const double have = (double)pages * (double)page, need = context_bytes(in, n_ctx, type, n_threads);
    if (need <= have) return FASA_OK;
    return fasa_error(FASA_E_NOMEM,
                      "a context of %d tokens needs %.1f GB for its KV cache and buffers, more than this "
                      "machine's %.1f GB of memory: lower the context size (-c, n_ctx)%s",
                      n_ctx, need / 1e9, have / 1e9, type == FASA_KV_F32 ? " or use an f16 cache (--kv-type f16)" : "");
}

fasa_status fasa_context_init(fasa_model *m, const fasa_context_params *p, fasa_context **out) {
    *out = NULL;
    fasa_context_params def = fasa_context_default_params();
    if (!p) p = &def;
    const fasa_model_info *in = &m->info;
    if (p->n_ctx < 0 || p->n_threads < 0 || p->n_batch < 0)
        return fasa_error(FASA_E_ARG, "context parameters must not be negative");
    /* Positions past the training context are allowed on request (the user
     * may know the model extrapolates), but never silently chosen. */
    const int32_t n_ctx = p->n_ctx ? p->n_ctx : in->n_ctx_train;
    const int32_t n_threads = p->n_threads ? p->n_threads : omp_get_num_procs();
    fasa_status st = check_memory(in, n_ctx, p->kv_type, n_threads);
    if (st) return st;
    fasa_context *c = fasa_calloc(1, sizeof *c, "context");
    if (!c) return FASA_E_NOMEM;
    c->model = m;
    c->n_threads = n_threads;
    c->n_batch = p->n_batch ? p->n_batch : 256;
    c->device = p->device;
    c->cuda_device = p->cuda_device;
    if (p->device != FASA_DEVICE_CPU && p->device != FASA_DEVICE_CUDA && p->device != FASA_DEVICE_CUDA_HOST_KV) {
        free(c);
        return fasa_error(FASA_E_ARG, "unknown device %d", (int)p->device);
    }
    st = kv_init(&c->kv, in->n_layers, in->n_kv_heads, in->head_dim, n_ctx, p->kv_type);
    if (!st) st = alloc_scratch(c);
    if (!st && c->device != FASA_DEVICE_CPU) {
        const attn_shape shape = context_attn_shape(c);
        st = context_gpu_create(&c->kv, &shape, c->device, c->cuda_device, NULL, NULL, &c->gpu);
    }
    if (st) {
        fasa_context_free(c);
        return st;
    }
    *out = c;
    return FASA_OK;
}

void fasa_context_free(fasa_context *c) {
    if (!c) return;
    kv_free(&c->kv);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->gate);
    free(c->up);
    free(c->proj);
    free(c->rope_cos);
    free(c->rope_sin);
    free(c->attn_scratch);
    free(c->unit_idx);
    free(c->unit_count);
    free(c->attn_parts);
    free(c->q_hist);
    free(c->policy_scratch);
    attn_policy_free(c->policy);
    context_gpu_free(c->gpu);
    free(c);
}

void fasa_context_reset(fasa_context *c) { fasa_context_truncate(c, 0); }
int32_t fasa_context_n_past(const fasa_context *c) { return c->kv.n_tokens; }
int32_t fasa_context_n_ctx(const fasa_context *c) { return c->kv.n_ctx; }

fasa_status fasa_context_truncate(fasa_context *c, int32_t n) {
    if (n < 0 || n > c->kv.n_tokens)
        return fasa_error(FASA_E_ARG, "cannot truncate a context of %d tokens to %d", c->kv.n_tokens, n);
    c->kv.n_tokens = n;
    if (c->policy && c->policy->ops->truncate) c->policy->ops->truncate(c->policy, n);
    if (c->gpu && !c->fault) context_set_fault(c, context_gpu_truncate(c->gpu, n));
    return context_check_fault(c);
}

void context_set_fault(fasa_context *c, fasa_status st) {
    if (!st || c->fault) return;
    c->fault = st;
    snprintf(c->fault_msg, sizeof c->fault_msg, "%s", fasa_last_error());
}

fasa_status context_check_fault(const fasa_context *c) {
    if (!c->fault) return FASA_OK;
    return fasa_error(c->fault, "decode attention on the GPU failed, so this context can no longer be used: %s",
                      c->fault_msg);
}

attn_shape context_attn_shape(const fasa_context *c) {
    const fasa_model_info *in = &c->model->info;
    return (attn_shape){in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim, c->kv.n_ctx, in->rope_layout};
}

/* Shows a freshly installed policy the tokens already cached: every key, and
 * the queries of the most recent positions as one prefill per layer. */
static fasa_status replay_cache(fasa_context *c, attn_policy *p) {
    const int32_t n = c->kv.n_tokens;
    if (n == 0) return FASA_OK;
    const fasa_model_info *in = &c->model->info;
    const int64_t HD = (int64_t)in->n_heads * in->head_dim;
    const int32_t n_q = n < ATTN_QUERY_HISTORY ? n : ATTN_QUERY_HISTORY, pos0 = n - n_q;
    float *q = p->ops->prefill ? fasa_malloc((size_t)n_q, (size_t)HD * sizeof(float), "query replay") : NULL;
    if (p->ops->prefill && !q) return FASA_E_NOMEM;
    for (int32_t l = 0; l < in->n_layers; l++) {
        if (p->ops->append)
            for (int32_t pos = 0; pos < n; pos++) p->ops->append(p, &c->kv, l, pos);
        if (!q) continue;
        for (int32_t t = 0; t < n_q; t++)
            memcpy(q + t * HD, c->q_hist + ((int64_t)l * ATTN_QUERY_HISTORY + (pos0 + t) % ATTN_QUERY_HISTORY) * HD,
                   (size_t)HD * sizeof(float));
        p->ops->prefill(p, &c->kv, l, q, pos0, n_q);
    }
    free(q);
    return FASA_OK;
}

fasa_status context_install_policy(fasa_context *c, attn_policy *p) {
    attn_policy_free(c->policy);
    free(c->policy_scratch);
    c->policy = NULL;
    c->policy_scratch = NULL;
    if (!p) return FASA_OK;
    fasa_status st = FASA_OK;
    if (p->scratch_floats > 0 &&
        !(c->policy_scratch = fasa_malloc((size_t)c->n_threads * (size_t)p->scratch_floats, sizeof(float),
                                          "policy scratch")))
        st = FASA_E_NOMEM;
    if (!st) st = replay_cache(c, p);
    if (st) {
        attn_policy_free(p);
        free(c->policy_scratch);
        c->policy_scratch = NULL;
        return st;
    }
    c->policy = p;
    return FASA_OK;
}

fasa_status fasa_context_set_attention(fasa_context *c, const fasa_attn_params *params) {
    if (!params || !params->method || !strcmp(params->method, "full")) return context_install_policy(c, NULL);
    const attn_shape shape = context_attn_shape(c);
    attn_policy *p;
    fasa_status st = attn_policy_create(params, &shape, c->kv.n_tokens, &p);
    if (st) return st;
    /* A GPU cache with this policy's labels; the old one stays until the policy is in. */
    context_gpu *g = NULL;
    if (c->gpu && (st = context_gpu_create(&c->kv, &shape, c->device, c->cuda_device, p, params->calib, &g))) {
        attn_policy_free(p);
        return st;
    }
    if ((st = context_install_policy(c, p))) {
        context_gpu_free(g); /* the context is dense now, which the old GPU cache runs */
        return st;
    }
    if (g) {
        context_gpu_free(c->gpu);
        c->gpu = g;
    }
    return FASA_OK;
}
