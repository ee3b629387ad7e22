/* ca: the Contextual Agreement table (the paper's Table 1) as a task: for
 * each context length and passage, the text's last D tokens are decoded
 * with exact attention while every method, at every budget, says which
 * tokens it would pick; the score is the mean overlap with the exact top-K
 * (each cell also records the attention-mass recall).
 * Every layer is measured (no dense layers), as in `fasa ca`. full is not
 * a row: it agrees by definition. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/task.h"
#include "measure/ca.h"

static void ca_key(const eval_env *e, const eval_config *cfg, const char *model, int32_t ctx, int32_t s, char *key,
                   int32_t cap) {
    char v[32];
    snprintf(v, sizeof v, "D=%d", e->decode);
    const eval_cell cell = {"ca", cfg, model, ctx, s, e->seed, v};
    eval_cell_key(&cell, key, cap);
}

/* The grid as CA rows (one per label) x columns (budgets). */
typedef struct ca_table {
    ca_candidate *cands;
    int32_t n_cands;
    int32_t budgets[64];
    int32_t n_budgets;
} ca_table;

static int32_t find_budget(const ca_table *t, int32_t b) {
    for (int32_t i = 0; i < t->n_budgets; i++)
        if (t->budgets[i] == b) return i;
    return -1;
}

static int32_t find_cand(const ca_table *t, const char *label) {
    for (int32_t i = 0; i < t->n_cands; i++)
        if (!strcmp(t->cands[i].label, label)) return i;
    return -1;
}

static fasa_status build_table(const eval_grid *g, ca_table *t) {
    *t = (ca_table){0};
    if (!(t->cands = fasa_calloc((size_t)g->n, sizeof *t->cands, "CA rows"))) return FASA_E_NOMEM;
    for (int32_t i = 0; i < g->n; i++) {
        const eval_config *c = &g->cfgs[i];
        if (!c->p.budget) continue;
        if (find_budget(t, c->p.budget) < 0) {
            if (t->n_budgets == 64) return fasa_error(FASA_E_ARG, "ca: at most 64 budgets");
            t->budgets[t->n_budgets++] = c->p.budget;
        }
        if (find_cand(t, c->label) >= 0) continue;
        ca_candidate *cd = &t->cands[t->n_cands++];
        snprintf(cd->label, sizeof cd->label, "%s", c->label);
        cd->params = c->p;
        cd->params.dense_layers = ""; /* every layer is measured */
    }
    if (!t->n_cands) return fasa_error(FASA_E_ARG, "ca: no sparse method to measure (full agrees by definition)");
    return FASA_OK;
}

static fasa_status write_cell(const eval_env *e, const eval_config *cfg, const char *model, int32_t ctx, int32_t s,
                              double ca, double mass, double secs, const char *key) {
    char v[32];
    snprintf(v, sizeof v, "D=%d", e->decode);
    const eval_cell cell = {"ca", cfg, model, ctx, s, e->seed, v};
    cJSON *o = eval_cell_json(&cell);
    if (!o || !cJSON_AddNumberToObject(o, "score", ca) || !cJSON_AddNumberToObject(o, "ca", ca) ||
        !cJSON_AddNumberToObject(o, "mass", mass) ||
        !cJSON_AddNumberToObject(o, "decode", e->decode) ||
        !cJSON_AddStringToObject(o, "doc", eval_corpus_doc_name(e->corpus, s)) ||
        !cJSON_AddNumberToObject(o, "seconds", secs) ||
        !cJSON_AddNumberToObject(o, "kv_bytes_per_token", eval_step_bytes(e, &cfg->p, ctx))) {
        cJSON_Delete(o);
        return fasa_error(FASA_E_NOMEM, "out of memory formatting a result");
    }
    return eval_results_write(e->results, key, o);
}

static fasa_status run_sample(const eval_env *e, const ca_table *t, eval_tracker *tr, const char *model, int32_t ctx,
                              int32_t s, int32_t *tokens, double *res, double *mass) {
    fasa_status st = eval_corpus_passage(e->corpus, e->model, s, e->seed, ctx, fasa_model_add_bos(e->model), tokens);
    if (st) return st;
    eval_tracker_note(tr, "ca: passage %d (%s), %d tokens, %d rows x %d budgets", s, eval_corpus_doc_name(e->corpus, s),
                      ctx, t->n_cands, t->n_budgets);
    const ca_request req = {t->cands, t->n_cands, t->budgets, t->n_budgets, e->decode, e->n_threads, NULL, NULL};
    const double t0 = eval_seconds();
    const ca_result out = {res, mass, NULL, NULL};
    if ((st = ca_measure(e->model, tokens, ctx, &req, &out))) return st;
    const double secs = eval_seconds() - t0;
    char key[512];
    for (int32_t i = 0; !st && i < e->grid->n; i++) {
        const eval_config *c = &e->grid->cfgs[i];
        if (!c->p.budget) continue;
        ca_key(e, c, model, ctx, s, key, sizeof key);
        if (eval_results_has(e->results, key)) continue;
        const int32_t at = find_cand(t, c->label) * t->n_budgets + find_budget(t, c->p.budget);
        if (!(st = write_cell(e, c, model, ctx, s, res[at], mass[at], secs, key)))
            eval_tracker_cell(tr, "ca ctx %d passage %d %-8s K=%4d: CA %.1f%%, mass %.1f%%", ctx, s, c->label,
                              c->p.budget, 100 * res[at], 100 * mass[at]);
    }
    return st;
}

fasa_status eval_run_ca(const eval_env *e) {
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    const int32_t T_max = eval_max_int(e->ctxs, e->n_ctxs);
    if (T_max > info.n_ctx_train)
        return fasa_error(FASA_E_ARG, "ca: --ctx %d exceeds the model's context of %d", T_max, info.n_ctx_train);
    for (int32_t i = 0; i < e->n_ctxs; i++)
        if (e->decode < 1 || e->decode >= e->ctxs[i])
            return fasa_error(FASA_E_ARG, "ca: --decode %d must be in [1, --ctx %d)", e->decode, e->ctxs[i]);
    char model[96], key[512];
    eval_model_name(e->model, model, sizeof model);
    ca_table t;
    fasa_status st = build_table(e->grid, &t);
    int32_t *tokens = NULL;
    double *res = NULL, *mass = NULL;
    if (st) goto done;
    eval_tracker tr;
    eval_tracker_start(&tr, e, (int64_t)e->n_ctxs * e->n_samples * (e->grid->n - (e->grid->cfgs[0].p.budget == 0)));
    bool *todo = fasa_calloc((size_t)e->n_ctxs * e->n_samples, sizeof *todo, "ca plan");
    if (!todo) {
        st = FASA_E_NOMEM;
        goto done;
    }
    for (int32_t i = 0; i < e->n_ctxs; i++)
        for (int32_t s = 0; s < e->n_samples; s++)
            for (int32_t c = 0; c < e->grid->n; c++) {
                if (!e->grid->cfgs[c].p.budget) continue;
                ca_key(e, &e->grid->cfgs[c], model, e->ctxs[i], s, key, sizeof key);
                const bool present = eval_results_has(e->results, key);
                eval_tracker_plan(&tr, present);
                todo[i * e->n_samples + s] |= !present;
            }
    tokens = fasa_malloc((size_t)T_max, sizeof *tokens, "ca passage");
    res = fasa_malloc((size_t)t.n_cands * t.n_budgets, sizeof *res, "ca results");
    mass = fasa_malloc((size_t)t.n_cands * t.n_budgets, sizeof *mass, "ca results");
    if (!tokens || !res || !mass) st = FASA_E_NOMEM;
    for (int32_t i = 0; !st && i < e->n_ctxs; i++)
        for (int32_t s = 0; !st && s < e->n_samples; s++)
            if (todo[i * e->n_samples + s]) st = run_sample(e, &t, &tr, model, e->ctxs[i], s, tokens, res, mass);
    free(todo);
done:
    free(tokens);
    free(res);
    free(mass);
    free(t.cands);
    return st;
}
