/* Offline calibration: which frequency chunks (FCs) of each head predict the
 * full attention top-k.
 *
 * The model decodes a text densely; at every decode step, every layer and
 * query head, the keys are scored once with the full q.k and once per FC
 * with that FC's 2-D dot product alone, and the overlap of each FC's top-K*
 * with the full top-K* (Contextual Agreement) is accumulated. The measuring
 * is an attention policy that always answers "attend to everything", so the
 * decode itself is exact.
 *
 * Ranking each FC by its own agreement can pick chunks that carry the same
 * signal; the optional greedy passes choose a KV group's FCs as a set, for
 * the selection the runtime makes with them (calib_greedy_*). */
#include "measure/calibrate.h"

#include "calib/calib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/policy.h"
#include "context.h"
#include "error.h"
#include "model.h"
#include "quant.h"

void calib_fc_logits(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                     fasa_rope_layout layout, int32_t n, float *out, float *row) {
    const int32_t d = kv->head_dim, F = d / 2;
    for (int32_t j = 0; j < n; j++) {
        const float *k = kv_row_f32(kv, kv_k_row(kv, layer, kv_head, j), row);
        for (int32_t i = 0; i < F; i++) {
            int32_t a, b;
            fasa_rope_pair(layout, d, i, &a, &b);
            out[(int64_t)i * n + j] = q[a] * k[a] + q[b] * k[b];
        }
    }
}

/* ---- the measuring policy -------------------------------------------- */

typedef struct calib_state {
    double *sum;   /* [n_layers][n_heads][F] summed CA */
    int64_t *steps; /* [n_layers][n_heads] */
} calib_state;

static fasa_status calib_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    const int32_t F = s->head_dim / 2;
    calib_state *st = fasa_calloc(1, sizeof *st, "calibration state");
    if (!st) return FASA_E_NOMEM;
    st->sum = fasa_calloc((size_t)s->n_layers * s->n_heads * F, sizeof *st->sum, "calibration sums");
    st->steps = st->sum ? fasa_calloc((size_t)s->n_layers * s->n_heads, sizeof *st->steps, "calibration counts") : NULL;
    if (!st->steps) {
        free(st->sum);
        free(st);
        return FASA_E_NOMEM;
    }
    p->state = st;
    /* per-FC logits, full logits, top-k marks, top-k work, one key row */
    p->scratch_floats = (int64_t)(F + 3) * s->n_ctx + s->head_dim;
    return FASA_OK;
}

static void calib_free(attn_policy *p) {
    calib_state *st = p->state;
    if (!st) return;
    free(st->sum);
    free(st->steps);
    free(st);
}

/* Accumulates one step's CA for every query head of the group; attends to all. */
static int32_t calib_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    calib_state *st = p->state;
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, F = d / 2, n = aq->n_keys;
    const int32_t K = p->params.budget < n ? p->params.budget : n;
    float *fc = scratch, *full = fc + (int64_t)F * s->n_ctx, *mark = full + s->n_ctx;
    float *work = mark + s->n_ctx, *row = work + s->n_ctx;
    for (int32_t g = 0; g < aq->n_q; g++) {
        const int32_t qh = aq->q_head + g;
        calib_fc_logits(aq->kv, aq->layer, aq->kv_head, aq->q + (int64_t)g * d, s->rope_layout, n, fc, row);
        for (int32_t j = 0; j < n; j++) {
            float a = 0.0f;
            for (int32_t i = 0; i < F; i++) a += fc[(int64_t)i * n + j];
            full[j] = a;
            mark[j] = 0.0f;
        }
        const int32_t m = attn_topk(full, n, K, idx, work);
        for (int32_t t = 0; t < m; t++) mark[idx[t]] = 1.0f;
        double *sum = st->sum + ((int64_t)aq->layer * s->n_heads + qh) * F;
        for (int32_t i = 0; i < F; i++) {
            const int32_t mi = attn_topk(fc + (int64_t)i * n, n, K, idx, work);
            int32_t hit = 0;
            for (int32_t t = 0; t < mi; t++) hit += mark[idx[t]] != 0.0f;
            sum[i] += (double)hit / K;
        }
        st->steps[(int64_t)aq->layer * s->n_heads + qh]++;
    }
    return -1;
}

static const attn_policy_ops calib_ops = {
    .name = "calibration",
    .per_head_default = false,
    .init = calib_init,
    .free = calib_free,
    .select = calib_select,
};

/* ---- the greedy passes ------------------------------------------------ */

/* Progress over every decode step of the calibration, all passes. */
static void calib_progress(const fasa_calib_params *cp, int32_t done) {
    if (cp->progress) cp->progress(cp->user, done, (cp->greedy + 1) * cp->n_decode);
}

typedef struct greedy_state {
    int32_t budget;
    unsigned char *in_set; /* [n_layers][n_kv][F] FCs chosen so far */
    double *gain;          /* [n_layers][n_kv][F] this pass: summed recall with each FC added */
    int64_t *steps;        /* [n_layers][n_kv] */
} greedy_state;

static fasa_status greedy_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    const int32_t F = s->head_dim / 2, group = s->n_heads / s->n_kv_heads;
    const size_t lk = (size_t)s->n_layers * s->n_kv_heads;
    greedy_state *st = fasa_calloc(1, sizeof *st, "greedy calibration state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    if (!(st->in_set = fasa_calloc(lk * F, 1, "greedy sets")) ||
        !(st->gain = fasa_calloc(lk * F, sizeof *st->gain, "greedy sums")) ||
        !(st->steps = fasa_calloc(lk, sizeof *st->steps, "greedy counts")))
        return FASA_E_NOMEM;
    /* per-FC logits of every query head, their softmax weights, the set's
     * scores, one candidate's scores, top-k indices and work, one key row */
    p->scratch_floats = (int64_t)(group * F + group + 4) * s->n_ctx + s->head_dim;
    return FASA_OK;
}

static void greedy_free(attn_policy *p) {
    greedy_state *st = p->state;
    if (!st) return;
    free(st->in_set);
    free(st->gain);
    free(st->steps);
    free(st);
    p->state = NULL;
}

/* One step of a greedy pass for a KV group: for every FC not yet in the
 * group's set, the attention mass the top-K of (set + FC) summed scores
 * holds, averaged over the group's query heads. Attends to all. */
static int32_t greedy_select(attn_policy *p, const attn_query *aq, int32_t *unused, float *scratch) {
    greedy_state *st = p->state;
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, F = d / 2, n = aq->n_keys, G = aq->n_q;
    const int32_t K = st->budget < n ? st->budget : n;
    const int64_t T = s->n_ctx, lk = (int64_t)aq->layer * s->n_kv_heads + aq->kv_head;
    float *fc = scratch, *w = fc + (int64_t)G * F * T, *base = w + (int64_t)G * T, *cand = base + T;
    float *work = cand + T, *row = work + 2 * T;
    int32_t *idx = (int32_t *)(work + T);
    const unsigned char *in = st->in_set + lk * F;
    const float scale = 1.0f / sqrtf((float)d);
    for (int32_t j = 0; j < n; j++) base[j] = 0.0f;
    for (int32_t g = 0; g < G; g++) {
        float *fg = fc + (int64_t)g * F * T, *wg = w + (int64_t)g * T, mx = -INFINITY, z = 0.0f;
        calib_fc_logits(aq->kv, aq->layer, aq->kv_head, aq->q + (int64_t)g * d, s->rope_layout, n, fg, row);
        for (int32_t j = 0; j < n; j++) {
            float a = 0.0f, b = 0.0f;
            for (int32_t i = 0; i < F; i++) {
                a += fg[(int64_t)i * n + j];
                if (in[i]) b += fg[(int64_t)i * n + j];
            }
            wg[j] = a * scale;
            base[j] += b;
            mx = fmaxf(mx, wg[j]);
        }
        for (int32_t j = 0; j < n; j++) z += (wg[j] = expf(wg[j] - mx));
        for (int32_t j = 0; j < n; j++) wg[j] /= z;
    }
    double *gain = st->gain + lk * F;
    for (int32_t i = 0; i < F; i++) {
        if (in[i]) continue;
        for (int32_t j = 0; j < n; j++) {
            float a = base[j];
            for (int32_t g = 0; g < G; g++) a += fc[(int64_t)g * F * T + (int64_t)i * n + j];
            cand[j] = a;
        }
        const int32_t m = attn_topk(cand, n, K, idx, work);
        double mass = 0.0;
        for (int32_t g = 0; g < G; g++)
            for (int32_t t = 0; t < m; t++) mass += w[(int64_t)g * T + idx[t]];
        gain[i] += mass / G;
    }
    st->steps[lk]++;
    return -1;
}

static const attn_policy_ops greedy_ops = {
    .name = "calibration-greedy",
    .per_head_default = false,
    .init = greedy_init,
    .free = greedy_free,
    .select = greedy_select,
};

/* Closes a pass: each KV group takes its best FC (ties to the lower index;
 * a group that saw no step, to the best group-mean CA). */
static void greedy_take(fasa_calib *cal, greedy_state *st, int32_t r) {
    const int32_t F = cal->head_dim / 2;
    for (int32_t l = 0; l < cal->n_layers; l++)
        for (int32_t h = 0; h < cal->n_kv_heads; h++) {
            const int64_t lk = (int64_t)l * cal->n_kv_heads + h;
            unsigned char *in = st->in_set + lk * F;
            double *gain = st->gain + lk * F;
            int32_t best = -1;
            if (st->steps[lk]) {
                for (int32_t i = 0; i < F; i++)
                    if (!in[i] && (best < 0 || gain[i] > gain[best])) best = i;
            } else {
                unsigned char chosen[FASA_MAX_HEAD_DIM / 2];
                calib_group_top_fcs(cal, l, h, r + 1, chosen); /* the first r are the greedy ones */
                for (int32_t i = 0; i < F && best < 0; i++)
                    if (chosen[i] && !in[i]) best = i;
            }
            in[best] = 1;
            cal->greedy[calib_group_at(cal, l, h) + r] = best;
            cal->greedy_mass[calib_group_at(cal, l, h) + r] = st->steps[lk] ? gain[best] / (double)st->steps[lk] : 0.0;
            memset(gain, 0, (size_t)F * sizeof *gain);
            st->steps[lk] = 0;
        }
}

/* Runs the greedy passes on a context holding the prefill (n_prefill tokens). */
static fasa_status calib_greedy(fasa_context *c, fasa_calib *cal, const int32_t *tokens, int32_t n_prefill,
                                const fasa_calib_params *cp) {
    fasa_status st = calib_alloc_greedy(cal, cp->greedy);
    attn_policy *p = NULL;
    const fasa_attn_params ap = {.method = "calibration-greedy", .budget = cp->budget, .dense_layers = ""};
    const attn_shape shape = context_attn_shape(c);
    if (!st) st = attn_policy_create_ops(&greedy_ops, &ap, &shape, fasa_context_n_past(c), &p);
    if (st) return st;
    greedy_state *gs = p->state;
    gs->budget = cp->budget;
    cal->n_greedy = 0; /* while the passes run, calib_group_top_fcs sees only the FCs already taken */
    st = context_install_policy(c, p);
    for (int32_t r = 0; !st && r < cp->greedy; r++) {
        st = fasa_context_truncate(c, n_prefill);
        for (int32_t i = 0; !st && i < cp->n_decode; i++) {
            st = fasa_eval(c, tokens + n_prefill + i, 1, NULL, false);
            calib_progress(cp, (r + 1) * cp->n_decode + i + 1);
        }
        if (!st) {
            greedy_take(cal, gs, r);
            cal->n_greedy = r + 1;
        }
    }
    return st;
}

fasa_calib_params fasa_calib_default_params(void) {
    return (fasa_calib_params){.budget = 256, .n_decode = 128};
}


fasa_status fasa_calibrate(fasa_model *m, const int32_t *tokens, int32_t n, const fasa_calib_params *cp,
                           fasa_calib **out) {
    *out = NULL;
    fasa_calib_params def = fasa_calib_default_params();
    if (!cp) cp = &def;
    const int32_t n_prefill = n - cp->n_decode;
    if (cp->budget <= 0) return fasa_error(FASA_E_ARG, "calibration budget K* must be >= 1, got %d", cp->budget);
    if (cp->n_decode <= 0)
        return fasa_error(FASA_E_ARG, "calibration needs at least one decode step, got %d", cp->n_decode);
    if (cp->greedy < 0 || cp->greedy > m->info.head_dim / 2)
        return fasa_error(FASA_E_ARG, "greedy FCs per KV head must be in [0, %d] (head_dim / 2), got %d",
                          m->info.head_dim / 2, cp->greedy);
    if (n_prefill <= cp->budget)
        return fasa_error(FASA_E_ARG,
                          "calibration text too short: %d tokens leave %d to prefill before %d decode steps, "
                          "but more than K* = %d are needed for the top-k to be selective",
                          n, n_prefill, cp->n_decode, cp->budget);
    fasa_context_params ctxp = fasa_context_default_params();
    ctxp.n_ctx = n;
    ctxp.n_threads = cp->n_threads;
    fasa_context *c;
    fasa_status st = fasa_context_init(m, &ctxp, &c);
    if (st) return st;
    st = fasa_eval(c, tokens, n_prefill, NULL, false);
    attn_policy *p = NULL;
    const fasa_attn_params ap = {.method = "calibration", .budget = cp->budget, .dense_layers = ""};
    const attn_shape shape = context_attn_shape(c);
    if (!st) st = attn_policy_create_ops(&calib_ops, &ap, &shape, fasa_context_n_past(c), &p);
    if (!st) {
        calib_state *cs = p->state; /* stays valid: the context owns p until it is freed */
        st = context_install_policy(c, p);
        for (int32_t i = 0; !st && i < cp->n_decode; i++) {
            st = fasa_eval(c, tokens + n_prefill + i, 1, NULL, false);
            calib_progress(cp, i + 1);
        }
        fasa_calib *cal = st ? NULL : calib_alloc(&m->info);
        if (!st && !cal) st = FASA_E_NOMEM;
        if (!st) {
            const int32_t F = cal->head_dim / 2;
            for (int64_t lh = 0; lh < (int64_t)cal->n_layers * cal->n_heads; lh++)
                for (int32_t i = 0; i < F; i++)
                    cal->ca[lh * F + i] = cs->steps[lh] ? cs->sum[lh * F + i] / (double)cs->steps[lh] : 0.0;
            cal->budget = cp->budget;
            cal->n_tokens = n;
            cal->n_decode = cp->n_decode;
            calib_rank(cal);
            if (cp->greedy > 0) st = calib_greedy(c, cal, tokens, n_prefill, cp); /* frees cs with its policy */
            if (st) fasa_calib_free(cal);
            else *out = cal;
        }
    }
    fasa_context_free(c);
    return st;
}
