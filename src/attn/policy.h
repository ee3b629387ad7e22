/* Decode-attention policies: one interface for every method.
 *
 * At a decode step the engine asks the context's policy, for each layer and
 * KV head, which cached tokens the query heads of that group attend to
 * (select), then runs exact attention over exactly those tokens with
 * attn_dense_group, and finally shows the policy the attention weights it
 * used (observe). Prefill is always dense; a policy sees its keys (append)
 * and queries (prefill) so that it can build its own structures. A new method
 * is one new file defining an attn_policy_ops and one line in policy.c. */
#ifndef FASA_ATTN_POLICY_H
#define FASA_ATTN_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"
#include "kv.h"

typedef struct attn_shape {
    int32_t n_layers, n_heads, n_kv_heads, head_dim, n_ctx;
    fasa_rope_layout rope_layout;
} attn_shape;

/* One selection request: n_q query heads that share KV head kv_head. */
typedef struct attn_query {
    const fasa_kv *kv;
    int32_t layer;
    int32_t kv_head;
    const float *q;   /* [n_q][head_dim], after RoPE */
    int32_t n_q;      /* the whole group, or 1 when selecting per query head */
    int32_t q_head;   /* layer-wide index of the query head q[0] belongs to */
    int32_t n_keys;   /* positions 0 .. n_keys - 1 are visible; n_keys - 1 is the current token */
} attn_query;

typedef struct attn_policy attn_policy;

typedef struct attn_policy_ops {
    const char *name;
    bool per_head_default; /* selects per query head unless the user asks otherwise */
    /* Allocates state for p->shape and p->params; sets p->scratch_floats. */
    fasa_status (*init)(attn_policy *p);
    /* Optional: allocates what select needs to work on a CPU cache (the CPU
     * backend calls it when it installs the policy; a backend that selects
     * by p->labels itself never does). */
    fasa_status (*bind_cpu)(attn_policy *p);
    void (*free)(attn_policy *p);
    /* Optional: the cache was emptied or cut back to n_tokens. */
    void (*truncate)(attn_policy *p, int32_t n_tokens);
    /* Optional: the key/value of token pos in layer were just written. */
    void (*append)(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos);
    /* Optional: a dense prefill of positions pos0 .. pos0 + n - 1 just ran in
     * layer; q holds its queries, [n][n_heads][head_dim] after RoPE. When a
     * policy is installed on a non-empty cache, append is replayed for every
     * cached token and prefill for the last (at most ATTN_QUERY_HISTORY)
     * queries the context kept; a policy that cannot work from that fails in
     * init when p->n_cached > 0. */
    void (*prefill)(attn_policy *p, const fasa_kv *kv, int32_t layer, const float *q, int32_t pos0,
                    int32_t n);
    /* Writes the chosen positions to idx in ascending order and returns their
     * count (at most max(budget, 1)); or returns -1 to attend to every
     * visible token. scratch holds p->scratch_floats floats for this thread.
     * Called concurrently for different KV heads of one layer, and in
     * per-head mode for different query heads of one KV head. */
    int32_t (*select)(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch);
    /* Optional: after a decode step, the softmax weights each query head gave
     * the attended tokens ([n_q][n], in idx order; idx NULL = positions
     * 0 .. n - 1). Called concurrently like select. */
    void (*observe)(attn_policy *p, const attn_query *aq, const int32_t *idx, int32_t n,
                    const float *weights);
} attn_policy_ops;

/* Queries of the most recent prefill positions a context keeps per layer, so
 * that a policy installed after the prefill can still see them. */
#define ATTN_QUERY_HISTORY 64

struct label_set;

struct attn_policy {
    const attn_policy_ops *ops;
    fasa_attn_params params; /* with defaults resolved (method-specific ones by init) */
    attn_shape shape;
    bool per_head;
    bool *dense_layer;      /* [n_layers]: attend densely, skip select */
    int32_t n_cached;       /* tokens already in the cache when the policy was installed */
    int64_t scratch_floats; /* per-thread scratch select needs, set by init */
    void *state;
    /* What a backend needs to know to select as this policy does without
     * calling select on the CPU's cache: when set, the policy takes the top
     * `budget` tokens by the summed q . label score of its selection unit,
     * labels being the key coordinates this set names (labels.h). NULL: the
     * policy selects only through its callbacks (a CPU cache). */
    const struct label_set *labels;
};

/* Creates the policy params->method names (checking the generic parameters),
 * or fails with a message listing the known methods. */
fasa_status attn_policy_create(const fasa_attn_params *params, const attn_shape *shape,
                               int32_t n_cached, attn_policy **out);
/* The registry's policy of that name, or NULL. */
const attn_policy_ops *attn_policy_find(const char *name);
/* Same as attn_policy_create, for a policy that is not in the registry (calibration, CA probes). */
fasa_status attn_policy_create_ops(const attn_policy_ops *ops, const fasa_attn_params *params,
                                   const attn_shape *shape, int32_t n_cached, attn_policy **out);
void attn_policy_free(attn_policy *p);
/* Readies p to select on a CPU cache (ops->bind_cpu); whoever drives a
 * policy's select directly calls it once after creating it. */
fasa_status attn_policy_bind_cpu(attn_policy *p);

/* Shared helpers for policies. */

/* Positions of the k largest scores[0..n), written to idx in ascending
 * position order; returns min(k, n). Ties at the threshold go to the lower
 * positions. O(n) expected time; work holds attn_topk_work(n) floats. */
int32_t attn_topk(const float *scores, int32_t n, int32_t k, int32_t *idx, float *work);
static inline int64_t attn_topk_work(int32_t n) { return n; }

/* Parses a comma list of layer indices ("0", "0,1,31", "" for none) into a
 * bitmap of n_layers bools. */
fasa_status attn_parse_layers(const char *spec, int32_t n_layers, bool *out);

#endif
