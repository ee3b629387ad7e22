/* snapkv: SnapKV (Li et al., 2024) as a selection policy.
 *
 * At the end of the prompt, the last `window` prompt queries (the
 * observation window) vote for the prompt tokens before the window: each
 * query's softmax attention over its causal prefix (scale 1/sqrt(head_dim)),
 * summed over the window (and over the group's query heads when selecting
 * per KV group), then max-pooled along positions with kernel pool_kernel
 * (same-size output, out-of-range neighbours ignored) so that a chosen token
 * brings its neighbours' context. The budget - window best-voted tokens are
 * kept, together with the window itself and every token generated since.
 *
 * Budget: the attended count never exceeds the budget, as for every policy
 * here (the budget is the tokens attended per head per step, the footing on
 * which methods are compared). The original keeps its compressed prompt and
 * lets the generated tokens grow the cache; here each generated token takes
 * the place of the lowest-voted kept prompt token, and once the window plus
 * the generated tokens fill the budget alone, the most recent budget tokens
 * are attended.
 *
 * refresh R > 0 re-runs the vote every R generated tokens (at R, 2R, ... after
 * the prompt) with the most recent `window` queries over everything cached
 * before them, as the paper does in long generation.
 *
 * The vote is computed lazily, by the first selection that needs it, on the
 * thread handling that head: prefill only records the window's queries.
 * Truncation: a vote survives a cut that keeps every token it depended on,
 * so cutting back to the end of the prompt and decoding again repeats the
 * first decode exactly. A cut into the prompt drops the prompt vote (until
 * the next prefill, the most recent tokens are attended). After a cut inside
 * the generated tokens, the next refresh votes with the window queries still
 * held (the last `window` prompt and the last `window` generated ones), which
 * may be fewer than the window. */
#include "attn/policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "error.h"

typedef struct snapkv_state {
    int32_t window, n_units, cap; /* units: query heads, or KV heads per group; cap: kept per unit */
    float *prompt_q;      /* [n_layers][window][n_heads][head_dim]: the last prefill queries */
    int32_t *prompt_pos;  /* [n_layers][window]: the position each slot holds, -1 none */
    float *decode_q;      /* [n_layers][window][n_heads][head_dim]: queries seen by select (refresh) */
    int32_t *decode_pos;  /* [n_layers][n_heads][window] */
    int32_t *prompt_end;  /* [n_layers]: where the latest prefill ended (0: none) */
    int32_t *vote_at;     /* [n_layers][n_units]: the position S a unit's vote was taken at, -1 none */
    int32_t *n_kept;      /* [n_layers][n_units] */
    int32_t *kept;        /* [n_layers][n_units][cap]: voted positions, ascending */
    int32_t *rank;        /* [n_layers][n_units][cap]: each one's place in the vote, 0 = best */
} snapkv_state;

/* Window queries scored together in one matrix product (small: this runs
 * on per-thread scratch inside the engine's parallel decode). */
enum { QUERY_BLOCK = 8 };

typedef struct ranked {
    float score;
    int32_t i;
} ranked;

static void snapkv_free(attn_policy *p) {
    snapkv_state *st = p->state;
    if (!st) return;
    free(st->prompt_q);
    free(st->prompt_pos);
    free(st->decode_q);
    free(st->decode_pos);
    free(st->prompt_end);
    free(st->vote_at);
    free(st->n_kept);
    free(st->kept);
    free(st->rank);
    free(st);
    p->state = NULL;
}

static fasa_status check_params(attn_policy *p) {
    fasa_attn_params *a = &p->params;
    if (a->window < 0 || a->pool_kernel < 0 || a->refresh < 0)
        return fasa_error(FASA_E_ARG, "snapkv: window (%d), pool_kernel (%d) and refresh (%d) must not be negative",
                          a->window, a->pool_kernel, a->refresh);
    if (a->window == 0) a->window = 32;
    if (a->pool_kernel == 0) a->pool_kernel = 7;
    if (a->window > a->budget)
        return fasa_error(FASA_E_ARG,
                          "snapkv: the observation window (%d tokens) is always attended, so it must fit in "
                          "the budget (%d); lower window or raise the budget",
                          a->window, a->budget);
    if (p->n_cached > 0 && a->window > ATTN_QUERY_HISTORY)
        return fasa_error(FASA_E_ARG,
                          "snapkv: installed on a cache of %d tokens, it can see only the last %d prompt "
                          "queries, fewer than its window of %d; lower window or install it before the prompt",
                          p->n_cached, ATTN_QUERY_HISTORY, a->window);
    return FASA_OK;
}

static fasa_status snapkv_init(attn_policy *p) {
    fasa_status err = check_params(p);
    if (err) return err;
    const attn_shape *s = &p->shape;
    snapkv_state *st = fasa_calloc(1, sizeof *st, "snapkv state");
    if (!st) return FASA_E_NOMEM;
    p->state = st;
    st->window = p->params.window;
    st->n_units = p->per_head ? s->n_heads : s->n_kv_heads;
    const int32_t spare = p->params.budget - st->window;
    st->cap = spare < s->n_ctx ? spare : s->n_ctx;
    const size_t L = (size_t)s->n_layers, ring = L * st->window * s->n_heads * s->head_dim;
    const size_t units = L * st->n_units, kept = units * (size_t)(st->cap > 0 ? st->cap : 1);
    if (!(st->prompt_q = fasa_malloc(ring, sizeof(float), "snapkv window queries")) ||
        !(st->prompt_pos = fasa_malloc(L * st->window, sizeof(int32_t), "snapkv window positions")) ||
        !(st->decode_q = fasa_malloc(ring, sizeof(float), "snapkv recent queries")) ||
        !(st->decode_pos = fasa_malloc(L * s->n_heads * st->window, sizeof(int32_t), "snapkv recent positions")) ||
        !(st->prompt_end = fasa_calloc(L, sizeof(int32_t), "snapkv prompt ends")) ||
        !(st->vote_at = fasa_malloc(units, sizeof(int32_t), "snapkv votes")) ||
        !(st->n_kept = fasa_calloc(units, sizeof(int32_t), "snapkv votes")) ||
        !(st->kept = fasa_malloc(kept, sizeof(int32_t), "snapkv kept positions")) ||
        !(st->rank = fasa_malloc(kept, sizeof(int32_t), "snapkv kept ranks"))) {
        snapkv_free(p);
        return FASA_E_NOMEM;
    }
    for (size_t i = 0; i < L * st->window; i++) st->prompt_pos[i] = -1;
    for (size_t i = 0; i < L * s->n_heads * st->window; i++) st->decode_pos[i] = -1;
    for (size_t i = 0; i < units; i++) st->vote_at[i] = -1;
    /* votes, pooled votes, top-k work, a block of queries' logits (later
     * the ranking pairs), the block's queries */
    p->scratch_floats = (3 + QUERY_BLOCK) * (int64_t)s->n_ctx + QUERY_BLOCK * (int64_t)s->head_dim;
    return FASA_OK;
}

static float *ring_q(const attn_policy *p, float *ring, int32_t layer, int32_t slot, int32_t head) {
    const snapkv_state *st = p->state;
    return ring + (((int64_t)layer * st->window + slot) * p->shape.n_heads + head) * p->shape.head_dim;
}

static int32_t *decode_tag(const attn_policy *p, int32_t layer, int32_t head, int32_t slot) {
    const snapkv_state *st = p->state;
    return st->decode_pos + ((int64_t)layer * p->shape.n_heads + head) * st->window + slot;
}

/* The query of position t, head h, if one of the rings still holds it. */
static const float *find_query(const attn_policy *p, int32_t layer, int32_t head, int32_t t) {
    const snapkv_state *st = p->state;
    const int32_t slot = t % st->window;
    if (st->prompt_pos[(int64_t)layer * st->window + slot] == t) return ring_q(p, st->prompt_q, layer, slot, head);
    if (*decode_tag(p, layer, head, slot) == t) return ring_q(p, st->decode_q, layer, slot, head);
    return NULL;
}

static void snapkv_prefill(attn_policy *p, const fasa_kv *kv, int32_t layer, const float *q, int32_t pos0,
                           int32_t n) {
    (void)kv;
    if (p->dense_layer[layer]) return;
    snapkv_state *st = p->state;
    const int64_t HD = (int64_t)p->shape.n_heads * p->shape.head_dim;
    for (int32_t i = n > st->window ? n - st->window : 0; i < n; i++) {
        const int32_t t = pos0 + i, slot = t % st->window;
        memcpy(ring_q(p, st->prompt_q, layer, slot, 0), q + i * HD, (size_t)HD * sizeof *q);
        st->prompt_pos[(int64_t)layer * st->window + slot] = t;
    }
    st->prompt_end[layer] = pos0 + n;
    for (int32_t u = 0; u < st->n_units; u++) st->vote_at[(int64_t)layer * st->n_units + u] = -1;
}

static void snapkv_truncate(attn_policy *p, int32_t n_tokens) {
    snapkv_state *st = p->state;
    const int32_t w = st->window;
    for (int32_t l = 0; l < p->shape.n_layers; l++) {
        if (st->prompt_end[l] > n_tokens) st->prompt_end[l] = 0;
        for (int32_t s = 0; s < w; s++)
            if (st->prompt_pos[(int64_t)l * w + s] >= n_tokens) st->prompt_pos[(int64_t)l * w + s] = -1;
        for (int32_t h = 0; h < p->shape.n_heads; h++)
            for (int32_t s = 0; s < w; s++)
                if (*decode_tag(p, l, h, s) >= n_tokens) *decode_tag(p, l, h, s) = -1;
        for (int32_t u = 0; u < st->n_units; u++)
            if (st->vote_at[(int64_t)l * st->n_units + u] > n_tokens) st->vote_at[(int64_t)l * st->n_units + u] = -1;
    }
}

/* out[j] = max of v over [j - (k-1)/2, j + k/2], clipped to [0, n). */
static void max_pool(const float *v, int32_t n, int32_t k, float *out) {
    const int32_t left = (k - 1) / 2, right = k / 2;
    for (int32_t j = 0; j < n; j++) {
        const int32_t lo = j - left > 0 ? j - left : 0, hi = j + right < n ? j + right : n - 1;
        float m = v[lo];
        for (int32_t i = lo + 1; i <= hi; i++) m = v[i] > m ? v[i] : m;
        out[j] = m;
    }
}

static int by_vote(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

/* votes[j] += the softmax weight each of the n queries in qb ([n][head_dim],
 * query r sees keys 0 .. visible[r]-1, ascending) gives key j < before. */
static void add_votes(const attn_query *aq, const float *qb, const int32_t *visible, int32_t n, int32_t before,
                      float scale, float *logits, float *votes) {
    const int32_t n_keys = visible[n - 1];
    attn_block_logits(aq->kv, aq->layer, aq->kv_head, qb, n, n_keys, logits, 1);
    for (int32_t r = 0; r < n; r++) {
        float *w = logits + (int64_t)r * n_keys;
        const float norm = attn_softmax_unnormalized(w, visible[r], scale);
        for (int32_t j = 0; j < before; j++) votes[j] += w[j] * norm;
    }
}

/* Takes the vote of the window [at - window, at) of queries for unit u
 * (the heads of aq) over the positions before the window. */
static void vote(attn_policy *p, const attn_query *aq, int32_t unit, int32_t at, float *scratch) {
    snapkv_state *st = p->state;
    const int32_t w = st->window, n_ctx = p->shape.n_ctx, d = p->shape.head_dim, before = at - w;
    const int64_t u = (int64_t)aq->layer * st->n_units + unit;
    float *votes = scratch, *pooled = votes + n_ctx, *work = pooled + n_ctx, *logits = work + n_ctx;
    float *qb = logits + (int64_t)QUERY_BLOCK * n_ctx;
    int32_t *kept = st->kept + u * st->cap, *rank = st->rank + u * st->cap;
    const int32_t want = st->cap < before ? st->cap : before;
    st->vote_at[u] = at;
    st->n_kept[u] = 0;
    if (want <= 0) return;
    const float scale = 1.0f / sqrtf((float)d);
    memset(votes, 0, (size_t)before * sizeof *votes);
    int32_t visible[QUERY_BLOCK], n_block = 0;
    for (int32_t t = before; t < at; t++)
        for (int32_t g = 0; g < aq->n_q; g++) {
            const float *q = find_query(p, aq->layer, aq->q_head + g, t);
            if (!q) continue;
            memcpy(qb + (int64_t)n_block * d, q, (size_t)d * sizeof *q);
            visible[n_block++] = t + 1;
            if (n_block == QUERY_BLOCK) {
                add_votes(aq, qb, visible, n_block, before, scale, logits, votes);
                n_block = 0;
            }
        }
    if (n_block) add_votes(aq, qb, visible, n_block, before, scale, logits, votes);
    max_pool(votes, before, p->params.pool_kernel, pooled);
    const int32_t m = attn_topk(pooled, before, want, kept, work);
    ranked *order = (ranked *)logits; /* 2 * m <= 2 * n_ctx floats, and the logits are spent */
    for (int32_t i = 0; i < m; i++) order[i] = (ranked){pooled[kept[i]], i};
    qsort(order, (size_t)m, sizeof *order, by_vote);
    for (int32_t r = 0; r < m; r++) rank[order[r].i] = r;
    st->n_kept[u] = m;
}

static void remember_query(attn_policy *p, const attn_query *aq) {
    snapkv_state *st = p->state;
    const int32_t t = aq->n_keys - 1, slot = t % st->window, d = p->shape.head_dim;
    for (int32_t g = 0; g < aq->n_q; g++) {
        memcpy(ring_q(p, st->decode_q, aq->layer, slot, aq->q_head + g), aq->q + (int64_t)g * d,
               (size_t)d * sizeof(float));
        *decode_tag(p, aq->layer, aq->q_head + g, slot) = t;
    }
}

static int32_t snapkv_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    snapkv_state *st = p->state;
    const int32_t n = aq->n_keys, budget = p->params.budget, refresh = p->params.refresh, w = st->window;
    if (refresh > 0) remember_query(p, aq);
    if (budget >= n) return -1;
    const int32_t unit = p->per_head ? aq->q_head : aq->kv_head;
    const int64_t u = (int64_t)aq->layer * st->n_units + unit;
    int32_t at = st->prompt_end[aq->layer] <= n ? st->prompt_end[aq->layer] : 0;
    if (refresh > 0) at += (n - at) / refresh * refresh;
    if (st->vote_at[u] != at) vote(p, aq, unit, at, scratch);

    /* Everything from the window on is attended; kept tokens fill the rest
     * of the budget in vote order. */
    const int32_t tail = at - w > 0 ? at - w : 0, n_tail = n - tail;
    int32_t m = 0;
    if (n_tail >= budget) {
        for (int32_t j = n - budget; j < n; j++) idx[m++] = j;
        return m;
    }
    const int32_t room = budget - n_tail;
    const int32_t *kept = st->kept + u * st->cap, *rank = st->rank + u * st->cap;
    for (int32_t i = 0; i < st->n_kept[u]; i++)
        if (rank[i] < room) idx[m++] = kept[i];
    for (int32_t j = tail; j < n; j++) idx[m++] = j;
    return m;
}

const attn_policy_ops attn_snapkv_ops = {
    .name = "snapkv",
    .per_head_default = true,
    .init = snapkv_init,
    .free = snapkv_free,
    .truncate = snapkv_truncate,
    .prefill = snapkv_prefill,
    .select = snapkv_select,
};
