#include "context_gpu.h"

#include "error.h"

#ifndef FASA_HAVE_CUDA

fasa_status context_gpu_create(const fasa_kv *kv, const attn_shape *shape, fasa_device device, int32_t ordinal,
                               const attn_policy *policy, const fasa_calib *calib, context_gpu **out) {
    *out = NULL;
    return fasa_error(FASA_E_UNSUPPORTED,
                      "this build has no CUDA backend: rebuild on a machine with nvcc (CMake FASA_CUDA=ON) "
                      "to run decode attention on a GPU");
}
void context_gpu_free(context_gpu *g) {}
fasa_status context_gpu_append(context_gpu *g, int32_t layer, const float *k, const float *v, int32_t n) {
    return fasa_error(FASA_E_INTERNAL, "no CUDA backend in this build");
}
fasa_status context_gpu_decode(context_gpu *g, int32_t layer, const attn_policy *policy, const float *q,
                               float *out) {
    return fasa_error(FASA_E_INTERNAL, "no CUDA backend in this build");
}
fasa_status context_gpu_truncate(context_gpu *g, int32_t n) {
    return fasa_error(FASA_E_INTERNAL, "no CUDA backend in this build");
}
uint64_t context_gpu_device_bytes(const context_gpu *g) { return 0; }

#else

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasa_cuda.h"

struct context_gpu {
    fasa_cuda_ctx *ctx;
    fasa_cuda_layer **layers;  /* [n_layers] */
    int32_t n_layers;
    const attn_policy *policy; /* the fasa policy the labels were made for, or NULL */
    int32_t budget;
    float *d_q, *d_out;        /* device [n_heads][head_dim] */
    size_t qkv_bytes;          /* bytes of one q or out */
};

/* Checks that the CPU policy is one the GPU runs exactly as the CPU would. */
static fasa_status check_policy(const attn_policy *p) {
    if (strcmp(p->ops->name, "fasa"))
        return fasa_error(FASA_E_UNSUPPORTED,
                          "--attn %s runs on the CPU only; on a GPU (--device cuda, cuda-m) the methods are full "
                          "and fasa", p->ops->name);
    if (p->per_head)
        return fasa_error(FASA_E_UNSUPPORTED, "fasa on a GPU selects one token set per KV group (--select group)");
    if (p->params.fc_union != 1)
        return fasa_error(FASA_E_UNSUPPORTED, "fasa on a GPU takes the FCs per KV head (--fc-choice kv-head)");
    if (p->params.n_sink > 0)
        return fasa_error(FASA_E_UNSUPPORTED, "fasa on a GPU has no forced sink tokens (--sinks 0)");
    return FASA_OK;
}

/* Copies the tokens kv caches into the GPU layers, STAGE tokens at a time. */
static fasa_status replay(context_gpu *g, const fasa_kv *kv) {
    enum { STAGE = 256 };
    const int32_t KV = kv->n_kv_heads, d = kv->head_dim;
    const size_t row = (size_t)KV * d;
    float *k = fasa_malloc(2 * STAGE, row * sizeof(float), "GPU replay buffer");
    if (!k) return FASA_E_NOMEM;
    float *v = k + STAGE * row;
    fasa_status st = FASA_OK;
    for (int32_t l = 0; l < kv->n_layers && !st; l++)
        for (int32_t p0 = 0; p0 < kv->n_tokens && !st; p0 += STAGE) {
            const int32_t n = kv->n_tokens - p0 < STAGE ? kv->n_tokens - p0 : STAGE;
            for (int32_t t = 0; t < n; t++)
                for (int32_t h = 0; h < KV; h++) {
                    kv_load_row(kv, kv_k_row(kv, l, h, p0 + t), k + t * row + (size_t)h * d);
                    kv_load_row(kv, kv_v_row(kv, l, h, p0 + t), v + t * row + (size_t)h * d);
                }
            st = fasa_cuda_layer_append(g->layers[l], k, v, n);
        }
    free(k);
    return st;
}

fasa_status context_gpu_create(const fasa_kv *kv, const attn_shape *shape, fasa_device device, int32_t ordinal,
                               const attn_policy *policy, const fasa_calib *calib, context_gpu **out) {
    *out = NULL;
    if (device != FASA_DEVICE_CUDA && device != FASA_DEVICE_CUDA_HOST_KV)
        return fasa_error(FASA_E_ARG, "unknown device %d", (int)device);
    fasa_status st = policy ? check_policy(policy) : FASA_OK;
    if (st) return st;
    fasa_cuda_params cp = fasa_cuda_default_params();
    cp.n_heads = shape->n_heads;
    cp.n_kv_heads = shape->n_kv_heads;
    cp.head_dim = shape->head_dim;
    cp.n_ctx = shape->n_ctx;
    cp.mode = device == FASA_DEVICE_CUDA ? FASA_CUDA_MODE_C : FASA_CUDA_MODE_M;
    cp.n_lab = policy ? 2 * policy->params.n_tip : 0;
    cp.label_type = FASA_CUDA_LABEL_F16;
    cp.n_fac_max = policy ? policy->params.budget : 1;
    cp.device = ordinal;

    context_gpu *g = fasa_calloc(1, sizeof *g, "GPU attention state");
    if (!g) return FASA_E_NOMEM;
    g->n_layers = shape->n_layers;
    g->policy = policy;
    g->budget = cp.n_fac_max;
    g->qkv_bytes = (size_t)shape->n_heads * shape->head_dim * sizeof(float);
    int32_t *coords = NULL;
    if (!(g->layers = fasa_calloc((size_t)shape->n_layers, sizeof *g->layers, "GPU layers"))) st = FASA_E_NOMEM;
    if (!st && (st = fasa_cuda_ctx_init(&cp, &g->ctx)) == FASA_E_UNSUPPORTED && policy) {
        /* The kernels' limits (label sizes) with the option that set them. */
        char why[256];
        snprintf(why, sizeof why, "%s", fasa_last_error());
        st = fasa_error(st, "fasa on a GPU (--fc %d): %s", policy->params.n_tip, why);
    }
    if (!st) st = fasa_cuda_alloc(g->ctx, g->qkv_bytes, (void **)&g->d_q);
    if (!st) st = fasa_cuda_alloc(g->ctx, g->qkv_bytes, (void **)&g->d_out);
    if (!st && cp.n_lab &&
        !(coords = fasa_malloc((size_t)shape->n_kv_heads * cp.n_lab, sizeof *coords, "label coordinates")))
        st = FASA_E_NOMEM;
    for (int32_t l = 0; l < shape->n_layers && !st; l++) {
        for (int32_t h = 0; h < shape->n_kv_heads && coords && !st; h++)
            st = fasa_calib_label_coords(calib, l, h, policy->params.n_tip, coords + (size_t)h * cp.n_lab);
        if (!st) st = fasa_cuda_layer_init(g->ctx, coords, &g->layers[l]);
    }
    free(coords);
    if (!st) st = replay(g, kv);
    if (st) {
        context_gpu_free(g);
        return st;
    }
    *out = g;
    return FASA_OK;
}

void context_gpu_free(context_gpu *g) {
    if (!g) return;
    for (int32_t l = 0; g->layers && l < g->n_layers; l++) fasa_cuda_layer_free(g->layers[l]);
    free(g->layers);
    fasa_cuda_free(g->d_q);
    fasa_cuda_free(g->d_out);
    fasa_cuda_ctx_free(g->ctx);
    free(g);
}

fasa_status context_gpu_append(context_gpu *g, int32_t layer, const float *k, const float *v, int32_t n) {
    return fasa_cuda_layer_append(g->layers[layer], k, v, n);
}

fasa_status context_gpu_decode(context_gpu *g, int32_t layer, const attn_policy *policy, const float *q,
                               float *out) {
    fasa_cuda_layer *L = g->layers[layer];
    fasa_status st = fasa_cuda_upload(g->ctx, g->d_q, q, g->qkv_bytes);
    if (st) return st;
    const bool sparse = policy && policy == g->policy && !policy->dense_layer[layer];
    st = sparse ? fasa_cuda_fasa_step(L, g->budget, g->d_q, g->d_out) : fasa_cuda_dense_step(L, g->d_q, g->d_out);
    if (st) return st;
    /* The download waits for the step, so it also reports a fault inside it. */
    return fasa_cuda_download(g->ctx, out, g->d_out, g->qkv_bytes);
}

fasa_status context_gpu_truncate(context_gpu *g, int32_t n) {
    for (int32_t l = 0; l < g->n_layers; l++) {
        fasa_status st = fasa_cuda_layer_truncate(g->layers[l], n);
        if (st) return st;
    }
    return FASA_OK;
}

uint64_t context_gpu_device_bytes(const context_gpu *g) {
    uint64_t b = fasa_cuda_ctx_device_bytes(g->ctx) + 2 * g->qkv_bytes;
    for (int32_t l = 0; l < g->n_layers; l++) b += fasa_cuda_layer_device_bytes(g->layers[l]);
    return b;
}

#endif
