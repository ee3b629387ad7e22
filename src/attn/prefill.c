#include "attn/prefill.h"

#include <math.h>
#include <string.h>

#include "attn/dense.h"
#include "quant_internal.h"

#define MR QUANT_GEMM_MR
#define NR QUANT_GEMM_NR
#define BK ATTN_PREFILL_KEYS

static int32_t round_up(int32_t n, int32_t m) { return (n + m - 1) / m * m; }

/* Query rows padded to whole microkernel tiles (the tile reads NR rows). */
static int32_t padded_rows(int32_t group) { return round_up(attn_prefill_tokens(group) * group, NR); }

int64_t attn_prefill_scratch(int32_t group, int32_t head_dim) {
    const int64_t rows = padded_rows(group), d = head_dim, dp = round_up(head_dim, MR);
    /* queries, outputs, logits / weights, max and sum per row, widened keys
     * and their panels, widened values and their panels */
    return rows * d * 2 + rows * BK + rows * 2 + (int64_t)BK * d * 2 + (int64_t)BK * d + (int64_t)BK * dp;
}

/* Rows [k0, k0 + nk) of the cache as f32 [BK][d], zero past nk. */
static void widen_rows(const fasa_kv *kv, bool keys, int32_t layer, int32_t kv_head, int32_t k0, int32_t nk,
                       float *dst) {
    const int32_t d = kv->head_dim;
    for (int32_t j = 0; j < BK; j++) {
        float *row = dst + (int64_t)j * d;
        if (j >= nk) {
            memset(row, 0, (size_t)d * sizeof *row);
            continue;
        }
        const void *src = keys ? kv_k_row(kv, layer, kv_head, k0 + j) : kv_v_row(kv, layer, kv_head, k0 + j);
        const float *f = kv_row_f32(kv, src, row);
        if (f != row) memcpy(row, f, (size_t)d * sizeof *row);
    }
}

/* The block's logits (already scaled, in s) become softmax numerators
 * against each row's running maximum; rows rescale their sums and outputs
 * when the maximum grows. Keys past a row's position get weight 0. */
static void online_softmax(float *s, float *o, float *m, float *l, int32_t rows, int32_t group, int32_t first_key_lim,
                           int32_t nk, int32_t d) {
    for (int32_t r = 0; r < rows; r++) {
        float *sr = s + (int64_t)r * BK;
        /* token r / group sees keys of this block up to index lim */
        const int32_t lim = first_key_lim + r / group, n = lim + 1 < nk ? lim + 1 : nk;
        if (n <= 0) {
            memset(sr, 0, BK * sizeof *sr);
            continue;
        }
        float mx = m[r];
        for (int32_t j = 0; j < n; j++) mx = sr[j] > mx ? sr[j] : mx;
        if (mx > m[r]) {
            const float corr = m[r] == -INFINITY ? 0.0f : attn_exp(m[r] - mx);
            l[r] *= corr;
            float *or = o + (int64_t)r * d;
            for (int32_t i = 0; i < d; i++) or[i] *= corr;
            m[r] = mx;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int32_t j = 0; j < n; j++) sum += (sr[j] = attn_exp(sr[j] - mx));
        for (int32_t j = n; j < BK; j++) sr[j] = 0.0f;
        l[r] += sum;
    }
}

void attn_prefill_block(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, int64_t stride,
                        int32_t group, int32_t pos, int32_t n_tok, float scale, float *out, float *scratch) {
    const int32_t d = kv->head_dim, rows = n_tok * group, rp = round_up(rows, NR), dp = round_up(d, MR);
    float *qb = scratch, *o = qb + (int64_t)padded_rows(group) * d, *s = o + (int64_t)padded_rows(group) * d;
    float *m = s + (int64_t)padded_rows(group) * BK, *l = m + padded_rows(group);
    float *kw = l + padded_rows(group), *kp = kw + (int64_t)BK * d, *vw = kp + (int64_t)BK * d, *vp = vw + (int64_t)BK * d;

    for (int32_t r = 0; r < rp; r++) {
        float *qr = qb + (int64_t)r * d;
        if (r < rows) {
            const float *src = q + (r / group) * stride + (int64_t)(r % group) * d;
            for (int32_t i = 0; i < d; i++) qr[i] = scale * src[i];
        } else {
            memset(qr, 0, (size_t)d * sizeof *qr);
        }
        m[r] = -INFINITY, l[r] = 0.0f;
    }
    memset(o, 0, (size_t)rp * (size_t)d * sizeof *o);

    const int32_t n_keys = pos + n_tok; /* the last token sees them all */
    for (int32_t k0 = 0; k0 < n_keys; k0 += BK) {
        const int32_t nk = n_keys - k0 < BK ? n_keys - k0 : BK;
        /* s[r][j] = q_r . k_(k0 + j): keys as the panel's rows, queries as its tokens */
        widen_rows(kv, true, layer, kv_head, k0, nk, kw);
        for (int32_t p = 0; p < BK; p += MR) quant_pack_panel(kw + (int64_t)p * d, d, d, kp + (int64_t)p * d);
        for (int32_t p = 0; p < BK; p += MR)
            for (int32_t j = 0; j < rp; j += NR)
                quant_gemm_tile(kp + (int64_t)p * d, qb + (int64_t)j * d, d, d, s + (int64_t)j * BK + p, BK, MR, NR,
                                false);
        online_softmax(s, o, m, l, rows, group, pos - k0, nk, d);
        /* o[r] += sum_j s[r][j] v_(k0 + j): value dimensions as the panel's rows */
        widen_rows(kv, false, layer, kv_head, k0, nk, vw);
        for (int32_t c = 0; c < dp; c += MR) {
            float *panel = vp + (int64_t)c * BK;
            for (int32_t j = 0; j < BK; j++)
                for (int32_t i = 0; i < MR; i++) panel[j * MR + i] = c + i < d ? vw[(int64_t)j * d + c + i] : 0.0f;
            const int mr = d - c < MR ? d - c : MR;
            for (int32_t j = 0; j < rp; j += NR)
                quant_gemm_tile(panel, s + (int64_t)j * BK, BK, nk, o + (int64_t)j * d + c, d, mr, NR, true);
        }
    }
    for (int32_t r = 0; r < rows; r++) {
        float *dst = out + (r / group) * stride + (int64_t)(r % group) * d;
        const float inv = 1.0f / l[r], *or = o + (int64_t)r * d;
        for (int32_t i = 0; i < d; i++) dst[i] = or[i] * inv;
    }
}
