/* Compound Contextual Agreement of token-selection methods (the paper's
 * Table 1): while a model decodes a text with exact attention, every
 * candidate method picks its tokens at every step, layer and query head,
 * and its overlap with the exact top-K of the full logits is averaged. */
#ifndef FASA_CA_H
#define FASA_CA_H

#include <stdint.h>

#include "fasa.h"

typedef struct ca_candidate {
    char label[48];          /* row name in the table, e.g. "fasa-8" */
    fasa_attn_params params; /* budget is set per column */
} ca_candidate;

typedef struct ca_request {
    const ca_candidate *cands;
    int32_t n_cands;
    const int32_t *budgets;
    int32_t n_budgets;
    int32_t n_decode;        /* decode steps measured at the end of the text */
    int32_t n_threads;
    void (*progress)(void *user, int32_t done, int32_t total);
    void *user;
} ca_request;

/* Runs the text (n tokens: dense prefill of n - n_decode, then n_decode
 * measured steps) and writes the mean compound CA in [0, 1] of candidate c at
 * budget b to result[c * n_budgets + b]. */
fasa_status ca_measure(fasa_model *m, const int32_t *tokens, int32_t n, const ca_request *req, double *result);

#endif
