/* The evaluation harness (src/eval): grid expansion and argument errors,
 * scoring functions on hand-written cases, the KV-bytes formula, the
 * results file (resume keys, a line cut short by a killed run), the needle
 * generators (deterministic, needle at the asked depth in the token stream),
 * every task end to end on a tiny context (identity: a budget covering the
 * whole cache equals full; a rerun measures nothing), and the report
 * rendered from a committed results file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/corpus.h"
#include "eval/grid.h"
#include "eval/needle.h"
#include "eval/report.h"
#include "eval/results.h"
#include "attn/bytes.h"
#include "eval/score.h"
#include "eval/task.h"

static fasa_model *model;

/* cmocka's assert_float_equal compares in float; these values are doubles. */
#define assert_near(a, b, tol)                                                                       \
    do {                                                                                              \
        const double a_ = (a), b_ = (b);                                                              \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g (+- %g)", #a, a_, b_, (double)(tol)); \
    } while (0)

/* ---- a scratch folder ------------------------------------------------------ */

static char scratch[512];

static void scratch_make(void) {
    const char *base = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/fasa_test_eval_XXXXXX", base && *base ? base : P_tmpdir);
    assert_non_null(mkdtemp(scratch));
}

static void scratch_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", scratch, name); }

static void scratch_remove(void) {
    char cmd[640];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    assert_int_equal(system(cmd), 0);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
    fclose(f);
    return n;
}

/* ---- grid and arguments ---------------------------------------------------- */

static fasa_status build(const char *methods, const int32_t *budgets, int32_t nb, const int32_t *tips, int32_t nt,
                         bool with_full, const fasa_calib *calib, eval_grid *g) {
    eval_grid_spec s = {methods, budgets, nb, tips, nt, 64, with_full, {0}};
    s.base.calib = calib;
    return eval_grid_build(&s, g);
}

static void test_grid_expansion(void **state) {
    (void)state;
    const int32_t budgets[] = {64, 128}, tips[] = {4, 8};
    eval_grid g;
    /* A non-NULL calibration pointer is all the grid checks. */
    assert_int_equal(build("fasa,stream", budgets, 2, tips, 2, true, (const fasa_calib *)budgets, &g), FASA_OK);
    assert_int_equal(g.n, 1 + 4 + 2); /* full once, fasa per N_tip x budget, stream per budget */
    assert_string_equal(g.cfgs[0].label, "full");
    assert_int_equal(g.cfgs[0].p.budget, 0);
    assert_string_equal(g.cfgs[1].label, "fasa-4");
    assert_int_equal(g.cfgs[1].p.n_tip, 4);
    assert_int_equal(g.cfgs[2].p.budget, 128);
    assert_string_equal(g.cfgs[3].label, "fasa-8");
    assert_string_equal(g.cfgs[5].label, "stream");
    assert_int_equal(g.cfgs[5].p.n_tip, 0);
    eval_grid_free(&g);
    /* full listed explicitly is not repeated; without with_full it is not added. */
    assert_int_equal(build("full,stream", budgets, 1, NULL, 0, true, NULL, &g), FASA_OK);
    assert_int_equal(g.n, 2);
    eval_grid_free(&g);
    assert_int_equal(build("stream", budgets, 1, NULL, 0, false, NULL, &g), FASA_OK);
    assert_int_equal(g.n, 1);
    eval_grid_free(&g);
}

static void test_grid_errors(void **state) {
    (void)state;
    const int32_t budgets[] = {64}, zero[] = {0}, tips[] = {40};
    eval_grid g;
    assert_int_equal(build("full,bogus", budgets, 1, NULL, 0, true, NULL, &g), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "unknown method 'bogus'"));
    assert_non_null(strstr(fasa_last_error(), "stream"));
    assert_int_equal(build("stream", zero, 1, NULL, 0, true, NULL, &g), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "at least 1"));
    assert_int_equal(build("fasa", budgets, 1, NULL, 0, true, NULL, &g), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "--calib"));
    assert_int_equal(build("fasa", budgets, 1, tips, 1, true, (const fasa_calib *)budgets, &g), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "N_tip 40"));
    assert_int_equal(build("", budgets, 1, NULL, 0, false, NULL, &g), FASA_E_ARG);

    int32_t v[4];
    assert_int_equal(eval_parse_ints("--budget", "64,128,256", 1, 1000, v, 4), 3);
    assert_int_equal(v[2], 256);
    assert_int_equal(eval_parse_ints("--budget", "0", 1, 1000, v, 4), -1);
    assert_non_null(strstr(fasa_last_error(), "--budget"));
    assert_int_equal(eval_parse_ints("--budget", "12x", 1, 1000, v, 4), -1);
    assert_int_equal(eval_parse_ints("--budget", "", 1, 1000, v, 4), -1);
    assert_int_equal(eval_parse_ints("--budget", "1,2,3,4,5", 1, 1000, v, 4), -1);
}

/* ---- scoring ------------------------------------------------------------------ */

static void test_value_matching(void **state) {
    (void)state;
    assert_true(eval_contains_value(" 68213. Remember it.", "68213"));
    assert_true(eval_contains_value("68213", "68213"));
    assert_true(eval_contains_value("it is: 68213\n", "68213"));
    assert_false(eval_contains_value(" 682134.", "68213"));  /* a longer number */
    assert_false(eval_contains_value(" 168213.", "68213"));
    assert_false(eval_contains_value(" 6821", "68213"));
    assert_false(eval_contains_value("", "68213"));
    assert_true(eval_contains_value("uuid c0f7a36c-f0d9-08c6-6170-3df0b1aba518.", "c0f7a36c-f0d9-08c6-6170-3df0b1aba518"));
    assert_false(eval_contains_value("c0f7a36c-f0d9-08c6-6170-3df0b1aba51", "c0f7a36c-f0d9-08c6-6170-3df0b1aba518"));
    /* The first occurrence is inside a longer number, the second stands alone. */
    assert_true(eval_contains_value("1234567 and 12345", "12345"));
    const char values[4][40] = {"ABCDE", "FGHIJ", "KLMNO", "PQRST"};
    assert_near(eval_score_values("ABCDE, FGHIJ and PQRST", values, 4), 0.75, 1e-12);
    assert_near(eval_score_values("ABCDEF", values, 4), 0.0, 1e-12);
    assert_near(eval_score_values("PQRST KLMNO FGHIJ ABCDE", values, 4), 1.0, 1e-12);
}

static void test_distributions(void **state) {
    (void)state;
    const float logits[3] = {0.0f, logf(2.0f), logf(5.0f)}; /* p = 1/8, 2/8, 5/8 */
    assert_near(eval_token_nll(logits, 3, 2), -log(5.0 / 8.0), 1e-6);
    assert_near(eval_token_nll(logits, 3, 0), log(8.0), 1e-6);
    float lp[3];
    eval_log_softmax(logits, 3, lp);
    assert_near(lp[1], log(2.0 / 8.0), 1e-6);
    assert_near(eval_kl(lp, logits, 3), 0.0, 1e-6);
    /* KL(p || uniform) = sum p log(3p) */
    const float flat[3] = {1.0f, 1.0f, 1.0f};
    const double want = (1.0 / 8) * log(3.0 / 8) + (2.0 / 8) * log(6.0 / 8) + (5.0 / 8) * log(15.0 / 8);
    assert_near(eval_kl(lp, flat, 3), want, 1e-6);
    assert_int_equal(eval_argmax(logits, 3, NULL), 2);
    const bool skip[3] = {false, false, true};
    assert_int_equal(eval_argmax(logits, 3, skip), 1);
    const float tie[3] = {1.0f, 3.0f, 3.0f};
    assert_int_equal(eval_argmax(tie, 3, NULL), 1);
}

static void test_repetition(void **state) {
    (void)state;
    const int32_t loop[8] = {1, 2, 3, 4, 1, 2, 3, 4};
    assert_near(eval_repetition(loop, 8, 4), 1.0 / 5.0, 1e-12); /* 5 4-grams, the last repeats the first */
    const int32_t fresh[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_near(eval_repetition(fresh, 8, 4), 0.0, 1e-12);
    const int32_t same[10] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
    assert_near(eval_repetition(same, 10, 4), 6.0 / 7.0, 1e-12);
    assert_near(eval_repetition(loop, 3, 4), 0.0, 1e-12);
}

static void test_kv_bytes(void **state) {
    (void)state;
    fasa_model_info in = {.n_layers = 30, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64};
    const double full = 2.0 * 30 * 3 * 6000 * 64 * 4;
    assert_near(attn_step_bytes(&in, NULL, 6000, 4), full, 0.5);
    fasa_attn_params p = {.method = "fasa", .budget = 256, .n_tip = 8};
    /* Layer 0 dense; 29 layers x 3 KV heads read 16 f32 label coordinates of every
     * token and 256 rows of K and V. */
    const double sparse = 29.0 * 3 * (6000.0 * 16 * 4 + 256.0 * 2 * 64 * 4);
    assert_near(attn_step_bytes(&in, &p, 6000, 4), full / 30 + sparse, 0.5);
    /* f16 labels: 2 bytes per coordinate; int8: 1 byte plus one f32 scale per token */
    p.label_type = FASA_LABELS_F16;
    assert_near(attn_step_bytes(&in, &p, 6000, 4), full / 30 + 29.0 * 3 * (6000.0 * 16 * 2 + 256.0 * 2 * 64 * 4), 0.5);
    p.label_type = FASA_LABELS_INT8;
    assert_near(attn_step_bytes(&in, &p, 6000, 4), full / 30 + 29.0 * 3 * (6000.0 * 20 + 256.0 * 2 * 64 * 4), 0.5);
    p = (fasa_attn_params){.method = "stream", .budget = 256};
    assert_near(attn_step_bytes(&in, &p, 6000, 2), 30.0 * 3 * 256 * 2 * 64 * 2, 0.5);
    /* A budget covering the cache is dense. */
    p.budget = 8000;
    assert_near(attn_step_bytes(&in, &p, 6000, 4), full, 0.5);
}

/* ---- results file -------------------------------------------------------------- */

static void test_results_file(void **state) {
    (void)state;
    scratch_make();
    char dir[600], path[700];
    scratch_path(dir, sizeof dir, "res");
    eval_results *r;
    assert_int_equal(eval_results_open(dir, &r), FASA_OK);
    assert_int_equal(eval_results_count(r), 0);
    eval_config cfg = {.label = "stream", .p = {.method = "stream", .budget = 64}};
    const eval_cell cell = {"ppl", &cfg, "m", 4096, 2, 1, "D=512"};
    char key[512];
    eval_cell_key(&cell, key, sizeof key);
    cJSON *o = eval_cell_json(&cell);
    assert_non_null(o);
    cJSON_AddNumberToObject(o, "score", 1.5);
    assert_int_equal(eval_results_write(r, key, o), FASA_OK);
    assert_true(eval_results_has(r, key));
    eval_results_close(r);
    /* Another budget or other options make another cell. */
    char key2[512], key3[512];
    cfg.p.budget = 128;
    eval_cell_key(&cell, key2, sizeof key2);
    cfg.p.budget = 64;
    cfg.p.n_sink = 4;
    eval_cell_key(&cell, key3, sizeof key3);
    cfg.p.n_sink = 0;
    char key4[512];
    const eval_cell other_d = {"ppl", &cfg, "m", 4096, 2, 1, "D=256"};
    eval_cell_key(&other_d, key4, sizeof key4);
    assert_string_not_equal(key, key2);
    assert_string_not_equal(key, key3);
    assert_string_not_equal(key, key4);

    /* A write cut short leaves half a line: open removes it from the file,
     * and the next line starts on a line of its own. */
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("{\"task\":\"ppl\",\"cell\":\"half", f);
    fclose(f);
    assert_int_equal(eval_results_open(dir, &r), FASA_OK);
    assert_true(eval_results_dropped_partial(r));
    assert_int_equal(eval_results_count(r), 1);
    assert_int_equal(eval_results_bad_lines(r), 0);
    assert_true(eval_results_has(r, key));
    assert_false(eval_results_has(r, key2));
    o = eval_cell_json(&cell);
    assert_int_equal(eval_results_write(r, key2, o), FASA_OK);
    eval_results_close(r);
    cJSON *arr;
    int32_t bad;
    assert_int_equal(eval_results_read(path, &arr, &bad), FASA_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    const cJSON *second = cJSON_GetArrayItem(arr, 1);
    assert_string_equal(cJSON_GetObjectItem(second, "cell")->valuestring, key2);
    assert_string_equal(cJSON_GetObjectItem(second, "label")->valuestring, "stream");
    cJSON_Delete(arr);

    /* A whole line that does not parse (edited by hand) is counted and skipped. */
    f = fopen(path, "a");
    assert_non_null(f);
    fputs("not a result\n", f);
    fclose(f);
    assert_int_equal(eval_results_open(dir, &r), FASA_OK);
    assert_false(eval_results_dropped_partial(r));
    assert_int_equal(eval_results_count(r), 2);
    assert_int_equal(eval_results_bad_lines(r), 1);
    eval_results_close(r);
    scratch_remove();
}

/* ---- needle generators ----------------------------------------------------------- */

static int32_t *tokens_of(const char *text, int32_t *n) {
    const int32_t cap = (int32_t)strlen(text) + 2;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(fasa_tokenize(model, text, strlen(text), false, false, ids, cap, n), FASA_OK);
    return ids;
}

static int32_t find_tokens(const int32_t *hay, int32_t n, const int32_t *needle, int32_t m) {
    for (int32_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, (size_t)m * sizeof *hay)) return i;
    return -1;
}

static char *detokenize(const int32_t *ids, int32_t n) {
    char *s = calloc((size_t)n * 64 + 1, 1);
    assert_non_null(s);
    size_t w = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t k = fasa_token_piece(model, ids[i], s + w, 64);
        if (k > 0) w += (size_t)k;
    }
    s[w] = '\0';
    return s;
}

static void test_needle_deterministic(void **state) {
    (void)state;
    enum { LEN = 700 };
    int32_t hay[LEN];
    assert_int_equal(needle_filler(model, LEN, hay), FASA_OK);
    for (int k = 0; k < NEEDLE_N_KINDS; k++) {
        const needle_spec spec = {(needle_kind)k, LEN, 0.4, 12345, true};
        needle_case a, b, c;
        assert_int_equal(needle_make(model, &spec, hay, LEN, &a), FASA_OK);
        assert_int_equal(needle_make(model, &spec, hay, LEN, &b), FASA_OK);
        assert_int_equal(a.n_tokens, LEN);
        assert_int_equal(b.n_tokens, a.n_tokens);
        assert_memory_equal(a.tokens, b.tokens, (size_t)a.n_tokens * sizeof *a.tokens);
        assert_int_equal(a.n_question, b.n_question);
        assert_memory_equal(a.question, b.question, (size_t)a.n_question * sizeof *a.question);
        assert_memory_equal(a.values, b.values, sizeof a.values);
        assert_true(a.n_values >= 1);
        needle_spec other = spec;
        other.seed = 999;
        assert_int_equal(needle_make(model, &other, hay, LEN, &c), FASA_OK);
        assert_string_not_equal(a.values[0], c.values[0]);
        needle_case_free(&a);
        needle_case_free(&b);
        needle_case_free(&c);
    }
}

/* The first needle is in the token stream where needle_pos says, at the asked
 * depth of the haystack (up to the snap to a sentence boundary, 48 tokens,
 * and, for kinds with several needles, the ones spliced before it). */
static void check_depth(needle_kind kind, const int32_t *hay, int32_t len, double depth, int32_t slack) {
    const needle_spec spec = {kind, len, depth, 7 + (uint64_t)(depth * 100), true};
    needle_case c;
    assert_int_equal(needle_make(model, &spec, hay, len, &c), FASA_OK);
    assert_int_equal(c.n_tokens, len);
    int32_t m;
    int32_t *needle = tokens_of(c.needle_text, &m);
    assert_int_equal(find_tokens(c.tokens, c.n_tokens, needle, m), c.needle_pos);
    assert_true(c.needle_pos >= c.hay_start);
    const double at = (double)(c.needle_pos - c.hay_start) / c.n_fill;
    if (fabs(at - depth) > (double)slack / c.n_fill)
        fail_msg("%s at depth %.2f: needle found at %.3f (token %d of %d)", needle_kind_name(kind), depth, at,
                 c.needle_pos, c.n_tokens);
    /* The value is in the needle and the question is not empty. */
    assert_non_null(strstr(c.needle_text, c.values[0]));
    assert_true(c.n_question > 4);
    free(needle);
    needle_case_free(&c);
}

static void test_needle_depth(void **state) {
    (void)state;
    enum { LEN = 1500 };
    int32_t filler[LEN], plain[LEN], word;
    assert_int_equal(needle_filler(model, LEN, filler), FASA_OK);
    int32_t n;
    int32_t *w = tokens_of(" meadow", &n);
    assert_int_equal(n, 1);
    word = w[0];
    free(w);
    /* No sentence boundary at all: the needle goes exactly at the depth. */
    for (int i = 0; i < LEN; i++) plain[i] = word;
    const double depths[] = {0.0, 0.1, 0.33, 0.5, 0.9, 1.0};
    for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
        check_depth(NEEDLE_PASSKEY, filler, LEN, depths[d], 48);
        check_depth(NEEDLE_NUMBER, filler, LEN, depths[d], 48);
        check_depth(NEEDLE_UUID, plain, LEN, depths[d], 2);
        check_depth(NEEDLE_MULTIKEY, filler, LEN, depths[d], 48 + 3 * 40);
        check_depth(NEEDLE_MULTIVALUE, filler, LEN, depths[d], 48 + 3 * 40);
        check_depth(NEEDLE_VARTRACK, filler, LEN, depths[d], 48);
    }
}

static void test_needle_chain_order(void **state) {
    (void)state;
    enum { LEN = 900 };
    int32_t hay[LEN];
    assert_int_equal(needle_filler(model, LEN, hay), FASA_OK);
    const needle_spec spec = {NEEDLE_VARTRACK, LEN, 0.2, 3, false};
    needle_case c;
    assert_int_equal(needle_make(model, &spec, hay, LEN, &c), FASA_OK);
    assert_int_equal(c.n_values, 5);
    char *text = detokenize(c.tokens, c.n_tokens);
    const char *prev = NULL;
    for (int32_t i = 0; i < c.n_values; i++) {
        char pat[32];
        snprintf(pat, sizeof pat, "VAR %s = ", c.values[i]);
        const char *at = strstr(text, pat);
        assert_non_null(at);
        if (i > 0) {
            char link[48];
            snprintf(link, sizeof link, "VAR %s = VAR %s.", c.values[i], c.values[i - 1]);
            assert_non_null(strstr(text, link));
            assert_true(at > prev);
        }
        prev = at;
    }
    free(text);
    needle_case_free(&c);
}

static void test_needle_too_short(void **state) {
    (void)state;
    int32_t hay[64];
    assert_int_equal(needle_filler(model, 64, hay), FASA_OK);
    const needle_spec spec = {NEEDLE_MULTIVALUE, 64, 0.5, 1, true};
    needle_case c;
    assert_int_equal(needle_make(model, &spec, hay, 64, &c), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "too short"));
}

/* ---- tasks end to end on a tiny context -------------------------------------------- */

typedef struct counter {
    int64_t cells, todo;
} counter;

static void count_progress(void *user, const eval_progress *p) {
    counter *c = user;
    c->cells += p->cell;
    c->todo = p->todo;
}

static const char *const tiny_text =
    "It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled "
    "cabbage and old rag mats. At one end of it a coloured poster, too large for indoor display, had been "
    "tacked to the wall. It depicted simply an enormous face, more than a metre wide: the face of a man of "
    "about forty-five, with a heavy black moustache and ruggedly handsome features.\n";

static void write_text(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 12; i++) fputs(tiny_text, f);
    fclose(f);
}

typedef struct tiny {
    eval_grid grid;
    eval_corpus corpus;
    eval_results *res;
    char dir[600], path[700];
    int32_t ctxs[1];
    needle_kind kinds[1];
    double depths[1];
    counter count;
    eval_env env;
} tiny;

/* full, stream at a small budget (8), and with `identity` random at a budget
 * covering the cache (so it must equal full exactly). Contexts are tiny: the
 * tests run under AddressSanitizer too, where a token costs ~70 ms. */
static void tiny_setup(tiny *t, const char *task, int32_t ctx, int32_t decode, bool identity) {
    memset(t, 0, sizeof *t);
    scratch_make();
    char text[600];
    scratch_path(text, sizeof text, "text.txt");
    write_text(text);
    const char *paths[] = {text};
    assert_int_equal(eval_corpus_load(paths, 1, &t->corpus), FASA_OK);
    const int32_t b_small[] = {8}, b_all[] = {4096};
    eval_grid small, all;
    assert_int_equal(build("stream", b_small, 1, NULL, 0, strcmp(task, "ca") != 0, NULL, &small), FASA_OK);
    assert_int_equal(build("random", b_all, 1, NULL, 0, false, NULL, &all), FASA_OK);
    if (!identity) all.n = 0;
    t->grid.n = small.n + all.n;
    t->grid.cfgs = calloc((size_t)t->grid.n, sizeof *t->grid.cfgs);
    assert_non_null(t->grid.cfgs);
    memcpy(t->grid.cfgs, small.cfgs, (size_t)small.n * sizeof *small.cfgs);
    memcpy(t->grid.cfgs + small.n, all.cfgs, (size_t)all.n * sizeof *all.cfgs);
    eval_grid_free(&small);
    eval_grid_free(&all);
    scratch_path(t->dir, sizeof t->dir, "out");
    snprintf(t->path, sizeof t->path, "%s/results.jsonl", t->dir);
    t->ctxs[0] = ctx;
    t->kinds[0] = NEEDLE_PASSKEY;
    t->depths[0] = 0.5;
    t->env = (eval_env){.model = model, .grid = &t->grid, .corpus = &t->corpus, .n_threads = 1, .seed = 1,
                        .n_samples = 1, .ctxs = t->ctxs, .n_ctxs = 1, .decode = decode, .kinds = t->kinds,
                        .n_kinds = 1, .depths = t->depths, .n_depths = 1, .filler = true, .chat = true,
                        .progress = count_progress, .user = &t->count};
}

static void tiny_run(tiny *t, fasa_status (*run)(const eval_env *)) {
    assert_int_equal(eval_results_open(t->dir, &t->res), FASA_OK);
    t->env.results = t->res;
    t->count = (counter){0};
    const fasa_status st = run(&t->env);
    if (st) fail_msg("task failed: %s", fasa_last_error());
    eval_results_close(t->res);
    t->res = NULL;
}

static void tiny_free(tiny *t) {
    eval_corpus_free(&t->corpus);
    free(t->grid.cfgs);
    scratch_remove();
}

static double field_of(const char *path, const char *label, const char *field) {
    cJSON *arr;
    int32_t bad;
    assert_int_equal(eval_results_read(path, &arr, &bad), FASA_OK);
    double v = NAN;
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) {
        if (!strcmp(cJSON_GetObjectItem(o, "label")->valuestring, label)) v = cJSON_GetObjectItem(o, field)->valuedouble;
    }
    cJSON_Delete(arr);
    return v;
}

/* Runs a task twice: the first run measures every cell, the second none. */
static void run_twice(tiny *t, fasa_status (*run)(const eval_env *), int expect_cells) {
    tiny_run(t, run);
    assert_int_equal(t->count.cells, expect_cells);
    assert_int_equal(count_lines(t->path), expect_cells);
    tiny_run(t, run);
    assert_int_equal(t->count.cells, 0);
    assert_int_equal(count_lines(t->path), expect_cells);
}

static void test_task_ppl(void **state) {
    (void)state;
    tiny t;
    tiny_setup(&t, "ppl", 16, 3, true);
    run_twice(&t, eval_run_ppl, 3);
    const double full = field_of(t.path, "full", "nll");
    assert_true(full > 0);
    assert_true(field_of(t.path, "random", "nll") == full); /* bit-identical: same prefill, same attention */
    assert_true(field_of(t.path, "stream", "nll") != full);
    tiny_free(&t);
}

static void test_task_needle(void **state) {
    (void)state;
    tiny t;
    tiny_setup(&t, "needle", 96, 0, false);
    t.env.chat = false; /* a shorter prompt */
    t.grid.cfgs[0] = t.grid.cfgs[1]; /* stream alone: one prefill, no rewind */
    t.grid.n = 1;
    run_twice(&t, eval_run_needle, 1);
    fasa_model_info info;
    fasa_model_get_info(model, &info);
    const double bytes = field_of(t.path, "stream", "kv_bytes_per_token");
    assert_near(bytes, 2.0 * info.n_layers * info.n_kv_heads * 8 * info.head_dim * 4, 0.5);
    const double score = field_of(t.path, "stream", "score");
    assert_true(score == 0.0 || score == 1.0);
    tiny_free(&t);
}

static void test_task_gen(void **state) {
    (void)state;
    tiny t;
    tiny_setup(&t, "gen", 16, 4, true);
    t.env.chat = false;
    run_twice(&t, eval_run_gen, 3);
    assert_near(field_of(t.path, "random", "agreement"), 1.0, 0.0);
    assert_near(field_of(t.path, "random", "kl"), 0.0, 1e-6); /* float log-probabilities */
    assert_near(field_of(t.path, "random", "first_diff"), 4.0, 0.0);
    assert_near(field_of(t.path, "random", "repetition"), field_of(t.path, "full", "repetition"), 0.0);
    tiny_free(&t);
}

static void test_task_ca(void **state) {
    (void)state;
    tiny t;
    tiny_setup(&t, "ca", 24, 3, true);
    run_twice(&t, eval_run_ca, 2);
    assert_near(field_of(t.path, "random", "ca"), 1.0, 1e-12); /* the budget covers every token */
    const double stream = field_of(t.path, "stream", "ca");
    assert_true(stream > 0.0 && stream < 1.0);
    tiny_free(&t);
}

static void test_task_context_limit(void **state) {
    (void)state;
    tiny t;
    tiny_setup(&t, "ppl", 8000, 512, false);
    assert_int_equal(eval_results_open(t.dir, &t.res), FASA_OK);
    t.env.results = t.res;
    assert_int_equal(eval_run_ppl(&t.env), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "exceeds the model's context of 8192"));
    eval_results_close(t.res);
    tiny_free(&t);
}

/* ---- report ---------------------------------------------------------------------- */

static void test_report_golden(void **state) {
    (void)state;
    cJSON *arr;
    int32_t bad;
    assert_int_equal(eval_results_read(FASA_TEST_DIR "/golden/eval_results_small.jsonl", &arr, &bad), FASA_OK);
    assert_int_equal(bad, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(eval_report_write(arr, f), FASA_OK);
    fclose(f);
    cJSON_Delete(arr);
    static const char *const want[] = {
        "37 results for test-model",
        "## ppl",
        "P = 4096 (2 windows",
        "| method | 64 | 256 |",
        "| full | 1.0000 | 1.0000 |",
        "| oracle | – | 1.0020 |",         /* exp(2 / 1024) */
        "| fasa-8 | 1.3404 | **1.0217** |", /* exp(300 / 1024), exp(22 / 1024): best non-oracle at 256 */
        "| stream | **1.1026** | 1.2157 |", /* exp(100 / 1024): best at 64 */
        "### passkey: full scores 75% over 4 prompts\n",
        "| fasa-8 | **50** |",
        "| 0.00 | 100 | 0 |",
        "### number: full scores 33% over 3 prompts — **uninformative for this model**",
        "| fasa-8 | **87.5** |",
        "| stream | 0.2500 |",
        "| stream | 50.0 |",
        "| stream | 40.0 |",
        "| fasa-8 | **50.0** | **62.5** |",
        "| random | 6.2 | 12.5 |",
        /* quality against bytes, sorted by bytes; stream at 256 reads more than
         * stream at 64 and scores worse, fasa-8 at 64 is beaten by stream at 64 */
        "| method | budget | MB per step | ppl ratio to full | frontier |\n|---|---:|---:|---:|:-:|\n"
        "| stream | 64 | 2.00 | 1.1026 | yes |\n"
        "| stream | 256 | 5.00 | 1.2157 |  |\n"
        "| fasa-8 | 64 | 15.00 | 1.3404 |  |\n"
        "| fasa-8 | 256 | 20.00 | 1.0217 | yes |\n"
        "| oracle | 256 | 60.00 | 1.0020 |  |\n"
        "| full | all 4096 | 100.00 | 1.0000 | yes |\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(buf, want[i])) fail_msg("report lacks \"%s\":\n%s", want[i], buf);
    /* full's rows come first, oracle's second, then fasa. */
    assert_true(strstr(buf, "| full | 1.0000") < strstr(buf, "| oracle |"));
    assert_true(strstr(buf, "| oracle |") < strstr(buf, "| fasa-8 | 1.3404"));
    free(buf);
}

static int load_model(void **state) {
    (void)state;
    return fasa_model_load(FASA_TEST_MODEL, &model) == FASA_OK ? 0 : -1;
}

static int free_model(void **state) {
    (void)state;
    fasa_model_free(model);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_expansion),
        cmocka_unit_test(test_grid_errors),
        cmocka_unit_test(test_value_matching),
        cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_kv_bytes),
        cmocka_unit_test(test_results_file),
        cmocka_unit_test(test_report_golden),
        cmocka_unit_test(test_needle_deterministic),
        cmocka_unit_test(test_needle_depth),
        cmocka_unit_test(test_needle_chain_order),
        cmocka_unit_test(test_needle_too_short),
        cmocka_unit_test(test_task_ppl),
        cmocka_unit_test(test_task_needle),
        cmocka_unit_test(test_task_gen),
        cmocka_unit_test(test_task_ca),
        cmocka_unit_test(test_task_context_limit),
    };
    /* FASA_TEST_FILTER=test_task_* runs a subset. */
    if (getenv("FASA_TEST_FILTER")) cmocka_set_test_filter(getenv("FASA_TEST_FILTER"));
    return cmocka_run_group_tests(tests, load_model, free_model);
}
