/* qa: one question about a given document (a source file, a chapter). The
 * document is prefilled densely once; every method then decodes the
 * question token by token (its selection decides what the model sees while
 * reading it) and generates the answer greedily, up to the end of the turn
 * or --decode tokens. Score: the fraction of the expected strings (whole
 * words) the answer contains. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/score.h"
#include "eval/session.h"
#include "eval/task.h"

typedef struct qa_prompt {
    int32_t *doc;      /* instruction and document: prefilled */
    int32_t n_doc;
    int32_t *question; /* decoded one token at a time, ends where the answer begins */
    int32_t n_question;
} qa_prompt;

static void qa_prompt_free(qa_prompt *p) {
    free(p->doc);
    free(p->question);
}

/* Tokens of text; the document's own text never turns into control tokens. */
static fasa_status append_tokens(const fasa_model *m, const char *text, bool bos, bool special, int32_t **ids,
                                 int32_t *n) {
    const size_t len = strlen(text);
    if (len > INT32_MAX / 2) return fasa_error(FASA_E_ARG, "qa: the document is too long");
    int32_t *grown = realloc(*ids, ((size_t)*n + len + 2) * sizeof *grown);
    if (!grown) return fasa_error(FASA_E_NOMEM, "out of memory tokenizing the qa prompt");
    *ids = grown;
    int32_t k = 0;
    fasa_status st = fasa_tokenize(m, text, len, bos, special, grown + *n, (int32_t)len + 2, &k);
    if (!st) *n += k;
    return st;
}

/* Chat:  <template opening>Read this file ...\n\n<document>\n\nQuestion: Q<template closing>
 * Plain: the same without the template, ending in "\nAnswer:". */
static fasa_status qa_prompt_make(const fasa_model *m, const char *doc_text, const char *question, bool chat,
                                  qa_prompt *p) {
    static const char *const mark = "@@USER@@";
    *p = (qa_prompt){0};
    char *tmpl = chat ? fasa_chat_prompt(m, NULL, mark) : NULL;
    if (chat && !tmpl) return FASA_E_UNSUPPORTED;
    const char *at = tmpl ? strstr(tmpl, mark) : NULL;
    const int head_len = at ? (int)(at - tmpl) : 0;
    const char *foot = at ? at + strlen(mark) : "\nAnswer:";
    const char *intro = "Read this file, then answer the question after it briefly.\n\n";
    const size_t hn = (size_t)head_len + strlen(intro) + 1, qn = strlen(question) + strlen(foot) + 16;
    char *head = malloc(hn), *q = malloc(qn);
    fasa_status st = head && q ? FASA_OK : fasa_error(FASA_E_NOMEM, "out of memory building the qa prompt");
    if (!st) {
        snprintf(head, hn, "%.*s%s", head_len, at ? tmpl : "", intro);
        snprintf(q, qn, "\n\nQuestion: %s%s", question, foot);
        st = append_tokens(m, head, fasa_model_add_bos(m), true, &p->doc, &p->n_doc);
    }
    if (!st) st = append_tokens(m, doc_text, false, false, &p->doc, &p->n_doc);
    if (!st) st = append_tokens(m, q, false, true, &p->question, &p->n_question);
    free(tmpl);
    free(head);
    free(q);
    if (st) qa_prompt_free(p);
    return st;
}

/* FNV-1a of the question, so that a results folder can hold several. */
static uint32_t text_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void qa_key(const eval_env *e, const eval_config *cfg, const char *model, int32_t n_doc, char *key,
                   int32_t cap) {
    char v[160];
    snprintf(v, sizeof v, "doc=%s;q=%08x;chat=%d", base_name(e->qa_doc), text_hash(e->qa_question), e->chat);
    const eval_cell cell = {"qa", cfg, model, n_doc, 0, e->seed, v};
    eval_cell_key(&cell, key, cap);
}

typedef struct qa_answer {
    char text[2048];
    int32_t steps;
    double seconds;
} qa_answer;

static fasa_status ask(eval_session *ss, const qa_prompt *p, int32_t max_answer, qa_answer *a) {
    const double t0 = eval_seconds();
    fasa_status st = FASA_OK;
    memset(a, 0, sizeof *a);
    for (int32_t i = 0; !st && i < p->n_question; i++, a->steps++) st = eval_session_step(ss, p->question[i]);
    for (int32_t i = 0; !st && i < max_answer; i++) {
        const int32_t tok = eval_argmax(ss->logits, ss->n_vocab, NULL);
        if (fasa_token_is_eog(ss->model, tok)) break;
        char piece[128];
        const int32_t n = fasa_token_piece(ss->model, tok, piece, sizeof piece - 1);
        const size_t w = strlen(a->text);
        if (n > 0 && w + (size_t)n < sizeof a->text) memcpy(a->text + w, piece, (size_t)n), a->text[w + n] = '\0';
        if (i + 1 < max_answer) {
            st = eval_session_step(ss, tok);
            a->steps++;
        }
    }
    a->seconds = eval_seconds() - t0;
    return st;
}

static double score_answer(const eval_env *e, const char *text) {
    if (e->n_qa_expect < 1) return 0.0;
    int32_t found = 0;
    for (int32_t i = 0; i < e->n_qa_expect; i++) found += eval_contains_value(text, e->qa_expect[i]);
    return (double)found / e->n_qa_expect;
}

static fasa_status write_cell(const eval_env *e, const eval_config *cfg, const char *model, const qa_prompt *p,
                              const qa_answer *a, const char *key) {
    char v[160];
    snprintf(v, sizeof v, "doc=%s;q=%08x;chat=%d", base_name(e->qa_doc), text_hash(e->qa_question), e->chat);
    const eval_cell cell = {"qa", cfg, model, p->n_doc, 0, e->seed, v};
    const int32_t n_at_answer = p->n_doc + p->n_question;
    cJSON *o = eval_cell_json(&cell), *exp = cJSON_CreateArray();
    bool ok = o && exp;
    for (int32_t i = 0; ok && i < e->n_qa_expect; i++) ok = cJSON_AddItemToArray(exp, cJSON_CreateString(e->qa_expect[i]));
    if (ok) ok = cJSON_AddItemToObject(o, "expected", exp), exp = NULL;
    if (!ok || !cJSON_AddNumberToObject(o, "score", score_answer(e, a->text)) ||
        !cJSON_AddStringToObject(o, "doc", base_name(e->qa_doc)) ||
        !cJSON_AddStringToObject(o, "question", e->qa_question) || !cJSON_AddStringToObject(o, "answer", a->text) ||
        !cJSON_AddNumberToObject(o, "seconds", a->seconds) ||
        !cJSON_AddNumberToObject(o, "decode_ms", 1e3 * a->seconds / (a->steps ? a->steps : 1)) ||
        !cJSON_AddNumberToObject(o, "kv_bytes_per_token",
                                 eval_step_bytes(e, &cfg->p, n_at_answer))) {
        cJSON_Delete(o);
        cJSON_Delete(exp);
        return fasa_error(FASA_E_NOMEM, "out of memory formatting a result");
    }
    return eval_results_write(e->results, key, o);
}

fasa_status eval_run_qa(const eval_env *e) {
    if (!e->qa_doc || !e->qa_question)
        return fasa_error(FASA_E_ARG, "qa: give the document (--doc FILE) and the question (--question TEXT)");
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    FILE *f = fopen(e->qa_doc, "rb");
    if (!f) return fasa_error(FASA_E_IO, "qa: cannot open the document '%s'", e->qa_doc);
    char *text = NULL;
    size_t len = 0, cap = 0;
    fasa_status st = FASA_OK;
    for (size_t n = 1; !st && n;) {
        if (len + 65536 > cap) {
            char *t = realloc(text, (cap = 2 * cap + 65536) + 1);
            if (!t) st = fasa_error(FASA_E_NOMEM, "qa: out of memory reading '%s'", e->qa_doc);
            else text = t;
        }
        if (!st) len += (n = fread(text + len, 1, cap - len, f));
    }
    fclose(f);
    if (st) return free(text), st;
    text[len] = '\0';
    if (strlen(text) != len) return free(text), fasa_error(FASA_E_ARG, "qa: the document '%s' holds a NUL byte", e->qa_doc);

    qa_prompt p;
    st = qa_prompt_make(e->model, text, e->qa_question, e->chat, &p);
    free(text);
    if (st) return st;
    const int32_t max_answer = e->decode, n_ctx = p.n_doc + p.n_question + max_answer;
    if (n_ctx > info.n_ctx_train)
        st = fasa_error(FASA_E_ARG, "qa: the document takes %d tokens; with the question and %d answer tokens that "
                                    "exceeds the model's context of %d",
                        p.n_doc, max_answer, info.n_ctx_train);
    char model[96], key[512];
    eval_model_name(e->model, model, sizeof model);
    eval_tracker tr;
    eval_tracker_start(&tr, e, e->grid->n);
    for (int32_t c = 0; !st && c < e->grid->n; c++) {
        qa_key(e, &e->grid->cfgs[c], model, p.n_doc, key, sizeof key);
        eval_tracker_plan(&tr, eval_results_has(e->results, key));
    }
    eval_session ss = {0};
    bool have_session = false;
    if (!st && tr.p.todo) {
        st = eval_session_init(e->model, n_ctx, e->n_threads, e->kv_type, e->f32_activations, &ss);
        have_session = !st;
        if (!st) st = eval_check_grid(&ss, e->grid);
        if (!st) st = eval_session_set_prefix(&ss, p.doc, p.n_doc);
        if (!st) eval_tracker_note(&tr, "qa: %s, %d tokens, then the question (%d tokens)", base_name(e->qa_doc), p.n_doc,
                                   p.n_question);
    }
    for (int32_t c = 0; !st && tr.p.todo && c < e->grid->n; c++) {
        const eval_config *cfg = &e->grid->cfgs[c];
        qa_key(e, cfg, model, p.n_doc, key, sizeof key);
        if (eval_results_has(e->results, key)) continue;
        qa_answer a;
        if ((st = eval_session_begin(&ss, &cfg->p)) || (st = ask(&ss, &p, max_answer, &a)) ||
            (st = write_cell(e, cfg, model, &p, &a, key)))
            break;
        char shown[64];
        snprintf(shown, sizeof shown, "%s", a.text);
        for (char *s = shown; *s; s++)
            if (*s == '\n') *s = ' ';
        eval_tracker_cell(&tr, "qa %s %-8s budget %4d: score %.2f, %.1f ms/token: \"%s\"", base_name(e->qa_doc),
                          cfg->label, cfg->p.budget, score_answer(e, a.text), 1e3 * a.seconds / (a.steps ? a.steps : 1),
                          shown);
    }
    if (have_session) eval_session_free(&ss);
    qa_prompt_free(&p);
    return st;
}
