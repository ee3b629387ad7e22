/* Helpers every task shares: progress accounting and grid checks. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "attn/bytes.h"
#include "eval/session.h"
#include "eval/task.h"

double eval_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void eval_tracker_start(eval_tracker *t, const eval_env *e, int64_t total) {
    *t = (eval_tracker){.env = e, .p = {.total = total}, .t0 = eval_seconds()};
}

void eval_tracker_plan(eval_tracker *t, bool present) { t->p.todo += !present; }

static void emit(eval_tracker *t, bool cell, const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    t->p.cell = cell;
    t->p.line = line;
    t->p.elapsed = eval_seconds() - t->t0;
    if (t->env->progress) t->env->progress(t->env->user, &t->p);
    t->p.line = NULL;
}

void eval_tracker_note(eval_tracker *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(t, false, fmt, ap);
    va_end(ap);
}

void eval_tracker_cell(eval_tracker *t, const char *fmt, ...) {
    va_list ap;
    t->p.done++;
    va_start(ap, fmt);
    emit(t, true, fmt, ap);
    va_end(ap);
}

const char *eval_model_name(const fasa_model *m, char *buf, int32_t cap) {
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    snprintf(buf, (size_t)cap, "%s", info.name[0] ? info.name : info.arch);
    return buf;
}

fasa_status eval_check_grid(eval_session *s, const eval_grid *g) {
    for (int32_t i = 0; i < g->n; i++) {
        fasa_status st = eval_session_check(s, &g->cfgs[i].p);
        if (st) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", fasa_last_error());
            return fasa_error(st, "%s at budget %d: %s", g->cfgs[i].label, g->cfgs[i].p.budget, msg);
        }
    }
    return FASA_OK;
}

double eval_step_bytes(const eval_env *e, const fasa_attn_params *p, int32_t ctx) {
    fasa_model_info info;
    fasa_model_get_info(e->model, &info);
    return attn_step_bytes(&info, p, ctx, e->kv_type == FASA_KV_F16 ? 2 : 4);
}

int32_t eval_max_int(const int32_t *v, int32_t n) {
    int32_t m = v[0];
    for (int32_t i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}
