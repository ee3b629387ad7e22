/* stream: StreamingLLM (Xiao et al., 2023) as a selection policy. Every
 * decode step attends to the first n_sink tokens ("attention sinks", which
 * soak up attention mass the softmax must put somewhere) plus the most recent
 * budget - n_sink tokens. The set depends only on positions, so it is the same
 * for every head.
 *
 * Small budgets: sinks are capped at budget / 2, so that a budget below
 * 2 * n_sink still spends half of itself on the recent tokens the next-token
 * prediction depends on most (budget 1 attends to the current token only).
 * Nothing is evicted: the full cache stays, this only picks what is read. */
#include "attn/policy.h"

#include "error.h"

static fasa_status stream_init(attn_policy *p) {
    if (p->params.n_sink < 0)
        return fasa_error(FASA_E_ARG, "stream: n_sink (attention-sink tokens) must be >= 0, got %d",
                          p->params.n_sink);
    if (p->params.n_sink == 0) p->params.n_sink = 8;
    p->scratch_floats = 0;
    return FASA_OK;
}

static int32_t stream_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    (void)scratch;
    const int32_t n = aq->n_keys, budget = p->params.budget;
    if (budget >= n) return -1;
    const int32_t sinks = p->params.n_sink < budget / 2 ? p->params.n_sink : budget / 2;
    int32_t m = 0;
    for (int32_t j = 0; j < sinks; j++) idx[m++] = j;
    for (int32_t j = n - (budget - sinks); j < n; j++) idx[m++] = j;
    return m;
}

const attn_policy_ops attn_stream_ops = {
    .name = "stream",
    .per_head_default = false,
    .init = stream_init,
    .select = stream_select,
};
