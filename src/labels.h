/* The label layout of a FASA-style policy: per (layer, KV head), the key
 * coordinates whose values form a token's label (the dominant frequency
 * chunks' rotation pairs), and per query head which of them it scores with.
 * Derived once, here, from a calibration; each backend stores the labels in
 * its own layout (the CPU policy in blocks of tokens, the GPU cache per
 * token) from these coordinates. */
#ifndef FASA_LABELS_H
#define FASA_LABELS_H

#include <stdbool.h>
#include <stdint.h>

#include "attn/policy.h"
#include "fasa.h"

typedef struct label_set {
    int32_t n_layers, n_heads, n_kv_heads, head_dim;
    int32_t lab_max;  /* coordinates per label, the most over KV heads */
    int32_t *n_lab;   /* [n_layers][n_kv_heads] */
    int32_t *coord;   /* [n_layers][n_kv_heads][lab_max], ascending */
    float *mask;      /* [n_layers][n_heads][lab_max]: 1 where the coordinate is one of the query head's FCs */
    bool shared;      /* every query head scores with its whole group's label (FCs chosen per KV head) */
} label_set;

/* FASA's labels: FASA_FC_KV_HEAD takes each KV group's top n_tip chunks of
 * the calibration (one label shared by the group), FASA_FC_UNION the union of
 * each query head's own top n_tip (a larger label; each head masks to its
 * own), FASA_FC_ALLOC each group's own number of chunks, n_tip on average
 * over the layers dense_layer (may be NULL) does not mark, from the
 * calibration's greedy recall curves. */
fasa_status label_set_from_calib(const fasa_calib *cal, const attn_shape *s, int32_t n_tip, int32_t fc_union,
                                 const bool *dense_layer, label_set **out);
void label_set_free(label_set *l);

static inline const int32_t *label_coords(const label_set *l, int32_t layer, int32_t kv_head) {
    return l->coord + ((int64_t)layer * l->n_kv_heads + kv_head) * l->lab_max;
}
static inline int32_t label_count(const label_set *l, int32_t layer, int32_t kv_head) {
    return l->n_lab[(int64_t)layer * l->n_kv_heads + kv_head];
}
static inline const float *label_mask(const label_set *l, int32_t layer, int32_t q_head) {
    return l->mask + ((int64_t)layer * l->n_heads + q_head) * l->lab_max;
}

#endif
