/* Helpers for the policies that read keys themselves: widening a cached key
 * row to f32, and the softmax weights queries give a causal prefix of the
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

/* out[i * n_keys + j] = q_i . k_j for n_q queries q ([n_q][head_dim]) and
 * the keys 0 .. n_keys-1 of (layer, kv_head): one matrix product straight
 * from the cache rows, which are contiguous per head. */
static inline void attn_block_logits(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                                     int32_t n_q, int32_t n_keys, float *out, int n_threads) {
    quant_matmul(kv->type == FASA_KV_F32 ? FASA_TYPE_F32 : FASA_TYPE_F16, kv_k_row(kv, layer, kv_head, 0),
                 n_keys, kv->head_dim, q, n_q, out, n_threads);
}

/* e^x within 3e-7 relative for x in [-87, 88] (clamped there), in plain
 * arithmetic that the compiler vectorises: libm's expf is a call per
 * element, and these policies take one exponential per (query, key) pair of
 * the prompt. x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so that
 * n ln2 is exact); e^r by its degree-6 Taylor polynomial (error < r^7/7! <
 * 1.2e-7); 2^n built in the exponent bits. */
static inline float attn_exp(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float n = rintf(x * 1.44269504088896341f);
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    float e = 1.0f / 720;
    e = e * r + 1.0f / 120;
    e = e * r + 1.0f / 24;
    e = e * r + 1.0f / 6;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    const union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return e * two_n.f;
}

/* In place, the numerators of softmax(scale * w) over n entries; returns the
 * factor that normalises them (softmax_j = w[j] * factor), which callers fold
 * into their own pass over the weights. */
static inline float attn_softmax_unnormalized(float *w, int32_t n, float scale) {
    float mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
    for (int32_t j = 0; j < n; j++) mx = w[j] > mx ? w[j] : mx;
    mx *= scale;
#pragma omp simd reduction(+ : sum)
    for (int32_t j = 0; j < n; j++) sum += (w[j] = attn_exp(scale * w[j] - mx));
    return 1.0f / sum;
}

#endif
