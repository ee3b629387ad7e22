/* needle: retrieval at a grid of prompt lengths x needle depths. The prompt
 * up to the question is prefilled densely once per case; every method then
 * decodes the question token by token (so its selection decides what the
 * model sees when it reads the question) and generates the answer greedily.
 * Score: the fraction of the expected values the answer contains. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/score.h"
#include "eval/session.h"
#include "eval/task.h"

typedef struct needle_cell {
    int32_t length, sample, depth_idx;
    needle_kind kind;
} needle_cell;

static void variant(const eval_env *e, const needle_cell *nc, char *buf, size_t cap) {
    snprintf(buf, cap, "kind=%s;depth=%.3f;hay=%s;chat=%d", needle_kind_name(nc->kind), e->depths[nc->depth_idx],
             e->filler ? "filler" : "book", e->chat);
}

static void needle_key(const eval_env *e, const eval_config *cfg, const char *model, const needle_cell *nc, char *key,
                       int32_t cap) {
    char v[96];
    variant(e, nc, v, sizeof v);
    const eval_cell cell = {"needle", cfg, model, nc->length, nc->sample, e->seed, v};
    eval_cell_key(&cell, key, cap);
}

static int32_t pending_configs(const eval_env *e, const char *model, const needle_cell *nc) {
    char key[512];
    int32_t n = 0;
    for (int32_t c = 0; c < e->grid->n; c++) {
        needle_key(e, &e->grid->cfgs[c], model, nc, key, sizeof key);
        n += !eval_results_has(e->results, key);
    }
    return n;
}

typedef struct answer {
    char text[512];
    int32_t steps;  /* decode steps run (question + answer) */
    double seconds; /* spent in them */
} answer;

static void append_piece(const fasa_model *m, int32_t tok, char *text, size_t cap) {
    char piece[64];
    const int32_t n = fasa_token_piece(m, tok, piece, sizeof piece - 1);
    if (n <= 0) return;
    piece[n] = '\0';
    const size_t w = strlen(text);
    snprintf(text + w, cap - w, "%s", piece);
}

/* Whether s holds a letter or digit before position end. */
static bool has_content(const char *s, const char *end) {
    for (; s < end; s++)
        if (isalnum((unsigned char)*s)) return true;
    return false;
}

/* Decodes the question and generates up to max_answer tokens: until the
 * end of the turn, or the end of the first line with a letter or digit
 * (answers often open with ":" and a line break before the value). */
static fasa_status ask(eval_session *ss, const needle_case *c, answer *a) {
    const double t0 = eval_seconds();
    fasa_status st = FASA_OK;
    memset(a, 0, sizeof *a);
    for (int32_t i = 0; !st && i < c->n_question; i++, a->steps++) st = eval_session_step(ss, c->question[i]);
    for (int32_t i = 0; !st && i < c->max_answer; i++) {
        const int32_t tok = eval_argmax(ss->logits, ss->n_vocab, NULL);
        if (fasa_token_is_eog(ss->model, tok)) break;
        append_piece(ss->model, tok, a->text, sizeof a->text);
        const char *nl = strrchr(a->text, '\n');
        if (nl && has_content(a->text, nl)) break;
        if (i + 1 < c->max_answer) {
            st = eval_session_step(ss, tok);
            a->steps++;
        }
    }
    a->seconds = eval_seconds() - t0;
    return st;
}

static fasa_status write_cell(const eval_env *e, const eval_config *cfg, const char *model, const needle_cell *nc,
                              const needle_case *c, const answer *a, double score, const char *key) {
    char v[96];
    variant(e, nc, v, sizeof v);
    const eval_cell cell = {"needle", cfg, model, nc->length, nc->sample, e->seed, v};
    const int32_t n_at_answer = c->n_tokens + c->n_question;
    cJSON *o = eval_cell_json(&cell), *vals = cJSON_CreateArray();
    bool ok = o && vals;
    for (int32_t i = 0; ok && i < c->n_values; i++) ok = cJSON_AddItemToArray(vals, cJSON_CreateString(c->values[i]));
    if (ok) ok = cJSON_AddItemToObject(o, "expected", vals), vals = NULL;
    if (!ok || !cJSON_AddNumberToObject(o, "score", score) || !cJSON_AddStringToObject(o, "kind", needle_kind_name(nc->kind)) ||
        !cJSON_AddNumberToObject(o, "depth", e->depths[nc->depth_idx]) ||
        !cJSON_AddNumberToObject(o, "needle_pos", (double)(c->needle_pos - c->hay_start) / c->n_fill) ||
        !cJSON_AddStringToObject(o, "haystack", e->filler ? "filler" : eval_corpus_doc_name(e->corpus, nc->sample)) ||
        !cJSON_AddStringToObject(o, "answer", a->text) || !cJSON_AddNumberToObject(o, "seconds", a->seconds) ||
        !cJSON_AddNumberToObject(o, "decode_ms", 1e3 * a->seconds / (a->steps ? a->steps : 1)) ||
        !cJSON_AddNumberToObject(o, "kv_bytes_per_token",
                                 eval_step_bytes(e, &cfg->p, n_at_answer))) {
        cJSON_Delete(o);
        cJSON_Delete(vals);
        return fasa_error(FASA_E_NOMEM, "out of memory formatting a result");
    }
    return eval_results_write(e->results, key, o);
}

static fasa_status run_case(const eval_env *e, eval_session *ss, eval_tracker *tr, const char *model,
                            const needle_cell *nc, const int32_t *hay) {
    uint64_t rng = e->seed;
    needle_spec spec = {nc->kind, nc->length, e->depths[nc->depth_idx], 0, e->chat};
    for (int32_t i = 0; i < 4; i++) eval_rng_next(&rng);
    spec.seed = eval_rng_next(&rng) ^ ((uint64_t)nc->sample << 40) ^ ((uint64_t)nc->depth_idx << 20) ^ (uint64_t)nc->length;
    needle_case c;
    fasa_status st = needle_make(e->model, &spec, hay, nc->length, &c);
    if (!st) st = eval_session_set_prefix(ss, c.tokens, c.n_tokens);
    char key[512];
    for (int32_t k = 0; !st && k < e->grid->n; k++) {
        const eval_config *cfg = &e->grid->cfgs[k];
        needle_key(e, cfg, model, nc, key, sizeof key);
        if (eval_results_has(e->results, key)) continue;
        answer a;
        if ((st = eval_session_begin(ss, &cfg->p)) || (st = ask(ss, &c, &a))) break;
        const double score = eval_score_values(a.text, (const char (*)[40])c.values, c.n_values);
        char shown[48];
        snprintf(shown, sizeof shown, "%s", a.text);
        for (char *p = shown; *p; p++)
            if (*p == '\n') *p = ' ';
        if ((st = write_cell(e, cfg, model, nc, &c, &a, score, key))) break;
        eval_tracker_cell(tr, "needle %s len %d depth %.2f sample %d %-8s budget %4d: %s (\"%s\" vs %s)",
                          needle_kind_name(nc->kind), nc->length, spec.depth, nc->sample, cfg->label, cfg->p.budget,
                          score >= 1.0 ? "ok" : score > 0 ? "partial" : "miss", shown, c.values[0]);
    }
    needle_case_free(&c);
    return st;
}

fasa_status eval_run_needle(const eval_env *e) {
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    const int32_t L_max = eval_max_int(e->ctxs, e->n_ctxs);
    /* Room for the question and the longest answer after the prompt. */
    const int32_t n_ctx = L_max + 256;
    if (n_ctx > info.n_ctx_train)
        return fasa_error(FASA_E_ARG, "needle: a prompt of %d tokens plus 256 for the question and answer exceeds "
                                      "the model's context of %d",
                          L_max, info.n_ctx_train);
    char model[96];
    eval_model_name(e->model, model, sizeof model);
    eval_tracker tr;
    eval_tracker_start(&tr, e, (int64_t)e->n_ctxs * e->n_kinds * e->n_depths * e->n_samples * e->grid->n);
    for (int32_t i = 0; i < e->n_ctxs; i++)
        for (int32_t s = 0; s < e->n_samples; s++)
            for (int32_t k = 0; k < e->n_kinds; k++)
                for (int32_t d = 0; d < e->n_depths; d++) {
                    const needle_cell nc = {e->ctxs[i], s, d, e->kinds[k]};
                    tr.p.todo += pending_configs(e, model, &nc);
                }
    if (!tr.p.todo) return FASA_OK;
    eval_session ss;
    fasa_status st = eval_session_init(e->model, n_ctx, e->n_threads, e->kv_type, e->f32_activations, &ss);
    if (st) return st;
    int32_t *hay = fasa_malloc((size_t)L_max, sizeof *hay, "haystack");
    if (!hay) st = FASA_E_NOMEM;
    if (!st) st = eval_check_grid(&ss, e->grid);
    for (int32_t i = 0; !st && i < e->n_ctxs; i++)
        for (int32_t s = 0; !st && s < e->n_samples; s++) {
            bool loaded = false;
            for (int32_t k = 0; !st && k < e->n_kinds; k++)
                for (int32_t d = 0; !st && d < e->n_depths; d++) {
                    const needle_cell nc = {e->ctxs[i], s, d, e->kinds[k]};
                    if (!pending_configs(e, model, &nc)) continue;
                    if (!loaded) {
                        st = e->filler ? needle_filler(e->model, nc.length, hay)
                                       : eval_corpus_passage(e->corpus, e->model, s, e->seed, nc.length, false, hay);
                        loaded = !st;
                    }
                    if (!st) {
                        eval_tracker_note(&tr, "needle: %s, %d tokens, depth %.2f, sample %d", needle_kind_name(nc.kind),
                                          nc.length, e->depths[d], s);
                        st = run_case(e, &ss, &tr, model, &nc, hay);
                    }
                }
        }
    free(hay);
    eval_session_free(&ss);
    return st;
}
