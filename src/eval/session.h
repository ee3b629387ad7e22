/* One evaluation context and the prefix it holds.
 *
 * Dense prefill of a long prefix is the expensive part of every task (about
 * a minute for 7K tokens on two cores), while prefill is dense for every
 * policy anyway: so a prefix is prefilled once and each configuration starts
 * from it. eval_session_begin cuts the cache back to the prefix and installs
 * the configuration's policy, which replays the cached tokens to it.
 *
 * Two details keep every configuration's starting state identical:
 *  - Decode steps overwrite the context's short history of recent queries
 *    that a late-installed policy is shown (SnapKV's observation window
 *    needs them), and cutting the cache back does not restore it. So after
 *    any decode step the last `tail` prefix tokens are evaluated again, as
 *    one chunk, on a cache cut back before them; the first prefill ends
 *    with the same chunk, so every start sees bit-identical keys, values
 *    and queries.
 *  - A policy that refuses to be installed on a filled cache (h2o, which
 *    needs to watch the prompt's attention) gets its own prefill with the
 *    policy installed first. */
#ifndef FASA_EVAL_SESSION_H
#define FASA_EVAL_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"

typedef struct eval_session {
    fasa_model *model;
    fasa_context *ctx;
    int32_t n_vocab;
    float *logits;         /* [n_vocab] after the latest step */
    float *prefix_logits;  /* [n_vocab] predicting the token after the prefix */
    const int32_t *prefix; /* borrowed from the caller until the next set_prefix */
    int32_t n_prefix;
    int32_t tail;          /* prefix tokens re-evaluated by every begin */
    bool cached;           /* the cache holds the whole prefix */
    bool clean;            /* ... and nothing was decoded since it was (re)evaluated */
    int32_t n_prefills;    /* full prefills run (for reports) */
    double prefill_seconds;
} eval_session;

fasa_status eval_session_init(fasa_model *m, int32_t n_ctx, int32_t n_threads, fasa_kv_type kv_type, bool f32_act,
                              eval_session *s);
void eval_session_free(eval_session *s);

/* Installs each config's policy on the empty cache and removes it again, so
 * that bad parameters fail before any expensive work. */
fasa_status eval_session_check(eval_session *s, const fasa_attn_params *p);

/* The prefix every following begin starts from (at least 2 tokens). It is
 * prefilled lazily, by the first begin. */
fasa_status eval_session_set_prefix(eval_session *s, const int32_t *tokens, int32_t n);

/* Brings the cache back to exactly the prefix with policy p installed (NULL
 * or method full: dense). Afterwards prefix_logits predicts the next token. */
fasa_status eval_session_begin(eval_session *s, const fasa_attn_params *p);

/* One decode step through the installed policy; s->logits receives the
 * next-token logits. */
fasa_status eval_session_step(eval_session *s, int32_t token);

#endif
