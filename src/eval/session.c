#include "eval/session.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/policy.h"
#include "error.h"

enum { EVAL_BATCH = 256 };

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fasa_status eval_session_init(fasa_model *m, int32_t n_ctx, int32_t n_threads, fasa_kv_type kv_type, bool f32_act,
                              eval_session *s) {
    *s = (eval_session){.model = m};
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    if (n_ctx > info.n_ctx_train)
        return fasa_error(FASA_E_ARG, "a context of %d tokens exceeds the model's limit of %d", n_ctx, info.n_ctx_train);
    s->n_vocab = info.n_vocab;
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    cp.n_batch = EVAL_BATCH;
    cp.kv_type = kv_type;
    cp.f32_activations = f32_act;
    fasa_status st = fasa_context_init(m, &cp, &s->ctx);
    if (st) return st;
    s->logits = fasa_malloc((size_t)s->n_vocab, sizeof(float), "logits");
    s->prefix_logits = fasa_malloc((size_t)s->n_vocab, sizeof(float), "logits");
    if (!s->logits || !s->prefix_logits) {
        eval_session_free(s);
        return FASA_E_NOMEM;
    }
    return FASA_OK;
}

void eval_session_free(eval_session *s) {
    fasa_context_free(s->ctx);
    free(s->logits);
    free(s->prefix_logits);
    *s = (eval_session){0};
}

fasa_status eval_session_check(eval_session *s, const fasa_attn_params *p) {
    fasa_context_reset(s->ctx);
    s->cached = false;
    fasa_status st = fasa_context_set_attention(s->ctx, p);
    fasa_context_set_attention(s->ctx, NULL);
    return st;
}

fasa_status eval_session_set_prefix(eval_session *s, const int32_t *tokens, int32_t n) {
    if (n < 2) return fasa_error(FASA_E_ARG, "an evaluation prefix needs at least 2 tokens, got %d", n);
    if (n >= fasa_context_n_ctx(s->ctx))
        return fasa_error(FASA_E_CONTEXT, "a prefix of %d tokens leaves no room in a context of %d", n,
                          fasa_context_n_ctx(s->ctx));
    s->prefix = tokens;
    s->n_prefix = n;
    s->tail = n <= ATTN_QUERY_HISTORY + 1 ? n : ATTN_QUERY_HISTORY;
    s->cached = s->clean = false;
    return FASA_OK;
}

/* Evaluates tokens [from, to) of the prefix in chunks that are never a
 * single token: one token would be a decode step, not a prefill. */
static fasa_status eval_chunks(eval_session *s, int32_t from, int32_t to) {
    while (from < to) {
        int32_t n = to - from < EVAL_BATCH ? to - from : EVAL_BATCH;
        if (to - from - n == 1) n--;
        fasa_status st = fasa_eval(s->ctx, s->prefix + from, n, NULL, false);
        if (st) return st;
        from += n;
    }
    return FASA_OK;
}

static fasa_status eval_tail(eval_session *s) {
    return fasa_eval(s->ctx, s->prefix + s->n_prefix - s->tail, s->tail, s->prefix_logits, false);
}

/* A whole prefill with policy p (or dense) installed from the start. */
static fasa_status prefill(eval_session *s, const fasa_attn_params *p) {
    const double t0 = now_seconds();
    s->cached = false;
    fasa_context_reset(s->ctx);
    fasa_status st = fasa_context_set_attention(s->ctx, p);
    if (!st) st = eval_chunks(s, 0, s->n_prefix - s->tail);
    if (!st) st = eval_tail(s);
    if (st) return st;
    s->cached = s->clean = true;
    s->n_prefills++;
    s->prefill_seconds += now_seconds() - t0;
    return FASA_OK;
}

static bool is_dense(const fasa_attn_params *p) { return !p || !p->method || !strcmp(p->method, "full"); }

fasa_status eval_session_begin(eval_session *s, const fasa_attn_params *p) {
    if (!s->prefix) return fasa_error(FASA_E_ARG, "eval_session_begin: no prefix set");
    fasa_status st;
    if (!s->cached) {
        if ((st = prefill(s, NULL))) return st;
    } else if ((st = fasa_context_set_attention(s->ctx, NULL))) {
        return st;
    } else if (!s->clean) {
        if ((st = fasa_context_truncate(s->ctx, s->n_prefix - s->tail)) || (st = eval_tail(s))) return st;
        s->clean = true;
    }
    if (is_dense(p)) return FASA_OK;
    st = fasa_context_set_attention(s->ctx, p);
    /* A policy refusing the filled cache gets a prefill of its own; a
     * genuinely bad parameter fails again there, on the empty cache. */
    if (st == FASA_E_ARG) st = prefill(s, p);
    return st;
}

fasa_status eval_session_step(eval_session *s, int32_t token) {
    s->clean = false;
    return fasa_eval(s->ctx, &token, 1, s->logits, false);
}
