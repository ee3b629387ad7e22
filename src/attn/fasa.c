/* fasa: frequency-aware sparse attention.
 *
 * Token Importance Prediction: each token's key is scored with only the
 * head's dominant frequency chunks (from a calibration), read from a compact
 * label cache that holds just those coordinates of every key, contiguously
 * per KV head. The top-budget tokens then get exact attention (Focused
 * Attention Computation) at their original positions.
 *
 * GQA: K, V and labels are kept per KV head. The FCs of a KV head are either
 * the top n_tip of the group's mean CA ranking (fc_union = 1, default: the
 * label is 2 * n_tip numbers per token) or the union of each query head's own
 * top n_tip (fc_union = 2: a larger label, each query head scoring with its
 * own FCs). Tokens are chosen once per KV group from the group's summed
 * scores (default) or per query head (per_head = 1). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "attn/fasa.h"
#include "attn/policy.h"
#include "error.h"
#include "fasa/calib.h"
#include "model.h"
#include "quant.h"

typedef struct fasa_state {
    int32_t lab_max;  /* label floats per token, the largest over KV heads */
    int64_t ctx_blocks; /* label blocks per (layer, KV head) covering n_ctx */
    int32_t *n_lab;   /* [n_layers][n_kv_heads] label length */
    int32_t *coord;   /* [n_layers][n_kv_heads][lab_max] head coordinates, ascending */
    float *mask;      /* [n_layers][n_heads][lab_max] 1 where the coordinate is one of the query head's FCs */
    float *labels;    /* [n_layers][n_kv_heads][ctx_blocks][lab_max][FASA_LABEL_BLOCK] */
} fasa_state;

static int64_t lh_index(const attn_shape *s, int32_t layer, int32_t kv_head) {
    return (int64_t)layer * s->n_kv_heads + kv_head;
}

/* The labels of one (layer, KV head): n_ctx tokens in blocks of FASA_LABEL_BLOCK. */
static float *label_base(const attn_policy *p, int32_t layer, int32_t kv_head) {
    const fasa_state *st = p->state;
    return st->labels + lh_index(&p->shape, layer, kv_head) * st->ctx_blocks * FASA_LABEL_BLOCK * st->lab_max;
}

/* Chooses each query head's FCs as a flag array over the head's F chunks. */
static void choose_fcs(const attn_policy *p, const fasa_calib *cal, int32_t layer, int32_t kv_head,
                       unsigned char *chosen /* [group][F] */) {
    const attn_shape *s = &p->shape;
    const int32_t F = s->head_dim / 2, group = s->n_heads / s->n_kv_heads, n_tip = p->params.n_tip;
    memset(chosen, 0, (size_t)group * F);
    if (p->params.fc_union == 2) {
        for (int32_t g = 0; g < group; g++) {
            const int32_t *r = fasa_calib_ranking(cal, layer, kv_head * group + g);
            for (int32_t i = 0; i < n_tip; i++) chosen[g * F + r[i]] = 1;
        }
        return;
    }
    /* The group's mean ranking: its top n_tip are every member's FCs. */
    calib_group_top_fcs(cal, layer, kv_head, n_tip, chosen);
    for (int32_t g = 1; g < group; g++) memcpy(chosen + g * F, chosen, (size_t)F);
}

static fasa_status build_layout(attn_policy *p, fasa_state *st, const fasa_calib *cal) {
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, F = d / 2, group = s->n_heads / s->n_kv_heads;
    unsigned char *chosen = fasa_malloc((size_t)group * F, 1, "FASA chunk choice");
    if (!chosen) return FASA_E_NOMEM;
    for (int32_t l = 0; l < s->n_layers; l++)
        for (int32_t h = 0; h < s->n_kv_heads; h++) {
            choose_fcs(p, cal, l, h, chosen);
            /* A coordinate is in the label if any query head of the group uses its FC. */
            unsigned char in_label[1024] = {0};
            for (int32_t g = 0; g < group; g++)
                for (int32_t i = 0; i < F; i++)
                    if (chosen[g * F + i]) {
                        int32_t a, b;
                        fasa_rope_pair(s->rope_layout, d, i, &a, &b);
                        in_label[a] = in_label[b] = 1;
                    }
            int32_t *coord = st->coord + lh_index(s, l, h) * st->lab_max, n = 0;
            for (int32_t c = 0; c < d; c++)
                if (in_label[c]) coord[n++] = c;
            st->n_lab[lh_index(s, l, h)] = n;
            for (int32_t g = 0; g < group; g++) {
                float *mask = st->mask + ((int64_t)l * s->n_heads + h * group + g) * st->lab_max;
                for (int32_t c = 0; c < n; c++) {
                    /* coord[c] belongs to FC i; is i one of this query head's? */
                    int32_t fc = -1;
                    for (int32_t i = 0; i < F && fc < 0; i++) {
                        int32_t a, b;
                        fasa_rope_pair(s->rope_layout, d, i, &a, &b);
                        if (a == coord[c] || b == coord[c]) fc = i;
                    }
                    mask[c] = chosen[g * F + fc] ? 1.0f : 0.0f;
                }
            }
        }
    free(chosen);
    return FASA_OK;
}

static void fasa_free(attn_policy *p) {
    fasa_state *st = p->state;
    if (!st) return;
    free(st->n_lab);
    free(st->coord);
    free(st->mask);
    free(st->labels);
    free(st);
    p->state = NULL;
}

static fasa_status fasa_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, F = d / 2, group = s->n_heads / s->n_kv_heads;
    const fasa_calib *cal = p->params.calib;
    if (!cal)
        return fasa_error(FASA_E_ARG, "fasa needs a calibration file (--calib FILE); make one with `fasa calibrate`");
    fasa_status stt = calib_check_shape(cal, s->n_layers, s->n_heads, d);
    if (stt) return stt;
    if (d > 1024) return fasa_error(FASA_E_UNSUPPORTED, "fasa: head dimension %d is over 1024", d);
    if (!p->params.n_tip) p->params.n_tip = d / 8 > 0 ? d / 8 : 1;
    if (p->params.n_tip < 1 || p->params.n_tip > F)
        return fasa_error(FASA_E_ARG, "fasa: --fc (dominant chunks per head) must be in [1, %d], got %d", F,
                          p->params.n_tip);
    if (!p->params.fc_union) p->params.fc_union = 1;
    if (p->params.fc_union < 1 || p->params.fc_union > 2)
        return fasa_error(FASA_E_ARG, "fasa: fc_union must be 1 (per KV head) or 2 (union), got %d",
                          p->params.fc_union);
    if (!p->params.dense_layers) p->dense_layer[0] = true; /* the paper keeps layer 0 dense */

    fasa_state *st = fasa_calloc(1, sizeof *st, "FASA state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    const int32_t per_q = 2 * p->params.n_tip;
    st->lab_max = p->params.fc_union == 2 ? (per_q * group < d ? per_q * group : d) : per_q;
    const size_t n_lh = (size_t)s->n_layers * s->n_kv_heads;
    st->ctx_blocks = (s->n_ctx + FASA_LABEL_BLOCK - 1) / FASA_LABEL_BLOCK;
    if (!(st->n_lab = fasa_calloc(n_lh, sizeof *st->n_lab, "FASA label sizes")) ||
        !(st->coord = fasa_calloc(n_lh * st->lab_max, sizeof *st->coord, "FASA label coordinates")) ||
        !(st->mask = fasa_calloc((size_t)s->n_layers * s->n_heads * st->lab_max, sizeof *st->mask, "FASA masks")) ||
        /* zeroed: labels shorter than lab_max are padded with zeros the scoring multiplies */
        !(st->labels = fasa_calloc_large(n_lh * (size_t)st->ctx_blocks * FASA_LABEL_BLOCK,
                                         (size_t)st->lab_max * sizeof(float), "FASA label cache"))) {
        fasa_free(p);
        return FASA_E_NOMEM;
    }
    stt = build_layout(p, st, cal);
    if (stt) {
        fasa_free(p);
        return stt;
    }
    p->params.calib = NULL; /* the layout is built: the policy keeps no reference to the caller's calibration */
    /* scores (whole blocks), top-k work, combined query weights */
    p->scratch_floats = 2 * st->ctx_blocks * FASA_LABEL_BLOCK + st->lab_max;
    return FASA_OK;
}

/* Copies the dominant coordinates of the new token's key into the label cache. */
static void fasa_append(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos) {
    const fasa_state *st = p->state;
    float row[1024];
    for (int32_t h = 0; h < kv->n_kv_heads; h++) {
        const void *kr = kv_k_row(kv, layer, h, pos);
        const float *k = kr;
        if (kv->type != FASA_KV_F32) {
            quant_dequant_row(FASA_TYPE_F16, kr, row, kv->head_dim);
            k = row;
        }
        const int64_t lh = lh_index(&p->shape, layer, h);
        const int32_t *coord = st->coord + lh * st->lab_max;
        float *lab = label_base(p, layer, h);
        for (int32_t c = 0; c < st->n_lab[lh]; c++)
            lab[fasa_label_index(pos, c, st->lab_max, FASA_LABEL_BLOCK)] = k[coord[c]];
    }
}

/* TIP: score = sum over label coordinates of (the queries' combined weight) x
 * (the label), so a whole group costs one pass over its labels. */
static int32_t fasa_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const fasa_state *st = p->state;
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, n = aq->n_keys, L = st->lab_max;
    const int64_t lh = lh_index(s, aq->layer, aq->kv_head);
    const int32_t n_lab = st->n_lab[lh], *coord = st->coord + lh * L;
    const int64_t cap = st->ctx_blocks * FASA_LABEL_BLOCK;
    float *scores = scratch, *work = scores + cap, *w = work + cap;
    for (int32_t c = 0; c < L; c++) w[c] = 0.0f;
    for (int32_t g = 0; g < aq->n_q; g++) {
        const float *mask = st->mask + ((int64_t)aq->layer * s->n_heads + aq->q_head + g) * L;
        for (int32_t c = 0; c < n_lab; c++) w[c] += mask[c] * aq->q[(int64_t)g * d + coord[c]];
    }
    fasa_tip_scores(w, label_base(p, aq->layer, aq->kv_head), L, n, FASA_LABEL_BLOCK, scores);
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
    .append = fasa_append,
    .select = fasa_select,
    .free = fasa_free,
};
