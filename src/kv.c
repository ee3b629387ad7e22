#include "kv.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

fasa_status kv_init(fasa_kv *kv, int32_t n_layers, int32_t n_kv_heads, int32_t head_dim,
                    int32_t n_ctx, fasa_kv_type type) {
    memset(kv, 0, sizeof *kv);
    if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || n_ctx <= 0)
        return fasa_error(FASA_E_ARG, "KV cache: invalid shape %d layers x %d heads x %d dims x %d tokens",
                          n_layers, n_kv_heads, head_dim, n_ctx);
    if (type != FASA_KV_F32 && type != FASA_KV_F16)
        return fasa_error(FASA_E_ARG, "KV cache: unknown element type %d", (int)type);
    kv->n_layers = n_layers;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->n_ctx = n_ctx;
    kv->type = type;
    kv->elem_size = type == FASA_KV_F32 ? sizeof(float) : sizeof(uint16_t);
    size_t n = (size_t)n_layers * n_kv_heads * n_ctx * head_dim;
    kv->k = fasa_calloc_large(n, kv->elem_size, "KV cache keys");
    kv->v = kv->k ? fasa_calloc_large(n, kv->elem_size, "KV cache values") : NULL;
    if (!kv->k || !kv->v) {
        kv_free(kv);
        return FASA_E_NOMEM;
    }
    return FASA_OK;
}

void kv_free(fasa_kv *kv) {
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

size_t kv_bytes(const fasa_kv *kv) {
    return 2 * (size_t)kv->n_layers * kv->n_kv_heads * kv->n_ctx * kv->head_dim * kv->elem_size;
}

static void store_row(const fasa_kv *kv, void *dst, const float *src) {
    if (kv->type == FASA_KV_F32) {
        memcpy(dst, src, (size_t)kv->head_dim * sizeof(float));
        return;
    }
    uint16_t *h = dst;
    for (int32_t i = 0; i < kv->head_dim; i++) h[i] = fasa_f32_to_f16(src[i]);
}

void kv_store(fasa_kv *kv, int32_t layer, int32_t pos, const float *k, const float *v) {
    for (int32_t h = 0; h < kv->n_kv_heads; h++) {
        store_row(kv, kv_k_row(kv, layer, h, pos), k + (size_t)h * kv->head_dim);
        store_row(kv, kv_v_row(kv, layer, h, pos), v + (size_t)h * kv->head_dim);
    }
}

void kv_load_row(const fasa_kv *kv, const void *row, float *dst) {
    if (kv->type == FASA_KV_F32) {
        memcpy(dst, row, (size_t)kv->head_dim * sizeof(float));
        return;
    }
    quant_dequant_row(FASA_TYPE_F16, row, dst, kv->head_dim);
}
