/* oracle: the exact top-budget tokens by full q.k logit, every step. The
 * upper bound for any token-selection method at the same budget; it reads
 * all of K, so it saves nothing. Per query head by default; per KV group it
 * ranks by the logits summed over the group's query heads. */
#include "attn/policy.h"

#include <string.h>

#include "quant.h"

static fasa_status oracle_init(attn_policy *p) {
    /* scores, top-k work, one widened key row */
    p->scratch_floats = 2 * (int64_t)p->shape.n_ctx + p->shape.head_dim;
    return FASA_OK;
}

static int32_t oracle_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const int32_t d = p->shape.head_dim, n = aq->n_keys;
    float *scores = scratch, *work = scratch + p->shape.n_ctx, *row = work + p->shape.n_ctx;
    for (int32_t j = 0; j < n; j++) {
        const float *k = kv_row_f32(aq->kv, kv_k_row(aq->kv, aq->layer, aq->kv_head, j), row);
        float s = 0.0f;
        for (int32_t g = 0; g < aq->n_q; g++)
            for (int32_t i = 0; i < d; i++) s += aq->q[(int64_t)g * d + i] * k[i];
        scores[j] = s;
    }
    return attn_topk(scores, n, p->params.budget, idx, work);
}

const attn_policy_ops attn_oracle_ops = {
    .name = "oracle",
    .per_head_default = true,
    .init = oracle_init,
    .select = oracle_select,
};
