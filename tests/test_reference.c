/* The C forward pass (f32 KV cache) against the independent float64 NumPy
 * reference in tests/reference/.
 *
 * Checks:
 *  1. Committed goldens (tests/golden/ref_*.json): for every prompt position,
 *     the 20 largest logits, logsumexp, L2 norm, sum, and four random
 *     projections of the full logit vector; then 32 greedy tokens. For the
 *     default model always, for the real Qwen2.5-Coder when it is there.
 *  2. The full logit vector at every position of the 64-token prose prompt,
 *     produced at test time by ref_model.py in the project's Python venv.
 *  3. The same, plus 16 greedy steps, for a small random-weight qwen2 model
 *     made at test time (every block format, biases, half-split RoPE).
 * Tolerance: relative error < 1e-3, measured against the largest |logit| of
 * the position (logits near zero make element-wise relative error meaningless),
 * for the exact path (f32 activations). The goldens are checked a second time
 * on the default path (int8 activations) at INT8_TOL: the top-20
 * log-probabilities and the greedy tokens. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fasa.h"

#define REL_TOL 1e-3
/* The default path rounds activations to int8 in groups of 32 (quant_x8.c,
 * gemm_x8.c): on Qwen2.5-Coder its top-20 log-probabilities are within
 * 9.5e-3 (code) and 1.5e-2 (chat) of the reference, relative to the
 * position's largest |logit|; llama.cpp rounds the same way in groups of 256. */
#define INT8_TOL 2.5e-2

static fasa_model *model; /* the default model */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

static cJSON *load_golden(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/ref_%s.json", FASA_TEST_DIR, name);
    char *text = slurp(path, NULL);
    if (!text) fail_msg("cannot read %s", path);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s is not valid JSON", path);
    return j;
}

static int32_t *golden_tokens(const cJSON *g, int32_t *n) {
    const cJSON *toks = cJSON_GetObjectItem(g, "tokens");
    *n = cJSON_GetArraySize(toks);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int32_t i = 0; i < *n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(toks, i)->valuedouble;
    return ids;
}

/* The projection vectors, regenerated from the recipe recorded in the golden. */
static double splitmix_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

/* f32: the exact path (f32 activations in every product); otherwise the
 * default one, whose products round activations to int8. */
static fasa_context *new_context(fasa_model *m, int32_t n_ctx, bool f32) {
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = n_ctx;
    p.f32_activations = f32;
    p.n_threads = 2;
    fasa_context *c = NULL;
    assert_int_equal(fasa_context_init(m, &p, &c), FASA_OK);
    return c;
}

static bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static double max_abs(const float *x, int32_t n) {
    double m = 0.0;
    for (int32_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double logsumexp(const float *x, int32_t n) {
    double mx = -INFINITY, se = 0.0;
    for (int32_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int32_t i = 0; i < n; i++) se += exp(x[i] - mx);
    return mx + log(se);
}

/* The int8 path's top-20 log-probabilities (logit - lse) against the
 * reference's, relative to the position's scale; returns the largest error.
 * Log-probabilities, not logits: rounding the activations moves all logits
 * of a position together by up to ~1e-2, which changes no probability. */
static double check_position_int8(const cJSON *pos, const float *logits, int32_t n_vocab, int32_t t) {
    const double scale = max_abs(logits, n_vocab), lse = logsumexp(logits, n_vocab);
    const double ref_lse = cJSON_GetObjectItem(pos, "lse")->valuedouble;
    const cJSON *top = cJSON_GetObjectItem(pos, "top"), *item;
    double worst = 0.0;
    cJSON_ArrayForEach(item, top) {
        const int32_t id = (int32_t)cJSON_GetArrayItem(item, 0)->valuedouble;
        const double err = fabs((logits[id] - lse) - (cJSON_GetArrayItem(item, 1)->valuedouble - ref_lse));
        worst = fmax(worst, err / scale);
        if (err > INT8_TOL * scale)
            fail_msg("int8 position %d token %d: log-probability %.6f, reference %.6f", t, id, logits[id] - lse,
                     cJSON_GetArrayItem(item, 1)->valuedouble - ref_lse);
    }
    return worst;
}

/* Returns the largest top-20 logit error relative to the position's scale. */
static double check_position(const cJSON *pos, const float *logits, int32_t n_vocab, double **proj, int32_t t) {
    const double scale = max_abs(logits, n_vocab);
    const cJSON *top = cJSON_GetObjectItem(pos, "top"), *item;
    double worst = 0.0;
    cJSON_ArrayForEach(item, top) {
        const int32_t id = (int32_t)cJSON_GetArrayItem(item, 0)->valuedouble;
        const double ref = cJSON_GetArrayItem(item, 1)->valuedouble;
        worst = fmax(worst, fabs(logits[id] - ref) / scale);
        if (fabs(logits[id] - ref) > REL_TOL * scale)
            fail_msg("position %d token %d: logit %.6f, reference %.6f", t, id, logits[id], ref);
    }
    double mx = -INFINITY, se = 0.0, l2 = 0.0, sum = 0.0, p[4] = {0};
    for (int32_t i = 0; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int32_t i = 0; i < n_vocab; i++) {
        se += exp(logits[i] - mx);
        l2 += (double)logits[i] * logits[i];
        sum += logits[i];
        for (int j = 0; j < 4; j++) p[j] += logits[i] * proj[j][i];
    }
    const double lse = mx + log(se);
    const double ref_lse = cJSON_GetObjectItem(pos, "lse")->valuedouble;
    const double ref_l2 = cJSON_GetObjectItem(pos, "l2")->valuedouble;
    const double ref_sum = cJSON_GetObjectItem(pos, "sum")->valuedouble;
    if (fabs(lse - ref_lse) > REL_TOL * fabs(ref_lse)) fail_msg("position %d: lse %.6f vs %.6f", t, lse, ref_lse);
    if (fabs(sqrt(l2) - ref_l2) > REL_TOL * ref_l2) fail_msg("position %d: l2 %.6f vs %.6f", t, sqrt(l2), ref_l2);
    /* A sum or projection (weights in [-1, 1]) of n_vocab elements each within
     * REL_TOL * scale, with independent signs, is within this bound. */
    const double agg_tol = REL_TOL * scale * sqrt((double)n_vocab);
    if (fabs(sum - ref_sum) > agg_tol)
        fail_msg("position %d: sum %.6f vs %.6f", t, sum, ref_sum);
    const cJSON *rp = cJSON_GetObjectItem(pos, "proj");
    for (int j = 0; j < 4; j++) {
        const double ref = cJSON_GetArrayItem(rp, j)->valuedouble;
        if (fabs(p[j] - ref) > agg_tol)
            fail_msg("position %d: projection %d %.6f vs %.6f", t, j, p[j], ref);
    }
    return worst;
}

/* Greedy continuation from `last` (the prompt's last logits, in a context
 * holding the prompt): a mismatch is accepted only where the reference's own
 * margin between first and second choice is within the tolerance. */
static void check_greedy(const char *name, fasa_context *c, float *logits, int32_t n_vocab, const int32_t *ref_tok,
                         const double *ref_margin, int32_t n_greedy, double tol) {
    const float *last = logits;
    for (int32_t s = 0; s < n_greedy; s++) {
        int32_t best = 0;
        for (int32_t i = 1; i < n_vocab; i++)
            if (last[i] > last[best]) best = i;
        if (best != ref_tok[s]) {
            if (ref_margin[s] > tol * max_abs(last, n_vocab))
                fail_msg("%s greedy step %d: got token %d, reference %d (reference margin %.4f)", name, s, best,
                         ref_tok[s], ref_margin[s]);
            print_message("%s greedy step %d: near-tie (margin %.2g), stopping comparison\n", name, s,
                          ref_margin[s]);
            break;
        }
        if (s + 1 < n_greedy) assert_int_equal(fasa_eval(c, &best, 1, logits, false), FASA_OK);
        last = logits;
    }
}

static void check_golden(fasa_model *m, const char *name) {
    cJSON *g = load_golden(name);
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    assert_int_equal((int)cJSON_GetObjectItem(g, "n_vocab")->valuedouble, info.n_vocab);
    int32_t n;
    int32_t *ids = golden_tokens(g, &n);
    const cJSON *positions = cJSON_GetObjectItem(g, "positions"), *greedy = cJSON_GetObjectItem(g, "greedy");
    assert_int_equal(cJSON_GetArraySize(positions), n);
    const int32_t n_greedy = cJSON_GetArraySize(greedy);

    double *proj[4];
    uint64_t state = (uint64_t)cJSON_GetObjectItem(g, "proj_seed")->valuedouble;
    for (int j = 0; j < 4; j++) {
        proj[j] = malloc((size_t)info.n_vocab * sizeof(double));
        for (int32_t i = 0; i < info.n_vocab; i++) proj[j][i] = splitmix_uniform(&state);
    }
    int32_t *ref_tok = malloc((size_t)n_greedy * sizeof *ref_tok);
    double *ref_margin = malloc((size_t)n_greedy * sizeof *ref_margin);
    for (int32_t s = 0; s < n_greedy; s++) {
        const cJSON *step = cJSON_GetArrayItem(greedy, s);
        ref_tok[s] = (int32_t)cJSON_GetObjectItem(step, "token")->valuedouble;
        ref_margin[s] = cJSON_GetObjectItem(step, "margin")->valuedouble;
    }
    float *logits = malloc((size_t)n * info.n_vocab * sizeof *logits);
    for (int pass = 0; pass < 2; pass++) { /* the exact path, then the default one */
        const bool f32 = pass == 0;
        fasa_context *c = new_context(m, n + n_greedy + 1, f32);
        assert_int_equal(fasa_eval(c, ids, n, logits, true), FASA_OK);
        double worst = 0.0;
        for (int32_t t = 0; t < n; t++) {
            const float *row = logits + (int64_t)t * info.n_vocab;
            const cJSON *pos = cJSON_GetArrayItem(positions, t);
            worst = fmax(worst, f32 ? check_position(pos, row, info.n_vocab, proj, t)
                                    : check_position_int8(pos, row, info.n_vocab, t));
        }
        print_message("%s: worst relative error of the top-20 %s %.3g over %d positions\n", name,
                      f32 ? "logits (f32 activations)" : "log-probabilities (int8 activations)", worst, n);
        memmove(logits, logits + (int64_t)(n - 1) * info.n_vocab, (size_t)info.n_vocab * sizeof *logits);
        check_greedy(name, c, logits, info.n_vocab, ref_tok, ref_margin, n_greedy, f32 ? REL_TOL : INT8_TOL);
        fasa_context_free(c);
    }
    free(ref_tok);
    free(ref_margin);
    for (int j = 0; j < 4; j++) free(proj[j]);
    free(logits);
    free(ids);
    cJSON_Delete(g);
}

static void test_golden_prose(void **state) { check_golden(model, "prose"); }
static void test_golden_code(void **state) { check_golden(model, "code"); }
static void test_golden_chat(void **state) { check_golden(model, "chat"); }

/* The real Qwen2.5-Coder model, when it has been fetched. */
static void check_qwen2_golden(const char *name) {
    if (!file_exists(FASA_QWEN_MODEL)) {
        print_message("skipped: %s is not there (scripts/fetch-model.sh qwen2.5-coder-1.5b)\n", FASA_QWEN_MODEL);
        skip();
    }
    fasa_model *m = NULL;
    if (fasa_model_load(FASA_QWEN_MODEL, &m) != FASA_OK) fail_msg("%s", fasa_last_error());
    check_golden(m, name);
    fasa_model_free(m);
}
static void test_golden_qwen2_code(void **state) { check_qwen2_golden("qwen2_code"); }
static void test_golden_qwen2_chat(void **state) { check_qwen2_golden("qwen2_chat"); }

/* Runs ref_model.py on a model and tokens (in the project's venv): the logits
 * of every position, and n_greedy greedy steps after them, into the build
 * folder. Returns the logits (n * n_vocab floats). */
static float *run_reference(const char *model_path, const char *tag, const int32_t *ids, int32_t n, int32_t n_vocab,
                            int32_t n_greedy, int32_t *ref_tok, double *ref_margin) {
    char py[1024], out[1024], greedy[1024], cmd[16384];
    snprintf(py, sizeof py, "%s/../.venv/bin/python", FASA_TEST_DIR);
    if (!file_exists(py)) fail_msg("no Python venv at %s: run scripts/setup-deps.sh", py);
    snprintf(out, sizeof out, "%s/ref_%s_logits.f32", FASA_BUILD_DIR, tag);
    snprintf(greedy, sizeof greedy, "%s/ref_%s_greedy.txt", FASA_BUILD_DIR, tag);
    int w = snprintf(cmd, sizeof cmd, "%s %s/reference/ref_model.py --model %s --dump-logits %s --tokens '", py,
                     FASA_TEST_DIR, model_path, out);
    for (int32_t i = 0; i < n; i++) w += snprintf(cmd + w, sizeof cmd - (size_t)w, "%s%d", i ? " " : "", ids[i]);
    if (n_greedy > 0)
        w += snprintf(cmd + w, sizeof cmd - (size_t)w, "' --greedy %d --dump-greedy %s", n_greedy, greedy);
    else
        w += snprintf(cmd + w, sizeof cmd - (size_t)w, "'");
    snprintf(cmd + w, sizeof cmd - (size_t)w, " > /dev/null");
    assert_int_equal(system(cmd), 0);
    size_t len;
    float *ref = (float *)slurp(out, &len);
    assert_non_null(ref);
    assert_int_equal(len, (size_t)n * n_vocab * sizeof(float));
    if (n_greedy > 0) {
        FILE *f = fopen(greedy, "r");
        assert_non_null(f);
        for (int32_t s = 0; s < n_greedy; s++) {
            double logit;
            if (fscanf(f, "%d %lf %lf", &ref_tok[s], &logit, &ref_margin[s]) != 3) fail_msg("%s: bad line %d", greedy, s);
        }
        fclose(f);
    }
    return ref;
}

/* Every logit of every position against the reference's; returns the worst
 * error relative to the position's largest |logit|. */
static double compare_vectors(const char *name, const float *logits, const float *ref, int32_t n, int32_t n_vocab) {
    double worst = 0.0;
    for (int32_t t = 0; t < n; t++) {
        const float *a = logits + (int64_t)t * n_vocab, *b = ref + (int64_t)t * n_vocab;
        double err = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) err = fmax(err, fabs((double)a[i] - b[i]));
        err /= max_abs(b, n_vocab);
        worst = fmax(worst, err);
        if (err > REL_TOL) fail_msg("%s position %d: max |logit error| / max |logit| = %.3g", name, t, err);
    }
    print_message("%s: worst relative error of the full logit vectors %.3g over %d positions\n", name, worst, n);
    return worst;
}

/* The whole logit vector at every position, against the reference run now. */
static void test_full_vectors(void **state) {
    cJSON *g = load_golden("prose");
    int32_t n;
    int32_t *ids = golden_tokens(g, &n);
    cJSON_Delete(g);
    fasa_model_info info;
    fasa_model_get_info(model, &info);
    float *ref = run_reference(FASA_TEST_MODEL, "prose", ids, n, info.n_vocab, 0, NULL, NULL);
    float *logits = malloc((size_t)n * info.n_vocab * sizeof *logits);
    fasa_context *c = new_context(model, n, true);
    assert_int_equal(fasa_eval(c, ids, n, logits, true), FASA_OK);
    compare_vectors("prose", logits, ref, n, info.n_vocab);
    fasa_context_free(c);
    free(logits);
    free(ref);
    free(ids);
}

/* A small random-weight qwen2 model (biases, half-split RoPE, head dim 128,
 * every block format; made by reference/make_qwen2_fixture.py before this
 * test runs): every logit of a tokenized prompt and 16 greedy steps. */
static void test_qwen2_synthetic(void **state) {
    fasa_model *m = NULL;
    if (fasa_model_load(FASA_QWEN2_FIXTURE, &m) != FASA_OK) fail_msg("%s", fasa_last_error());
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    assert_string_equal(info.arch, "qwen2");
    assert_int_equal(info.head_dim, 128);
    assert_int_equal(info.rope_layout, FASA_ROPE_HALF);
    static const char text[] = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n";
    int32_t ids[256], n = 0;
    assert_int_equal(fasa_tokenize(m, text, sizeof text - 1, false, false, ids, 256, &n), FASA_OK);
    enum { N_GREEDY = 16 };
    int32_t ref_tok[N_GREEDY];
    double ref_margin[N_GREEDY];
    float *ref = run_reference(FASA_QWEN2_FIXTURE, "qwen2_tiny", ids, n, info.n_vocab, N_GREEDY, ref_tok, ref_margin);
    float *logits = malloc((size_t)n * info.n_vocab * sizeof *logits);
    fasa_context *c = new_context(m, n + N_GREEDY, true);
    assert_int_equal(fasa_eval(c, ids, n, logits, true), FASA_OK);
    compare_vectors("qwen2 synthetic", logits, ref, n, info.n_vocab);
    memmove(logits, logits + (int64_t)(n - 1) * info.n_vocab, (size_t)info.n_vocab * sizeof *logits);
    check_greedy("qwen2 synthetic", c, logits, info.n_vocab, ref_tok, ref_margin, N_GREEDY, REL_TOL);
    fasa_context_free(c);
    free(logits);
    free(ref);
    fasa_model_free(m);
}

static int setup(void **state) {
    if (fasa_model_load(FASA_TEST_MODEL, &model) != FASA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", FASA_TEST_MODEL, fasa_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    fasa_model_free(model);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_prose),
        cmocka_unit_test(test_golden_code),
        cmocka_unit_test(test_golden_chat),
        cmocka_unit_test(test_full_vectors),
        cmocka_unit_test(test_qwen2_synthetic),
        cmocka_unit_test(test_golden_qwen2_code),
        cmocka_unit_test(test_golden_qwen2_chat),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
