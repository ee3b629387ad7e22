#include "eval/grid.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int32_t eval_parse_ints(const char *what, const char *s, int32_t lo, int32_t hi, int32_t *out, int32_t cap) {
    int32_t n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < lo || v > hi || (*end && *end != ',')) {
            fasa_error(FASA_E_ARG, "%s: expected a comma list of integers in [%d, %d], got '%s'", what, lo, hi, s);
            return -1;
        }
        if (n == cap) {
            fasa_error(FASA_E_ARG, "%s: at most %d values, got '%s'", what, cap, s);
            return -1;
        }
        out[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!n) fasa_error(FASA_E_ARG, "%s: empty list", what);
    return n ? n : -1;
}

/* The registry's own copy of a method name, so that configs never point
 * into a caller's temporary string. */
static const char *method_name(const char *name, size_t len) {
    for (const char *const *m = fasa_attn_methods(); *m; m++)
        if (strlen(*m) == len && !strncmp(*m, name, len)) return *m;
    return NULL;
}

static fasa_status unknown(const char *name, size_t len) {
    char list[256] = "";
    for (const char *const *m = fasa_attn_methods(); *m; m++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", *m);
    return fasa_error(FASA_E_ARG, "unknown method '%.*s' (known: %s)", (int)len, name, list);
}

static fasa_status push(eval_grid *g, int32_t *cap, const fasa_attn_params *p, const char *label) {
    for (int32_t i = 0; i < g->n; i++)
        if (!strcmp(g->cfgs[i].label, label) && g->cfgs[i].p.budget == p->budget) return FASA_OK; /* a repeat */
    if (g->n == *cap) {
        const int32_t nc = *cap ? 2 * *cap : 32;
        eval_config *c = realloc(g->cfgs, (size_t)nc * sizeof *c);
        if (!c) return fasa_error(FASA_E_NOMEM, "out of memory for the evaluation grid");
        g->cfgs = c;
        *cap = nc;
    }
    eval_config *c = &g->cfgs[g->n++];
    memset(c, 0, sizeof *c);
    c->p = *p;
    snprintf(c->label, sizeof c->label, "%s", label);
    return FASA_OK;
}

static fasa_status check_spec(const eval_grid_spec *s) {
    for (int32_t i = 0; i < s->n_budgets; i++)
        if (s->budgets[i] < 1)
            return fasa_error(FASA_E_ARG, "budget %d: a token budget must be at least 1", s->budgets[i]);
    for (int32_t i = 0; i < s->n_tips_count; i++)
        if (s->n_tips[i] < 1 || s->n_tips[i] > s->head_dim / 2)
            return fasa_error(FASA_E_ARG, "N_tip %d: the model's heads have %d frequency chunks (head_dim %d / 2)",
                              s->n_tips[i], s->head_dim / 2, s->head_dim);
    return FASA_OK;
}

/* Adds the rows of one method: once for full, else once per budget (and per
 * N_tip for fasa). */
static fasa_status add_method(const eval_grid_spec *s, const char *name, eval_grid *g, int32_t *cap) {
    fasa_attn_params p = s->base;
    p.method = name;
    if (!strcmp(name, "full")) {
        p.budget = 0;
        p.n_tip = 0;
        return push(g, cap, &p, "full");
    }
    if (!strcmp(name, "fasa") && !s->base.calib)
        return fasa_error(FASA_E_ARG, "the fasa rows need a calibration: pass --calib FILE "
                                      "(make one with `fasa calibrate -f TEXT -o FILE`)");
    if (!s->n_budgets) return fasa_error(FASA_E_ARG, "method %s needs at least one budget", name);
    const bool fasa = !strcmp(name, "fasa");
    const int32_t default_tip = s->head_dim / 8 > 0 ? s->head_dim / 8 : 1;
    const int32_t reps = fasa && s->n_tips_count ? s->n_tips_count : 1;
    for (int32_t r = 0; r < reps; r++) {
        for (int32_t b = 0; b < s->n_budgets; b++) {
            char label[48];
            p.budget = s->budgets[b];
            p.n_tip = fasa ? (s->n_tips_count ? s->n_tips[r] : default_tip) : 0;
            /* fasa's own options join the row name, so rows of runs that differ in
             * them stay apart in one results folder and its report */
            if (fasa) {
                char sink[16] = "", recent[16] = "";
                if (p.n_sink) snprintf(sink, sizeof sink, "-sinks%d", p.n_sink);
                if (p.n_recent) snprintf(recent, sizeof recent, "-recent%d", p.n_recent);
                snprintf(label, sizeof label, "fasa-%d%s%s%s%s", p.n_tip,
                         p.fc_union == FASA_FC_UNION   ? "-union"
                         : p.fc_union == FASA_FC_ALLOC ? "-alloc"
                                                       : "",
                         p.label_type == FASA_LABELS_F16    ? "-f16"
                         : p.label_type == FASA_LABELS_INT8 ? "-int8"
                                                            : "",
                         sink, recent);
            } else {
                snprintf(label, sizeof label, "%s", name);
            }
            fasa_status st = push(g, cap, &p, label);
            if (st) return st;
        }
    }
    return FASA_OK;
}

fasa_status eval_grid_build(const eval_grid_spec *s, eval_grid *out) {
    *out = (eval_grid){0};
    fasa_status st = check_spec(s);
    if (st) return st;
    int32_t cap = 0;
    if (s->with_full && (st = add_method(s, method_name("full", 4), out, &cap))) goto fail;
    for (const char *p = s->methods; *p;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *name = method_name(p, len);
        if (!name) {
            st = unknown(p, len);
            goto fail;
        }
        if ((st = add_method(s, name, out, &cap))) goto fail;
        p += len + (comma ? 1 : 0);
    }
    if (!out->n) {
        st = fasa_error(FASA_E_ARG, "no method to evaluate: the --attn list is empty");
        goto fail;
    }
    return FASA_OK;
fail:
    eval_grid_free(out);
    return st;
}

void eval_grid_free(eval_grid *g) {
    free(g->cfgs);
    *g = (eval_grid){0};
}

void eval_config_options(const fasa_attn_params *p, char *buf, int32_t cap) {
    int32_t w = 0;
    buf[0] = '\0';
#define OPT(cond, ...)                                                                                 \
    do {                                                                                              \
        if ((cond) && w < cap) {                                                                      \
            w += snprintf(buf + w, (size_t)(cap - w), "%s", w ? ";" : "");                           \
            if (w < cap) w += snprintf(buf + w, (size_t)(cap - w), __VA_ARGS__);                      \
        }                                                                                             \
    } while (0)
    OPT(p->dense_layers, "dense=%s", p->dense_layers);
    OPT(p->per_head, "select=%s", p->per_head == 1 ? "head" : "group");
    OPT(p->fc_union, "fc=%s",
        p->fc_union == FASA_FC_UNION ? "union" : p->fc_union == FASA_FC_ALLOC ? "alloc" : "kv-head");
    OPT(p->label_type, "labels=%s",
        p->label_type == FASA_LABELS_F16 ? "f16" : p->label_type == FASA_LABELS_INT8 ? "int8" : "f32");
    OPT(p->n_sink, "sinks=%d", p->n_sink);
    OPT(p->n_recent, "recent=%d", p->n_recent);
    OPT(p->window, "window=%d", p->window);
    OPT(p->pool_kernel, "pool=%d", p->pool_kernel);
    OPT(p->refresh, "refresh=%d", p->refresh);
    OPT(p->page, "page=%d", p->page);
    OPT(p->sparq_r, "sparq_r=%d", p->sparq_r);
    OPT(p->seed, "attn_seed=%llu", (unsigned long long)p->seed);
#undef OPT
}
