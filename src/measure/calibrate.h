/* Measuring which frequency chunks predict attention (fasa_calibrate) and
 * how well token-selection methods agree with the exact top-k (ca.h): both
 * run the model on the CPU with probe policies that watch every step. */
#ifndef FASA_MEASURE_CALIBRATE_H
#define FASA_MEASURE_CALIBRATE_H

#include <stdint.h>

#include "fasa.h"
#include "kv.h"

/* Per-FC logits of one query against keys 0..n-1 of a KV head:
 * out[i * n + j] = q[FC i] . k_j[FC i]. Used by calibration and the CA table. */
void calib_fc_logits(const fasa_kv *kv, int32_t layer, int32_t kv_head, const float *q, fasa_rope_layout layout,
                     int32_t n, float *out, float *row);

#endif
