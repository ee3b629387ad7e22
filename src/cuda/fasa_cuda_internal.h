/* Hooks for the kernel workbench (bench/cuda) and the tests: not part of the
 * engine-facing API in fasa_cuda.h. */
#ifndef FASA_CUDA_INTERNAL_H
#define FASA_CUDA_INTERNAL_H

#include "fasa_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Launch shapes and pipeline choices; a size of 0 means automatic. The
 * defaults are what measured fastest on an H100 (docs/perf-notes.md). */
typedef struct fasa_cuda_tuning {
    int32_t attn_warps;          /* warps per dense-attention CTA (1..8), default 8 */
    int32_t attn_steps_per_warp; /* 16-token steps per warp per CTA */
    int32_t tip_chunk;           /* tokens per TIP CTA */
    int32_t select_chunk;        /* tokens per selection CTA (a multiple of 1024) */
    int32_t fused;               /* 1: attention fused into the selection kernel (2 launches
                                    instead of 3; slower as measured), default 0 */
    int32_t pdl;                 /* 1: programmatic dependent launch between kernels, default 1 */
    int32_t cluster;             /* the one-kernel step on thread-block clusters (sm_90, cluster.cuh):
                                    0 = automatic (default): with the cluster size the context chose,
                                    while a CTA's share of the labels is small enough that it wins
                                    (measured on an H200), else the launches above; -1 = never;
                                    1..16 = always, with that size */
} fasa_cuda_tuning;

void fasa_cuda_ctx_get_tuning(const fasa_cuda_ctx *ctx, fasa_cuda_tuning *t);

void fasa_cuda_ctx_set_tuning(fasa_cuda_ctx *ctx, const fasa_cuda_tuning *t);

/* CTAs per cluster of the one-kernel FASA step as tuned (0: that step is not
 * available on this device or for this shape, or tuned off). With
 * tuning.cluster = 0 a step still takes the launches when its labels are
 * too many for the one kernel to win. */
int32_t fasa_cuda_ctx_cluster_size(const fasa_cuda_ctx *ctx);

/* FASA units: token sets per step (n_heads with per-head selection, else n_kv_heads). */
int32_t fasa_cuda_ctx_n_units(const fasa_cuda_ctx *ctx);

/* Replaces the layer's contents with n tokens of reproducible uniform
 * [-1, 1) K and V (generated on the device) and their labels. */
fasa_status fasa_cuda_layer_fill_random(fasa_cuda_layer *l, int32_t n, uint64_t seed);

/* Copies the cached K and V to host arrays [n_kv][n_past][head_dim] of fp16 bits. */
fasa_status fasa_cuda_layer_read_kv(const fasa_cuda_layer *l, uint16_t *k, uint16_t *v);

/* Token sets chosen by the last FASA step: [n_units][n_fac] (order arbitrary). */
fasa_status fasa_cuda_ctx_read_selection(fasa_cuda_ctx *ctx, int32_t n_fac, int32_t *sel);

/* A FASA step restricted to some stages, to time them apart: bit 0 TIP,
 * bit 1 selection (with the attention when tuning.fused), bit 2 the gather
 * attention; 7 is fasa_cuda_fasa_step. Selection consumes the histogram its
 * TIP builds, so bit 1 is only meaningful together with bit 0. Stages are
 * those of the multi-launch pipeline, whatever tuning.cluster says. */
#define FASA_CUDA_STAGE_TIP 1u
#define FASA_CUDA_STAGE_SELECT 2u
#define FASA_CUDA_STAGE_ATTN 4u
fasa_status fasa_cuda_fasa_stages(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out,
                                  unsigned stages);

#ifdef __cplusplus
}
#endif

#endif
