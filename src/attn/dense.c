#include "attn/dense.h"

#include <string.h>

#include "quant.h"

/* Eight floats as one vector (GCC and clang vector extensions): the
 * compiler maps it onto the machine's registers (one AVX register, two SSE
 * ones), and the shuffles below onto their shuffle instructions. */
typedef float v8f __attribute__((vector_size(32)));

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/* The dot products of a with eight rows, d a multiple of 8. One vector
 * accumulator per row; then the eight are summed across their lanes
 * together, three levels of shuffle-and-add that leave sum t in lane t,
 * instead of a horizontal sum per product (which, as a chain of 16 scalar
 * additions, took longer than the product itself). */
static inline v8f dot8(const float *a, const float *const rows[8], int32_t d) {
    v8f acc[8] = {0};
    for (int32_t i = 0; i < d; i += 8) {
        const v8f x = load8(a + i);
        for (int t = 0; t < 8; t++) acc[t] += x * load8(rows[t] + i);
    }
    v8f b[4], c[2];
    /* b[k]: lanes 0-3 partial sums of acc[2k], 4-7 of acc[2k + 1] */
    for (int k = 0; k < 4; k++)
        b[k] = __builtin_shufflevector(acc[2 * k], acc[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
               __builtin_shufflevector(acc[2 * k], acc[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    /* c[k]: lane pairs of acc[4k], acc[4k + 2], acc[4k + 1], acc[4k + 3] */
    for (int k = 0; k < 2; k++)
        c[k] = __builtin_shufflevector(b[2 * k], b[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(b[2 * k], b[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15);
    /* lanes: acc 0, 4, 2, 6, 1, 5, 3, 7; the same permutation puts them in order */
    const v8f r = __builtin_shufflevector(c[0], c[1], 0, 8, 2, 10, 4, 12, 6, 14) +
                  __builtin_shufflevector(c[0], c[1], 1, 9, 3, 11, 5, 13, 7, 15);
    return __builtin_shufflevector(r, r, 0, 4, 2, 6, 1, 5, 3, 7);
}

static inline float dot(const float *a, const float *b, int32_t d) {
    float s = 0.0f;
    for (int32_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* o[0, W) += sum_t p[t] rows[t][0, W) for nt rows, W a multiple of 8 known
 * where it is inlined, so that the W outputs stay in registers across the
 * rows. */
static inline __attribute__((always_inline)) void add_weighted_rows(float *o, const float *p,
                                                                    const float *const *rows, int32_t c0,
                                                                    int32_t nt, const int W) {
    v8f acc[W / 8];
    for (int k = 0; k < W / 8; k++) acc[k] = load8(o + 8 * k);
    for (int32_t t = 0; t < nt; t++) {
        const v8f pt = {p[t], p[t], p[t], p[t], p[t], p[t], p[t], p[t]};
        for (int k = 0; k < W / 8; k++) acc[k] += pt * load8(rows[t] + c0 + 8 * k);
    }
    for (int k = 0; k < W / 8; k++) store8(o + 8 * k, acc[k]);
}

#define ATTN_PREFETCH 8

static inline void prefetch_row(const fasa_kv *kv, const void *row) {
    const size_t bytes = (size_t)kv->head_dim * kv->elem_size;
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)row + b);
}

/* Keys whose logits are taken together (dot8). */
#define ATTN_KTILE 8

void attn_dense_part(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, int32_t n_q,
                     const int32_t *idx, int32_t j0, int32_t j1, float scale, float *part, float *scratch) {
    const int32_t d = kv->head_dim, n = j1 - j0;
    float *w = scratch, *buf = scratch + (int64_t)n_q * n;
    /* Logits, ATTN_KTILE keys at a time: each key row is widened once for
     * the whole group. Gathered rows are scattered over the cache, so they
     * are requested a few rows ahead: otherwise every row is a serial trip
     * to memory. */
    for (int32_t t0 = 0; t0 < n; t0 += ATTN_KTILE) {
        const int32_t nt = n - t0 < ATTN_KTILE ? n - t0 : ATTN_KTILE;
        const float *rows[ATTN_KTILE];
        for (int32_t t = 0; t < ATTN_KTILE; t++) {
            if (t >= nt) { /* a short last tile repeats its first row; those sums are not kept */
                rows[t] = rows[0];
                continue;
            }
            const int32_t j = t0 + t, pos = idx ? idx[j0 + j] : j0 + j;
            if (idx && j + ATTN_PREFETCH < n) prefetch_row(kv, kv_k_row(kv, layer, kv_head, idx[j0 + j + ATTN_PREFETCH]));
            rows[t] = kv_row_f32(kv, kv_k_row(kv, layer, kv_head, pos), buf + (int64_t)t * d);
        }
        for (int32_t g = 0; g < n_q; g++) {
            float *wg = w + (int64_t)g * n + t0;
            const float *qg = q + (int64_t)g * d;
            if (d % 8 == 0) {
                float s[ATTN_KTILE];
                store8(s, dot8(qg, rows, d));
                for (int32_t t = 0; t < nt; t++) wg[t] = scale * s[t];
            } else {
                for (int32_t t = 0; t < nt; t++) wg[t] = scale * dot(qg, rows[t], d);
            }
        }
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
     * head adds them into its output, 64 columns at a time in registers. */
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
            int32_t c = 0;
            for (; c + 64 <= d; c += 64) add_weighted_rows(o + c, wg, rows, c, nt, 64);
            for (; c + 8 <= d; c += 8) add_weighted_rows(o + c, wg, rows, c, nt, 8);
            for (; c < d; c++)
                for (int32_t t = 0; t < nt; t++) o[c] += wg[t] * rows[t][c];
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
