/* quest: query-aware page selection (Tang et al., 2024).
 *
 * The cache is cut into pages of `page` consecutive positions. For each page
 * and KV head the policy keeps the per-channel minimum and maximum of its
 * keys, updated as tokens are appended (the last page fills up gradually).
 * At a decode step each visible page gets the score
 *     sum_c max(q_c * min_c, q_c * max_c),
 * an upper bound of q . k for every key in the page, and the tokens of the
 * floor(budget / page) best pages are attended (the last page only up to the
 * current token). When budget is not a multiple of page the remainder is
 * left unused, so the count never exceeds the budget; for the same reason a
 * budget below one page is refused. As in Quest, the current token's page is
 * not forced in. Per query head by default; per KV group the group's bounds
 * are summed (a bound of the summed logits).
 *
 * append runs on one thread (the engine appends outside its parallel
 * regions), so it may use the state's row buffer. */
#include "attn/quest.h"

#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "error.h"

typedef struct quest_state {
    float *minmax;     /* [n_layers][n_kv_heads][n_pages][2][head_dim]: min then max per channel */
    int32_t *n_fresh;  /* [n_layers]: pages cover positions below this exactly */
    float *row;        /* [head_dim]: a widened f16 key for append */
    int32_t n_pages;   /* pages in the whole context */
} quest_state;

float quest_page_bound(const float *q, const float *kmin, const float *kmax, int32_t d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int32_t c = 0; c < d; c++) {
        const float lo = q[c] * kmin[c], hi = q[c] * kmax[c];
        s += lo > hi ? lo : hi;
    }
    return s;
}

static float *page_minmax(const attn_policy *p, int32_t layer, int32_t kv_head, int32_t page) {
    const quest_state *st = p->state;
    const int64_t pages = ((int64_t)layer * p->shape.n_kv_heads + kv_head) * st->n_pages + page;
    return st->minmax + pages * 2 * p->shape.head_dim;
}

const float *quest_page_minmax(const attn_policy *p, int32_t layer, int32_t kv_head, int32_t page) {
    return page_minmax(p, layer, kv_head, page);
}

static void quest_free(attn_policy *p) {
    quest_state *st = p->state;
    if (!st) return;
    free(st->minmax);
    free(st->n_fresh);
    free(st->row);
    free(st);
    p->state = NULL;
}

static fasa_status quest_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    if (p->params.page < 0)
        return fasa_error(FASA_E_ARG, "quest: page (tokens per page) must be >= 1, got %d", p->params.page);
    if (p->params.page == 0) p->params.page = 16;
    const int32_t page = p->params.page;
    if (p->params.budget < page)
        return fasa_error(FASA_E_ARG,
                          "quest: the budget (%d tokens) must hold at least one page of %d tokens; "
                          "raise the budget or lower page",
                          p->params.budget, page);
    quest_state *st = fasa_calloc(1, sizeof *st, "quest state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    st->n_pages = (int32_t)(((int64_t)s->n_ctx + page - 1) / page);
    const size_t n_minmax = (size_t)s->n_layers * s->n_kv_heads * st->n_pages * 2 * s->head_dim;
    if (!(st->minmax = fasa_calloc(n_minmax, sizeof(float), "quest page min/max")) ||
        !(st->n_fresh = fasa_calloc((size_t)s->n_layers, sizeof(int32_t), "quest page counters")) ||
        !(st->row = fasa_malloc((size_t)s->head_dim, sizeof(float), "quest key row"))) {
        quest_free(p);
        return FASA_E_NOMEM;
    }
    /* page scores, top-k work, chosen pages */
    p->scratch_floats = 3 * (int64_t)st->n_pages;
    return FASA_OK;
}

/* Folds the key at pos into its page; the page's first position resets it. */
static void page_add(const attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t kv_head, int32_t pos) {
    const quest_state *st = p->state;
    const int32_t d = p->shape.head_dim, page = p->params.page;
    float *mn = page_minmax(p, layer, kv_head, pos / page), *mx = mn + d;
    const float *k = attn_key_f32(kv, layer, kv_head, pos, st->row);
    if (pos % page == 0) {
        memcpy(mn, k, (size_t)d * sizeof *k);
        memcpy(mx, k, (size_t)d * sizeof *k);
        return;
    }
    for (int32_t c = 0; c < d; c++) {
        mn[c] = k[c] < mn[c] ? k[c] : mn[c];
        mx[c] = k[c] > mx[c] ? k[c] : mx[c];
    }
}

static void quest_append(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos) {
    if (p->dense_layer[layer]) return;
    quest_state *st = p->state;
    const int32_t start = pos - pos % p->params.page;
    /* In order, the page only grows; otherwise (after a cut into the page)
     * rebuild it from the cache. */
    const int32_t from = pos == st->n_fresh[layer] ? pos : start;
    for (int32_t h = 0; h < p->shape.n_kv_heads; h++)
        for (int32_t r = from; r <= pos; r++) page_add(p, kv, layer, h, r);
    st->n_fresh[layer] = pos + 1;
}

static void quest_truncate(attn_policy *p, int32_t n_tokens) {
    quest_state *st = p->state;
    /* The page holding the cut still counts the removed keys: mark it for a
     * rebuild at the next append. (Until then its bound is merely loose.) */
    for (int32_t l = 0; l < p->shape.n_layers; l++)
        if (n_tokens < st->n_fresh[l]) st->n_fresh[l] = n_tokens - n_tokens % p->params.page;
}

static int32_t quest_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const int32_t n = aq->n_keys, budget = p->params.budget, page = p->params.page, d = p->shape.head_dim;
    if (budget >= n) return -1;
    const quest_state *st = p->state;
    const int32_t n_pages = (n + page - 1) / page;
    float *score = scratch, *work = scratch + st->n_pages;
    int32_t *chosen = (int32_t *)(work + st->n_pages);
    for (int32_t pg = 0; pg < n_pages; pg++) {
        const float *mn = page_minmax(p, aq->layer, aq->kv_head, pg);
        float s = 0.0f;
        for (int32_t g = 0; g < aq->n_q; g++) s += quest_page_bound(aq->q + (int64_t)g * d, mn, mn + d, d);
        score[pg] = s;
    }
    const int32_t k = attn_topk(score, n_pages, budget / page, chosen, work);
    int32_t m = 0;
    for (int32_t i = 0; i < k; i++) {
        const int32_t lo = chosen[i] * page, hi = lo + page < n ? lo + page : n;
        for (int32_t j = lo; j < hi; j++) idx[m++] = j;
    }
    return m;
}

const attn_policy_ops attn_quest_ops = {
    .name = "quest",
    .per_head_default = true,
    .init = quest_init,
    .free = quest_free,
    .truncate = quest_truncate,
    .append = quest_append,
    .select = quest_select,
};
