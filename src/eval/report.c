#include "eval/report.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct rec {
    const char *task, *label, *method, *kind, *model, *options;
    int32_t budget, n_tip, ctx, sample, decode;
    double score, nll, depth, kl, repetition, mass;
    double bytes; /* KV and label bytes a decode step reads (kv_bytes_per_token) */
} rec;

typedef struct recs {
    rec *r;
    int32_t n;
} recs;

static const char *str_of(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num_of(const cJSON *o, const char *name, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static fasa_status load(const cJSON *arr, recs *out) {
    const int32_t n = cJSON_GetArraySize(arr);
    out->n = 0;
    if (!(out->r = fasa_calloc(n > 0 ? (size_t)n : 1, sizeof *out->r, "report records"))) return FASA_E_NOMEM;
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) {
        rec *r = &out->r[out->n];
        r->task = str_of(o, "task");
        r->label = str_of(o, "label");
        r->method = str_of(o, "method");
        if (!*r->task || !*r->label) continue;
        r->kind = str_of(o, "kind");
        r->model = str_of(o, "model");
        r->options = str_of(o, "options");
        r->budget = (int32_t)num_of(o, "budget", 0);
        r->n_tip = (int32_t)num_of(o, "n_tip", 0);
        r->ctx = (int32_t)num_of(o, "ctx", 0);
        r->sample = (int32_t)num_of(o, "sample", 0);
        r->decode = (int32_t)num_of(o, "decode", num_of(o, "n_gen", 0));
        r->score = num_of(o, "score", NAN);
        r->nll = num_of(o, "nll", NAN);
        r->depth = num_of(o, "depth", NAN);
        r->kl = num_of(o, "kl", NAN);
        r->repetition = num_of(o, "repetition", NAN);
        r->mass = num_of(o, "mass", NAN);
        r->bytes = num_of(o, "kv_bytes_per_token", NAN);
        out->n++;
    }
    return FASA_OK;
}

/* Rows in a fixed order: full, oracle, fasa by N_tip, then the others as
 * the method registry lists them. */
static int method_rank(const char *m) {
    if (!strcmp(m, "full")) return 0;
    if (!strcmp(m, "oracle")) return 1;
    if (!strcmp(m, "fasa")) return 2;
    int i = 3;
    for (const char *const *p = fasa_attn_methods(); *p; p++, i++)
        if (!strcmp(*p, m)) return i;
    return 1000;
}

static int cmp_rec_row(const rec *a, const rec *b) {
    const int ra = method_rank(a->method), rb = method_rank(b->method);
    if (ra != rb) return ra - rb;
    if (a->n_tip != b->n_tip) return a->n_tip - b->n_tip;
    return strcmp(a->label, b->label);
}

/* Which records a table covers. */
typedef struct sel {
    const char *task;
    int32_t ctx;      /* -1: any */
    const char *kind; /* NULL: any */
    int32_t decode;   /* -1: any */
} sel;

static bool match(const rec *r, const sel *s) {
    return !strcmp(r->task, s->task) && (s->ctx < 0 || r->ctx == s->ctx) && (!s->kind || !strcmp(r->kind, s->kind)) &&
           (s->decode < 0 || r->decode == s->decode);
}

typedef struct axes {
    const rec *rows[64]; /* one representative record per label */
    int32_t n_rows;
    int32_t budgets[32];
    int32_t n_budgets;
} axes;

static void add_int(int32_t *v, int32_t *n, int32_t cap, int32_t x) {
    for (int32_t i = 0; i < *n; i++)
        if (v[i] == x) return;
    if (*n == cap) return;
    int32_t i = (*n)++;
    for (; i > 0 && v[i - 1] > x; i--) v[i] = v[i - 1];
    v[i] = x;
}

static void find_axes(const recs *R, const sel *s, axes *a) {
    memset(a, 0, sizeof *a);
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        if (!match(r, s)) continue;
        if (r->budget > 0) add_int(a->budgets, &a->n_budgets, 32, r->budget);
        bool seen = false;
        for (int32_t j = 0; j < a->n_rows && !seen; j++) seen = !strcmp(a->rows[j]->label, r->label);
        if (seen || a->n_rows == 64) continue;
        int32_t j = a->n_rows++;
        for (; j > 0 && cmp_rec_row(a->rows[j - 1], r) > 0; j--) a->rows[j] = a->rows[j - 1];
        a->rows[j] = r;
    }
}

/* A value per (row, budget); NAN where nothing was measured. full (budget 0)
 * has one value, shown in every column. */
typedef double (*cell_fn)(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count);

/* Mean of one double field of the matching records. */
static double mean_field(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count, size_t field) {
    double sum = 0.0;
    int32_t n = 0;
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        const double v = *(const double *)((const char *)r + field);
        if (match(r, s) && !strcmp(r->label, label) && (r->budget == budget || r->budget == 0) && !isnan(v)) {
            sum += v;
            n++;
        }
    }
    *count = n;
    return n ? sum / n : NAN;
}

static double mean_score(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    return mean_field(R, s, label, budget, count, offsetof(rec, score));
}
static double mean_kl(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    return mean_field(R, s, label, budget, count, offsetof(rec, kl));
}
static double mean_mass(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    return mean_field(R, s, label, budget, count, offsetof(rec, mass));
}

static double mean_repetition(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    return mean_field(R, s, label, budget, count, offsetof(rec, repetition));
}

static const rec *find_full(const recs *R, const sel *s, int32_t ctx, int32_t sample) {
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        if (match(r, s) && !strcmp(r->method, "full") && r->ctx == ctx && r->sample == sample) return r;
    }
    return NULL;
}

/* PPL ratio to full over the windows both were measured on: exp of the
 * mean per-token NLL difference. */
static double ppl_ratio(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    double diff = 0.0, tokens = 0.0;
    int32_t n = 0;
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        if (!match(r, s) || strcmp(r->label, label) || (r->budget != budget && r->budget != 0) || isnan(r->nll)) continue;
        const rec *f = find_full(R, s, r->ctx, r->sample);
        if (!f || isnan(f->nll) || f->decode != r->decode) continue;
        diff += r->nll - f->nll;
        tokens += r->decode;
        n++;
    }
    *count = n;
    return n && tokens > 0 ? exp(diff / tokens) : NAN;
}

typedef struct table_style {
    const char *what;  /* caption */
    const char *fmt;   /* printf format of a value */
    double scale;      /* value multiplier (100 for percent) */
    int better;        /* +1 higher is better, -1 lower, 0 no highlight */
} table_style;

static bool is_baseline_row(const rec *r) { return !strcmp(r->method, "full") || !strcmp(r->method, "oracle"); }

static void print_table(FILE *out, const recs *R, const sel *s, cell_fn fn, const table_style *st) {
    axes a;
    find_axes(R, s, &a);
    if (!a.n_rows) return;
    fprintf(out, "%s\n\n| method |", st->what);
    if (!a.n_budgets) fprintf(out, " value |");
    for (int32_t b = 0; b < a.n_budgets; b++) fprintf(out, " %d |", a.budgets[b]);
    fprintf(out, "\n|---|");
    for (int32_t b = 0; b < (a.n_budgets ? a.n_budgets : 1); b++) fprintf(out, "---:|");
    fprintf(out, "\n");
    /* The best non-oracle, non-full value of each column gets bold. */
    double best[32];
    for (int32_t b = 0; b < a.n_budgets; b++) {
        best[b] = NAN;
        for (int32_t i = 0; i < a.n_rows && st->better; i++) {
            int32_t n;
            if (is_baseline_row(a.rows[i])) continue;
            const double v = fn(R, s, a.rows[i]->label, a.budgets[b], &n);
            if (!isnan(v) && (isnan(best[b]) || (st->better > 0 ? v > best[b] : v < best[b]))) best[b] = v;
        }
    }
    for (int32_t i = 0; i < a.n_rows; i++) {
        fprintf(out, "| %s |", a.rows[i]->label);
        for (int32_t b = 0; b < (a.n_budgets ? a.n_budgets : 1); b++) {
            int32_t n;
            const double v = fn(R, s, a.rows[i]->label, a.n_budgets ? a.budgets[b] : 0, &n);
            char num[32];
            snprintf(num, sizeof num, st->fmt, v * st->scale);
            const bool bold = a.n_budgets && !is_baseline_row(a.rows[i]) && !isnan(v) && v == best[b];
            if (isnan(v)) fprintf(out, " – |");
            else fprintf(out, bold ? " **%s** |" : " %s |", num);
        }
        fprintf(out, "\n");
    }
    fprintf(out, "\n");
}

static void distinct_ctx(const recs *R, const char *task, int32_t *ctxs, int32_t *n) {
    *n = 0;
    for (int32_t i = 0; i < R->n; i++)
        if (!strcmp(R->r[i].task, task)) add_int(ctxs, n, 32, R->r[i].ctx);
}

static int32_t count_samples(const recs *R, const sel *s) {
    int32_t v[256], n = 0;
    for (int32_t i = 0; i < R->n; i++)
        if (match(&R->r[i], s) && !strcmp(R->r[i].method, "full")) add_int(v, &n, 256, R->r[i].sample);
    return n;
}

static void report_ppl(FILE *out, const recs *R) {
    int32_t ctxs[32], n_ctx;
    distinct_ctx(R, "ppl", ctxs, &n_ctx);
    if (!n_ctx) return;
    fprintf(out, "## ppl: perplexity of decoded tokens, ratio to full\n\n"
                 "Dense prefill of P tokens, then D tokens decoded one by one under each method. Each cell is\n"
                 "exp(mean NLL difference to full) over the same windows: 1.000 = full's perplexity.\n\n");
    for (int32_t i = 0; i < n_ctx; i++) {
        sel s = {"ppl", ctxs[i], NULL, -1};
        int32_t n;
        const double full = mean_score(R, &s, "full", 0, &n);
        char cap[200];
        snprintf(cap, sizeof cap, "P = %d (%d windows; full's perplexity %.3f, mean over windows)", ctxs[i],
                 count_samples(R, &s), full);
        print_table(out, R, &s, ppl_ratio, &(table_style){cap, "%.4f", 1.0, -1});
    }
}

static void report_needle_grid(FILE *out, const recs *R, const char *kind, const char *label) {
    int32_t lens[32], n_len = 0;
    double depths[32];
    int32_t n_depth = 0;
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        if (strcmp(r->task, "needle") || strcmp(r->kind, kind)) continue;
        add_int(lens, &n_len, 32, r->ctx);
        bool seen = false;
        for (int32_t j = 0; j < n_depth; j++) seen |= fabs(depths[j] - r->depth) < 1e-9;
        if (!seen && n_depth < 32) {
            int32_t j = n_depth++;
            for (; j > 0 && depths[j - 1] > r->depth; j--) depths[j] = depths[j - 1];
            depths[j] = r->depth;
        }
    }
    fprintf(out, "%s accuracy (%%) by needle depth (rows) and prompt length (columns):\n\n| depth |", label);
    for (int32_t j = 0; j < n_len; j++) fprintf(out, " %d |", lens[j]);
    fprintf(out, "\n|---|");
    for (int32_t j = 0; j < n_len; j++) fprintf(out, "---:|");
    fprintf(out, "\n");
    for (int32_t d = 0; d < n_depth; d++) {
        fprintf(out, "| %.2f |", depths[d]);
        for (int32_t j = 0; j < n_len; j++) {
            double sum = 0.0;
            int32_t n = 0;
            for (int32_t i = 0; i < R->n; i++) {
                const rec *r = &R->r[i];
                if (!strcmp(r->task, "needle") && !strcmp(r->kind, kind) && !strcmp(r->label, label) &&
                    r->ctx == lens[j] && fabs(r->depth - depths[d]) < 1e-9) {
                    sum += r->score;
                    n++;
                }
            }
            if (n) fprintf(out, " %.0f |", 100 * sum / n);
            else fprintf(out, " – |");
        }
        fprintf(out, "\n");
    }
    fprintf(out, "\n");
}

static void report_needle(FILE *out, const recs *R) {
    const char *kinds[16];
    int32_t n_kinds = 0;
    for (int32_t i = 0; i < R->n; i++) {
        const rec *r = &R->r[i];
        if (strcmp(r->task, "needle")) continue;
        bool seen = false;
        for (int32_t k = 0; k < n_kinds; k++) seen |= !strcmp(kinds[k], r->kind);
        if (!seen && n_kinds < 16) kinds[n_kinds++] = r->kind;
    }
    if (!n_kinds) return;
    fprintf(out, "## needle: retrieval accuracy (%%)\n\n"
                 "The prompt is prefilled densely; the question is decoded token by token under each method,\n"
                 "then the answer is generated greedily. Accuracy = share of the expected values found in the\n"
                 "answer, averaged over lengths, depths and samples.\n\n");
    for (int32_t k = 0; k < n_kinds; k++) {
        sel s = {"needle", -1, kinds[k], -1};
        int32_t n;
        const double full = mean_score(R, &s, "full", 0, &n);
        char cap[256];
        snprintf(cap, sizeof cap, "### %s: full scores %.0f%% over %d prompts%s", kinds[k], 100 * full, n,
                 full < 0.5 ? " — **uninformative for this model** (full under 50%)" : "");
        print_table(out, R, &s, mean_score, &(table_style){cap, "%.0f", 100.0, +1});
        if (n) report_needle_grid(out, R, kinds[k], "full");
    }
}

static void report_gen(FILE *out, const recs *R) {
    int32_t ctxs[32], n_ctx;
    distinct_ctx(R, "gen", ctxs, &n_ctx);
    if (!n_ctx) return;
    fprintf(out, "## gen: long generation against full\n\n"
                 "full greedily generates N tokens; each method is teacher-forced on them (argmax agreement,\n"
                 "mean KL(full || method) per token) and generates its own N tokens (repetition = share of\n"
                 "4-grams already seen earlier in its text).\n\n");
    for (int32_t i = 0; i < n_ctx; i++) {
        sel s = {"gen", ctxs[i], NULL, -1};
        char cap[160];
        snprintf(cap, sizeof cap, "Prompt of %d tokens — agreement with full (%%)", ctxs[i]);
        print_table(out, R, &s, mean_score, &(table_style){cap, "%.1f", 100.0, +1});
        snprintf(cap, sizeof cap, "Prompt of %d tokens — KL(full || method), nats per token", ctxs[i]);
        print_table(out, R, &s, mean_kl, &(table_style){cap, "%.4f", 1.0, -1});
        snprintf(cap, sizeof cap, "Prompt of %d tokens — repetition of the method's own generation (%%)", ctxs[i]);
        print_table(out, R, &s, mean_repetition, &(table_style){cap, "%.1f", 100.0, 0});
    }
}

static void report_ca(FILE *out, const recs *R) {
    int32_t ctxs[32], n_ctx;
    distinct_ctx(R, "ca", ctxs, &n_ctx);
    if (!n_ctx) return;
    fprintf(out, "## ca: contextual agreement (%%) with the exact top-K\n\n"
                 "Every layer and query head, averaged over the decode steps and passages.\n\n");
    for (int32_t i = 0; i < n_ctx; i++) {
        sel s = {"ca", ctxs[i], NULL, -1};
        char cap[200];
        snprintf(cap, sizeof cap, "Context %d tokens, columns K", ctxs[i]);
        print_table(out, R, &s, mean_score, &(table_style){cap, "%.1f", 100.0, +1});
        bool has_mass = false; /* results written before mass recall was recorded have none */
        for (int32_t j = 0; j < R->n && !has_mass; j++)
            has_mass = !strcmp(R->r[j].task, "ca") && R->r[j].ctx == ctxs[i] && !isnan(R->r[j].mass);
        if (!has_mass) continue;
        snprintf(cap, sizeof cap, "Context %d tokens — attention-mass recall (%%): the share of each head's exact "
                 "softmax weight the chosen tokens hold", ctxs[i]);
        print_table(out, R, &s, mean_mass, &(table_style){cap, "%.1f", 100.0, +1});
    }
}

/* Quality against bytes: every measured (row, budget) of one table as a
 * point, sorted by the KV and label bytes a decode step reads, so that the
 * best method at equal bytes can be read off. A point is on the frontier
 * when no other non-oracle point reads at most as many bytes and scores
 * better; oracle reads all of K and is shown for reference only. */
typedef struct point {
    const rec *row;
    int32_t budget;
    double bytes, quality;
} point;

static int cmp_point(const void *a, const void *b) {
    const point *x = a, *y = b;
    return (x->bytes > y->bytes) - (x->bytes < y->bytes);
}

static double mean_bytes(const recs *R, const sel *s, const char *label, int32_t budget, int32_t *count) {
    return mean_field(R, s, label, budget, count, offsetof(rec, bytes));
}

static void print_bytes_table(FILE *out, const recs *R, const sel *s, cell_fn quality, const table_style *st,
                              const char *column) {
    axes a;
    find_axes(R, s, &a);
    point pts[64 * 33];
    int32_t n = 0;
    for (int32_t i = 0; i < a.n_rows; i++) {
        const bool full = !strcmp(a.rows[i]->method, "full");
        for (int32_t b = 0; b < (full ? 1 : a.n_budgets); b++) {
            const int32_t budget = full ? 0 : a.budgets[b];
            int32_t cnt;
            const double q = quality(R, s, a.rows[i]->label, budget, &cnt),
                         by = mean_bytes(R, s, a.rows[i]->label, budget, &cnt);
            if (!isnan(q) && !isnan(by)) pts[n++] = (point){a.rows[i], budget, by, q};
        }
    }
    if (!n) return;
    qsort(pts, (size_t)n, sizeof *pts, cmp_point);
    fprintf(out, "%s\n\n| method | budget | MB per step | %s | frontier |\n|---|---:|---:|---:|:-:|\n", st->what,
            column);
    for (int32_t i = 0; i < n; i++) {
        bool dominated = false;
        for (int32_t j = 0; j < n && !dominated; j++)
            dominated = j != i && !is_baseline_row(pts[j].row) && pts[j].bytes <= pts[i].bytes &&
                        (st->better > 0 ? pts[j].quality > pts[i].quality : pts[j].quality < pts[i].quality);
        char num[32];
        snprintf(num, sizeof num, st->fmt, pts[i].quality * st->scale);
        fprintf(out, "| %s | %s%d | %.2f | %s | %s |\n", pts[i].row->label, pts[i].budget ? "" : "all ",
                pts[i].budget ? pts[i].budget : pts[i].row->ctx, pts[i].bytes / 1e6, num,
                strcmp(pts[i].row->method, "oracle") && !dominated ? "yes" : "");
    }
    fprintf(out, "\n");
}

static void report_bytes(FILE *out, const recs *R) {
    bool any = false;
    for (int32_t i = 0; i < R->n && !any; i++) any = !isnan(R->r[i].bytes);
    if (!any) return;
    fprintf(out, "## Quality against bytes read per decode step\n\n"
                 "KV rows, labels and page summaries each method reads per decoded token (all layers, at the\n"
                 "middle of the scored stretch), beside its quality. Frontier: no other method (oracle aside)\n"
                 "reads at most as many bytes and scores better.\n\n");
    const char *tasks[] = {"ppl", "needle", "ca"};
    for (int32_t t = 0; t < 3; t++) {
        int32_t ctxs[32], n_ctx;
        distinct_ctx(R, tasks[t], ctxs, &n_ctx);
        for (int32_t i = 0; i < n_ctx; i++) {
            sel s = {tasks[t], ctxs[i], NULL, -1};
            char cap[160];
            if (t == 0) {
                snprintf(cap, sizeof cap, "### ppl, P = %d", ctxs[i]);
                print_bytes_table(out, R, &s, ppl_ratio, &(table_style){cap, "%.4f", 1.0, -1}, "ppl ratio to full");
            } else if (t == 1) {
                snprintf(cap, sizeof cap, "### needle, prompts of %d tokens (every kind)", ctxs[i]);
                print_bytes_table(out, R, &s, mean_score, &(table_style){cap, "%.0f", 100.0, +1}, "accuracy (%)");
            } else {
                snprintf(cap, sizeof cap, "### ca, context %d", ctxs[i]);
                print_bytes_table(out, R, &s, mean_mass, &(table_style){cap, "%.1f", 100.0, +1},
                                  "mass recall (%)");
            }
        }
    }
}

fasa_status eval_report_write(const cJSON *results, FILE *out) {
    recs R;
    fasa_status st = load(results, &R);
    if (st) return st;
    const char *model = R.n ? R.r[0].model : "";
    fprintf(out, "# Evaluation report\n\n%d results%s%s.\n\n", R.n, *model ? " for " : "", model);
    report_ppl(out, &R);
    report_needle(out, &R);
    report_gen(out, &R);
    report_ca(out, &R);
    report_bytes(out, &R);
    free(R.r);
    return FASA_OK;
}
