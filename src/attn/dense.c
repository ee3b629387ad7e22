#include "attn/dense.h"

#include <math.h>
#include <string.h>

#include "quant.h"

static inline float dot(const float *a, const float *b, int32_t d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int32_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int32_t d) {
#pragma omp simd
    for (int32_t i = 0; i < d; i++) y[i] += a * x[i];
}

/* An f32 cache is read in place; an f16 row is widened into buf first. */
static inline const float *row_f32(const fasa_kv *kv, const void *row, float *buf) {
    if (kv->type == FASA_KV_F32) return row;
    quant_dequant_row(FASA_TYPE_F16, row, buf, kv->head_dim);
    return buf;
}

void attn_dense_group(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                      int32_t group, const int32_t *idx, int32_t n, float scale, float *out,
                      float *scratch) {
    const int32_t d = kv->head_dim;
    float *scores = scratch;                 /* [group][n] */
    float *buf = scratch + (int64_t)group * n; /* one widened row */
    for (int32_t j = 0; j < n; j++) {
        const int32_t pos = idx ? idx[j] : j;
        const float *k = row_f32(kv, kv_k_row(kv, layer, kv_head, pos), buf);
        for (int32_t g = 0; g < group; g++) scores[(int64_t)g * n + j] = scale * dot(q + (int64_t)g * d, k, d);
    }
    for (int32_t g = 0; g < group; g++) {
        float *s = scores + (int64_t)g * n, mx = -INFINITY, sum = 0.0f;
        for (int32_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
        for (int32_t j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
        const float inv = 1.0f / sum;
        for (int32_t j = 0; j < n; j++) s[j] *= inv;
    }
    memset(out, 0, (size_t)group * d * sizeof(float));
    for (int32_t j = 0; j < n; j++) {
        const int32_t pos = idx ? idx[j] : j;
        const float *v = row_f32(kv, kv_v_row(kv, layer, kv_head, pos), buf);
        for (int32_t g = 0; g < group; g++) axpy(out + (int64_t)g * d, scores[(int64_t)g * n + j], v, d);
    }
}
