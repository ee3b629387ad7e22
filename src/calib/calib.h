/* Calibration results: per (layer, query head) the mean Contextual Agreement
 * of every frequency chunk, and the ranking derived from it. */
#ifndef FASA_CALIB_H
#define FASA_CALIB_H

#include <stdint.h>

#include "fasa.h"

struct fasa_calib {
    /* The model it was made for. */
    char arch[32];
    int32_t n_layers, n_heads, n_kv_heads, head_dim;
    fasa_rope_layout rope_layout;
    float rope_base;
    uint64_t tensor_hash;
    /* How it was made. */
    int32_t budget, n_tokens, n_decode;
    /* [n_layers][n_heads][head_dim / 2] */
    double *ca;
    int32_t *rank;
    /* Optional greedy group order: per (layer, KV head), the first n_greedy
     * FCs in the order a greedy search added them, each the one that most
     * raised the attention-mass recall of the group's compound selection
     * (the runtime's: scores summed over the group's query heads), and that
     * recall after each. [n_layers][n_kv_heads][n_greedy] */
    int32_t n_greedy;
    int32_t greedy_cap; /* entries allocated per group (n_greedy <= greedy_cap) */
    int32_t *greedy;
    double *greedy_mass;
};

/* Allocates the greedy arrays of c for n FCs per KV head. */
fasa_status calib_alloc_greedy(fasa_calib *c, int32_t n);

static inline int64_t calib_group_at(const fasa_calib *c, int32_t layer, int32_t kv_head) {
    return ((int64_t)layer * c->n_kv_heads + kv_head) * c->greedy_cap;
}

/* Reads a calibration file's text (len bytes; text[len] must be '\0', as
 * cJSON may look one byte past a string cut short) for a model of shape
 * `in`. Every error message starts with "calibration '<name>': ".
 * fasa_calib_load is this on the file's contents; the fuzzer calls it
 * directly. */
fasa_status calib_parse(const char *text, size_t len, const char *name, const fasa_model_info *in,
                        fasa_calib **out);

/* Allocates an empty calibration shaped for a model. */
fasa_calib *calib_alloc(const fasa_model_info *in);
/* Fills rank from ca (descending CA; ties by lower FC index). */
void calib_rank(fasa_calib *c);
/* Checks that c fits a model with this shape; names the first mismatch. */
fasa_status calib_check_shape(const fasa_calib *c, int32_t n_layers, int32_t n_heads, int32_t head_dim);

/* Marks in chosen[F] the n_tip chunks of a KV group: the first of the
 * greedy order when the calibration has one, then (or else) those with the
 * best CA averaged over the group's query heads (ties to the lower index). */
void calib_group_top_fcs(const fasa_calib *c, int32_t layer, int32_t kv_head, int32_t n_tip, unsigned char *chosen);

static inline int64_t calib_at(const fasa_calib *c, int32_t layer, int32_t head) {
    return ((int64_t)layer * c->n_heads + head) * (c->head_dim / 2);
}


#endif
