/* The policy registry and the helpers every policy shares. */
#include "attn/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

extern const attn_policy_ops attn_full_ops, attn_oracle_ops, attn_fasa_ops, attn_stream_ops,
    attn_h2o_ops, attn_snapkv_ops, attn_quest_ops, attn_sparq_ops, attn_random_ops;

static const attn_policy_ops *const registry[] = {
    &attn_full_ops,
    &attn_fasa_ops,
    &attn_oracle_ops,
    &attn_stream_ops,
    &attn_h2o_ops,
    &attn_snapkv_ops,
    &attn_quest_ops,
    &attn_sparq_ops,
    &attn_random_ops,
};
enum { N_POLICIES = sizeof registry / sizeof registry[0] };

const char *const *fasa_attn_methods(void) {
    static const char *names[N_POLICIES + 1];
    for (int i = 0; i < N_POLICIES; i++) names[i] = registry[i]->name;
    return names;
}

static fasa_status unknown_method(const char *name) {
    char list[256] = "";
    size_t w = 0;
    for (int i = 0; i < N_POLICIES; i++)
        w += (size_t)snprintf(list + w, sizeof list - w, "%s%s", i ? ", " : "", registry[i]->name);
    return fasa_error(FASA_E_ARG, "unknown attention method '%s' (known: %s)", name, list);
}

fasa_status attn_parse_layers(const char *spec, int32_t n_layers, bool *out) {
    memset(out, 0, (size_t)n_layers * sizeof *out);
    const char *s = spec;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= n_layers || (*end && *end != ','))
            return fasa_error(FASA_E_ARG, "dense layers '%s': expected a comma list of layer indices in [0, %d)",
                              spec, n_layers);
        out[v] = true;
        s = *end ? end + 1 : end;
    }
    return FASA_OK;
}

const attn_policy_ops *attn_policy_find(const char *name) {
    for (int i = 0; i < N_POLICIES; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}

fasa_status attn_policy_create(const fasa_attn_params *params, const attn_shape *shape, int32_t n_cached,
                               attn_policy **out) {
    *out = NULL;
    const char *name = params->method ? params->method : "full";
    const attn_policy_ops *ops = attn_policy_find(name);
    if (!ops) return unknown_method(name);
    return attn_policy_create_ops(ops, params, shape, n_cached, out);
}

fasa_status attn_policy_create_ops(const attn_policy_ops *ops, const fasa_attn_params *params,
                                   const attn_shape *shape, int32_t n_cached, attn_policy **out) {
    *out = NULL;
    const char *name = ops->name;
    if (ops != &attn_full_ops && params->budget <= 0)
        return fasa_error(FASA_E_ARG, "%s: the token budget must be >= 1, got %d", name, params->budget);
    if (params->per_head < 0 || params->per_head > 2)
        return fasa_error(FASA_E_ARG, "per_head must be 0 (method default), 1 or 2, got %d", params->per_head);
    attn_policy *p = fasa_calloc(1, sizeof *p, "attention policy");
    if (!p) return FASA_E_NOMEM;
    p->ops = ops;
    p->params = *params;
    p->params.method = ops->name;
    p->shape = *shape;
    p->n_cached = n_cached;
    p->per_head = params->per_head ? params->per_head == 1 : ops->per_head_default;
    p->dense_layer = fasa_calloc((size_t)shape->n_layers, sizeof *p->dense_layer, "dense layer map");
    fasa_status st = p->dense_layer ? FASA_OK : FASA_E_NOMEM;
    if (!st && params->dense_layers) st = attn_parse_layers(params->dense_layers, shape->n_layers, p->dense_layer);
    if (!st) st = ops->init(p);
    if (st) {
        free(p->dense_layer);
        free(p);
        return st;
    }
    *out = p;
    return FASA_OK;
}

fasa_status attn_policy_bind_cpu(attn_policy *p) { return p->ops->bind_cpu ? p->ops->bind_cpu(p) : FASA_OK; }

void attn_policy_free(attn_policy *p) {
    if (!p) return;
    if (p->ops->free) p->ops->free(p);
    free(p->dense_layer);
    free(p);
}

/* Quickselect for the k-th largest value, on a copy so scores stay intact. */
static float kth_largest(float *v, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1, want = k - 1;
    uint32_t r = 2463534242u;
    while (lo < hi) {
        r ^= r << 13, r ^= r >> 17, r ^= r << 5;
        const float pivot = v[lo + (int32_t)(r % (uint32_t)(hi - lo + 1))];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return v[want];
}

/* Writes to idx, in position order, the candidates cand[0..m) (positions
 * stored in float-sized slots, read with memcpy) whose score beats thr, plus
 * as many ties at thr as fit in k. cand may be NULL for 0..m-1. */
static int32_t keep_above(const float *scores, const float *cand, int32_t m, float thr, int32_t k, int32_t *idx) {
    int32_t above = 0, ties, out = 0;
    for (int32_t i = 0; i < m; i++) {
        int32_t j = i;
        if (cand) memcpy(&j, cand + i, sizeof j);
        above += scores[j] > thr;
    }
    ties = k - above;
    for (int32_t i = 0; i < m; i++) {
        int32_t j = i;
        if (cand) memcpy(&j, cand + i, sizeof j);
        if (scores[j] > thr || (scores[j] == thr && ties-- > 0)) idx[out++] = j;
    }
    return out;
}

int32_t attn_topk(const float *scores, int32_t n, int32_t k, int32_t *idx, float *work) {
    if (k >= n) {
        for (int32_t i = 0; i < n; i++) idx[i] = i;
        return n;
    }
    if (k <= 0) return 0;
    /* For a small k out of many, a sample gives a threshold that a few
     * percent of the scores pass; one branch-free pass collects those (their
     * positions in the first half of work, their scores in the second), and
     * the exact selection runs on them alone. Quickselect over all n scores
     * mispredicts about every other comparison. */
    enum { SAMPLE = 256 };
    const int32_t half = n / 2;
    if (n >= 8 * SAMPLE && k <= n / 8) {
        const int32_t want = (int32_t)((int64_t)k * SAMPLE / n) * 2 + 8; /* rank in the sample, with margin */
        for (int32_t i = 0; i < SAMPLE; i++) work[i] = scores[(int64_t)i * n / SAMPLE];
        const float thr0 = kth_largest(work, SAMPLE, want);
        int32_t m = 0;
        for (int32_t j = 0; j < n && m < half; j++) {
            memcpy(work + m, &j, sizeof j);
            m += scores[j] >= thr0;
        }
        if (m >= k && m < half) {
            for (int32_t i = 0; i < m; i++) {
                int32_t j;
                memcpy(&j, work + i, sizeof j);
                work[half + i] = scores[j];
            }
            return keep_above(scores, work, m, kth_largest(work + half, m, k), k, idx);
        }
        /* The sample misjudged the threshold: select over everything. */
    }
    memcpy(work, scores, (size_t)n * sizeof *work);
    return keep_above(scores, NULL, n, kth_largest(work, n, k), k, idx);
}
