/* Decode attention of a context on an NVIDIA GPU (fasa_context_params.device).
 *
 * The forward pass stays on the CPU, and so does the CPU KV cache (the dense
 * prefill and the policies read it). Every layer's new keys and values are
 * also appended to a GPU cache, and a decode step's attention runs there:
 * the layer's queries go up, its attention output comes back. `full` and the
 * layers a policy keeps dense take the dense kernel; `fasa` takes the FASA-C
 * step (or FASA-M, K and V in pinned host memory) with the label coordinates
 * the CPU policy uses, one token set per KV group, so both backends choose
 * the same tokens up to ties and the labels' fp16 rounding.
 *
 * In a build without the CUDA backend context_gpu_create fails with
 * FASA_E_UNSUPPORTED; the other functions are never reached. */
#ifndef FASA_CONTEXT_GPU_H
#define FASA_CONTEXT_GPU_H

#include "attn/policy.h"
#include "fasa.h"
#include "kv.h"

typedef struct context_gpu context_gpu;

/* A GPU cache for kv's shape, holding a copy of kv's cached tokens. policy
 * is the CPU policy the context is about to install (NULL: full attention)
 * and calib its calibration (fasa only). Fails for a policy with no GPU
 * implementation, naming what is supported. */
fasa_status context_gpu_create(const fasa_kv *kv, const attn_shape *shape, fasa_device device, int32_t ordinal,
                               const attn_policy *policy, const fasa_calib *calib, context_gpu **out);
void context_gpu_free(context_gpu *g);

/* Appends n tokens of one layer: k and v are [n][n_kv_heads][head_dim], k after RoPE. */
fasa_status context_gpu_append(context_gpu *g, int32_t layer, const float *k, const float *v, int32_t n);
/* One decode step of a layer over every cached token (the new one appended):
 * q and out are host arrays [n_heads][head_dim]. policy is the context's
 * current one; the FASA step runs only for the policy the cache was made
 * for, anything else is attended densely. */
fasa_status context_gpu_decode(context_gpu *g, int32_t layer, const attn_policy *policy, const float *q,
                               float *out);
/* Keeps the first n cached tokens of every layer. */
fasa_status context_gpu_truncate(context_gpu *g, int32_t n);
/* Device memory the cache and its scratch hold. */
uint64_t context_gpu_device_bytes(const context_gpu *g);

#endif
