/* Exact softmax attention of one GQA group of query heads over a set of
 * cached tokens of their shared KV head. Every policy ends in this kernel:
 * `full` passes all positions, sparse policies pass the tokens they chose. */
#ifndef FASA_ATTN_DENSE_H
#define FASA_ATTN_DENSE_H

#include <stdint.h>

#include "kv.h"

/* out[g][d] = softmax_j(scale * q[g] . k_j) v_j over the tokens j in idx[0..n)
 * (or 0..n-1 when idx is NULL), for g < group query heads of KV head kv_head.
 * Each K and V row is read once for the whole group. scratch holds
 * group * n + 2 * head_dim floats. */
void attn_dense_group(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q,
                      int32_t group, const int32_t *idx, int32_t n, float scale, float *out,
                      float *scratch);

/* Scratch floats attn_dense_group needs for n tokens. */
static inline int64_t attn_dense_scratch(int32_t group, int32_t n, int32_t head_dim) {
    return (int64_t)group * n + 2 * (int64_t)head_dim;
}

#endif
