/* sparq: the token selection of SparQ Attention (Ribar et al., 2024).
 *
 * For each query head, take the r coordinates where |q_i| is largest and
 * score every cached token by the partial dot product over those coordinates
 * only, s_j = sum_{i in top-r} q_i k_j,i; attend to the budget best tokens.
 * Per KV group, each head's approximate scores are summed.
 *
 * Full SparQ also blends the result with the mean of V, weighted by the
 * softmax mass its approximate scores assign outside the chosen tokens. Here
 * exact attention over the chosen tokens follows every selection, so only
 * the selection is modelled. The keys are stored row-major, so this reads
 * whole rows: it measures SparQ's choice of tokens, not its bandwidth.
 *
 * A partial dot product over a coordinate set equals the full dot product
 * with a query whose other coordinates are zero; summed over the group this
 * is one dot product per token with the sum of the masked queries. */
#include "attn/policy.h"

#include <math.h>
#include <string.h>

#include "attn/causal.h"
#include "error.h"

static fasa_status sparq_init(attn_policy *p) {
    const int32_t d = p->shape.head_dim;
    if (p->params.sparq_r < 0 || p->params.sparq_r > d)
        return fasa_error(FASA_E_ARG, "sparq: sparq_r (query coordinates scored) must be in [1, head_dim = %d], got %d",
                          d, p->params.sparq_r);
    if (p->params.sparq_r == 0) p->params.sparq_r = d / 4 > 0 ? d / 4 : 1;
    /* scores, top-k work (over tokens, then over coordinates), masked query
     * sum, |q|, key row, chosen coordinates */
    p->scratch_floats = 2 * (int64_t)p->shape.n_ctx + 5 * (int64_t)d;
    return FASA_OK;
}

static int32_t sparq_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    const int32_t n = aq->n_keys, d = p->shape.head_dim, r = p->params.sparq_r;
    if (p->params.budget >= n) return -1;
    float *score = scratch, *work = score + p->shape.n_ctx, *qsum = work + p->shape.n_ctx + d;
    float *mag = qsum + d, *row = mag + d;
    int32_t *coord = (int32_t *)(row + d);
    memset(qsum, 0, (size_t)d * sizeof *qsum);
    for (int32_t g = 0; g < aq->n_q; g++) {
        const float *q = aq->q + (int64_t)g * d;
        for (int32_t i = 0; i < d; i++) mag[i] = fabsf(q[i]);
        const int32_t m = attn_topk(mag, d, r, coord, work);
        for (int32_t i = 0; i < m; i++) qsum[coord[i]] += q[coord[i]];
    }
    for (int32_t j = 0; j < n; j++)
        score[j] = attn_dot(qsum, attn_key_f32(aq->kv, aq->layer, aq->kv_head, j, row), d);
    return attn_topk(score, n, p->params.budget, idx, work);
}

const attn_policy_ops attn_sparq_ops = {
    .name = "sparq",
    .per_head_default = true,
    .init = sparq_init,
    .select = sparq_select,
};
