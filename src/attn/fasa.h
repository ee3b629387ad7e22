/* Pieces of the FASA policy shared with the caller-buffer API (fasa_attention_step). */
#ifndef FASA_ATTN_FASA_H
#define FASA_ATTN_FASA_H

#include <stdint.h>

/* TIP scores: scores[j] = sum_c w[c] * labels[j * n_label + c] for j < n. */
void fasa_tip_scores(const float *w, const float *labels, int32_t n_label, int32_t n, float *scores);

#endif
