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
#include <stdlib.h>
#include <string.h>

#include "attn/tip.h"
#include "attn/policy.h"
#include "error.h"
#include "labels.h"

typedef struct fasa_state {
    label_set *lab;     /* which coordinates form each KV head's label (labels.h) */
    int64_t ctx_blocks; /* label blocks per (layer, KV head) covering n_ctx */
    /* [n_layers][n_kv_heads][ctx_blocks][n_lab][FASA_LABEL_BLOCK], each (layer,
     * KV head) in a region sized for lab_max: read at its own n_lab */
    float *labels;
} fasa_state;

/* The labels of one (layer, KV head): n_ctx tokens in blocks of FASA_LABEL_BLOCK. */
static float *label_base(const attn_policy *p, int32_t layer, int32_t kv_head) {
    const fasa_state *st = p->state;
    const int64_t lh = (int64_t)layer * p->shape.n_kv_heads + kv_head;
    return st->labels + lh * st->ctx_blocks * FASA_LABEL_BLOCK * st->lab->lab_max;
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
    /* scores (whole blocks), top-k work, combined query weights */
    p->scratch_floats = 2 * st->ctx_blocks * FASA_LABEL_BLOCK + st->lab->lab_max;
    return FASA_OK;
}

/* The CPU's label cache, in blocks of tokens (attn/tip.h). */
static fasa_status fasa_bind_cpu(attn_policy *p) {
    fasa_state *st = p->state;
    const size_t n_lh = (size_t)p->shape.n_layers * p->shape.n_kv_heads;
    if (st->labels) return FASA_OK;
    st->labels = fasa_calloc_large(n_lh * (size_t)st->ctx_blocks * FASA_LABEL_BLOCK,
                                   (size_t)st->lab->lab_max * sizeof(float), "FASA label cache");
    return st->labels ? FASA_OK : FASA_E_NOMEM;
}

/* Copies the dominant coordinates of the new token's key into the label cache. */
static void fasa_append(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos) {
    const label_set *lab = ((const fasa_state *)p->state)->lab;
    float row[FASA_MAX_HEAD_DIM];
    for (int32_t h = 0; h < kv->n_kv_heads; h++) {
        kv_load_row(kv, kv_k_row(kv, layer, h, pos), row);
        const int32_t *coord = label_coords(lab, layer, h);
        float *dst = label_base(p, layer, h);
        for (int32_t c = 0; c < label_count(lab, layer, h); c++)
            dst[fasa_label_index(pos, c, label_count(lab, layer, h), FASA_LABEL_BLOCK)] = row[coord[c]];
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
    float *scores = scratch, *work = scores + cap, *w = work + cap;
    for (int32_t c = 0; c < n_lab; c++) w[c] = 0.0f;
    for (int32_t g = 0; g < aq->n_q; g++) {
        const float *mask = label_mask(lab, aq->layer, aq->q_head + g);
        for (int32_t c = 0; c < n_lab; c++) w[c] += mask[c] * aq->q[(int64_t)g * d + coord[c]];
    }
    fasa_tip_scores(w, label_base(p, aq->layer, aq->kv_head), n_lab, n, FASA_LABEL_BLOCK, scores);
    /* Optional, not in the paper: the first n_sink tokens always taken. */
    for (int32_t j = 0; j < p->params.n_sink && j < n; j++) scores[j] = FLT_MAX;
    return attn_topk(scores, n, p->params.budget, idx, work);
}

void fasa_tip_scores(const float *w, const float *labels, int32_t n_label, int32_t n, int32_t block, float *scores) {
    if (block == FASA_LABEL_BLOCK) {
        /* Whole blocks; a partial last block scores stale or zero labels
         * past n, which callers ignore. */
        for (int32_t j0 = 0; j0 < n; j0 += FASA_LABEL_BLOCK) {
            const float *b = labels + (int64_t)j0 * n_label;
            float acc[FASA_LABEL_BLOCK] = {0};
            for (int32_t c = 0; c < n_label; c++) {
                const float wc = w[c];
#pragma omp simd
                for (int32_t t = 0; t < FASA_LABEL_BLOCK; t++) acc[t] += wc * b[c * FASA_LABEL_BLOCK + t];
            }
            for (int32_t t = 0; t < FASA_LABEL_BLOCK; t++) scores[j0 + t] = acc[t];
        }
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
