/* A context: one model, one sequence's position, and the backend that runs
 * its forward pass (backend.h) with everything device-specific inside it. */
#ifndef FASA_CONTEXT_H
#define FASA_CONTEXT_H

#include "attn/policy.h"
#include "backend.h"
#include "model.h"

struct fasa_context {
    fasa_model *model;
    const backend_ops *ops;
    void *be;          /* the backend's state */
    fasa_device device;
    int32_t n_ctx;     /* tokens the cache holds */
    int32_t n_past;    /* tokens cached */
    int32_t n_threads; /* CPU threads the context may use */
    float *logits;     /* [n_vocab], for decode_sample on a backend without its own */
    /* The first failure inside a forward pass that may have left the
     * backend's caches inconsistent; the context refuses further work. */
    fasa_status fault;
    char fault_msg[256];
};

/* Records st (when not FASA_OK) as the context's fault with its message. */
void context_set_fault(fasa_context *c, fasa_status st);
/* FASA_OK, or the recorded fault as a fresh error for the caller. */
fasa_status context_check_fault(const fasa_context *c);

/* Installs p (taking ownership; NULL = dense) through the backend, which
 * shows it the cached tokens. On failure the context keeps its policy and
 * p is freed. */
fasa_status context_install_policy(fasa_context *c, attn_policy *p);

/* For benchmarks: n cached tokens of random keys and values (backend.h). */
fasa_status context_fill_random(fasa_context *c, int32_t n, uint64_t seed);

/* The shape policies are created for. */
attn_shape context_attn_shape(const fasa_context *c);

#endif
