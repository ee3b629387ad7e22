/* Compound Contextual Agreement of token-selection methods (the paper's
 * Table 1): while a model decodes a text with exact attention, every
 * candidate method picks its tokens at every step, layer and query head,
 * and its overlap with the exact top-K of the full logits is averaged. The
 * share of the exact attention weight its tokens hold (mass recall) is
 * averaged alongside: it is what decides how far the output moves. */
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

/* What ca_measure reports for candidate c at budget b, at [c * n_budgets + b]
 * (times n_layers, plus the layer, for the per-layer arrays). Any array but
 * ca may be NULL. */
typedef struct ca_result {
    double *ca;         /* mean compound CA in [0, 1] */
    double *mass;       /* mean attention-mass recall: the share of the exact softmax weight of a
                           query head that the chosen tokens hold, in [0, 1] */
    double *ca_layer;   /* the same two, per layer */
    double *mass_layer;
} ca_result;

/* Runs the text (n tokens: dense prefill of n - n_decode, then n_decode
 * measured steps) and writes the means over steps, layers and query heads. */
fasa_status ca_measure(fasa_model *m, const int32_t *tokens, int32_t n, const ca_request *req, const ca_result *out);

#endif
