/* gen: long generation, the analog of the paper's long chain-of-thought
 * runs. From a prompt (a book passage of P tokens, or a chat request), full
 * attention greedily generates N tokens g[0..N). Then, for each method:
 *  - teacher-forced on g: at every position i >= 1 the method's decode step
 *    sees g[0..i) and predicts g[i]; we count argmax agreement with g[i] and
 *    average KL(full || method) of the next-token distributions;
 *  - free-running: the method generates its own N tokens greedily, and we
 *    report the fraction of repeated 4-grams (degeneration into loops).
 * End-of-generation tokens are never chosen, so every run is N tokens long. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/score.h"
#include "eval/session.h"
#include "eval/task.h"

/* Requests that invite long answers, for --chat. */
static const char *const chat_prompts[] = {
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain step by step how a bill becomes a law, with examples, in as much detail as you can.",
    "Describe in detail how to plan a vegetable garden for a whole year, season by season.",
    "Write a long letter from a traveller describing a journey across the mountains.",
    "Explain how computers store and process numbers, starting from bits and going up to programs.",
    "Tell the history of a small fishing village over a hundred years, generation by generation.",
};
enum { N_CHAT = sizeof chat_prompts / sizeof chat_prompts[0], NGRAM = 4 };

typedef struct gen_ref {
    int32_t *tok;  /* [N] full's greedy tokens */
    float *logp;   /* [N][n_vocab] full's next-token log-probabilities (row 0 unused) */
    bool *skip;    /* [n_vocab] end-of-generation tokens */
    double repetition;
} gen_ref;

static void gen_variant(const eval_env *e, char *buf, size_t cap) {
    snprintf(buf, cap, "N=%d;prompt=%s", e->decode, e->chat ? "chat" : "book");
}

static void gen_key(const eval_env *e, const eval_config *cfg, const char *model, int32_t ctx, int32_t s, char *key,
                    int32_t cap) {
    char v[64];
    gen_variant(e, v, sizeof v);
    const eval_cell cell = {"gen", cfg, model, ctx, s, e->seed, v};
    eval_cell_key(&cell, key, cap);
}

/* The prompt of sample s: tokens written to buf (cap entries), count returned. */
static fasa_status make_prompt(const eval_env *e, int32_t P, int32_t s, int32_t *buf, int32_t cap, int32_t *n) {
    if (!e->chat) {
        *n = P;
        return eval_corpus_passage(e->corpus, e->model, s, e->seed, P, fasa_model_add_bos(e->model), buf);
    }
    char *text = fasa_chat_prompt(e->model, NULL, chat_prompts[s % N_CHAT]);
    if (!text) return FASA_E_ARG;
    fasa_status st = fasa_tokenize(e->model, text, strlen(text), fasa_model_add_bos(e->model), true, buf, cap, n);
    free(text);
    return st;
}

/* Full's greedy generation, with its distributions. */
static fasa_status reference(eval_session *ss, int32_t N, gen_ref *r) {
    fasa_status st = eval_session_begin(ss, NULL);
    if (st) return st;
    r->tok[0] = eval_argmax(ss->prefix_logits, ss->n_vocab, r->skip);
    for (int32_t i = 1; !st && i < N; i++) {
        if ((st = eval_session_step(ss, r->tok[i - 1]))) break;
        eval_log_softmax(ss->logits, ss->n_vocab, r->logp + (int64_t)i * ss->n_vocab);
        r->tok[i] = eval_argmax(ss->logits, ss->n_vocab, r->skip);
    }
    r->repetition = eval_repetition(r->tok, N, NGRAM);
    return st;
}

typedef struct gen_score {
    double agreement, kl, repetition;
    int32_t first_diff; /* first position where the free run leaves full's text (N: never) */
} gen_score;

static fasa_status measure(eval_session *ss, const fasa_attn_params *p, const gen_ref *r, int32_t N, int32_t *own,
                           gen_score *out) {
    int32_t agree = 0;
    double kl = 0.0;
    fasa_status st = eval_session_begin(ss, p);
    for (int32_t i = 1; !st && i < N; i++) {
        if ((st = eval_session_step(ss, r->tok[i - 1]))) break;
        agree += eval_argmax(ss->logits, ss->n_vocab, r->skip) == r->tok[i];
        kl += eval_kl(r->logp + (int64_t)i * ss->n_vocab, ss->logits, ss->n_vocab);
    }
    if (!st) st = eval_session_begin(ss, p);
    if (!st) own[0] = eval_argmax(ss->prefix_logits, ss->n_vocab, r->skip);
    for (int32_t i = 1; !st && i < N; i++) {
        if ((st = eval_session_step(ss, own[i - 1]))) break;
        own[i] = eval_argmax(ss->logits, ss->n_vocab, r->skip);
    }
    if (st) return st;
    out->agreement = N > 1 ? (double)agree / (N - 1) : 1.0;
    out->kl = N > 1 ? kl / (N - 1) : 0.0;
    out->repetition = eval_repetition(own, N, NGRAM);
    out->first_diff = N;
    for (int32_t i = 0; i < N; i++)
        if (own[i] != r->tok[i]) {
            out->first_diff = i;
            break;
        }
    return FASA_OK;
}

static fasa_status write_cell(const eval_env *e, const eval_config *cfg, const char *model, int32_t ctx, int32_t s,
                              const gen_score *g, double secs, const char *key) {
    char v[64];
    gen_variant(e, v, sizeof v);
    const eval_cell cell = {"gen", cfg, model, ctx, s, e->seed, v};
    cJSON *o = eval_cell_json(&cell);
    if (!o || !cJSON_AddNumberToObject(o, "score", g->agreement) ||
        !cJSON_AddNumberToObject(o, "agreement", g->agreement) || !cJSON_AddNumberToObject(o, "kl", g->kl) ||
        !cJSON_AddNumberToObject(o, "repetition", g->repetition) ||
        !cJSON_AddNumberToObject(o, "first_diff", g->first_diff) || !cJSON_AddNumberToObject(o, "n_gen", e->decode) ||
        !cJSON_AddStringToObject(o, "prompt", e->chat ? "chat" : eval_corpus_doc_name(e->corpus, s)) ||
        !cJSON_AddNumberToObject(o, "seconds", secs) ||
        /* at the middle of the generation */
        !cJSON_AddNumberToObject(o, "kv_bytes_per_token", eval_step_bytes(e, &cfg->p, ctx + e->decode / 2))) {
        cJSON_Delete(o);
        return fasa_error(FASA_E_NOMEM, "out of memory formatting a result");
    }
    return eval_results_write(e->results, key, o);
}

static fasa_status run_sample(const eval_env *e, eval_session *ss, eval_tracker *tr, const char *model, int32_t ctx,
                              int32_t s, gen_ref *r, int32_t *own) {
    const int32_t N = e->decode;
    char key[512];
    fasa_status st = reference(ss, N, r);
    for (int32_t c = 0; !st && c < e->grid->n; c++) {
        const eval_config *cfg = &e->grid->cfgs[c];
        gen_key(e, cfg, model, ctx, s, key, sizeof key);
        if (eval_results_has(e->results, key)) continue;
        const double t0 = eval_seconds();
        gen_score g = {1.0, 0.0, r->repetition, N};
        if (cfg->p.budget && (st = measure(ss, &cfg->p, r, N, own, &g))) break;
        if ((st = write_cell(e, cfg, model, ctx, s, &g, eval_seconds() - t0, key))) break;
        eval_tracker_cell(tr, "gen ctx %d sample %d %-8s budget %4d: agreement %.3f, KL %.4f, repetition %.3f", ctx, s,
                          cfg->label, cfg->p.budget, g.agreement, g.kl, g.repetition);
    }
    return st;
}

fasa_status eval_run_gen(const eval_env *e) {
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    const int32_t N = e->decode, n_ctx_list = e->chat ? 1 : e->n_ctxs;
    const int32_t P_max = e->chat ? 512 : eval_max_int(e->ctxs, e->n_ctxs);
    if (N < 2) return fasa_error(FASA_E_ARG, "gen: --decode (tokens generated) must be at least 2");
    if ((int64_t)P_max + N > info.n_ctx_train)
        return fasa_error(FASA_E_ARG, "gen: a prompt of %d tokens + --decode %d exceeds the model's context of %d", P_max,
                          N, info.n_ctx_train);
    char model[96], key[512];
    eval_model_name(e->model, model, sizeof model);
    int32_t *prompt = fasa_malloc((size_t)P_max + 16, sizeof *prompt, "gen prompt");
    if (!prompt) return FASA_E_NOMEM;
    eval_tracker tr;
    eval_tracker_start(&tr, e, (int64_t)n_ctx_list * e->n_samples * e->grid->n);
    /* The prompt lengths are needed for the keys; chat prompts are short. */
    fasa_status st = FASA_OK;
    for (int32_t i = 0; !st && i < n_ctx_list; i++)
        for (int32_t s = 0; !st && s < e->n_samples; s++) {
            int32_t P = e->chat ? 0 : e->ctxs[i];
            if (e->chat) st = make_prompt(e, 0, s, prompt, P_max, &P);
            for (int32_t c = 0; !st && c < e->grid->n; c++) {
                gen_key(e, &e->grid->cfgs[c], model, P, s, key, sizeof key);
                eval_tracker_plan(&tr, eval_results_has(e->results, key));
            }
        }
    eval_session ss = {0};
    gen_ref r = {0};
    int32_t *own = NULL;
    if (st || !tr.p.todo) goto done;
    if ((st = eval_session_init(e->model, P_max + N, e->n_threads, e->kv_type, e->f32_activations, &ss))) goto done;
    r.tok = fasa_malloc((size_t)N, sizeof *r.tok, "generated tokens");
    r.logp = fasa_malloc((size_t)N * info.n_vocab, sizeof *r.logp, "reference distributions");
    r.skip = fasa_calloc((size_t)info.n_vocab, sizeof *r.skip, "end-of-generation flags");
    own = fasa_malloc((size_t)N, sizeof *own, "generated tokens");
    if (!r.tok || !r.logp || !r.skip || !own) {
        st = FASA_E_NOMEM;
        goto done;
    }
    for (int32_t v = 0; v < info.n_vocab; v++) r.skip[v] = fasa_token_is_eog(e->model, v);
    if ((st = eval_check_grid(&ss, e->grid))) goto done;
    for (int32_t i = 0; !st && i < n_ctx_list; i++)
        for (int32_t s = 0; !st && s < e->n_samples; s++) {
            int32_t P;
            if ((st = make_prompt(e, e->chat ? 0 : e->ctxs[i], s, prompt, P_max, &P))) break;
            int32_t pending = 0;
            for (int32_t c = 0; c < e->grid->n; c++) {
                gen_key(e, &e->grid->cfgs[c], model, P, s, key, sizeof key);
                pending += !eval_results_has(e->results, key);
            }
            if (!pending) continue;
            eval_tracker_note(&tr, "gen: sample %d, prompt of %d tokens, generating %d under full", s, P, N);
            if (!(st = eval_session_set_prefix(&ss, prompt, P))) st = run_sample(e, &ss, &tr, model, P, s, &r, own);
        }
done:
    free(prompt);
    free(r.tok);
    free(r.logp);
    free(r.skip);
    free(own);
    eval_session_free(&ss);
    return st;
}
