/* ppl: long-text perplexity as in the paper. A window of P + D + 1 tokens:
 * the first P are prefilled densely, then tokens P .. P+D-1 are decoded one
 * at a time under the method, and each decode step's prediction of the next
 * token is scored. All configurations start from the same prefill. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "eval/score.h"
#include "eval/session.h"
#include "eval/task.h"

static void ppl_key(const eval_env *e, const eval_config *cfg, const char *model, int32_t P, int32_t s, char *key,
                    int32_t cap) {
    char variant[32];
    snprintf(variant, sizeof variant, "D=%d", e->decode);
    const eval_cell cell = {"ppl", cfg, model, P, s, e->seed, variant};
    eval_cell_key(&cell, key, cap);
}

static fasa_status write_cell(const eval_env *e, const eval_config *cfg, const char *model, int32_t P, int32_t s,
                              double nll, double secs, double decode_secs, const char *key) {
    char variant[32];
    snprintf(variant, sizeof variant, "D=%d", e->decode);
    const eval_cell cell = {"ppl", cfg, model, P, s, e->seed, variant};
    cJSON *o = eval_cell_json(&cell);
    const double ppl = exp(nll / e->decode);
    if (!o || !cJSON_AddNumberToObject(o, "score", ppl) || !cJSON_AddNumberToObject(o, "ppl", ppl) ||
        !cJSON_AddNumberToObject(o, "nll", nll) || !cJSON_AddNumberToObject(o, "decode", e->decode) ||
        !cJSON_AddStringToObject(o, "doc", eval_corpus_doc_name(e->corpus, s)) ||
        !cJSON_AddNumberToObject(o, "seconds", secs) ||
        /* at the middle of the decoded stretch */
        !cJSON_AddNumberToObject(o, "kv_bytes_per_token", eval_step_bytes(e, &cfg->p, P + e->decode / 2)) ||
        !cJSON_AddNumberToObject(o, "decode_tok_s", e->decode / (decode_secs > 0 ? decode_secs : 1e-9))) {
        cJSON_Delete(o);
        return fasa_error(FASA_E_NOMEM, "out of memory formatting a result");
    }
    return eval_results_write(e->results, key, o);
}

/* Decodes the window's D tokens under cfg and returns their summed NLL and
 * the seconds the decode steps took (the prefill is not counted). */
static fasa_status score_cell(eval_session *ss, const eval_config *cfg, const int32_t *win, int32_t P, int32_t D,
                              double *nll, double *decode_secs) {
    fasa_status st = eval_session_begin(ss, &cfg->p);
    const double t0 = eval_seconds();
    *nll = 0.0;
    for (int32_t t = 0; !st && t < D; t++) {
        st = eval_session_step(ss, win[P + t]);
        if (!st) *nll += eval_token_nll(ss->logits, ss->n_vocab, win[P + t + 1]);
    }
    *decode_secs = eval_seconds() - t0;
    return st;
}

static fasa_status run_window(const eval_env *e, eval_session *ss, eval_tracker *tr, const char *model, int32_t P,
                              int32_t s, int32_t *win) {
    const int32_t D = e->decode;
    char key[512];
    int32_t pending = 0;
    for (int32_t c = 0; c < e->grid->n; c++) {
        ppl_key(e, &e->grid->cfgs[c], model, P, s, key, sizeof key);
        pending += !eval_results_has(e->results, key);
    }
    if (!pending) return FASA_OK;
    fasa_status st = eval_corpus_passage(e->corpus, e->model, s, e->seed, P + D + 1, fasa_model_add_bos(e->model), win);
    if (!st) st = eval_session_set_prefix(ss, win, P);
    if (st) return st;
    eval_tracker_note(tr, "ppl: window %d (%s), prefill %d tokens, %d configurations to decode", s,
                      eval_corpus_doc_name(e->corpus, s), P, pending);
    double full_ppl = 0.0;
    for (int32_t c = 0; c < e->grid->n && !st; c++) {
        const eval_config *cfg = &e->grid->cfgs[c];
        ppl_key(e, cfg, model, P, s, key, sizeof key);
        if (eval_results_has(e->results, key)) continue;
        const double t0 = eval_seconds();
        double nll, dsecs;
        if ((st = score_cell(ss, cfg, win, P, D, &nll, &dsecs))) break;
        const double secs = eval_seconds() - t0, ppl = exp(nll / D);
        if (!cfg->p.budget) full_ppl = ppl;
        if ((st = write_cell(e, cfg, model, P, s, nll, secs, dsecs, key))) break;
        if (full_ppl > 0)
            eval_tracker_cell(tr, "ppl P=%d window %d %-8s budget %4d: ppl %.3f (x%.4f of full), %.1f tok/s", P, s,
                              cfg->label, cfg->p.budget, ppl, ppl / full_ppl, D / dsecs);
        else
            eval_tracker_cell(tr, "ppl P=%d window %d %-8s budget %4d: ppl %.3f, %.1f tok/s", P, s, cfg->label,
                              cfg->p.budget, ppl, D / dsecs);
    }
    return st;
}

fasa_status eval_run_ppl(const eval_env *e) {
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    const int32_t D = e->decode, P_max = eval_max_int(e->ctxs, e->n_ctxs);
    if (D < 1) return fasa_error(FASA_E_ARG, "ppl: --decode must be at least 1");
    if ((int64_t)P_max + D > info.n_ctx_train)
        return fasa_error(FASA_E_ARG, "ppl: --ctx %d + --decode %d = %d tokens exceeds the model's context of %d",
                          P_max, D, P_max + D, info.n_ctx_train);
    char model[96], key[512];
    eval_model_name(e->model, model, sizeof model);
    eval_tracker tr;
    eval_tracker_start(&tr, e, (int64_t)e->n_ctxs * e->n_samples * e->grid->n);
    for (int32_t i = 0; i < e->n_ctxs; i++)
        for (int32_t s = 0; s < e->n_samples; s++)
            for (int32_t c = 0; c < e->grid->n; c++) {
                ppl_key(e, &e->grid->cfgs[c], model, e->ctxs[i], s, key, sizeof key);
                eval_tracker_plan(&tr, eval_results_has(e->results, key));
            }
    if (!tr.p.todo) return FASA_OK;
    eval_session ss;
    fasa_status st = eval_session_init(e->model, P_max + D, e->n_threads, e->kv_type, e->f32_activations, &ss);
    if (st) return st;
    int32_t *win = fasa_malloc((size_t)P_max + D + 1, sizeof *win, "ppl window");
    if (!win) st = FASA_E_NOMEM;
    if (!st) st = eval_check_grid(&ss, e->grid);
    for (int32_t i = 0; !st && i < e->n_ctxs; i++)
        for (int32_t s = 0; !st && s < e->n_samples; s++) st = run_window(e, &ss, &tr, model, e->ctxs[i], s, win);
    free(win);
    eval_session_free(&ss);
    return st;
}
