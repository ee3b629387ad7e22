/* The grid of an evaluation: which decode-attention configurations are
 * measured. Methods x budgets, and for fasa also x N_tip; full (dense
 * attention, the reference every ratio is taken against) appears once. */
#ifndef FASA_EVAL_GRID_H
#define FASA_EVAL_GRID_H

#include <stdint.h>

#include "fasa.h"

typedef struct eval_config {
    char label[48];     /* row name: "full", "stream", "fasa-8" (fasa carries its N_tip and options) */
    fasa_attn_params p; /* method, budget (0 for full), n_tip (fasa only), shared options */
} eval_config;

typedef struct eval_grid {
    eval_config *cfgs;
    int32_t n;
} eval_grid;

typedef struct eval_grid_spec {
    const char *methods;       /* comma list of method names */
    const int32_t *budgets;    /* each >= 1 */
    int32_t n_budgets;
    const int32_t *n_tips;     /* fasa rows; none = the policy default (head_dim / 8) */
    int32_t n_tips_count;
    int32_t head_dim;          /* to resolve and check N_tip */
    bool with_full;            /* put full first even when the list lacks it */
    fasa_attn_params base;     /* shared options (calib, dense layers, ...) */
} eval_grid_spec;

/* Expands the spec. Fails with a message on an unknown method, a budget < 1,
 * an N_tip outside [1, head_dim / 2], or fasa without base.calib. */
fasa_status eval_grid_build(const eval_grid_spec *spec, eval_grid *out);
void eval_grid_free(eval_grid *g);

/* Non-default shared options as a short stable string ("" when none), so
 * that results measured with other options are not mistaken for these. */
void eval_config_options(const fasa_attn_params *p, char *buf, int32_t cap);

/* A comma list of positive integers ("64,128,256") into out; returns the
 * count or -1 with an error naming `what`. */
int32_t eval_parse_ints(const char *what, const char *s, int32_t lo, int32_t hi, int32_t *out, int32_t cap);

#endif
