/* Helpers for the policies that read keys themselves: widening a cached key
 * row to f32, and the softmax weights queries give a causal prefix of the
 * cache (h2o accumulates them, snapkv sums them over its window). */
#ifndef FASA_ATTN_CAUSAL_H
#define FASA_ATTN_CAUSAL_H

#include <math.h>
#include <stdint.h>

#include "attn/dense.h"
#include "kv.h"
#include "quant.h"

/* Key row of (layer, head, pos) as f32: in place for an f32 cache, widened
 * into buf (head_dim floats) for an f16 one. */
static inline const float *attn_key_f32(const fasa_kv *kv, int32_t layer, int32_t head, int32_t pos,
                                        float *buf) {
    return kv_row_f32(kv, kv_k_row(kv, layer, head, pos), buf);
}

static inline float attn_dot(const float *a, const float *b, int32_t d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int32_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* out[i * n_keys + j] = q_i . k_j for n_q queries q ([n_q][head_dim]) and
 * the keys 0 .. n_keys-1 of (layer, kv_head): one matrix product straight
 * from the cache rows, which are contiguous per head. */
static inline void attn_block_logits(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                                     int32_t n_q, int32_t n_keys, float *out, int n_threads) {
    quant_matmul(kv->type == FASA_KV_F32 ? FASA_TYPE_F32 : FASA_TYPE_F16, kv_k_row(kv, layer, kv_head, 0),
                 n_keys, kv->head_dim, q, n_q, out, n_threads);
}

#endif
