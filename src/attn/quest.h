/* Quest's page bound, exposed so that tests can check it really bounds every
 * logit of its page. */
#ifndef FASA_ATTN_QUEST_H
#define FASA_ATTN_QUEST_H

#include <stdint.h>

#include "attn/policy.h"

/* sum_c max(q_c * kmin_c, q_c * kmax_c): at least q . k for every key k with
 * kmin_c <= k_c <= kmax_c in each channel c. */
float quest_page_bound(const float *q, const float *kmin, const float *kmax, int32_t d);

/* The per-channel minimum (head_dim floats) followed by the maximum of the
 * keys of page `page` (positions page * p->params.page onward) of one KV
 * head, as the quest policy p maintains them. */
const float *quest_page_minmax(const attn_policy *p, int32_t layer, int32_t kv_head, int32_t page);

#endif
