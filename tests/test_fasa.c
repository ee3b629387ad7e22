/* FASA on the CPU:
 *  - calibration is deterministic, its file round-trips, and a file for
 *    another model, a truncated file, N_tip > d/2 or a budget of 0 are errors;
 *  - fasa_attention_step matches a straightforward float64 implementation of
 *    TIP + top-k + exact attention for several shapes;
 *  - fasa with every FC selects what oracle selects;
 *  - every policy with a budget covering the context equals full attention;
 *  - greedy calibration: each group's order is a permutation of its FCs, the
 *    recall with every FC equals the CA probe's for the group oracle, the
 *    file round-trips it, and fasa takes its first n_tip FCs;
 *  - the CA probe: the oracle holds the most attention mass at every budget
 *    (its top-K logits are the top-K weights), a budget covering the context
 *    scores 1, and the overall means are the means of the per-layer ones. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "attn/policy.h"
#include "context.h"
#include "fasa.h"
#include "measure/ca.h"
#include "calib/calib.h"
#include "labels.h"
#include "quant.h"

static fasa_model *model;
static int32_t *text_ids;
static int32_t n_text;
static fasa_calib *shared_cal; /* made once in setup; calibration is the slow part */

static const char *TEXT =
    "It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled "
    "cabbage and old rag mats. At one end of it a coloured poster, too large for indoor display, had been "
    "tacked to the wall. It depicted simply an enormous face, more than a metre wide: the face of a man of "
    "about forty-five, with a heavy black moustache and ruggedly handsome features. The flat was seven "
    "flights up, and he was thirty-nine and had a varicose ulcer above his right ankle, went slowly, resting "
    "several times on the way. On each landing, opposite the lift-shaft, the poster with the enormous face "
    "gazed from the wall. It was one of those pictures which are so contrived that the eyes follow you "
    "about when you move. Outside, even through the shut window-pane, the world looked cold. Down in the "
    "street little eddies of wind were whirling dust and torn paper into spirals, and though the sun was "
    "shining and the sky a harsh blue, there seemed to be no colour in anything, except the posters that "
    "were plastered everywhere. The black-moustachio'd face gazed down from every commanding corner.";

static uint64_t rng = 0x1234567887654321ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* A quick calibration: K* = 32 over the last 4 tokens of the text. */
static fasa_calib_params small_params(void) {
    fasa_calib_params p = fasa_calib_default_params();
    p.budget = 32;
    p.n_decode = 4;
    p.n_threads = 2;
    return p;
}

static fasa_calib *calibrate_small(void) {
    const fasa_calib_params p = small_params();
    fasa_calib *c = NULL;
    if (fasa_calibrate(model, text_ids, n_text, &p, &c) != FASA_OK) fail_msg("%s", fasa_last_error());
    return c;
}

static void test_calibration_deterministic_and_round_trip(void **state) {
    fasa_calib *a = shared_cal, *b = calibrate_small();
    fasa_model_info in;
    fasa_model_get_info(model, &in);
    const int32_t F = in.head_dim / 2;
    double lo = 1.0, hi = 0.0;
    for (int32_t l = 0; l < in.n_layers; l++)
        for (int32_t h = 0; h < in.n_heads; h++)
            for (int32_t i = 0; i < F; i++) {
                const double x = fasa_calib_ca(a, l, h, i);
                assert_true(x == fasa_calib_ca(b, l, h, i));
                assert_true(x >= 0.0 && x <= 1.0);
                lo = fmin(lo, x), hi = fmax(hi, x);
            }
    assert_true(hi > lo); /* chunks differ in how well they agree */
    /* Rankings are by descending CA. */
    const int32_t *r = fasa_calib_ranking(a, 5, 2);
    for (int32_t i = 1; i < F; i++) assert_true(fasa_calib_ca(a, 5, 2, r[i - 1]) >= fasa_calib_ca(a, 5, 2, r[i]));

    char path[512];
    snprintf(path, sizeof path, "%s/test_fasa_calib_%d.json", FASA_BUILD_DIR, (int)getpid());
    assert_int_equal(fasa_calib_save(a, path), FASA_OK);
    fasa_calib *c = NULL;
    assert_int_equal(fasa_calib_load(path, model, &c), FASA_OK);
    for (int32_t l = 0; l < in.n_layers; l++)
        for (int32_t h = 0; h < in.n_heads; h++)
            for (int32_t i = 0; i < F; i++) assert_true(fabs(fasa_calib_ca(c, l, h, i) - fasa_calib_ca(a, l, h, i)) <= 1e-6);

    /* A truncated file, and files for another model. */
    FILE *f = fopen(path, "rb");
    char *text = malloc(1 << 24);
    size_t len = fread(text, 1, 1 << 24, f);
    fclose(f);
    f = fopen(path, "wb");
    fwrite(text, 1, len / 2, f);
    fclose(f);
    fasa_calib *d = NULL;
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_E_FORMAT);
    assert_non_null(strstr(fasa_last_error(), "not valid JSON"));
    text[len] = '\0';
    char *hash = strstr(text, "\"tensor_hash\":\"");
    assert_non_null(hash);
    hash[15] = hash[15] == '0' ? '1' : '0';
    f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_E_FORMAT);
    assert_non_null(strstr(fasa_last_error(), "different model file"));
    char *layers = strstr(text, "\"n_layers\":30");
    assert_non_null(layers);
    memcpy(layers, "\"n_layers\":31", 13);
    f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_E_FORMAT);
    assert_non_null(strstr(fasa_last_error(), "made for a different model"));
    assert_int_equal(fasa_calib_load("/nonexistent/calib.json", model, &d), FASA_E_IO);
    unlink(path);
    free(text);

    /* Policy parameters checked against the calibration. */
    fasa_context *ctx;
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = 64;
    assert_int_equal(fasa_context_init(model, &cp, &ctx), FASA_OK);
    fasa_attn_params ap = {.method = "fasa", .budget = 16, .calib = a, .n_tip = F + 1};
    assert_int_equal(fasa_context_set_attention(ctx, &ap), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "must be in [1, 32]"));
    ap.n_tip = 8;
    ap.budget = 0;
    assert_int_equal(fasa_context_set_attention(ctx, &ap), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "budget must be >= 1"));
    ap.budget = 16;
    ap.calib = NULL;
    assert_int_equal(fasa_context_set_attention(ctx, &ap), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "needs a calibration"));
    ap.method = "nonsense";
    assert_int_equal(fasa_context_set_attention(ctx, &ap), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "unknown attention method 'nonsense'"));
    fasa_context_free(ctx);

    fasa_calib_params bad = fasa_calib_default_params();
    bad.budget = 0;
    assert_int_equal(fasa_calibrate(model, text_ids, n_text, &bad, &d), FASA_E_ARG);
    bad.budget = n_text;
    assert_int_equal(fasa_calibrate(model, text_ids, n_text, &bad, &d), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "too short"));
    fasa_calib_free(b);
    fasa_calib_free(c);
}

/* fasa_attention_step against float64: label scores from explicit
 * coordinates, top-k by sorting, softmax over the chosen tokens. */
static void check_step_shape(int n_heads, int n_kv, int d, int n, int n_label, int budget, bool per_head) {
    const int group = n_heads / n_kv;
    float *q = malloc(sizeof(float) * n_heads * d), *k = malloc(sizeof(float) * n_kv * n * d);
    float *v = malloc(sizeof(float) * n_kv * n * d), *lab = malloc(sizeof(float) * n_kv * n * n_label);
    float *out = malloc(sizeof(float) * n_heads * d);
    int32_t *coords = malloc(sizeof(int32_t) * n_kv * n_label), *sel = malloc(sizeof(int32_t) * n_heads * budget);
    for (int i = 0; i < n_heads * d; i++) q[i] = 2 * frand();
    for (int i = 0; i < n_kv * n * d; i++) k[i] = frand(), v[i] = frand();
    for (int h = 0; h < n_kv; h++) {
        /* n_label distinct coordinates, ascending */
        for (int c = 0, x = (int)(h * 3) % d; c < n_label; c++) coords[h * n_label + c] = (x + c * (d / n_label)) % d;
        for (int a = 0; a < n_label; a++)
            for (int b = a + 1; b < n_label; b++)
                if (coords[h * n_label + b] < coords[h * n_label + a]) {
                    int32_t t = coords[h * n_label + a];
                    coords[h * n_label + a] = coords[h * n_label + b];
                    coords[h * n_label + b] = t;
                }
        for (int j = 0; j < n; j++)
            for (int c = 0; c < n_label; c++)
                lab[((int64_t)h * n + j) * n_label + c] = k[((int64_t)h * n + j) * d + coords[h * n_label + c]];
    }
    const fasa_step s = {n_heads, n_kv, d, n, q, k, v, lab, coords, n_label, budget, per_head, out, sel};
    assert_int_equal(fasa_attention_step(&s), FASA_OK);
    const int kk = budget < n ? budget : n;
    double *score = malloc(sizeof(double) * n);
    int *order = malloc(sizeof(int) * n);
    for (int qh = 0; qh < n_heads; qh++) {
        const int h = qh / group, g0 = per_head ? qh : h * group, nq = per_head ? 1 : group;
        for (int j = 0; j < n; j++) {
            double sc = 0;
            for (int g = g0; g < g0 + nq; g++)
                for (int c = 0; c < n_label; c++)
                    sc += (double)q[g * d + coords[h * n_label + c]] * k[((int64_t)h * n + j) * d + coords[h * n_label + c]];
            score[j] = sc;
            order[j] = j;
        }
        for (int a = 0; a < n; a++) /* selection sort of the top kk, descending */
            for (int b = a + 1; b < n && a < kk; b++)
                if (score[order[b]] > score[order[a]]) {
                    int t = order[a];
                    order[a] = order[b];
                    order[b] = t;
                }
        /* The chosen set must be a valid top-kk: every chosen score >= the
         * kk-th best (up to float rounding of the scores). */
        const double kth = score[order[kk - 1]];
        for (int t = 0; t < kk; t++) {
            const int32_t pos = sel[qh * budget + t];
            assert_true(pos >= 0 && pos < n);
            if (t) assert_true(pos > sel[qh * budget + t - 1]);
            assert_true(score[pos] >= kth - 1e-4 * (1 + fabs(kth)));
        }
        /* Exact attention over the chosen tokens. */
        double w[4096], mx = -INFINITY, z = 0, ref[256] = {0};
        for (int t = 0; t < kk; t++) {
            const int pos = sel[qh * budget + t];
            double a = 0;
            for (int i = 0; i < d; i++) a += (double)q[qh * d + i] * k[((int64_t)h * n + pos) * d + i];
            w[t] = a / sqrt((double)d);
            mx = fmax(mx, w[t]);
        }
        for (int t = 0; t < kk; t++) z += (w[t] = exp(w[t] - mx));
        for (int t = 0; t < kk; t++)
            for (int i = 0; i < d; i++) ref[i] += w[t] / z * v[((int64_t)h * n + sel[qh * budget + t]) * d + i];
        for (int i = 0; i < d; i++)
            if (fabs(out[qh * d + i] - ref[i]) > 1e-5)
                fail_msg("shape h%d/%d d%d n%d L%d b%d: head %d dim %d: %.7f vs %.7f", n_heads, n_kv, d, n, n_label,
                         budget, qh, i, out[qh * d + i], ref[i]);
    }
    free(score), free(order), free(q), free(k), free(v), free(lab), free(out), free(coords), free(sel);
}

static void test_step_matches_reference(void **state) {
    check_step_shape(9, 3, 64, 500, 16, 64, false);
    check_step_shape(9, 3, 64, 500, 16, 64, true);
    check_step_shape(8, 2, 128, 1000, 32, 256, false);
    check_step_shape(4, 4, 32, 50, 8, 100, false); /* budget over the context */
    check_step_shape(6, 1, 16, 300, 4, 1, true);
    fasa_step bad = {0};
    assert_int_equal(fasa_attention_step(&bad), FASA_E_ARG);
}

/* Builds a policy over a synthetic cache and returns its selection. */
static void synthetic_cache(fasa_kv *kv, int n_layers, int n_kv, int d, int n) {
    assert_int_equal(kv_init(kv, n_layers, n_kv, d, n, FASA_KV_F32), FASA_OK);
    float *k = malloc(sizeof(float) * n_kv * d), *v = malloc(sizeof(float) * n_kv * d);
    for (int l = 0; l < n_layers; l++)
        for (int t = 0; t < n; t++) {
            for (int i = 0; i < n_kv * d; i++) k[i] = frand(), v[i] = frand();
            kv_store(kv, l, t, k, v);
        }
    kv->n_tokens = n;
    free(k), free(v);
}

/* attn_topk against a definition: the k largest, ties to lower positions,
 * returned in position order; on random, tied and sorted inputs, both of its
 * paths (sampled threshold for large n, plain quickselect otherwise). */
static void test_topk(void **state) {
    static const int32_t ns[] = {1, 7, 100, 2047, 2048, 5000, 8192};
    static const int32_t ks[] = {1, 3, 16, 256, 1000, 9000};
    float *s = malloc(sizeof(float) * 8192), *work = malloc(sizeof(float) * 8192);
    int32_t *idx = malloc(sizeof(int32_t) * 8192);
    for (int kind = 0; kind < 4; kind++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
                const int32_t n = ns[a], k = ks[b];
                for (int32_t j = 0; j < n; j++)
                    s[j] = kind == 0 ? frand() : kind == 1 ? (float)(int)(4 * frand()) : kind == 2 ? (float)j : -(float)j;
                const int32_t m = attn_topk(s, n, k, idx, work), want = k < n ? k : n;
                assert_int_equal(m, want);
                for (int32_t t = 1; t < m; t++) assert_true(idx[t] > idx[t - 1]);
                /* Every chosen score beats every unchosen one, or ties it at a later position. */
                int32_t t = 0;
                float min_in = INFINITY;
                int32_t last_tie_in = -1;
                for (int32_t j = 0; j < n; j++) {
                    if (t < m && idx[t] == j) {
                        min_in = fminf(min_in, s[j]);
                        t++;
                    }
                }
                for (int32_t j = 0, u = 0; j < n; j++) {
                    if (u < m && idx[u] == j) {
                        if (s[j] == min_in) last_tie_in = j;
                        u++;
                        continue;
                    }
                    assert_true(s[j] <= min_in);
                    if (s[j] == min_in) assert_true(j > last_tie_in);
                }
            }
    free(s), free(work), free(idx);
}

/* How many positions two ascending index lists share. */
static int common_sorted(const int32_t *x, int32_t nx, const int32_t *y, int32_t ny) {
    int same = 0;
    for (int a = 0, b = 0; a < nx && b < ny;) {
        if (x[a] == y[b]) same++, a++, b++;
        else if (x[a] < y[b]) a++;
        else b++;
    }
    return same;
}

/* A calibration with random CA values for a synthetic shape. */
static fasa_calib *random_calib(int n_layers, int n_heads, int n_kv, int d) {
    fasa_model_info in = {.n_layers = n_layers, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = d};
    fasa_calib *cal = calib_alloc(&in);
    assert_non_null(cal);
    for (int i = 0; i < n_layers * n_heads * d / 2; i++) cal->ca[i] = 0.5 + 0.5 * frand();
    calib_rank(cal);
    return cal;
}

static void test_fasa_all_fcs_equals_oracle(void **state) {
    enum { NL = 2, NH = 6, NKV = 2, D = 32, N = 400, BUDGET = 40 };
    const attn_shape shape = {NL, NH, NKV, D, N, FASA_ROPE_INTERLEAVED};
    fasa_kv kv;
    synthetic_cache(&kv, NL, NKV, D, N);
    fasa_calib *cal = random_calib(NL, NH, NKV, D);
    for (int per_head = 1; per_head <= 2; per_head++) {
        attn_policy *f, *o;
        const fasa_attn_params fp = {.method = "fasa", .budget = BUDGET, .calib = cal, .n_tip = D / 2,
                                     .per_head = per_head, .dense_layers = ""};
        const fasa_attn_params op = {.method = "oracle", .budget = BUDGET, .per_head = per_head};
        assert_int_equal(attn_policy_create(&fp, &shape, 0, &f), FASA_OK);
        assert_int_equal(attn_policy_create(&op, &shape, 0, &o), FASA_OK);
        assert_int_equal(attn_policy_bind_cpu(f), FASA_OK);
        assert_int_equal(attn_policy_bind_cpu(o), FASA_OK);
        for (int l = 0; l < NL; l++)
            for (int t = 0; t < N; t++) f->ops->append(f, &kv, l, t);
        float *sf = malloc(sizeof(float) * f->scratch_floats), *so = malloc(sizeof(float) * o->scratch_floats);
        int32_t fi[N], oi[N];
        float q[NH * D];
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < NH * D; i++) q[i] = 3 * frand();
            const int l = rep % NL, h = rep % NKV, n_keys = 100 + 13 * rep;
            const int nq = per_head == 1 ? 1 : NH / NKV, qh = h * (NH / NKV);
            const attn_query aq = {&kv, l, h, q + qh * D, nq, qh, n_keys};
            const int32_t mf = f->ops->select(f, &aq, fi, sf), mo = o->ops->select(o, &aq, oi, so);
            assert_int_equal(mf, BUDGET);
            assert_int_equal(mo, BUDGET);
            const int same = common_sorted(fi, mf, oi, mo);
            /* Summation order may split an exact tie; anything more is a bug. */
            if (same < BUDGET - 1) fail_msg("rep %d: fasa with all FCs shares %d of %d tokens with oracle", rep, same, BUDGET);
        }
        free(sf), free(so);
        attn_policy_free(f);
        attn_policy_free(o);
    }
    fasa_calib_free(cal);
    kv_free(&kv);
}

/* --fc-choice alloc: the chunks of the sparse layers' KV groups, n_tip per
 * group on average, go one at a time to the group whose greedy recall the
 * next chunk raises most; the policy then scores each group with exactly
 * its own chunks. */
static void test_fasa_alloc(void **state) {
    enum { NL = 3, NH = 4, NKV = 2, D = 32, F = D / 2, N = 300, BUDGET = 30, TIP = 4, CAP = 8 };
    const attn_shape shape = {NL, NH, NKV, D, N, FASA_ROPE_INTERLEAVED};
    fasa_calib *cal = random_calib(NL, NH, NKV, D);
    assert_int_equal(calib_alloc_greedy(cal, CAP), FASA_OK);
    /* recall gained per chunk: layer 0 is dense (its groups gain most and
     * must get nothing), then 0.001, 0.1, 0.05, 0.02 */
    static const double gain[NL][NKV] = {{0.2, 0.2}, {0.001, 0.1}, {0.05, 0.02}};
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++)
            for (int r = 0; r < CAP; r++) {
                cal->greedy[calib_group_at(cal, l, h) + r] = (3 * r + l + h) % F; /* distinct: 3 and 16 coprime */
                cal->greedy_mass[calib_group_at(cal, l, h) + r] = 0.05 + gain[l][h] * r;
            }
    /* 4 groups x 4 chunks: each starts with one; (1,1) fills to the cap of 8,
     * (2,0) takes the remaining 5; (1,0) and (2,1) keep one. */
    static const int want[NL][NKV] = {{TIP, TIP}, {1, CAP}, {6, 1}};
    bool dense[NL] = {true, false, false};
    label_set *lab;
    assert_int_equal(label_set_from_calib(cal, &shape, TIP, FASA_FC_ALLOC, dense, &lab), FASA_OK);
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            assert_int_equal(label_count(lab, l, h), 2 * want[l][h]);
            unsigned char fc[F] = {0};
            for (int r = 0; r < want[l][h]; r++) fc[cal->greedy[calib_group_at(cal, l, h) + r]] = 1;
            for (int c = 0; c < label_count(lab, l, h); c++) assert_true(fc[label_coords(lab, l, h)[c] / 2]);
        }
    assert_int_equal(lab->lab_max, 2 * CAP);
    label_set_free(lab);
    /* the calibration must have more greedy chunks than the average asked */
    assert_int_equal(label_set_from_calib(cal, &shape, CAP, FASA_FC_ALLOC, dense, &lab), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "--greedy 16"));

    /* The policy's choice against a direct computation over the group's own
     * coordinates: exercises labels stored at each group's own length. */
    fasa_kv kv;
    synthetic_cache(&kv, NL, NKV, D, N);
    attn_policy *f;
    const fasa_attn_params fp = {.method = "fasa", .budget = BUDGET, .calib = cal, .n_tip = TIP,
                                 .fc_union = FASA_FC_ALLOC};
    assert_int_equal(attn_policy_create(&fp, &shape, 0, &f), FASA_OK);
    assert_int_equal(attn_policy_bind_cpu(f), FASA_OK);
    for (int l = 0; l < NL; l++)
        for (int t = 0; t < N; t++) f->ops->append(f, &kv, l, t);
    float *sc = malloc(sizeof(float) * f->scratch_floats), q[NH * D], ref[N], row[D], work[N];
    int32_t got[N], exp_idx[N];
    for (int rep = 0; rep < 12; rep++) {
        for (int i = 0; i < NH * D; i++) q[i] = 3 * frand();
        const int l = 1 + rep % 2, h = (rep / 2) % NKV, n_keys = 120 + 15 * rep, G = NH / NKV;
        const attn_query aq = {&kv, l, h, q + h * G * D, G, h * G, n_keys};
        const int32_t m = f->ops->select(f, &aq, got, sc);
        const int32_t *coord = label_coords(f->labels, l, h);
        for (int j = 0; j < n_keys; j++) {
            kv_load_row(&kv, kv_k_row(&kv, l, h, j), row);
            double a = 0.0;
            for (int g = 0; g < G; g++)
                for (int c = 0; c < label_count(f->labels, l, h); c++) a += (double)aq.q[g * D + coord[c]] * row[coord[c]];
            ref[j] = (float)a;
        }
        const int32_t me = attn_topk(ref, n_keys, BUDGET, exp_idx, work);
        assert_int_equal(m, me);
        const int same = common_sorted(got, m, exp_idx, me);
        if (same < BUDGET - 1) fail_msg("rep %d: alloc selection shares %d of %d tokens with the reference", rep, same, BUDGET);
    }
    free(sc);
    attn_policy_free(f);
    kv_free(&kv);
    fasa_calib_free(cal);
}

/* --labels f16 and int8: the policy's choice equals the top-k of scores
 * computed here from the label values rounded as the type defines (f16; int8
 * with scale max|label| / 127 per token and KV head). */
static void test_fasa_label_types(void **state) {
    enum { NL = 2, NH = 6, NKV = 2, D = 32, N = 333, BUDGET = 25, TIP = 5 };
    const attn_shape shape = {NL, NH, NKV, D, N, FASA_ROPE_INTERLEAVED};
    fasa_calib *cal = random_calib(NL, NH, NKV, D);
    fasa_kv kv;
    synthetic_cache(&kv, NL, NKV, D, N);
    static const int types[] = {FASA_LABELS_F16, FASA_LABELS_INT8};
    for (int ti = 0; ti < 2; ti++) {
        attn_policy *f;
        const fasa_attn_params fp = {.method = "fasa", .budget = BUDGET, .calib = cal, .n_tip = TIP,
                                     .dense_layers = "", .label_type = types[ti]};
        assert_int_equal(attn_policy_create(&fp, &shape, 0, &f), FASA_OK);
        assert_int_equal(attn_policy_bind_cpu(f), FASA_OK);
        for (int l = 0; l < NL; l++)
            for (int t = 0; t < N; t++) f->ops->append(f, &kv, l, t);
        float *sc = malloc(sizeof(float) * f->scratch_floats), q[NH * D], ref[N], row[D], work[N];
        int32_t got[N], want[N];
        for (int rep = 0; rep < 10; rep++) {
            for (int i = 0; i < NH * D; i++) q[i] = 3 * frand();
            const int l = rep % NL, h = (rep / 2) % NKV, n_keys = 90 + 24 * rep, G = NH / NKV;
            const attn_query aq = {&kv, l, h, q + h * G * D, G, h * G, n_keys};
            const int32_t m = f->ops->select(f, &aq, got, sc);
            const int32_t *coord = label_coords(f->labels, l, h), n_lab = label_count(f->labels, l, h);
            for (int j = 0; j < n_keys; j++) {
                kv_load_row(&kv, kv_k_row(&kv, l, h, j), row);
                float amax = 0.0f;
                for (int c = 0; c < n_lab; c++) amax = fmaxf(amax, fabsf(row[coord[c]]));
                double a = 0.0;
                for (int c = 0; c < n_lab; c++) {
                    const float v = row[coord[c]];
                    const float r = types[ti] == FASA_LABELS_F16 ? fasa_f16_to_f32(fasa_f32_to_f16(v))
                                                                : (float)lrintf(v * 127.0f / amax) * (amax / 127.0f);
                    for (int g = 0; g < G; g++) a += (double)aq.q[g * D + coord[c]] * r;
                }
                ref[j] = (float)a;
            }
            const int32_t me = attn_topk(ref, n_keys, BUDGET, want, work);
            assert_int_equal(m, me);
            const int same = common_sorted(got, m, want, me);
            if (same < BUDGET - 1)
                fail_msg("labels type %d rep %d: %d of %d tokens as the reference", types[ti], rep, same, BUDGET);
        }
        free(sc);
        attn_policy_free(f);
    }
    kv_free(&kv);
    fasa_calib_free(cal);
}

/* fasa --sinks S --recent R: the first S and the last R tokens always, then
 * the top budget - S - R of the others (with every FC, by the full logit
 * summed over the group). */
static void test_fasa_sinks(void **state) {
    enum { NL = 1, NH = 4, NKV = 2, D = 16, N = 300, BUDGET = 24, SINKS = 3, RECENT = 5 };
    const attn_shape shape = {NL, NH, NKV, D, N, FASA_ROPE_INTERLEAVED};
    fasa_kv kv;
    synthetic_cache(&kv, NL, NKV, D, N);
    fasa_calib *cal = random_calib(NL, NH, NKV, D);
    attn_policy *f;
    const fasa_attn_params fp = {.method = "fasa", .budget = BUDGET, .calib = cal, .n_tip = D / 2, .per_head = 2,
                                 .n_sink = SINKS, .n_recent = RECENT, .dense_layers = ""};
    fasa_attn_params over = fp;
    over.n_recent = BUDGET - SINKS + 1;
    assert_int_equal(attn_policy_create(&over, &shape, 0, &f), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "must fit in the budget"));
    assert_int_equal(attn_policy_create(&fp, &shape, 0, &f), FASA_OK);
    assert_int_equal(attn_policy_bind_cpu(f), FASA_OK);
    for (int t = 0; t < N; t++) f->ops->append(f, &kv, 0, t);
    float *scratch = malloc(sizeof(float) * f->scratch_floats), q[NH * D], sc[N];
    int32_t idx[N];
    for (int rep = 0; rep < 10; rep++) {
        for (int i = 0; i < NH * D; i++) q[i] = 3 * frand();
        const int h = rep % NKV, g = NH / NKV, n_keys = 100 + 19 * rep;
        const attn_query aq = {&kv, 0, h, q + h * g * D, g, h * g, n_keys};
        assert_int_equal(f->ops->select(f, &aq, idx, scratch), BUDGET);
        for (int j = 0; j < n_keys; j++) {
            const float *k = kv_k_row(&kv, 0, h, j);
            sc[j] = 0.0f;
            for (int gg = 0; gg < g; gg++)
                for (int i = 0; i < D; i++) sc[j] += q[(h * g + gg) * D + i] * k[i];
        }
        for (int t = 0; t < SINKS; t++) assert_int_equal(idx[t], t); /* ascending: the sinks come first */
        for (int t = 0; t < RECENT; t++) assert_int_equal(idx[BUDGET - RECENT + t], n_keys - RECENT + t);
        /* the rest: no unchosen token between them beats a chosen one (up to summation order) */
        float worst = INFINITY;
        unsigned char in_set[N] = {0};
        for (int t = SINKS; t < BUDGET - RECENT; t++) in_set[idx[t]] = 1, worst = fminf(worst, sc[idx[t]]);
        for (int j = SINKS; j < n_keys - RECENT; j++)
            if (!in_set[j] && sc[j] > worst + 1e-4f) fail_msg("rep %d: token %d (%.5f) beats a chosen one (%.5f)", rep, j, sc[j], worst);
    }
    free(scratch);
    attn_policy_free(f);
    fasa_calib_free(cal);
    kv_free(&kv);
}

/* Decodes a few tokens after a prefill under each method with a budget
 * covering the context: the logits must equal those of full attention. */
static void test_budget_covering_context_equals_full(void **state) {
    fasa_model_info in;
    fasa_model_get_info(model, &in);
    const fasa_calib *cal = shared_cal;
    enum { N_PRE = 40, N_DEC = 4 };
    const int64_t V = in.n_vocab;
    float *ref = malloc(sizeof(float) * V * N_DEC), *got = malloc(sizeof(float) * V);
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = N_PRE + N_DEC;
    cp.n_threads = 2;
    for (const char *const *m = fasa_attn_methods(); *m; m++) {
        fasa_context *c;
        assert_int_equal(fasa_context_init(model, &cp, &c), FASA_OK);
        const fasa_attn_params ap = {.method = *m, .budget = cp.n_ctx, .calib = cal};
        if (fasa_context_set_attention(c, &ap) != FASA_OK) fail_msg("%s: %s", *m, fasa_last_error());
        assert_int_equal(fasa_eval(c, text_ids, N_PRE, NULL, false), FASA_OK);
        for (int t = 0; t < N_DEC; t++) {
            assert_int_equal(fasa_eval(c, text_ids + N_PRE + t, 1, got, false), FASA_OK);
            if (!strcmp(*m, "full")) memcpy(ref + t * V, got, sizeof(float) * V);
            else
                for (int64_t i = 0; i < V; i++)
                    if (fabsf(got[i] - ref[t * V + i]) > 1e-6f * (1.0f + fabsf(ref[t * V + i])))
                        fail_msg("%s step %d: logit %lld differs from full: %.7f vs %.7f", *m, t, (long long)i,
                                 got[i], ref[t * V + i]);
        }
        fasa_context_free(c);
    }
    free(ref);
    free(got);
}

/* A small budget really is sparse: fasa changes the logits, and a policy
 * installed after the prefill sees the same cache as one installed before. */
static void test_sparse_policy_late_install(void **state) {
    fasa_model_info in;
    fasa_model_get_info(model, &in);
    const fasa_calib *cal = shared_cal;
    enum { N_PRE = 120 };
    const int64_t V = in.n_vocab;
    float *full = malloc(sizeof(float) * V), *early = malloc(sizeof(float) * V), *late = malloc(sizeof(float) * V);
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = N_PRE + 1;
    cp.n_threads = 2;
    const fasa_attn_params ap = {.method = "fasa", .budget = 16, .calib = cal, .n_tip = 4};
    fasa_context *a, *b, *c;
    assert_int_equal(fasa_context_init(model, &cp, &a), FASA_OK);
    assert_int_equal(fasa_context_init(model, &cp, &b), FASA_OK);
    assert_int_equal(fasa_context_init(model, &cp, &c), FASA_OK);
    assert_int_equal(fasa_context_set_attention(b, &ap), FASA_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(fasa_eval((fasa_context *[]){a, b, c}[i], text_ids, N_PRE, NULL, false), FASA_OK);
    assert_int_equal(fasa_context_set_attention(c, &ap), FASA_OK);
    assert_int_equal(fasa_eval(a, text_ids + N_PRE, 1, full, false), FASA_OK);
    assert_int_equal(fasa_eval(b, text_ids + N_PRE, 1, early, false), FASA_OK);
    assert_int_equal(fasa_eval(c, text_ids + N_PRE, 1, late, false), FASA_OK);
    double diff = 0, same = 0;
    for (int64_t i = 0; i < V; i++) {
        diff = fmax(diff, fabs(early[i] - full[i]));
        same = fmax(same, fabs(early[i] - late[i]));
    }
    assert_true(diff > 1e-3);
    assert_true(same == 0.0);
    fasa_context_free(a), fasa_context_free(b), fasa_context_free(c);
    free(full), free(early), free(late);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static void test_greedy_calibration(void **state) {
    fasa_model_info in;
    fasa_model_get_info(model, &in);
    const int32_t F = in.head_dim / 2;
    fasa_calib_params p = small_params();
    p.greedy = F;
    fasa_calib *c = NULL;
    if (fasa_calibrate(model, text_ids, n_text, &p, &c) != FASA_OK) fail_msg("%s", fasa_last_error());
    assert_int_equal(c->n_greedy, F);
    double recall = 0.0;
    for (int32_t l = 0; l < in.n_layers; l++)
        for (int32_t h = 0; h < in.n_kv_heads; h++) {
            unsigned char seen[512] = {0};
            const int64_t at = calib_group_at(c, l, h);
            for (int32_t i = 0; i < F; i++) {
                const int32_t fc = c->greedy[at + i];
                assert_true(fc >= 0 && fc < F && !seen[fc]++);
                assert_true(c->greedy_mass[at + i] >= 0.0 && c->greedy_mass[at + i] <= 1.0 + 1e-6);
            }
            recall += c->greedy_mass[at + F - 1];
        }
    recall /= (double)in.n_layers * in.n_kv_heads;
    /* With every FC the compound score is the full logit summed over the
     * group: the selection is the group oracle's, on the same steps. */
    ca_candidate oracle = {"oracle-group", {.method = "oracle", .per_head = 2, .dense_layers = ""}};
    const int32_t budget = p.budget;
    double ca = 0.0, mass = 0.0;
    const ca_request req = {&oracle, 1, &budget, 1, p.n_decode, 2, NULL, NULL};
    const ca_result out = {&ca, &mass, NULL, NULL};
    assert_int_equal(ca_measure(model, text_ids, n_text, &req, &out), FASA_OK);
    if (fabs(recall - mass) > 1e-4) fail_msg("greedy recall with all FCs %.6f, group oracle %.6f", recall, mass);

    /* fasa takes the first n_tip of the order. */
    int32_t coords[1024];
    assert_int_equal(fasa_calib_label_coords(c, 7, 1, 3, coords), FASA_OK);
    unsigned char want[1024] = {0};
    for (int32_t i = 0; i < 3; i++) {
        int32_t a, b;
        fasa_rope_pair(in.rope_layout, in.head_dim, c->greedy[calib_group_at(c, 7, 1) + i], &a, &b);
        want[a] = want[b] = 1;
    }
    for (int32_t i = 0, k = 0; i < in.head_dim; i++)
        if (want[i]) assert_int_equal(coords[k++], i);

    /* Round trip, and malformed orders. */
    char path[512];
    snprintf(path, sizeof path, "%s/test_fasa_greedy_%d.json", FASA_BUILD_DIR, (int)getpid());
    assert_int_equal(fasa_calib_save(c, path), FASA_OK);
    fasa_calib *d = NULL;
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_OK);
    assert_int_equal(d->n_greedy, F);
    for (int64_t i = 0; i < (int64_t)in.n_layers * in.n_kv_heads * F; i++) {
        assert_int_equal(d->greedy[i], c->greedy[i]);
        assert_true(fabs(d->greedy_mass[i] - c->greedy_mass[i]) <= 1e-6);
    }
    fasa_calib_free(d);
    FILE *f = fopen(path, "rb");
    char *text = malloc(1 << 24);
    const size_t len = fread(text, 1, (1 << 24) - 1, f);
    fclose(f);
    text[len] = '\0';
    char *order = strstr(text, "\"greedy\":[");
    assert_non_null(order);
    char *second = strchr(order, ',') + 1, *first = order + 10;
    const size_t n1 = strcspn(first, ","), n2 = strcspn(second, ",]");
    char *dup = malloc(len + 64);
    /* the first group's second FC replaced by its first: a repeated FC */
    snprintf(dup, len + 64, "%.*s%.*s%s", (int)(second - text), text, (int)n1, first, second + n2);
    write_text(path, dup);
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_E_FORMAT);
    assert_non_null(strstr(fasa_last_error(), "distinct frequency chunks"));
    char *groups = strstr(text, ",\"groups\":");
    assert_non_null(groups);
    snprintf(dup, len + 64, "%.*s}", (int)(groups - text), text);
    write_text(path, dup);
    assert_int_equal(fasa_calib_load(path, model, &d), FASA_E_FORMAT);
    assert_non_null(strstr(fasa_last_error(), "'groups' must be an array"));
    unlink(path);
    free(dup);
    free(text);
    fasa_calib_free(c);
}

static void test_ca_probe_mass_recall(void **state) {
    enum { NB = 3, NC = 4 };
    const int32_t budgets[NB] = {8, 32, 4096};
    ca_candidate cands[NC] = {{"oracle", {.method = "oracle"}},
                              {"stream", {.method = "stream"}},
                              {"random", {.method = "random"}},
                              {"fasa", {.method = "fasa", .calib = shared_cal, .n_tip = 4}}};
    for (int i = 0; i < NC; i++) cands[i].params.dense_layers = "";
    fasa_model_info in;
    fasa_model_get_info(model, &in);
    const int L = in.n_layers;
    double ca[NC * NB], mass[NC * NB], *ca_l = malloc(sizeof(double) * NC * NB * L),
           *mass_l = malloc(sizeof(double) * NC * NB * L);
    const ca_request req = {cands, NC, budgets, NB, 3, 2, NULL, NULL};
    const ca_result out = {ca, mass, ca_l, mass_l};
    const int32_t n = n_text < 160 ? n_text : 160;
    assert_int_equal(ca_measure(model, text_ids, n, &req, &out), FASA_OK);
    for (int c = 0; c < NC; c++)
        for (int b = 0; b < NB; b++) {
            const int k = c * NB + b;
            assert_true(ca[k] >= 0.0 && ca[k] <= 1.0 + 1e-12);
            assert_true(mass[k] >= 0.0 && mass[k] <= 1.0 + 1e-5); /* float weights summed */
            /* the oracle's K tokens are the K heaviest: no method holds more mass */
            if (mass[k] > mass[b] + 1e-9) fail_msg("%s holds more mass (%.6f) than oracle (%.6f) at K=%d",
                                                   cands[c].label, mass[k], mass[b], budgets[b]);
            double cs = 0, ms = 0;
            for (int l = 0; l < L; l++) cs += ca_l[k * L + l], ms += mass_l[k * L + l];
            assert_true(fabs(cs / L - ca[k]) < 1e-9 && fabs(ms / L - mass[k]) < 1e-9);
        }
    for (int c = 0; c < NC; c++) {
        assert_true(fabs(ca[c * NB + 2] - 1.0) < 1e-12);   /* K=4096 covers the context */
        assert_true(fabs(mass[c * NB + 2] - 1.0) < 1e-5);
    }
    assert_true(mass[0] < mass[1] && mass[1] < mass[2] + 1e-9); /* more tokens, more mass */
    assert_true(fabs(ca[0 * NB + 0] - 1.0) < 1e-12);            /* oracle agrees with itself */
    free(ca_l), free(mass_l);
}

static int setup(void **state) {
    if (fasa_model_load(FASA_TEST_MODEL, &model) != FASA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", FASA_TEST_MODEL, fasa_last_error());
        return -1;
    }
    text_ids = malloc(sizeof(int32_t) * 4096);
    if (fasa_tokenize(model, TEXT, strlen(TEXT), false, false, text_ids, 4096, &n_text) != FASA_OK) return -1;
    if (n_text <= 200) return -1;
    const fasa_calib_params p = small_params();
    return fasa_calibrate(model, text_ids, n_text, &p, &shared_cal) == FASA_OK ? 0 : -1;
}

static int teardown(void **state) {
    fasa_calib_free(shared_cal);
    free(text_ids);
    fasa_model_free(model);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calibration_deterministic_and_round_trip),
        cmocka_unit_test(test_step_matches_reference),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_fasa_all_fcs_equals_oracle),
        cmocka_unit_test(test_fasa_sinks),
        cmocka_unit_test(test_fasa_alloc),
        cmocka_unit_test(test_fasa_label_types),
        cmocka_unit_test(test_budget_covering_context_equals_full),
        cmocka_unit_test(test_sparse_policy_late_install),
        cmocka_unit_test(test_ca_probe_mass_recall),
        cmocka_unit_test(test_greedy_calibration),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
