/* The CPU backend: the forward pass of forward.c over a KV cache in host
 * memory, with any attention policy (policies select through callbacks on
 * this cache). */
#include "backend_cpu.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/dense.h"
#include "attn/prefill.h"
#include "error.h"
#include "quant.h"

static cpu_backend *cpu(const fasa_context *c) { return c->be; }

cpu_backend *context_cpu(const fasa_context *c, const char *what) {
    if (c->ops == &backend_cpu_ops) return c->be;
    fasa_error(FASA_E_UNSUPPORTED, "%s runs on the CPU only; this context runs on %s", what, c->ops->name);
    return NULL;
}

static fasa_status alloc_scratch(cpu_backend *b) {
    const fasa_model_info *in = &b->model->info;
    const size_t B = (size_t)b->n_batch, HD = (size_t)in->n_heads * in->head_dim;
    const size_t KVD = (size_t)in->n_kv_heads * in->head_dim;
    const size_t E = (size_t)in->n_embd, wide = E > HD ? E : HD;
    const int32_t group = in->n_heads / in->n_kv_heads;
    const int64_t decode_scratch = attn_dense_scratch(group, b->kv.n_ctx, in->head_dim);
    const int64_t prefill_scratch = attn_prefill_scratch(group, in->head_dim);
    b->attn_scratch_stride = decode_scratch > prefill_scratch ? decode_scratch : prefill_scratch;
    if (!(b->x = fasa_malloc(B, E * sizeof(float), "activations")) ||
        !(b->xb = fasa_malloc(B, wide * sizeof(float), "activations")) ||
        !(b->q = fasa_malloc(B, HD * sizeof(float), "queries")) ||
        !(b->k = fasa_malloc(B, KVD * sizeof(float), "keys")) ||
        !(b->v = fasa_malloc(B, KVD * sizeof(float), "values")) ||
        !(b->gate = fasa_malloc(B, (size_t)in->n_ff * sizeof(float), "feed-forward buffer")) ||
        !(b->up = fasa_malloc(B, (size_t)in->n_ff * sizeof(float), "feed-forward buffer")) ||
        !(b->proj = fasa_malloc(B, E * sizeof(float), "projection buffer")) ||
        !(b->rope_cos = fasa_malloc(B, (size_t)in->head_dim / 2 * sizeof(float), "RoPE table")) ||
        !(b->rope_sin = fasa_malloc(B, (size_t)in->head_dim / 2 * sizeof(float), "RoPE table")) ||
        !(b->attn_scratch = fasa_malloc((size_t)b->n_threads * (size_t)b->attn_scratch_stride,
                                        sizeof(float), "attention scratch")) ||
        !(b->unit_idx = fasa_malloc((size_t)in->n_heads * (size_t)b->kv.n_ctx, sizeof(int32_t),
                                    "attention index buffer")) ||
        !(b->unit_count = fasa_malloc((size_t)in->n_heads, sizeof(int32_t), "attention counts")) ||
        !(b->attn_parts = fasa_malloc((size_t)in->n_heads * ((size_t)b->kv.n_ctx / CPU_DECODE_PART + 1),
                                      (size_t)(in->head_dim + 2) * sizeof(float), "attention parts")) ||
        !(b->q_hist = fasa_malloc((size_t)in->n_layers * ATTN_QUERY_HISTORY, HD * sizeof(float),
                                  "query history")))
        return FASA_E_NOMEM;
    return FASA_OK;
}

static void cpu_free(fasa_context *c) {
    cpu_backend *b = cpu(c);
    if (!b) return;
    kv_free(&b->kv);
    free(b->x);
    free(b->xb);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->gate);
    free(b->up);
    free(b->proj);
    free(b->rope_cos);
    free(b->rope_sin);
    free(b->attn_scratch);
    free(b->unit_idx);
    free(b->unit_count);
    free(b->attn_parts);
    free(b->q_hist);
    free(b->policy_scratch);
    attn_policy_free(b->policy);
    free(b);
    c->be = NULL;
}

static fasa_status cpu_init(fasa_context *c, const fasa_context_params *p) {
    const fasa_model_info *in = &c->model->info;
    cpu_backend *b = fasa_calloc(1, sizeof *b, "CPU backend");
    if (!b) return FASA_E_NOMEM;
    c->be = b;
    b->model = c->model;
    b->n_threads = c->n_threads;
    b->n_batch = p->n_batch ? p->n_batch : 256;
    b->f32_activations = p->f32_activations;
    fasa_status st = kv_init(&b->kv, in->n_layers, in->n_kv_heads, in->head_dim, c->n_ctx, p->kv_type);
    if (!st) st = alloc_scratch(b);
    if (st) cpu_free(c);
    return st;
}

static fasa_status cpu_prefill(fasa_context *c, const int32_t *tokens, int32_t n, float *logits, bool all_logits) {
    cpu_backend *b = cpu(c);
    const int32_t n_vocab = c->model->info.n_vocab;
    for (int32_t i = 0; i < n; i += b->n_batch) {
        const int32_t nb = n - i < b->n_batch ? n - i : b->n_batch;
        float *out = NULL;
        if (logits && all_logits) out = logits + (int64_t)i * n_vocab;
        else if (logits && i + nb == n) out = logits;
        cpu_forward(b, tokens + i, nb, out, all_logits);
    }
    return FASA_OK;
}

static fasa_status cpu_decode(fasa_context *c, int32_t token, float *logits) {
    cpu_forward(cpu(c), &token, 1, logits, false);
    return FASA_OK;
}

static fasa_status cpu_truncate(fasa_context *c, int32_t n) {
    cpu_backend *b = cpu(c);
    b->kv.n_tokens = n;
    if (b->policy && b->policy->ops->truncate) b->policy->ops->truncate(b->policy, n);
    return FASA_OK;
}

/* Shows a freshly installed policy the tokens already cached: every key, and
 * the queries of the most recent positions as one prefill per layer. */
static fasa_status replay_cache(cpu_backend *b, attn_policy *p) {
    const int32_t n = b->kv.n_tokens;
    if (n == 0) return FASA_OK;
    const fasa_model_info *in = &b->model->info;
    const int64_t HD = (int64_t)in->n_heads * in->head_dim;
    const int32_t n_q = n < ATTN_QUERY_HISTORY ? n : ATTN_QUERY_HISTORY, pos0 = n - n_q;
    float *q = p->ops->prefill ? fasa_malloc((size_t)n_q, (size_t)HD * sizeof(float), "query replay") : NULL;
    if (p->ops->prefill && !q) return FASA_E_NOMEM;
    for (int32_t l = 0; l < in->n_layers; l++) {
        if (p->ops->append)
            for (int32_t pos = 0; pos < n; pos++) p->ops->append(p, &b->kv, l, pos);
        if (!q) continue;
        for (int32_t t = 0; t < n_q; t++)
            memcpy(q + t * HD, b->q_hist + ((int64_t)l * ATTN_QUERY_HISTORY + (pos0 + t) % ATTN_QUERY_HISTORY) * HD,
                   (size_t)HD * sizeof(float));
        p->ops->prefill(p, &b->kv, l, q, pos0, n_q);
    }
    free(q);
    return FASA_OK;
}

static fasa_status cpu_set_policy(fasa_context *c, attn_policy *p) {
    cpu_backend *b = cpu(c);
    float *scratch = NULL;
    fasa_status st = FASA_OK;
    if (p) st = attn_policy_bind_cpu(p);
    if (!st && p && p->scratch_floats > 0 &&
        !(scratch = fasa_malloc((size_t)b->n_threads * (size_t)p->scratch_floats, sizeof(float), "policy scratch")))
        st = FASA_E_NOMEM;
    if (!st && p) st = replay_cache(b, p);
    if (st) {
        attn_policy_free(p);
        free(scratch);
        return st;
    }
    attn_policy_free(b->policy);
    free(b->policy_scratch);
    b->policy = p;
    b->policy_scratch = scratch;
    return FASA_OK;
}

static fasa_status cpu_fill_random(fasa_context *c, int32_t n, uint64_t seed) {
    cpu_backend *b = cpu(c);
    fasa_kv *kv = &b->kv;
    uint64_t x = seed;
    const size_t count = (size_t)kv->n_layers * kv->n_kv_heads * kv->n_ctx * kv->head_dim;
    for (size_t i = 0; i < count; i++) {
        /* xorshift64: uniform in [-1, 1) */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const float f = (float)((double)(x >> 11) * 0x1.0p-52 - 1.0);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const float g = (float)((double)(x >> 11) * 0x1.0p-52 - 1.0);
        if (kv->type == FASA_KV_F32) {
            ((float *)kv->k)[i] = f;
            ((float *)kv->v)[i] = g;
        } else {
            ((uint16_t *)kv->k)[i] = fasa_f32_to_f16(f);
            ((uint16_t *)kv->v)[i] = fasa_f32_to_f16(g);
        }
    }
    kv->n_tokens = n;
    return b->policy ? replay_cache(b, b->policy) : FASA_OK;
}

static uint64_t cpu_device_bytes(const fasa_context *c) { return 0; }

const backend_ops backend_cpu_ops = {
    .name = "the CPU",
    .init = cpu_init,
    .free = cpu_free,
    .prefill = cpu_prefill,
    .decode = cpu_decode,
    .truncate = cpu_truncate,
    .set_policy = cpu_set_policy,
    .fill_random = cpu_fill_random,
    .device_bytes = cpu_device_bytes,
};
