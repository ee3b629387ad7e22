/* Helpers for the policies that read keys themselves: widening a cached key
 * row to f32, and the softmax weights one query gives a causal prefix of the
 * cache (h2o accumulates them, snapkv sums them over its window). */
#ifndef FASA_ATTN_CAUSAL_H
#define FASA_ATTN_CAUSAL_H

#include <math.h>
#include <stdint.h>

#include "kv.h"
#include "quant.h"

/* Key row of (layer, head, pos) as f32: in place for an f32 cache, widened
 * into buf (head_dim floats) for an f16 one. */
static inline const float *attn_key_f32(const fasa_kv *kv, int32_t layer, int32_t head, int32_t pos,
                                        float *buf) {
    const void *row = kv_k_row(kv, layer, head, pos);
    if (kv->type == FASA_KV_F32) return row;
    quant_dequant_row(FASA_TYPE_F16, row, buf, kv->head_dim);
    return buf;
}

static inline float attn_dot(const float *a, const float *b, int32_t d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int32_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* w[j] = softmax_j(scale * q . k_j) over keys 0 .. n-1 of (layer, kv_head):
 * the weights the dense kernel would give them, computed the same way.
 * buf holds head_dim floats. */
static inline void attn_causal_softmax(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                                       int32_t n, float scale, float *w, float *buf) {
    const int32_t d = kv->head_dim;
    float mx = -INFINITY, sum = 0.0f;
    for (int32_t j = 0; j < n; j++) {
        w[j] = scale * attn_dot(q, attn_key_f32(kv, layer, kv_head, j, buf), d);
        mx = w[j] > mx ? w[j] : mx;
    }
    for (int32_t j = 0; j < n; j++) sum += (w[j] = expf(w[j] - mx));
    const float inv = 1.0f / sum;
    for (int32_t j = 0; j < n; j++) w[j] *= inv;
}

#endif
