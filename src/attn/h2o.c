/* h2o: Heavy-Hitter Oracle (Zhang et al., 2023) as a selection policy.
 *
 * Each decode step attends to the n_recent most recent tokens plus the
 * budget - n_recent older tokens that have received the most attention so
 * far ("heavy hitters"). Attention received is accumulated per layer and
 * query head: during prefill from the dense attention every prompt query
 * gives its causal prefix (recomputed here from the queries the prefill hook
 * shows us), during decode from the weights the engine reports in observe.
 * A token that is not selected receives nothing at that step, while the
 * selected ones keep gaining, so a token pushed out of the heavy set stays
 * out: the original's eviction, although here the cache itself keeps every
 * token. Per KV group, the group's accumulators are summed.
 *
 * The prompt's attention can only be seen while the prompt is evaluated, so
 * the policy must be installed on an empty cache.
 *
 * Truncation: the accumulators as they were at the end of the latest prefill
 * are kept, so cutting back exactly to that point (evaluate a prompt once,
 * then decode several continuations of it) restores the state exactly.
 * Cutting elsewhere zeroes the removed positions, but the attention that the
 * removed queries gave to surviving positions stays counted: exact
 * bookkeeping would need every query or every decode step's weights. */
#include "attn/policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "error.h"

typedef struct h2o_state {
    float *acc;        /* [n_layers][n_heads][n_ctx]: attention each position has received */
    float *snap;       /* same shape: acc at the end of the latest prefill of each layer */
    int32_t *snap_end; /* [n_layers]: the position that prefill ended at */
    float *logits;     /* [n_heads][block][n_ctx]: per-head buffers of the prefill hook */
    float *queries;    /* [n_heads][block][head_dim] */
    int32_t block;     /* prompt queries scored together in one matrix product */
} h2o_state;

/* Enough queries per product to amortise packing the keys (32), fewer on
 * long contexts so that the logits stay within 1 MiB per head (but 4 at
 * least). */
static int32_t query_block(int32_t n_ctx) {
    const int32_t fit = (1 << 18) / n_ctx;
    return fit > 32 ? 32 : fit < 4 ? 4 : fit;
}

static float *acc_row(const attn_policy *p, float *base, int32_t layer, int32_t head) {
    return base + ((int64_t)layer * p->shape.n_heads + head) * p->shape.n_ctx;
}

static void h2o_free(attn_policy *p) {
    h2o_state *st = p->state;
    if (!st) return;
    free(st->acc);
    free(st->snap);
    free(st->snap_end);
    free(st->logits);
    free(st->queries);
    free(st);
    p->state = NULL;
}

static fasa_status h2o_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    const int32_t budget = p->params.budget;
    if (p->n_cached > 0)
        return fasa_error(FASA_E_ARG,
                          "h2o: install it before the prompt is evaluated (the context already holds %d "
                          "tokens); it accumulates the attention each prompt token receives during prefill",
                          p->n_cached);
    if (p->params.n_recent < 0 || p->params.n_recent > budget)
        return fasa_error(FASA_E_ARG, "h2o: n_recent (recent tokens kept) must be in [0, budget = %d], got %d",
                          budget, p->params.n_recent);
    if (p->params.n_recent == 0) p->params.n_recent = budget / 2;
    const size_t n_acc = (size_t)s->n_layers * s->n_heads * s->n_ctx;
    h2o_state *st = fasa_calloc(1, sizeof *st, "h2o state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    st->block = query_block(s->n_ctx);
    if (!(st->acc = fasa_calloc(n_acc, sizeof(float), "h2o attention accumulators")) ||
        !(st->snap = fasa_calloc(n_acc, sizeof(float), "h2o accumulator snapshot")) ||
        !(st->snap_end = fasa_calloc((size_t)s->n_layers, sizeof(int32_t), "h2o snapshot ends")) ||
        !(st->logits = fasa_malloc((size_t)s->n_heads * st->block * s->n_ctx, sizeof(float),
                                   "h2o prefill logits")) ||
        !(st->queries = fasa_malloc((size_t)s->n_heads * st->block * s->head_dim, sizeof(float),
                                    "h2o prefill queries"))) {
        h2o_free(p);
        return FASA_E_NOMEM;
    }
    p->scratch_floats = 2 * (int64_t)s->n_ctx; /* group-summed scores, top-k work */
    return FASA_OK;
}

static void h2o_truncate(attn_policy *p, int32_t n_tokens) {
    h2o_state *st = p->state;
    const attn_shape *s = &p->shape;
    for (int32_t l = 0; l < s->n_layers; l++) {
        const int32_t end = st->snap_end[l];
        for (int32_t h = 0; h < s->n_heads; h++) {
            float *a = acc_row(p, st->acc, l, h), *snap = acc_row(p, st->snap, l, h);
            /* Every decode contribution came from a query at or after the
             * snapshot, so a cut at or before it removes them all. */
            if (n_tokens <= end) {
                memcpy(a, snap, (size_t)n_tokens * sizeof *a);
                memset(snap + n_tokens, 0, (size_t)(end - n_tokens) * sizeof *snap);
            }
            memset(a + n_tokens, 0, (size_t)(s->n_ctx - n_tokens) * sizeof *a);
        }
        if (n_tokens < end) st->snap_end[l] = n_tokens;
    }
}

static void h2o_prefill(attn_policy *p, const fasa_kv *kv, int32_t layer, const float *q, int32_t pos0,
                        int32_t n) {
    if (p->dense_layer[layer]) return;
    h2o_state *st = p->state;
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, group = s->n_heads / s->n_kv_heads, end = pos0 + n;
    const float scale = 1.0f / sqrtf((float)d);
    /* Heads in parallel, each with a one-thread matrix product: the
     * accumulators are per head, so no two threads add to the same one. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int32_t h = 0; h < s->n_heads; h++) {
        float *a = acc_row(p, st->acc, layer, h);
        float *lg = st->logits + (int64_t)h * st->block * s->n_ctx;
        float *qb = st->queries + (int64_t)h * st->block * d;
        for (int32_t i0 = 0; i0 < n; i0 += st->block) {
            const int32_t b = n - i0 < st->block ? n - i0 : st->block, n_keys = pos0 + i0 + b;
            for (int32_t r = 0; r < b; r++)
                memcpy(qb + (int64_t)r * d, q + ((int64_t)(i0 + r) * s->n_heads + h) * d, (size_t)d * sizeof *q);
            attn_block_logits(kv, layer, h / group, qb, b, n_keys, lg, 1);
            for (int32_t r = 0; r < b; r++) {
                float *w = lg + (int64_t)r * n_keys;
                const int32_t visible = pos0 + i0 + r + 1;
                const float norm = attn_softmax_unnormalized(w, visible, scale);
                for (int32_t j = 0; j < visible; j++) a[j] += w[j] * norm;
            }
        }
        memcpy(acc_row(p, st->snap, layer, h), a, (size_t)end * sizeof *a);
    }
    st->snap_end[layer] = end;
}

static int32_t h2o_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const h2o_state *st = p->state;
    const int32_t n = aq->n_keys, budget = p->params.budget, recent = p->params.n_recent;
    if (budget >= n) return -1;
    const int32_t older = n - recent;
    const float *score = acc_row(p, st->acc, aq->layer, aq->q_head);
    if (aq->n_q > 1) {
        float *sum = scratch;
        memcpy(sum, score, (size_t)older * sizeof *sum);
        for (int32_t g = 1; g < aq->n_q; g++) {
            const float *a = acc_row(p, st->acc, aq->layer, aq->q_head + g);
            for (int32_t j = 0; j < older; j++) sum[j] += a[j];
        }
        score = sum;
    }
    int32_t m = attn_topk(score, older, budget - recent, idx, scratch + p->shape.n_ctx);
    for (int32_t j = older; j < n; j++) idx[m++] = j;
    return m;
}

static void h2o_observe(attn_policy *p, const attn_query *aq, const int32_t *idx, int32_t n,
                        const float *weights) {
    if (p->dense_layer[aq->layer]) return;
    const h2o_state *st = p->state;
    for (int32_t g = 0; g < aq->n_q; g++) {
        float *a = acc_row(p, st->acc, aq->layer, aq->q_head + g);
        const float *w = weights + (int64_t)g * n;
        if (idx)
            for (int32_t j = 0; j < n; j++) a[idx[j]] += w[j];
        else
            for (int32_t j = 0; j < n; j++) a[j] += w[j];
    }
}

const attn_policy_ops attn_h2o_ops = {
    .name = "h2o",
    .per_head_default = true,
    .init = h2o_init,
    .free = h2o_free,
    .truncate = h2o_truncate,
    .prefill = h2o_prefill,
    .select = h2o_select,
    .observe = h2o_observe,
};
