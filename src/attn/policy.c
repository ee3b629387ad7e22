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

fasa_status attn_policy_create(const fasa_attn_params *params, const attn_shape *shape, int32_t n_cached,
                               attn_policy **out) {
    *out = NULL;
    const char *name = params->method ? params->method : "full";
    const attn_policy_ops *ops = NULL;
    for (int i = 0; i < N_POLICIES; i++)
        if (!strcmp(registry[i]->name, name)) ops = registry[i];
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

int32_t attn_topk(const float *scores, int32_t n, int32_t k, int32_t *idx, float *work) {
    if (k >= n) {
        for (int32_t i = 0; i < n; i++) idx[i] = i;
        return n;
    }
    if (k <= 0) return 0;
    memcpy(work, scores, (size_t)n * sizeof *work);
    const float thr = kth_largest(work, n, k);
    /* Everything above the threshold, then threshold ties in position order. */
    int32_t above = 0;
    for (int32_t i = 0; i < n; i++) above += scores[i] > thr;
    int32_t ties = k - above, m = 0;
    for (int32_t i = 0; i < n; i++) {
        if (scores[i] > thr || (scores[i] == thr && ties-- > 0)) idx[m++] = i;
    }
    return m;
}
