/* full: every visible token, the exact baseline. */
#include "attn/policy.h"

static fasa_status full_init(attn_policy *p) {
    p->scratch_floats = 0;
    return FASA_OK;
}

static int32_t full_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) { return -1; }

const attn_policy_ops attn_full_ops = {
    .name = "full",
    .per_head_default = false,
    .init = full_init,
    .select = full_select,
};
