/* fasa: frequency-aware sparse attention.
 *
 * Token Importance Prediction: each token's key is scored with only the
 * head's dominant frequency chunks (from a calibration), read from a compact
 * label cache that holds just those coordinates of every key, contiguously
 * per KV head. The top-budget tokens then get exact attention (Focused
 * Attention Computation) at their original positions.
 *
 * GQA: K, V and labels are kept per KV head. The FCs of a KV head are the
 * top n_tip of the group's mean CA ranking (FASA_FC_KV_HEAD, default: the
 * label is 2 * n_tip numbers per token), the union of each query head's own
 * top n_tip (FASA_FC_UNION: a larger label, each query head scoring with its
 * own FCs), or a number of its own, n_tip on average (FASA_FC_ALLOC; each
 * KV head's labels are stored and read at their own length). Tokens are
 * chosen once per KV group from the group's summed scores (default) or per
 * query head (per_head = 1). */
#include <float.h>
#include <math.h>
#if defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "attn/tip.h"
#include "attn/policy.h"
#include "error.h"
#include "labels.h"
#include "quant.h"

typedef struct fasa_state {
    label_set *lab;     /* which coordinates form each KV head's label (labels.h) */
    int64_t ctx_blocks; /* label blocks per (layer, KV head) covering n_ctx */
    int32_t elem;       /* bytes per stored label value: 4 f32, 2 f16, 1 int8 */
    /* Per (layer, KV head), a region sized for lab_max holding ctx_blocks
     * blocks at the head's own n_lab: [n_lab][FASA_LABEL_BLOCK] values, then
     * for int8 the block's FASA_LABEL_BLOCK f32 scales. */
    unsigned char *labels;
} fasa_state;

static int64_t block_bytes(const fasa_state *st, int32_t n_lab) {
    return (int64_t)n_lab * FASA_LABEL_BLOCK * st->elem +
           (st->elem == 1 ? FASA_LABEL_BLOCK * (int64_t)sizeof(float) : 0);
}

/* The label block holding token j of one (layer, KV head). */
static unsigned char *label_block(const attn_policy *p, int32_t layer, int32_t kv_head, int32_t j) {
    const fasa_state *st = p->state;
    const int64_t lh = (int64_t)layer * p->shape.n_kv_heads + kv_head;
    const unsigned char *region = st->labels + lh * st->ctx_blocks * block_bytes(st, st->lab->lab_max);
    return (unsigned char *)region + (int64_t)(j / FASA_LABEL_BLOCK) * block_bytes(st, label_count(st->lab, layer, kv_head));
}

static void fasa_free(attn_policy *p) {
    fasa_state *st = p->state;
    if (!st) return;
    label_set_free(st->lab);
    free(st->labels);
    free(st);
    p->state = NULL;
    p->labels = NULL;
}

static fasa_status fasa_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim;
    const fasa_calib *cal = p->params.calib;
    if (!cal)
        return fasa_error(FASA_E_ARG, "fasa needs a calibration file (--calib FILE); make one with `fasa calibrate`");
    if (!p->params.n_tip) p->params.n_tip = d / 8 > 0 ? d / 8 : 1;
    if (!p->params.fc_union) p->params.fc_union = FASA_FC_KV_HEAD;
    if (p->params.fc_union < FASA_FC_KV_HEAD || p->params.fc_union > FASA_FC_ALLOC)
        return fasa_error(FASA_E_ARG, "fasa: fc_union must be 1 (per KV head), 2 (union) or 3 (allocated), got %d",
                          p->params.fc_union);
    if (p->params.n_sink < 0 || p->params.n_recent < 0 ||
        (int64_t)p->params.n_sink + p->params.n_recent > p->params.budget)
        return fasa_error(FASA_E_ARG, "fasa: sink tokens (%d) and recent tokens (%d) must fit in the budget (%d)",
                          p->params.n_sink, p->params.n_recent, p->params.budget);
    if (!p->params.dense_layers) p->dense_layer[0] = true; /* the paper keeps layer 0 dense */

    fasa_state *st = fasa_calloc(1, sizeof *st, "FASA state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    fasa_status stt = label_set_from_calib(cal, s, p->params.n_tip, p->params.fc_union, p->dense_layer, &st->lab);
    if (stt) {
        fasa_free(p);
        return stt;
    }
    st->ctx_blocks = (s->n_ctx + FASA_LABEL_BLOCK - 1) / FASA_LABEL_BLOCK;
    p->labels = st->lab;
    p->params.calib = NULL; /* the layout is built: the policy keeps no reference to the caller's calibration */
    /* label_type 0 stays 0: the default depends on the backend (f32 on the
     * CPU, f16 on a GPU) */
    switch (p->params.label_type) {
    case 0:
    case FASA_LABELS_F32: st->elem = 4; break;
    case FASA_LABELS_F16: st->elem = 2; break;
    case FASA_LABELS_INT8: st->elem = 1; break;
    default:
        fasa_free(p);
        return fasa_error(FASA_E_ARG, "fasa: label type must be 1 (f32), 2 (f16) or 3 (int8), got %d",
                          p->params.label_type);
    }
    /* scores (whole blocks), top-k work, combined query weights, one block widened to f32 */
    p->scratch_floats = 2 * st->ctx_blocks * FASA_LABEL_BLOCK + st->lab->lab_max +
                        (int64_t)st->lab->lab_max * FASA_LABEL_BLOCK;
    return FASA_OK;
}

/* The CPU's label cache, in blocks of tokens (attn/tip.h). */
static fasa_status fasa_bind_cpu(attn_policy *p) {
    fasa_state *st = p->state;
    const size_t n_lh = (size_t)p->shape.n_layers * p->shape.n_kv_heads;
    if (st->labels) return FASA_OK;
    st->labels = fasa_calloc_large(n_lh * (size_t)st->ctx_blocks, (size_t)block_bytes(st, st->lab->lab_max),
                                   "FASA label cache");
    return st->labels ? FASA_OK : FASA_E_NOMEM;
}

/* Copies the dominant coordinates of the new token's key into the label
 * cache, rounded to the label type. */
static void fasa_append(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos) {
    const fasa_state *st = p->state;
    const label_set *lab = st->lab;
    const int32_t t = pos % FASA_LABEL_BLOCK;
    float row[FASA_MAX_HEAD_DIM];
    for (int32_t h = 0; h < kv->n_kv_heads; h++) {
        kv_load_row(kv, kv_k_row(kv, layer, h, pos), row);
        const int32_t *coord = label_coords(lab, layer, h), n_lab = label_count(lab, layer, h);
        unsigned char *blk = label_block(p, layer, h, pos);
        if (st->elem == 4) {
            for (int32_t c = 0; c < n_lab; c++) ((float *)blk)[c * FASA_LABEL_BLOCK + t] = row[coord[c]];
        } else if (st->elem == 2) {
            for (int32_t c = 0; c < n_lab; c++) ((uint16_t *)blk)[c * FASA_LABEL_BLOCK + t] = fasa_f32_to_f16(row[coord[c]]);
        } else {
            /* max |label| / 127 per token; a non-finite label makes the scale
             * NaN, so the token's score is NaN as with f32 labels */
            float amax = 0.0f;
            for (int32_t c = 0; c < n_lab; c++) amax = isfinite(row[coord[c]]) ? fmaxf(amax, fabsf(row[coord[c]])) : NAN;
            const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            int8_t *q = (int8_t *)blk;
            for (int32_t c = 0; c < n_lab; c++)
                q[c * FASA_LABEL_BLOCK + t] = isfinite(scale) ? (int8_t)lrintf(row[coord[c]] * inv) : 0;
            float *scales = (float *)(blk + (int64_t)n_lab * FASA_LABEL_BLOCK);
            scales[t] = scale;
        }
    }
}

/* acc[t] = sum_c w[c] * b[c][t] over one block of FASA_LABEL_BLOCK tokens. */
static inline void tip_block(const float *w, const float *b, int32_t n_label, float *out) {
    float acc[FASA_LABEL_BLOCK] = {0}; /* in registers, whatever out aliases */
    for (int32_t c = 0; c < n_label; c++) {
        const float wc = w[c];
#pragma omp simd
        for (int32_t t = 0; t < FASA_LABEL_BLOCK; t++) acc[t] += wc * b[c * FASA_LABEL_BLOCK + t];
    }
    for (int32_t t = 0; t < FASA_LABEL_BLOCK; t++) out[t] = acc[t];
}

/* TIP scores of f16 or int8 labels: each block widened to f32 first (int8
 * values are exact in f32; the token's scale multiplies its score). */
static void tip_scores_narrow(const fasa_state *st, const float *w, const unsigned char *labels, int32_t n_label,
                              int32_t n, float *wide, float *scores) {
    const int64_t vals = (int64_t)n_label * FASA_LABEL_BLOCK, bytes = block_bytes(st, n_label);
    for (int32_t j0 = 0; j0 < n; j0 += FASA_LABEL_BLOCK) {
        const unsigned char *b = labels + (int64_t)(j0 / FASA_LABEL_BLOCK) * bytes;
        if (st->elem == 2) {
#if defined(__F16C__) && defined(__FMA__) && FASA_LABEL_BLOCK == 16
            /* widened in registers: a buffer round trip cost a third of the
             * f32 path's whole decode step at 32K (Qwen2.5-1.5B) */
            __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
            const __m128i *h = (const __m128i *)b;
            for (int32_t c = 0; c < n_label; c++) {
                const __m256 wc = _mm256_set1_ps(w[c]);
                lo = _mm256_fmadd_ps(wc, _mm256_cvtph_ps(_mm_loadu_si128(h + 2 * c)), lo);
                hi = _mm256_fmadd_ps(wc, _mm256_cvtph_ps(_mm_loadu_si128(h + 2 * c + 1)), hi);
            }
            _mm256_storeu_ps(scores + j0, lo);
            _mm256_storeu_ps(scores + j0 + 8, hi);
            continue;
#else
            quant_dequant_row(FASA_TYPE_F16, b, wide, vals);
#endif
        } else {
            const int8_t *q = (const int8_t *)b;
#pragma omp simd
            for (int64_t i = 0; i < vals; i++) wide[i] = (float)q[i];
        }
        tip_block(w, wide, n_label, scores + j0);
        if (st->elem == 1) {
            const float *scales = (const float *)(b + vals);
            for (int32_t t = 0; t < FASA_LABEL_BLOCK; t++) scores[j0 + t] *= scales[t];
        }
    }
}

/* TIP: score = sum over label coordinates of (the queries' combined weight) x
 * (the label), so a whole group costs one pass over its labels. */
static int32_t fasa_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const fasa_state *st = p->state;
    const label_set *lab = st->lab;
    const int32_t d = p->shape.head_dim, n = aq->n_keys;
    const int32_t n_lab = label_count(lab, aq->layer, aq->kv_head), *coord = label_coords(lab, aq->layer, aq->kv_head);
    const int64_t cap = st->ctx_blocks * FASA_LABEL_BLOCK;
    float *scores = scratch, *work = scores + cap, *w = work + cap, *wide = w + lab->lab_max;
    for (int32_t c = 0; c < n_lab; c++) w[c] = 0.0f;
    for (int32_t g = 0; g < aq->n_q; g++) {
        const float *mask = label_mask(lab, aq->layer, aq->q_head + g);
        for (int32_t c = 0; c < n_lab; c++) w[c] += mask[c] * aq->q[(int64_t)g * d + coord[c]];
    }
    const unsigned char *labels = label_block(p, aq->layer, aq->kv_head, 0);
    if (st->elem == 4) fasa_tip_scores(w, (const float *)labels, n_lab, n, FASA_LABEL_BLOCK, scores);
    else tip_scores_narrow(st, w, labels, n_lab, n, wide, scores);
    /* Optional, not in the paper: the first n_sink and the last n_recent
     * tokens always taken. */
    for (int32_t j = 0; j < p->params.n_sink && j < n; j++) scores[j] = FLT_MAX;
    for (int32_t j = n - p->params.n_recent > 0 ? n - p->params.n_recent : 0; j < n; j++) scores[j] = FLT_MAX;
    return attn_topk(scores, n, p->params.budget, idx, work);
}

void fasa_tip_scores(const float *w, const float *labels, int32_t n_label, int32_t n, int32_t block, float *scores) {
    if (block == FASA_LABEL_BLOCK) {
        /* Whole blocks; a partial last block scores stale or zero labels
         * past n, which callers ignore. */
        for (int32_t j0 = 0; j0 < n; j0 += FASA_LABEL_BLOCK)
            tip_block(w, labels + (int64_t)j0 * n_label, n_label, scores + j0);
        return;
    }
    for (int32_t j = 0; j < n; j++) {
        float sc = 0.0f;
        for (int32_t c = 0; c < n_label; c++) sc += w[c] * labels[fasa_label_index(j, c, n_label, block)];
        scores[j] = sc;
    }
}

const attn_policy_ops attn_fasa_ops = {
    .name = "fasa",
    .per_head_default = false,
    .init = fasa_init,
    .bind_cpu = fasa_bind_cpu,
    .append = fasa_append,
    .select = fasa_select,
    .free = fasa_free,
};
