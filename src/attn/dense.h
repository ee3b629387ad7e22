/* Exact softmax attention of one GQA group of query heads over a set of
 * cached tokens of their shared KV head. Every policy ends in this kernel:
 * `full` passes all positions, sparse policies pass the tokens they chose.
 *
 * The work can be split along the tokens (flash-decoding): each part keeps
 * its own running maximum and sum, and attn_merge combines the parts, so a
 * single decode step can use every core even with few KV heads. */
#ifndef FASA_ATTN_DENSE_H
#define FASA_ATTN_DENSE_H

#include <math.h>
#include <stdint.h>

#include "kv.h"

/* A part's result for each of n_q query heads: o (unnormalised output,
 * head_dim floats), then m (max logit) and l (sum of exp(logit - m)). */
static inline int64_t attn_part_floats(int32_t n_q, int32_t head_dim) { return (int64_t)n_q * (head_dim + 2); }

/* Attention of q ([n_q][head_dim]) over tokens idx[j0..j1) (positions j0..j1-1
 * when idx is NULL), j1 > j0, into part. Leaves the unnormalised weights
 * exp(logit - m) in scratch ([n_q][j1 - j0]); scratch holds
 * attn_dense_scratch(n_q, j1 - j0, head_dim) floats. */
void attn_dense_part(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, int32_t n_q,
                     const int32_t *idx, int32_t j0, int32_t j1, float scale, float *part, float *scratch);

/* out[g][d] from n_parts consecutive parts (each attn_part_floats). */
void attn_merge(const float *parts, int32_t n_parts, int32_t n_q, int32_t head_dim, float *out);

/* The whole attention in one part: out[g][d] = softmax_j(scale * q[g] . k_j) v_j
 * over tokens idx[0..n) (or 0..n-1). Afterwards scratch holds the softmax
 * weights, [n_q][n]. */
void attn_dense_group(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                      int32_t n_q, const int32_t *idx, int32_t n, float scale, float *out,
                      float *scratch);

/* Value rows widened at a time by attn_dense_part (each once for all the
 * group's query heads). */
#define ATTN_VTILE 16

/* Scratch floats for n tokens (weights, ATTN_VTILE widened rows, one part). */
static inline int64_t attn_dense_scratch(int32_t n_q, int32_t n, int32_t head_dim) {
    return (int64_t)n_q * n + (int64_t)ATTN_VTILE * head_dim + attn_part_floats(n_q, head_dim);
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
