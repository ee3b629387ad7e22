/* Baseline decode-attention policies (stream, h2o, snapkv, quest, sparq,
 * random), driven the way the engine drives them (append, prefill in chunks,
 * select + observe per decode step) over a synthetic KV cache, and checked
 * against brute-force float64 recomputations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/policy.h"
#include "attn/quest.h"
#include "kv.h"

enum { N_LAYERS = 2, N_KV = 2, GROUP = 3, N_HEADS = N_KV * GROUP, D = 16, N_CTX = 300 };

static const char *const methods[] = {"stream", "h2o", "snapkv", "quest", "sparq", "random"};
enum { N_METHODS = sizeof methods / sizeof methods[0] };

typedef struct fixture {
    fasa_kv kv;
    float q[N_LAYERS][N_CTX][N_HEADS][D]; /* the query of every position */
} fixture;

/* ---- synthetic data ---------------------------------------------------- */

static uint64_t rng = 88172645463325252u;

static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static float gauss(float sd) {
    const double u = uniform() + 1e-12, v = uniform();
    return (float)(sd * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static void store_random(fasa_kv *kv, int32_t layer, int32_t pos) {
    float k[N_KV * D], v[N_KV * D];
    for (int i = 0; i < N_KV * D; i++) k[i] = gauss(1.0f), v[i] = gauss(1.0f);
    kv_store(kv, layer, pos, k, v);
}

static fixture *fixture_new(fasa_kv_type type) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(kv_init(&f->kv, N_LAYERS, N_KV, D, N_CTX, type), FASA_OK);
    for (int l = 0; l < N_LAYERS; l++)
        for (int pos = 0; pos < N_CTX; pos++) {
            store_random(&f->kv, l, pos);
            /* sd 2: logits with sd ~2 after the 1/sqrt(d) scale, so that
             * attention is peaked and rankings are not near-ties */
            for (int h = 0; h < N_HEADS; h++)
                for (int i = 0; i < D; i++) f->q[l][pos][h][i] = gauss(2.0f);
        }
    f->kv.n_tokens = N_CTX;
    return f;
}

static void fixture_free(fixture *f) {
    kv_free(&f->kv);
    free(f);
}

static void key(const fixture *f, int32_t l, int32_t kvh, int32_t pos, float *out) {
    kv_load_row(&f->kv, kv_k_row(&f->kv, l, kvh, pos), out);
}

static double logit(const fixture *f, const float *q, int32_t l, int32_t kvh, int32_t pos) {
    float k[D];
    key(f, l, kvh, pos, k);
    double s = 0;
    for (int i = 0; i < D; i++) s += (double)q[i] * k[i];
    return s / sqrt((double)D);
}

/* w[j] = softmax over keys 0..n-1 of q's scaled logits (float64). */
static void softmax_prefix(const fixture *f, const float *q, int32_t l, int32_t kvh, int32_t n, double *w) {
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) w[j] = logit(f, q, l, kvh, j), mx = fmax(mx, w[j]);
    for (int j = 0; j < n; j++) sum += (w[j] = exp(w[j] - mx));
    for (int j = 0; j < n; j++) w[j] /= sum;
}

/* ---- driving a policy like the engine ---------------------------------- */

static attn_policy *create(fasa_attn_params prm, int32_t n_cached) {
    const attn_shape shape = {N_LAYERS, N_HEADS, N_KV, D, N_CTX, FASA_ROPE_INTERLEAVED};
    attn_policy *p = NULL;
    const fasa_status st = attn_policy_create(&prm, &shape, n_cached, &p);
    if (st || attn_policy_bind_cpu(p)) fail_msg("creating %s: %s", prm.method, fasa_last_error());
    assert_non_null(p);
    return p;
}

/* Appends and prefills positions [from, to) in chunks of `chunk`. */
static void prompt(attn_policy *p, const fixture *f, int32_t from, int32_t to, int32_t chunk) {
    for (int32_t pos0 = from; pos0 < to; pos0 += chunk) {
        const int32_t n = to - pos0 < chunk ? to - pos0 : chunk;
        for (int l = 0; l < N_LAYERS; l++) {
            if (p->ops->append)
                for (int32_t t = 0; t < n; t++) p->ops->append(p, &f->kv, l, pos0 + t);
            if (p->ops->prefill) p->ops->prefill(p, &f->kv, l, &f->q[l][pos0][0][0], pos0, n);
        }
    }
}

/* What one decode step selected: per layer and query head (a group's set is
 * recorded under its first head), -1 meaning every visible token. */
typedef struct step {
    int32_t n[N_LAYERS][N_HEADS];
    int32_t idx[N_LAYERS][N_HEADS][N_CTX];
} step;

static void check_valid(int32_t n, int32_t budget, int32_t n_keys, const int32_t *idx) {
    if (n < 0) {
        assert_int_equal(n, -1);
        assert_true(budget >= n_keys);
        return;
    }
    assert_true(n >= 1 && n <= budget && n <= n_keys);
    for (int32_t i = 0; i < n; i++) {
        assert_true(idx[i] >= 0 && idx[i] < n_keys);
        if (i) assert_true(idx[i] > idx[i - 1]);
    }
    if (budget >= n_keys) {
        assert_int_equal(n, n_keys);
        for (int32_t i = 0; i < n; i++) assert_int_equal(idx[i], i);
    }
}

/* Decodes the token at pos: append, then select + observe per unit, the
 * observed weights computed here in float64. Checks every selection. */
static void decode(attn_policy *p, const fixture *f, int32_t pos, step *out) {
    const int32_t n_keys = pos + 1, n_q = p->per_head ? 1 : GROUP;
    /* exactly the declared scratch, so that the sanitizers see an overrun */
    float *scratch = malloc((size_t)(p->scratch_floats ? p->scratch_floats : 1) * sizeof *scratch);
    float *w = malloc((size_t)GROUP * N_CTX * sizeof *w);
    double *lg = malloc(N_CTX * sizeof *lg);
    assert_true(scratch && w && lg);
    for (int l = 0; l < N_LAYERS; l++)
        if (p->ops->append) p->ops->append(p, &f->kv, l, pos);
    for (int l = 0; l < N_LAYERS; l++)
        for (int kvh = 0; kvh < N_KV; kvh++)
            for (int qh = kvh * GROUP; qh < (kvh + 1) * GROUP; qh += n_q) {
                const attn_query aq = {&f->kv, l, kvh, &f->q[l][pos][qh][0], n_q, qh, n_keys};
                int32_t *idx = out->idx[l][qh];
                const int32_t n = p->ops->select(p, &aq, idx, scratch);
                check_valid(n, p->params.budget, n_keys, idx);
                out->n[l][qh] = n;
                if (!p->ops->observe) continue;
                const int32_t m = n < 0 ? n_keys : n;
                for (int g = 0; g < n_q; g++) {
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j < m; j++)
                        lg[j] = logit(f, aq.q + g * D, l, kvh, n < 0 ? j : idx[j]), mx = fmax(mx, lg[j]);
                    for (int j = 0; j < m; j++) sum += (lg[j] = exp(lg[j] - mx));
                    for (int j = 0; j < m; j++) w[g * m + j] = (float)(lg[j] / sum);
                }
                p->ops->observe(p, &aq, n < 0 ? NULL : idx, m, w);
            }
    free(scratch);
    free(w);
    free(lg);
}

static void assert_same_step(const step *a, const step *b, bool per_head) {
    for (int l = 0; l < N_LAYERS; l++)
        for (int h = 0; h < N_HEADS; h += per_head ? 1 : GROUP) {
            assert_int_equal(a->n[l][h], b->n[l][h]);
            if (a->n[l][h] > 0) assert_memory_equal(a->idx[l][h], b->idx[l][h], (size_t)a->n[l][h] * sizeof(int32_t));
        }
}

static bool contains(const int32_t *idx, int32_t n, int32_t pos) {
    for (int32_t i = 0; i < n; i++)
        if (idx[i] == pos) return true;
    return false;
}

/* The positions of sel below `limit` are `want` in number, and score at
 * least as high as every other position below limit (up to tol). */
static void check_top(const int32_t *sel, int32_t n, int32_t limit, int32_t want, const double *score) {
    int32_t have = 0;
    double worst_in = INFINITY, best_out = -INFINITY;
    for (int32_t j = 0; j < limit; j++) {
        if (contains(sel, n, j)) have++, worst_in = fmin(worst_in, score[j]);
        else best_out = fmax(best_out, score[j]);
    }
    assert_int_equal(have, want);
    if (have && have < limit) {
        if (worst_in < best_out - 1e-5 * fabs(best_out) - 1e-9)
            fail_msg("selected score %.9g below unselected %.9g", worst_in, best_out);
    }
}

/* ---- every method: all-when-it-fits, valid sets ------------------ */

static fasa_attn_params params_for(const char *method, int32_t budget) {
    fasa_attn_params prm = {.method = method, .budget = budget, .seed = 7};
    if (!strcmp(method, "snapkv")) prm.window = budget < 8 ? budget : 8;
    if (!strcmp(method, "quest")) prm.page = budget < 16 ? budget : 16;
    return prm;
}

static void run_valid(fasa_kv_type type, const int32_t *budgets, int n_budgets) {
    fixture *f = fixture_new(type);
    step *s = malloc(sizeof *s);
    for (int mi = 0; mi < N_METHODS; mi++)
        for (int bi = 0; bi < n_budgets; bi++)
            for (int per_head = 1; per_head <= 2; per_head++)
                for (int refresh = 0; refresh <= 7; refresh += 7) {
                    if (refresh && strcmp(methods[mi], "snapkv")) continue;
                    fasa_attn_params prm = params_for(methods[mi], budgets[bi]);
                    prm.per_head = per_head, prm.refresh = refresh;
                    attn_policy *p = create(prm, 0);
                    prompt(p, f, 0, 90, 40);
                    for (int32_t pos = 90; pos < N_CTX; pos++) decode(p, f, pos, s);
                    attn_policy_free(p);
                }
    free(s);
    fixture_free(f);
}

static void test_valid_selections_f32(void **state) {
    (void)state;
    const int32_t budgets[] = {1, 5, 16, 17, 64, 100, 250, N_CTX};
    run_valid(FASA_KV_F32, budgets, sizeof budgets / sizeof budgets[0]);
}

static void test_valid_selections_f16(void **state) {
    (void)state;
    const int32_t budgets[] = {3, 40, 200};
    run_valid(FASA_KV_F16, budgets, sizeof budgets / sizeof budgets[0]);
}

/* budget >= visible tokens: every method attends to all of them, in order,
 * so it equals full attention exactly; exactly at the boundary too. */
static void test_budget_covers_all(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    step *s = malloc(sizeof *s);
    for (int mi = 0; mi < N_METHODS; mi++) {
        attn_policy *p = create(params_for(methods[mi], 120), 0);
        prompt(p, f, 0, 100, 50);
        for (int32_t pos = 100; pos < 120; pos++) {
            decode(p, f, pos, s);
            for (int l = 0; l < N_LAYERS; l++)
                for (int h = 0; h < N_HEADS; h += p->per_head ? 1 : GROUP)
                    if (s->n[l][h] != -1) {
                        assert_int_equal(s->n[l][h], pos + 1);
                        for (int32_t j = 0; j <= pos; j++) assert_int_equal(s->idx[l][h][j], j);
                    }
        }
        attn_policy_free(p);
    }
    free(s);
    fixture_free(f);
}

/* A context shorter than a head (n_ctx 8, head_dim 16): no buffer sized by
 * one may be used for the other. Scratch is allocated to the exact size. */
static void test_tiny_context(void **state) {
    (void)state;
    enum { T_CTX = 8, T_HEADS = 2 };
    const attn_shape shape = {1, T_HEADS, 1, D, T_CTX, FASA_ROPE_INTERLEAVED};
    fasa_kv kv;
    float q[T_CTX][T_HEADS][D], w[T_HEADS * T_CTX];
    int32_t idx[T_CTX];
    assert_int_equal(kv_init(&kv, 1, 1, D, T_CTX, FASA_KV_F16), FASA_OK);
    for (int pos = 0; pos < T_CTX; pos++) {
        float k[D], v[D];
        for (int i = 0; i < D; i++) k[i] = gauss(1.0f), v[i] = gauss(1.0f);
        kv_store(&kv, 0, pos, k, v);
        for (int h = 0; h < T_HEADS; h++)
            for (int i = 0; i < D; i++) q[pos][h][i] = gauss(2.0f);
    }
    for (int i = 0; i < T_HEADS * T_CTX; i++) w[i] = 1.0f / T_CTX;
    for (int mi = 0; mi < N_METHODS; mi++)
        for (int per_head = 1; per_head <= 2; per_head++) {
            fasa_attn_params prm = {.method = methods[mi], .budget = 4, .per_head = per_head, .page = 2,
                                    .window = 2, .refresh = 2, .sparq_r = D};
            attn_policy *p = NULL;
            if (attn_policy_create(&prm, &shape, 0, &p) || attn_policy_bind_cpu(p)) fail_msg("%s", fasa_last_error());
            float *scratch = malloc((size_t)(p->scratch_floats ? p->scratch_floats : 1) * sizeof *scratch);
            assert_non_null(scratch);
            if (p->ops->append)
                for (int32_t pos = 0; pos < 5; pos++) p->ops->append(p, &kv, 0, pos);
            if (p->ops->prefill) p->ops->prefill(p, &kv, 0, &q[0][0][0], 0, 5);
            for (int32_t pos = 5; pos < T_CTX; pos++) {
                if (p->ops->append) p->ops->append(p, &kv, 0, pos);
                const int32_t n_q = p->per_head ? 1 : T_HEADS;
                for (int qh = 0; qh < T_HEADS; qh += n_q) {
                    const attn_query aq = {&kv, 0, 0, &q[pos][qh][0], n_q, qh, pos + 1};
                    const int32_t n = p->ops->select(p, &aq, idx, scratch);
                    check_valid(n, 4, pos + 1, idx);
                    if (p->ops->observe) p->ops->observe(p, &aq, idx, n, w);
                }
            }
            free(scratch);
            attn_policy_free(p);
        }
    kv_free(&kv);
}

/* ---- stream ---------------------------------------------------------- */

static void test_stream_sinks_and_recent(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    const int32_t budgets[] = {1, 2, 10, 15, 16, 17, 40, 150};
    int32_t idx[N_CTX];
    for (int32_t sink = 0; sink <= 4; sink += 4)
        for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
            const int32_t b = budgets[bi];
            attn_policy *p = create((fasa_attn_params){.method = "stream", .budget = b, .n_sink = sink}, 0);
            const int32_t n_sink = sink ? sink : 8;
            assert_int_equal(p->params.n_sink, n_sink);
            const int32_t sinks = n_sink < b / 2 ? n_sink : b / 2;
            for (int32_t n = b + 1; n <= N_CTX; n += 37) {
                const attn_query aq = {&f->kv, 1, 1, &f->q[1][n - 1][3][0], GROUP, 3, n};
                const int32_t m = p->ops->select(p, &aq, idx, NULL);
                assert_int_equal(m, b);
                for (int32_t i = 0; i < sinks; i++) assert_int_equal(idx[i], i);
                for (int32_t i = sinks; i < b; i++) assert_int_equal(idx[i], n - b + i);
            }
            attn_policy_free(p);
        }
    fixture_free(f);
}

/* ---- quest ----------------------------------------------------------- */

static void check_quest_pages(const attn_policy *p, const fixture *f, int32_t n_tokens) {
    const int32_t page = p->params.page;
    float k[D], q[D];
    for (int l = 0; l < N_LAYERS; l++)
        for (int kvh = 0; kvh < N_KV; kvh++)
            for (int32_t pg = 0; pg * page < n_tokens; pg++) {
                const float *mm = quest_page_minmax(p, l, kvh, pg);
                const int32_t lo = pg * page, hi = lo + page < n_tokens ? lo + page : n_tokens;
                /* the statistics are exactly those of the cached keys */
                for (int c = 0; c < D; c++) {
                    float mn = INFINITY, mx = -INFINITY;
                    for (int32_t j = lo; j < hi; j++) key(f, l, kvh, j, k), mn = fminf(mn, k[c]), mx = fmaxf(mx, k[c]);
                    assert_true(mm[c] == mn && mm[D + c] == mx);
                }
                for (int trial = 0; trial < 20; trial++) {
                    for (int c = 0; c < D; c++) q[c] = gauss(2.0f);
                    const float bound = quest_page_bound(q, mm, mm + D, D);
                    for (int32_t j = lo; j < hi; j++) {
                        key(f, l, kvh, j, k);
                        double dot = 0, mag = 0;
                        for (int c = 0; c < D; c++) dot += (double)q[c] * k[c], mag += fabs((double)q[c] * k[c]);
                        if (bound < dot - 1e-5 * mag) fail_msg("page %d bound %.9g < logit %.9g", pg, bound, dot);
                    }
                }
            }
}

static void run_quest_bound(fasa_kv_type type) {
    fixture *f = fixture_new(type);
    for (int32_t page = 5; page <= 16; page += 11) {
        attn_policy *p = create((fasa_attn_params){.method = "quest", .budget = 48, .page = page}, 0);
        prompt(p, f, 0, 203, 64);
        check_quest_pages(p, f, 203);
        /* cut into a page, give the removed positions new keys, re-append:
         * the cut page must forget the old keys */
        p->ops->truncate(p, 150);
        for (int l = 0; l < N_LAYERS; l++)
            for (int32_t pos = 150; pos < 203; pos++) store_random(&f->kv, l, pos);
        prompt(p, f, 150, 181, 1);
        check_quest_pages(p, f, 181);
        attn_policy_free(p);
    }
    fixture_free(f);
}

static void test_quest_bound_f32(void **state) {
    (void)state;
    run_quest_bound(FASA_KV_F32);
}

static void test_quest_bound_f16(void **state) {
    (void)state;
    run_quest_bound(FASA_KV_F16);
}

/* The chosen tokens are whole pages (the last one up to the current token),
 * floor(budget / page) of them, with the highest bounds. */
static void test_quest_selects_top_pages(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    step *s = malloc(sizeof *s);
    for (int per_head = 1; per_head <= 2; per_head++) {
        attn_policy *p = create((fasa_attn_params){.method = "quest", .budget = 70, .per_head = per_head}, 0);
        assert_int_equal(p->params.page, 16);
        prompt(p, f, 0, 150, 64);
        for (int32_t pos = 150; pos < 170; pos++) {
            decode(p, f, pos, s);
            const int32_t n_pages = (pos + 16) / 16;
            for (int l = 0; l < N_LAYERS; l++)
                for (int qh = 0; qh < N_HEADS; qh += per_head == 1 ? 1 : GROUP) {
                    const int32_t kvh = qh / GROUP, n_q = per_head == 1 ? 1 : GROUP;
                    double score[N_CTX / 16 + 1];
                    int32_t sel_pages[N_CTX / 16 + 1], n_sel = 0, m = 0;
                    for (int32_t pg = 0; pg < n_pages; pg++) {
                        const float *mm = quest_page_minmax(p, l, kvh, pg);
                        score[pg] = 0;
                        for (int g = 0; g < n_q; g++)
                            for (int c = 0; c < D; c++) {
                                const double qc = f->q[l][pos][qh + g][c];
                                score[pg] += fmax(qc * mm[c], qc * mm[D + c]);
                            }
                        const int32_t lo = pg * 16, hi = lo + 16 < pos + 1 ? lo + 16 : pos + 1;
                        if (contains(s->idx[l][qh], s->n[l][qh], lo)) {
                            for (int32_t j = lo; j < hi; j++) assert_int_equal(s->idx[l][qh][m++], j);
                            sel_pages[n_sel++] = pg;
                        }
                    }
                    assert_int_equal(m, s->n[l][qh]);
                    check_top(sel_pages, n_sel, n_pages, 70 / 16, score);
                }
        }
        attn_policy_free(p);
    }
    free(s);
    fixture_free(f);
}

/* ---- h2o ------------------------------------------------------------- */

typedef struct h2o_ref {
    double acc[N_LAYERS][N_HEADS][N_CTX];
} h2o_ref;

static void h2o_ref_prompt(h2o_ref *r, const fixture *f, int32_t n) {
    double w[N_CTX];
    memset(r, 0, sizeof *r);
    for (int l = 0; l < N_LAYERS; l++)
        for (int h = 0; h < N_HEADS; h++)
            for (int32_t t = 0; t < n; t++) {
                softmax_prefix(f, f->q[l][t][h], l, h / GROUP, t + 1, w);
                for (int32_t j = 0; j <= t; j++) r->acc[l][h][j] += w[j];
            }
}

/* Checks one decode step against the reference, then adds the weights the
 * step's heads gave (recomputed, as the test's decode passed them). */
static void h2o_ref_step(h2o_ref *r, const fixture *f, const attn_policy *p, const step *s, int32_t pos) {
    const int32_t n_keys = pos + 1, budget = p->params.budget, recent = p->params.n_recent;
    const int32_t n_q = p->per_head ? 1 : GROUP;
    for (int l = 0; l < N_LAYERS; l++)
        for (int qh = 0; qh < N_HEADS; qh += n_q) {
            const int32_t *idx = s->idx[l][qh], n = s->n[l][qh];
            assert_int_equal(n, budget);
            for (int32_t j = n_keys - recent; j < n_keys; j++) assert_true(contains(idx, n, j));
            double score[N_CTX] = {0};
            for (int g = 0; g < n_q; g++)
                for (int32_t j = 0; j < n_keys; j++) score[j] += r->acc[l][qh + g][j];
            check_top(idx, n, n_keys - recent, budget - recent, score);
            for (int g = 0; g < n_q; g++) {
                double lg[N_CTX], mx = -INFINITY, sum = 0;
                for (int32_t j = 0; j < n; j++) lg[j] = logit(f, f->q[l][pos][qh + g], l, qh / GROUP, idx[j]), mx = fmax(mx, lg[j]);
                for (int32_t j = 0; j < n; j++) sum += (lg[j] = exp(lg[j] - mx));
                for (int32_t j = 0; j < n; j++) r->acc[l][qh + g][idx[j]] += (float)(lg[j] / sum);
            }
        }
}

static void run_h2o(fasa_kv_type type) {
    fixture *f = fixture_new(type);
    h2o_ref *r = malloc(sizeof *r);
    step *s = malloc(sizeof *s), *first = malloc(sizeof *first * 20);
    for (int per_head = 1; per_head <= 2; per_head++)
        for (int32_t n_recent = 0; n_recent <= 10; n_recent += 10) {
            attn_policy *p = create((fasa_attn_params){.method = "h2o", .budget = 60, .per_head = per_head,
                                                       .n_recent = n_recent},
                                    0);
            assert_int_equal(p->params.n_recent, n_recent ? n_recent : 30);
            prompt(p, f, 0, 120, 50);
            h2o_ref_prompt(r, f, 120);
            for (int32_t pos = 120; pos < 140; pos++) {
                decode(p, f, pos, &first[pos - 120]);
                h2o_ref_step(r, f, p, &first[pos - 120], pos);
            }
            /* back to the end of the prompt: the same decode again */
            p->ops->truncate(p, 120);
            for (int32_t pos = 120; pos < 140; pos++) {
                decode(p, f, pos, s);
                assert_same_step(s, &first[pos - 120], p->per_head);
            }
            /* emptied: a new prompt starts from nothing */
            p->ops->truncate(p, 0);
            prompt(p, f, 0, 100, 64);
            h2o_ref_prompt(r, f, 100);
            decode(p, f, 100, s);
            h2o_ref_step(r, f, p, s, 100);
            attn_policy_free(p);
        }
    free(first);
    free(s);
    free(r);
    fixture_free(f);
}

static void test_h2o_heavy_hitters(void **state) {
    (void)state;
    run_h2o(FASA_KV_F32);
    run_h2o(FASA_KV_F16);
}

/* ---- snapkv ---------------------------------------------------------- */

/* SnapKV's pooled vote at position `at` for the query heads [qh, qh + n_q),
 * in float64: out[j] for j < at - w. */
static void snapkv_ref(const fixture *f, int l, int qh, int n_q, int32_t at, int32_t w, int32_t kernel,
                       double *out) {
    const int32_t before = at - w;
    double votes[N_CTX] = {0}, wt[N_CTX];
    for (int32_t t = before; t < at; t++)
        for (int g = 0; g < n_q; g++) {
            softmax_prefix(f, f->q[l][t][qh + g], l, qh / GROUP, t + 1, wt);
            for (int32_t j = 0; j < before; j++) votes[j] += wt[j];
        }
    for (int32_t j = 0; j < before; j++) {
        out[j] = -INFINITY;
        for (int32_t i = j - (kernel - 1) / 2; i <= j + kernel / 2; i++)
            if (i >= 0 && i < before) out[j] = fmax(out[j], votes[i]);
    }
}

/* One step's set: [max(at - w, 0), n_keys) and, in the budget's remaining
 * room, the best-voted older positions; or the last budget tokens. */
static void snapkv_check(const fixture *f, const attn_policy *p, const step *s, int32_t pos, int32_t at) {
    const int32_t n_keys = pos + 1, budget = p->params.budget, w = p->params.window;
    const int32_t n_q = p->per_head ? 1 : GROUP, tail = at - w > 0 ? at - w : 0, room = budget - (n_keys - tail);
    for (int l = 0; l < N_LAYERS; l++)
        for (int qh = 0; qh < N_HEADS; qh += n_q) {
            const int32_t *idx = s->idx[l][qh], n = s->n[l][qh];
            assert_int_equal(n, budget);
            if (room <= 0) {
                for (int32_t i = 0; i < n; i++) assert_int_equal(idx[i], n_keys - budget + i);
                continue;
            }
            for (int32_t j = tail; j < n_keys; j++) assert_true(contains(idx, n, j));
            double pooled[N_CTX];
            snapkv_ref(f, l, qh, n_q, at, w, p->params.pool_kernel, pooled);
            check_top(idx, n, tail, room < tail ? room : tail, pooled);
        }
}

static void test_snapkv_vote(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    step *s = malloc(sizeof *s);
    const int32_t kernels[] = {7, 1, 4};
    for (int per_head = 1; per_head <= 2; per_head++)
        for (int ki = 0; ki < 3; ki++) {
            attn_policy *p = create((fasa_attn_params){.method = "snapkv", .budget = 40, .window = 8,
                                                       .pool_kernel = kernels[ki], .per_head = per_head},
                                    0);
            /* chunks of 100, 47, 3: the window spans two prefill calls */
            prompt(p, f, 0, 100, 100);
            prompt(p, f, 100, 147, 47);
            prompt(p, f, 147, 150, 3);
            for (int32_t pos = 150; pos < 185; pos++) {
                decode(p, f, pos, s);
                snapkv_check(f, p, s, pos, 150);
            }
            /* a cut into the prompt drops the vote: recent tokens only */
            p->ops->truncate(p, 140);
            decode(p, f, 140, s);
            for (int l = 0; l < N_LAYERS; l++)
                for (int h = 0; h < N_HEADS; h += per_head == 1 ? 1 : GROUP)
                    for (int32_t i = 0; i < 40; i++) assert_int_equal(s->idx[l][h][i], 141 - 40 + i);
            attn_policy_free(p);
        }
    free(s);
    fixture_free(f);
}

static void test_snapkv_refresh(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F16);
    step *s = malloc(sizeof *s), *first = malloc(sizeof *first * 40);
    for (int per_head = 1; per_head <= 2; per_head++) {
        attn_policy *p = create((fasa_attn_params){.method = "snapkv", .budget = 50, .window = 10, .refresh = 6,
                                                   .per_head = per_head},
                                0);
        assert_int_equal(p->params.pool_kernel, 7);
        prompt(p, f, 0, 130, 64);
        for (int32_t pos = 130; pos < 170; pos++) {
            decode(p, f, pos, &first[pos - 130]);
            snapkv_check(f, p, &first[pos - 130], pos, 130 + (pos + 1 - 130) / 6 * 6);
        }
        /* back to the end of the prompt: the same decode again */
        p->ops->truncate(p, 130);
        for (int32_t pos = 130; pos < 170; pos++) {
            decode(p, f, pos, s);
            assert_same_step(s, &first[pos - 130], p->per_head);
        }
        attn_policy_free(p);
    }
    free(first);
    free(s);
    fixture_free(f);
}

/* Installed on a filled cache, it sees the last prompt queries replayed. */
static void test_snapkv_installed_late(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    step *s = malloc(sizeof *s);
    attn_policy *p = create((fasa_attn_params){.method = "snapkv", .budget = 40, .window = 8}, 150);
    for (int l = 0; l < N_LAYERS; l++) p->ops->prefill(p, &f->kv, l, &f->q[l][150 - 64][0][0], 150 - 64, 64);
    decode(p, f, 150, s);
    snapkv_check(f, p, s, 150, 150);
    attn_policy_free(p);
    free(s);
    fixture_free(f);
}

/* ---- sparq ----------------------------------------------------------- */

static void run_sparq_equals_oracle(fasa_kv_type type) {
    fixture *f = fixture_new(type);
    int32_t a[N_CTX], b[N_CTX];
    for (int per_head = 1; per_head <= 2; per_head++)
        for (int32_t budget = 1; budget < N_CTX; budget += 41) {
            attn_policy *sp = create((fasa_attn_params){.method = "sparq", .budget = budget, .sparq_r = D,
                                                        .per_head = per_head},
                                     0);
            attn_policy *orc = create((fasa_attn_params){.method = "oracle", .budget = budget, .per_head = per_head},
                                     0);
            float *s1 = malloc((size_t)sp->scratch_floats * sizeof(float));
            float *s2 = malloc((size_t)orc->scratch_floats * sizeof(float));
            const int32_t n_q = per_head == 1 ? 1 : GROUP;
            for (int32_t n = budget + 1; n <= N_CTX; n += 29)
                for (int l = 0; l < N_LAYERS; l++)
                    for (int qh = 0; qh < N_HEADS; qh += n_q) {
                        const attn_query aq = {&f->kv, l, qh / GROUP, &f->q[l][n - 1][qh][0], n_q, qh, n};
                        const int32_t ma = sp->ops->select(sp, &aq, a, s1), mb = orc->ops->select(orc, &aq, b, s2);
                        assert_int_equal(ma, mb);
                        assert_memory_equal(a, b, (size_t)ma * sizeof *a);
                    }
            free(s1);
            free(s2);
            attn_policy_free(sp);
            attn_policy_free(orc);
        }
    fixture_free(f);
}

static void test_sparq_full_r_equals_oracle(void **state) {
    (void)state;
    run_sparq_equals_oracle(FASA_KV_F32);
    run_sparq_equals_oracle(FASA_KV_F16);
}

/* With the default r = head_dim / 4, the chosen tokens are the best by the
 * partial dot product over each head's r largest |q| coordinates. */
static void test_sparq_partial_scores(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    int32_t idx[N_CTX];
    for (int per_head = 1; per_head <= 2; per_head++) {
        attn_policy *p = create((fasa_attn_params){.method = "sparq", .budget = 50, .per_head = per_head}, 0);
        assert_int_equal(p->params.sparq_r, D / 4);
        float *scratch = malloc((size_t)p->scratch_floats * sizeof(float));
        const int32_t n_q = per_head == 1 ? 1 : GROUP;
        for (int32_t n = 51; n <= N_CTX; n += 31)
            for (int qh = 0; qh < N_HEADS; qh += n_q) {
                const attn_query aq = {&f->kv, 1, qh / GROUP, &f->q[1][n - 1][qh][0], n_q, qh, n};
                const int32_t m = p->ops->select(p, &aq, idx, scratch);
                double score[N_CTX] = {0};
                for (int g = 0; g < n_q; g++) {
                    const float *q = aq.q + g * D;
                    bool use[D] = {0};
                    for (int r = 0; r < D / 4; r++) { /* r-th largest |q_i| */
                        int best = -1;
                        for (int i = 0; i < D; i++)
                            if (!use[i] && (best < 0 || fabsf(q[i]) > fabsf(q[best]))) best = i;
                        use[best] = true;
                    }
                    for (int32_t j = 0; j < n; j++) {
                        float k[D];
                        key(f, 1, qh / GROUP, j, k);
                        for (int i = 0; i < D; i++)
                            if (use[i]) score[j] += (double)q[i] * k[i];
                    }
                }
                check_top(idx, m, n, 50, score);
            }
        free(scratch);
        attn_policy_free(p);
    }
    fixture_free(f);
}

/* ---- random ---------------------------------------------------------- */

static int32_t draw(const fixture *f, uint64_t seed, int32_t budget, int32_t n, int layer, int kvh, int32_t *idx) {
    attn_policy *p = create((fasa_attn_params){.method = "random", .budget = budget, .seed = seed}, 0);
    float scratch[(N_CTX + 31) / 32];
    assert_true(p->scratch_floats <= (int64_t)(sizeof scratch / sizeof *scratch));
    const attn_query aq = {&f->kv, layer, kvh, &f->q[layer][n - 1][kvh * GROUP][0], GROUP, kvh * GROUP, n};
    const int32_t m = p->ops->select(p, &aq, idx, scratch);
    check_valid(m, budget, n, idx);
    attn_policy_free(p);
    return m;
}

static void test_random_reproducible_and_uniform(void **state) {
    (void)state;
    fixture *f = fixture_new(FASA_KV_F32);
    int32_t a[N_CTX], b[N_CTX];
    int differ = 0;
    for (int32_t n = 50; n <= N_CTX; n += 50) {
        const int32_t m = draw(f, 42, 20, n, 1, 1, a);
        assert_int_equal(m, 20);
        assert_int_equal(draw(f, 42, 20, n, 1, 1, b), m);
        assert_memory_equal(a, b, (size_t)m * sizeof *a);
        draw(f, 43, 20, n, 1, 1, b);
        differ += memcmp(a, b, (size_t)m * sizeof *a) != 0;
        draw(f, 42, 20, n, 1, 0, b); /* another KV head draws its own set */
        differ += memcmp(a, b, (size_t)m * sizeof *a) != 0;
    }
    assert_int_equal(differ, 12);
    /* 4000 draws of 10 of 40 positions: each position expects 1000 hits;
     * chi-square over 39 degrees of freedom has mean 39, sd 8.8, and passes
     * 120 with probability ~1e-9; a biased draw lands far above. */
    enum { N = 40, K = 10, DRAWS = 4000 };
    double hits[N] = {0}, chi2 = 0;
    for (uint64_t seed = 1; seed <= DRAWS; seed++) {
        draw(f, seed, K, N, 0, 0, a);
        for (int i = 0; i < K; i++) hits[a[i]]++;
    }
    const double expect = (double)DRAWS * K / N;
    for (int i = 0; i < N; i++) chi2 += (hits[i] - expect) * (hits[i] - expect) / expect;
    if (chi2 > 120) fail_msg("chi-square %.1f over 39 degrees of freedom", chi2);
    fixture_free(f);
}

/* ---- bad parameters -------------------------------------------------- */

static void expect_arg_error(fasa_attn_params prm, int32_t n_cached, const char *mention) {
    const attn_shape shape = {N_LAYERS, N_HEADS, N_KV, D, N_CTX, FASA_ROPE_INTERLEAVED};
    attn_policy *p = (attn_policy *)1;
    fasa_clear_error();
    assert_int_equal(attn_policy_create(&prm, &shape, n_cached, &p), FASA_E_ARG);
    assert_null(p);
    if (!strstr(fasa_last_error(), mention)) fail_msg("message '%s' does not mention '%s'", fasa_last_error(), mention);
}

static void test_bad_params(void **state) {
    (void)state;
    for (int mi = 0; mi < N_METHODS; mi++) expect_arg_error((fasa_attn_params){.method = methods[mi]}, 0, "budget");
    expect_arg_error((fasa_attn_params){.method = "stream", .budget = 64, .n_sink = -1}, 0, "n_sink");
    expect_arg_error((fasa_attn_params){.method = "h2o", .budget = 64, .n_recent = -1}, 0, "n_recent");
    expect_arg_error((fasa_attn_params){.method = "h2o", .budget = 64, .n_recent = 65}, 0, "n_recent");
    expect_arg_error((fasa_attn_params){.method = "h2o", .budget = 64}, 10, "before the prompt");
    expect_arg_error((fasa_attn_params){.method = "snapkv", .budget = 64, .window = -1}, 0, "window");
    expect_arg_error((fasa_attn_params){.method = "snapkv", .budget = 64, .pool_kernel = -3}, 0, "pool_kernel");
    expect_arg_error((fasa_attn_params){.method = "snapkv", .budget = 64, .refresh = -1}, 0, "refresh");
    expect_arg_error((fasa_attn_params){.method = "snapkv", .budget = 16}, 0, "window");
    expect_arg_error((fasa_attn_params){.method = "snapkv", .budget = 100, .window = 65}, 10, "window");
    expect_arg_error((fasa_attn_params){.method = "quest", .budget = 64, .page = -1}, 0, "page");
    expect_arg_error((fasa_attn_params){.method = "quest", .budget = 15}, 0, "page");
    expect_arg_error((fasa_attn_params){.method = "sparq", .budget = 64, .sparq_r = -1}, 0, "sparq_r");
    expect_arg_error((fasa_attn_params){.method = "sparq", .budget = 64, .sparq_r = D + 1}, 0, "sparq_r");
    /* the boundaries themselves are fine */
    attn_policy_free(create((fasa_attn_params){.method = "snapkv", .budget = 100, .window = 64}, 10));
    attn_policy_free(create((fasa_attn_params){.method = "h2o", .budget = 64, .n_recent = 64}, 0));
    attn_policy_free(create((fasa_attn_params){.method = "quest", .budget = 16}, 0));
    attn_policy_free(create((fasa_attn_params){.method = "sparq", .budget = 8, .sparq_r = D}, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_selections_f32),
        cmocka_unit_test(test_valid_selections_f16),
        cmocka_unit_test(test_budget_covers_all),
        cmocka_unit_test(test_tiny_context),
        cmocka_unit_test(test_stream_sinks_and_recent),
        cmocka_unit_test(test_quest_bound_f32),
        cmocka_unit_test(test_quest_bound_f16),
        cmocka_unit_test(test_quest_selects_top_pages),
        cmocka_unit_test(test_h2o_heavy_hitters),
        cmocka_unit_test(test_snapkv_vote),
        cmocka_unit_test(test_snapkv_refresh),
        cmocka_unit_test(test_snapkv_installed_late),
        cmocka_unit_test(test_sparq_full_r_equals_oracle),
        cmocka_unit_test(test_sparq_partial_scores),
        cmocka_unit_test(test_random_reproducible_and_uniform),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
