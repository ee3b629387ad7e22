/* The context: positions, faults and the public entry points, over the
 * backend chosen when it is created (backend.h). */
#include "context.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "sampler.h"

fasa_context_params fasa_context_default_params(void) {
    return (fasa_context_params){.n_ctx = 0, .n_threads = 0, .n_batch = 0, .kv_type = FASA_KV_F32};
}

/* Bytes of host memory a CPU context of n_ctx tokens holds that grow with
 * n_ctx: the KV cache and the per-thread attention buffers. */
static double cpu_context_bytes(const fasa_model_info *in, int32_t n_ctx, fasa_kv_type type, int32_t n_threads) {
    const double elem = type == FASA_KV_F32 ? 4.0 : 2.0;
    const double kv = 2.0 * in->n_layers * in->n_kv_heads * (double)n_ctx * in->head_dim * elem;
    const double scratch = 4.0 * n_ctx * ((double)n_threads * (in->n_heads / in->n_kv_heads) + in->n_heads);
    return kv + scratch;
}

/* Linux overcommits memory, so a context larger than the machine would fail
 * late (or get the process killed) instead of here: refuse it up front,
 * saying what to lower. */
static fasa_status check_host_memory(const fasa_model_info *in, int32_t n_ctx, fasa_kv_type type, int32_t n_threads) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return FASA_OK;
    const double have = (double)pages * (double)page, need = cpu_context_bytes(in, n_ctx, type, n_threads);
    if (need <= have) return FASA_OK;
    return fasa_error(FASA_E_NOMEM,
                      "a context of %d tokens needs %.1f GB for its KV cache and buffers, more than this "
                      "machine's %.1f GB of memory: lower the context size (-c, n_ctx)%s",
                      n_ctx, need / 1e9, have / 1e9, type == FASA_KV_F32 ? " or use an f16 cache (--kv-type f16)" : "");
}

#ifndef FASA_HAVE_CUDA
const backend_ops *backend_cuda_ops(void) { return NULL; }
fasa_status backend_cuda_last_selection(const fasa_context *c, int32_t n_fac, int32_t *sel) {
    (void)c, (void)n_fac, (void)sel;
    return fasa_error(FASA_E_UNSUPPORTED, "this build has no CUDA backend");
}
#endif

static const backend_ops *backend_for(fasa_device d) {
    switch (d) {
    case FASA_DEVICE_CPU: return &backend_cpu_ops;
    case FASA_DEVICE_CUDA:
    case FASA_DEVICE_CUDA_HOST_KV: return backend_cuda_ops();
    }
    return NULL;
}

fasa_status fasa_context_init(fasa_model *m, const fasa_context_params *p, fasa_context **out) {
    *out = NULL;
    fasa_context_params def = fasa_context_default_params();
    if (!p) p = &def;
    const fasa_model_info *in = &m->info;
    if (p->n_ctx < 0 || p->n_threads < 0 || p->n_batch < 0)
        return fasa_error(FASA_E_ARG, "context parameters must not be negative");
    if (p->kv_type != FASA_KV_F32 && p->kv_type != FASA_KV_F16)
        return fasa_error(FASA_E_ARG, "unknown KV cache element type %d", (int)p->kv_type);
    if (p->device != FASA_DEVICE_CPU && p->device != FASA_DEVICE_CUDA && p->device != FASA_DEVICE_CUDA_HOST_KV)
        return fasa_error(FASA_E_ARG, "unknown device %d", (int)p->device);
    const backend_ops *ops = backend_for(p->device);
    if (!ops)
        return fasa_error(FASA_E_UNSUPPORTED,
                          "this build has no CUDA backend: rebuild on a machine with nvcc (CMake FASA_CUDA=ON) "
                          "to run on a GPU");
    /* Positions past the training context are allowed on request (the user
     * may know the model extrapolates), but never silently chosen. */
    const int32_t n_ctx = p->n_ctx ? p->n_ctx : in->n_ctx_train;
    const int32_t n_threads = p->n_threads ? p->n_threads : omp_get_num_procs();
    fasa_status st = ops == &backend_cpu_ops ? check_host_memory(in, n_ctx, p->kv_type, n_threads) : FASA_OK;
    if (st) return st;
    fasa_context *c = fasa_calloc(1, sizeof *c, "context");
    if (!c) return FASA_E_NOMEM;
    *c = (fasa_context){.model = m, .ops = ops, .device = p->device, .n_ctx = n_ctx, .n_threads = n_threads};
    if ((st = ops->init(c, p))) {
        free(c);
        return st;
    }
    *out = c;
    return FASA_OK;
}

void fasa_context_free(fasa_context *c) {
    if (!c) return;
    c->ops->free(c);
    free(c->logits);
    free(c);
}

void fasa_context_reset(fasa_context *c) { fasa_context_truncate(c, 0); }
int32_t fasa_context_n_past(const fasa_context *c) { return c->n_past; }
int32_t fasa_context_n_ctx(const fasa_context *c) { return c->n_ctx; }
fasa_device fasa_context_device(const fasa_context *c) { return c->device; }
uint64_t fasa_context_device_bytes(const fasa_context *c) { return c->ops->device_bytes(c); }

void context_set_fault(fasa_context *c, fasa_status st) {
    if (!st || c->fault) return;
    c->fault = st;
    snprintf(c->fault_msg, sizeof c->fault_msg, "%s", fasa_last_error());
}

fasa_status context_check_fault(const fasa_context *c) {
    if (!c->fault) return FASA_OK;
    return fasa_error(c->fault, "a forward pass on %s failed, so this context can no longer be used: %s",
                      c->ops->name, c->fault_msg);
}

fasa_status fasa_context_truncate(fasa_context *c, int32_t n) {
    if (n < 0 || n > c->n_past)
        return fasa_error(FASA_E_ARG, "cannot truncate a context of %d tokens to %d", c->n_past, n);
    fasa_status st = context_check_fault(c);
    if (st) return st;
    if ((st = c->ops->truncate(c, n))) {
        context_set_fault(c, st);
        return st;
    }
    c->n_past = n;
    return FASA_OK;
}

fasa_status context_fill_random(fasa_context *c, int32_t n, uint64_t seed) {
    if (n < 0 || n > c->n_ctx) return fasa_error(FASA_E_ARG, "cannot fill %d tokens into a context of %d", n, c->n_ctx);
    fasa_status st = context_check_fault(c);
    if (!st && (st = c->ops->fill_random(c, n, seed))) context_set_fault(c, st);
    if (!st) c->n_past = n;
    return st;
}

attn_shape context_attn_shape(const fasa_context *c) {
    const fasa_model_info *in = &c->model->info;
    return (attn_shape){in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim, c->n_ctx, in->rope_layout};
}

fasa_status context_install_policy(fasa_context *c, attn_policy *p) {
    fasa_status st = context_check_fault(c);
    if (st) {
        attn_policy_free(p);
        return st;
    }
    return c->ops->set_policy(c, p);
}

fasa_status fasa_context_set_attention(fasa_context *c, const fasa_attn_params *params) {
    if (!params || !params->method || !strcmp(params->method, "full")) return context_install_policy(c, NULL);
    const attn_shape shape = context_attn_shape(c);
    attn_policy *p;
    fasa_status st = attn_policy_create(params, &shape, c->n_past, &p);
    return st ? st : context_install_policy(c, p);
}

static fasa_status check_tokens(const fasa_context *c, const int32_t *tokens, int32_t n) {
    if (!c || (!tokens && n > 0) || n < 0) return fasa_error(FASA_E_ARG, "fasa_eval: invalid arguments");
    const int32_t n_vocab = c->model->info.n_vocab;
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return fasa_error(FASA_E_ARG, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                              n_vocab);
    fasa_status st = context_check_fault(c);
    if (st) return st;
    if (n > c->n_ctx - c->n_past)
        return fasa_error(FASA_E_CONTEXT, "%d tokens do not fit: %d of the context's %d are already used", n,
                          c->n_past, c->n_ctx);
    return FASA_OK;
}

fasa_status fasa_eval(fasa_context *c, const int32_t *tokens, int32_t n, float *logits, bool all_logits) {
    fasa_status st = check_tokens(c, tokens, n);
    if (st || n == 0) return st;
    st = n == 1 ? c->ops->decode(c, tokens[0], logits) : c->ops->prefill(c, tokens, n, logits, all_logits);
    if (st) {
        context_set_fault(c, st);
        return st;
    }
    c->n_past += n;
    return FASA_OK;
}

fasa_status fasa_decode_sample(fasa_context *c, int32_t token, fasa_sampler *s, int32_t *next) {
    fasa_status st = check_tokens(c, &token, 1);
    if (st) return st;
    if (!s || !next) return fasa_error(FASA_E_ARG, "fasa_decode_sample: invalid arguments");
    if (s->n_vocab != c->model->info.n_vocab)
        return fasa_error(FASA_E_ARG, "the sampler was made for %d tokens, the model has %d", s->n_vocab,
                          c->model->info.n_vocab);
    if (c->ops->decode_sample) {
        st = c->ops->decode_sample(c, token, s, next);
    } else {
        if (!c->logits && !(c->logits = fasa_malloc((size_t)c->model->info.n_vocab, sizeof *c->logits, "logits")))
            return FASA_E_NOMEM;
        if (!(st = c->ops->decode(c, token, c->logits))) *next = fasa_sampler_sample(s, c->logits);
    }
    if (st) {
        context_set_fault(c, st);
        return st;
    }
    c->n_past += 1;
    return FASA_OK;
}
