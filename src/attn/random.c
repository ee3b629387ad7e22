/* random: budget tokens drawn uniformly without replacement among the
 * visible ones, every step. The floor any selection method must beat.
 *
 * Each draw has its own generator, seeded from params.seed and the request
 * (layer, KV head, query head, visible tokens), so results are reproducible
 * whatever the thread schedule and no state is shared between threads. One
 * set per KV group by default (query head = the group's first). Floyd's
 * algorithm draws the set in O(budget) steps into a bitmap, which a scan then
 * turns into ascending positions. */
#include "attn/policy.h"

#include <string.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Splitmix64: a Weyl sequence through the mixer above. */
static uint32_t next32(uint64_t *s) {
    *s += 0x9e3779b97f4a7c15u;
    return (uint32_t)(mix64(*s) >> 32);
}

/* Uniform in [0, bound) without modulo bias (multiply-shift with rejection). */
static uint32_t below(uint64_t *s, uint32_t bound) {
    uint64_t m = (uint64_t)next32(s) * bound;
    if ((uint32_t)m < bound) {
        const uint32_t reject = (uint32_t)(-bound) % bound;
        while ((uint32_t)m < reject) m = (uint64_t)next32(s) * bound;
    }
    return (uint32_t)(m >> 32);
}

static fasa_status random_init(attn_policy *p) {
    p->scratch_floats = ((int64_t)p->shape.n_ctx + 31) / 32; /* bitmap words */
    return FASA_OK;
}

static int32_t random_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const int32_t n = aq->n_keys, budget = p->params.budget;
    if (budget >= n) return -1;
    const uint64_t key[4] = {(uint64_t)aq->layer, (uint64_t)aq->kv_head, (uint64_t)aq->q_head, (uint64_t)n};
    uint64_t s = mix64(p->params.seed);
    for (int i = 0; i < 4; i++) s = mix64(s ^ (key[i] + 0x9e3779b97f4a7c15u * (uint64_t)(i + 1)));
    uint32_t *taken = (uint32_t *)scratch;
    const int32_t words = (n + 31) / 32;
    memset(taken, 0, (size_t)words * sizeof *taken);
    /* Floyd: for j = n-budget .. n-1 take a uniform t in [0, j], or j itself
     * if t is already taken; every budget-subset comes out equally likely. */
    for (int32_t j = n - budget; j < n; j++) {
        uint32_t t = below(&s, (uint32_t)j + 1);
        if (taken[t / 32] >> (t % 32) & 1u) t = (uint32_t)j;
        taken[t / 32] |= 1u << (t % 32);
    }
    int32_t m = 0;
    for (int32_t w = 0; w < words; w++)
        for (uint32_t bits = taken[w]; bits; bits &= bits - 1) idx[m++] = w * 32 + __builtin_ctz(bits);
    return m;
}

const attn_policy_ops attn_random_ops = {
    .name = "random",
    .per_head_default = false,
    .init = random_init,
    .select = random_select,
};
