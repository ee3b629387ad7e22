/* KV cache.
 *
 * K and V are stored per KV head, never replicated per query head (GQA), as
 * [layer][kv_head][position][head_dim]: the keys of one head are contiguous,
 * so a decode step streams exactly the rows it attends to, and a sparse policy
 * can gather single rows. Elements are f32 or f16 (fasa_kv_type). */
#ifndef FASA_KV_H
#define FASA_KV_H

#include <stddef.h>
#include <stdint.h>

#include "fasa.h"

/* The largest head dimension anything here handles: the model loader
 * refuses larger heads, so code may size per-head stack arrays by it. */
#define FASA_MAX_HEAD_DIM 1024

typedef struct fasa_kv {
    int32_t n_layers;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t n_ctx;      /* capacity in tokens */
    int32_t n_tokens;   /* tokens currently cached */
    fasa_kv_type type;
    size_t elem_size;
    void *k;
    void *v;
} fasa_kv;

fasa_status kv_init(fasa_kv *kv, int32_t n_layers, int32_t n_kv_heads, int32_t head_dim,
                    int32_t n_ctx, fasa_kv_type type);
void kv_free(fasa_kv *kv);
size_t kv_bytes(const fasa_kv *kv);

/* Row of one head at one position (elem_size * head_dim bytes). */
static inline void *kv_k_row(const fasa_kv *kv, int32_t layer, int32_t head, int32_t pos) {
    size_t i = (((size_t)layer * kv->n_kv_heads + head) * kv->n_ctx + pos) * kv->head_dim;
    return (char *)kv->k + i * kv->elem_size;
}
static inline void *kv_v_row(const fasa_kv *kv, int32_t layer, int32_t head, int32_t pos) {
    size_t i = (((size_t)layer * kv->n_kv_heads + head) * kv->n_ctx + pos) * kv->head_dim;
    return (char *)kv->v + i * kv->elem_size;
}

/* Writes the keys and values of all KV heads of one token (each
 * n_kv_heads * head_dim floats) at position pos of a layer. */
void kv_store(fasa_kv *kv, int32_t layer, int32_t pos, const float *k, const float *v);

/* Reads a row of either cache into f32. */
void kv_load_row(const fasa_kv *kv, const void *row, float *dst);

/* A row as f32: an f32 cache's row in place, an f16 row widened into buf
 * (head_dim floats). The one place cache rows are widened. */
static inline const float *kv_row_f32(const fasa_kv *kv, const void *row, float *buf) {
    if (kv->type == FASA_KV_F32) return (const float *)row;
    kv_load_row(kv, row, buf);
    return buf;
}

#endif
