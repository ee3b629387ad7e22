/* Backends: where a context's whole forward pass runs.
 *
 * A backend is chosen once, when a context is created (fasa_context_params
 * .device), and owns everything the pass needs on its device: its view or
 * copy of the weights, its KV cache, the label store of a FASA policy, its
 * scratch. The context above it knows positions and faults, nothing of
 * devices; a policy above that only says what it selects (attn/policy.h).
 *
 *   cpu     the whole pass on the CPU (backend_cpu.c, forward.c)
 *   cuda    the whole pass on an NVIDIA GPU, K/V and labels in device
 *           memory (FASA-C; src/cuda/backend_cuda.cu)
 *   cuda-m  the same with K and V in pinned host memory, read over PCIe
 *           row by row (FASA-M) */
#ifndef FASA_BACKEND_H
#define FASA_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "attn/policy.h"
#include "fasa.h"

typedef struct backend_ops {
    const char *name;
    /* Sets c->be for c->model and the context parameters; fails, naming
     * the size needed, when the model or cache does not fit the device. */
    fasa_status (*init)(fasa_context *c, const fasa_context_params *p);
    void (*free)(fasa_context *c);
    /* Dense pass over n >= 2 tokens at positions c->n_past ..; logits as in
     * fasa_eval (NULL, the last token's, or all n). */
    fasa_status (*prefill)(fasa_context *c, const int32_t *tokens, int32_t n, float *logits, bool all_logits);
    /* One decode step at position c->n_past through the installed policy;
     * logits may be NULL. */
    fasa_status (*decode)(fasa_context *c, int32_t token, float *logits);
    /* Optional: a decode step whose next token is sampled where the logits
     * are (so they need not travel), by the sampler's rules and generator. */
    fasa_status (*decode_sample)(fasa_context *c, int32_t token, fasa_sampler *s, int32_t *next);
    /* Keeps the first n cached tokens (n <= c->n_past). */
    fasa_status (*truncate)(fasa_context *c, int32_t n);
    /* Installs p (ownership passes; NULL = dense), showing it the cached
     * tokens. Fails, leaving the old policy, when the backend cannot
     * provide what p needs; p is then freed. */
    fasa_status (*set_policy)(fasa_context *c, attn_policy *p);
    /* Benchmarks of long contexts: the cache holds n tokens of reproducible
     * random keys and values (the work of a step does not depend on them). */
    fasa_status (*fill_random)(fasa_context *c, int32_t n, uint64_t seed);
    /* Bytes of device memory the backend holds (0 on the CPU). */
    uint64_t (*device_bytes)(const fasa_context *c);
} backend_ops;

extern const backend_ops backend_cpu_ops;
/* NULL in a build without the CUDA backend. */
const backend_ops *backend_cuda_ops(void);
/* For tests: the token set the CUDA backend's last FASA step chose (that of
 * the last sparse layer of the last decode step), [n_kv_heads][n_fac] in no
 * particular order. Fails on a context of another backend or without a
 * sparse policy. */
fasa_status backend_cuda_last_selection(const fasa_context *c, int32_t n_fac, int32_t *sel);

#endif
