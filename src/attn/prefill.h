/* Exact causal attention of a block of prompt tokens over the cache: the
 * prefill's dense attention (every policy prefills densely).
 *
 * attn_dense_group serves one query at a time: each cached key and value
 * row is widened and read once per token, for the group's few heads. Here
 * ATTN_PREFILL_ROWS query rows (tokens x the group's heads) meet a block of
 * keys at once, as matrix products on the prefill microkernel
 * (quant_gemm_tile), with the softmax carried across key blocks online
 * (running maximum and sum per row, as flash attention does): a key row is
 * widened once per block of tokens and its products run at the FMA rate. */
#ifndef FASA_ATTN_PREFILL_H
#define FASA_ATTN_PREFILL_H

#include <stdint.h>

#include "kv.h"

/* Query rows per block: tokens x group heads, about this many. */
#define ATTN_PREFILL_ROWS 96
/* Keys per block. */
#define ATTN_PREFILL_KEYS 64

/* Tokens per block for a group of `group` query heads. */
static inline int32_t attn_prefill_tokens(int32_t group) {
    return group >= ATTN_PREFILL_ROWS ? 1 : ATTN_PREFILL_ROWS / group;
}

/* Scratch floats attn_prefill_block needs. */
int64_t attn_prefill_scratch(int32_t group, int32_t head_dim);

/* Tokens [0, n_tok) of the block are at positions pos .. pos + n_tok - 1 and
 * the cache holds their keys; token t sees positions 0 .. pos + t. Query
 * head g of the group for token t is q[t * stride + g * head_dim]; its
 * output goes to out at the same offset. n_tok <= attn_prefill_tokens(group). */
void attn_prefill_block(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, int64_t stride,
                        int32_t group, int32_t pos, int32_t n_tok, float scale, float *out, float *scratch);

#endif
