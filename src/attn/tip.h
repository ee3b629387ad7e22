/* Token Importance Prediction: the label block layout and the scoring shared by
 * the FASA policy and the caller-buffer API (fasa_attention_step). */
#ifndef FASA_ATTN_TIP_H
#define FASA_ATTN_TIP_H

#include <stdint.h>

/* The label cache stores tokens in blocks of FASA_LABEL_BLOCK, coordinate-major
 * inside a block (label c of token j at [j / B][c][j % B]), so that scoring
 * a block is n_label vector multiply-adds with no horizontal sums. */
#define FASA_LABEL_BLOCK 16

static inline int64_t fasa_label_index(int32_t j, int32_t c, int32_t n_label, int32_t block) {
    return (int64_t)(j / block) * block * n_label + (int64_t)c * block + j % block;
}

/* TIP scores: scores[j] = sum_c w[c] * label(j, c) for j < n, with labels laid
 * out in blocks of `block` tokens as above (block 1 is plain [token][coord]
 * rows). For block FASA_LABEL_BLOCK, scores must have room for n rounded up
 * to a whole block. */
void fasa_tip_scores(const float *w, const float *labels, int32_t n_label, int32_t n, int32_t block, float *scores);

#endif
