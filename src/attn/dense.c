#include "attn/dense.h"

#include <string.h>

#include "quant.h"

/* Sixteen independent lanes: the compiler turns the fixed inner loop into
 * vector FMAs, where a single running sum would be a serial chain. */
static inline float dot(const float *a, const float *b, int32_t d) {
    float acc[16] = {0};
    int32_t i = 0;
    for (; i + 16 <= d; i += 16)
        for (int32_t l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (; i < d; i++) s += a[i] * b[i];
    for (int32_t l = 0; l < 16; l++) s += acc[l];
    return s;
}

#define ATTN_PREFETCH 8

static inline void prefetch_row(const fasa_kv *kv, const void *row) {
    const size_t bytes = (size_t)kv->head_dim * kv->elem_size;
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)row + b);
}


void attn_dense_part(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, int32_t n_q,
                     const int32_t *idx, int32_t j0, int32_t j1, float scale, float *part, float *scratch) {
    const int32_t d = kv->head_dim, n = j1 - j0;
    float *w = scratch, *buf = scratch + (int64_t)n_q * n;
    /* Logits: each key row is read once for the whole group. Gathered rows
     * are scattered over the cache, so they are requested a few rows ahead:
     * otherwise every row is a serial trip to memory. */
    for (int32_t j = 0; j < n; j++) {
        const int32_t pos = idx ? idx[j0 + j] : j0 + j;
        if (idx && j + ATTN_PREFETCH < n) prefetch_row(kv, kv_k_row(kv, layer, kv_head, idx[j0 + j + ATTN_PREFETCH]));
        const float *k = kv_row_f32(kv, kv_k_row(kv, layer, kv_head, pos), buf);
        for (int32_t g = 0; g < n_q; g++) w[(int64_t)g * n + j] = scale * dot(q + (int64_t)g * d, k, d);
    }
    for (int32_t g = 0; g < n_q; g++) {
        float *wg = w + (int64_t)g * n, mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
        for (int32_t j = 0; j < n; j++) mx = wg[j] > mx ? wg[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int32_t j = 0; j < n; j++) sum += (wg[j] = attn_exp(wg[j] - mx));
        float *o = part + (int64_t)g * (d + 2);
        o[d] = mx;
        o[d + 1] = sum;
    }
    /* Weighted sum of values: ATTN_VTILE value rows at a time are widened
     * once (an f16 cache; an f32 one is read in place), then every query
     * head adds them into its output, 64 lanes at a time in registers. */
    for (int32_t g = 0; g < n_q; g++) memset(part + (int64_t)g * (d + 2), 0, (size_t)d * sizeof(float));
    if (idx)
        for (int32_t j = 0; j < n && j < 2 * ATTN_PREFETCH; j++) prefetch_row(kv, kv_v_row(kv, layer, kv_head, idx[j0 + j]));
    for (int32_t t0 = 0; t0 < n; t0 += ATTN_VTILE) {
        const int32_t nt = n - t0 < ATTN_VTILE ? n - t0 : ATTN_VTILE;
        const float *rows[ATTN_VTILE];
        for (int32_t t = 0; t < nt; t++) {
            const int32_t j = t0 + t, pos = idx ? idx[j0 + j] : j0 + j;
            if (idx && j + 2 * ATTN_PREFETCH < n)
                prefetch_row(kv, kv_v_row(kv, layer, kv_head, idx[j0 + j + 2 * ATTN_PREFETCH]));
            rows[t] = kv_row_f32(kv, kv_v_row(kv, layer, kv_head, pos), buf + (int64_t)t * d);
        }
        for (int32_t g = 0; g < n_q; g++) {
            const float *wg = w + (int64_t)g * n + t0;
            float *o = part + (int64_t)g * (d + 2);
            for (int32_t c0 = 0; c0 < d; c0 += 64) {
                const int32_t cw = d - c0 < 64 ? d - c0 : 64;
                float acc[64];
                memcpy(acc, o + c0, (size_t)cw * sizeof(float));
                for (int32_t t = 0; t < nt; t++) {
                    const float p = wg[t], *v = rows[t] + c0;
                    if (cw == 64)
                        for (int32_t i = 0; i < 64; i++) acc[i] += p * v[i];
                    else
                        for (int32_t i = 0; i < cw; i++) acc[i] += p * v[i];
                }
                memcpy(o + c0, acc, (size_t)cw * sizeof(float));
            }
        }
    }
}

void attn_merge(const float *parts, int32_t n_parts, int32_t n_q, int32_t head_dim, float *out) {
    const int32_t d = head_dim;
    const int64_t stride = attn_part_floats(n_q, d);
    for (int32_t g = 0; g < n_q; g++) {
        float mx = -INFINITY, sum = 0.0f;
        for (int32_t c = 0; c < n_parts; c++) mx = fmaxf(mx, parts[c * stride + (int64_t)g * (d + 2) + d]);
        float *y = out + (int64_t)g * d;
        memset(y, 0, (size_t)d * sizeof(float));
        for (int32_t c = 0; c < n_parts; c++) {
            const float *o = parts + c * stride + (int64_t)g * (d + 2);
            const float f = expf(o[d] - mx);
            sum += f * o[d + 1];
            for (int32_t i = 0; i < d; i++) y[i] += f * o[i];
        }
        const float inv = 1.0f / sum;
        for (int32_t i = 0; i < d; i++) y[i] *= inv;
    }
}

void attn_dense_group(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                      int32_t n_q, const int32_t *idx, int32_t n, float scale, float *out,
                      float *scratch) {
    const int32_t d = kv->head_dim;
    float *part = scratch + (int64_t)n_q * n + (int64_t)ATTN_VTILE * d;
    attn_dense_part(kv, layer, kv_head, q, n_q, idx, 0, n, scale, part, scratch);
    for (int32_t g = 0; g < n_q; g++) {
        const float *o = part + (int64_t)g * (d + 2), inv = 1.0f / o[d + 1];
        for (int32_t i = 0; i < d; i++) out[(int64_t)g * d + i] = o[i] * inv;
        float *w = scratch + (int64_t)g * n;
        for (int32_t j = 0; j < n; j++) w[j] *= inv;
    }
}
