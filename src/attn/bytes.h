/* KV-cache bytes one decode step reads under an attention policy. */
#ifndef FASA_ATTN_BYTES_H
#define FASA_ATTN_BYTES_H

#include <stdint.h>

#include "fasa.h"

/* Bytes one decode step reads at `ctx` cached tokens under policy p (full
 * when p is NULL or dense), all layers: K and V rows, FASA's labels, Quest's
 * page bounds and SparQ's key columns (formulas in docs/eval.md). elem =
 * bytes per K/V element. */
double attn_step_bytes(const fasa_model_info *info, const fasa_attn_params *p, int32_t ctx, int32_t elem);

#endif
