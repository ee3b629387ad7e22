/* The prefill's blocked causal attention (src/attn/prefill.c) against a
 * float64 softmax computed here from the cache's own (rounded) rows, over
 * head dimensions that do and do not fill whole microkernel panels, groups
 * whose rows do not fill whole tiles, blocks at the start of the cache and
 * after it, partial blocks, and f32 and f16 caches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/prefill.h"
#include "kv.h"

static uint64_t rng = 0x9E3779B97F4A7C15u;

static float gauss(void) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        u[i] = (double)(rng >> 11) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0] + 1e-12)) * cos(6.283185307179586 * u[1]));
}

/* Every output of one block against float64; returns the worst error
 * relative to the largest |v| (outputs are convex combinations of values). */
static double check_block(int32_t d, int32_t group, int32_t pos, int32_t n_tok, fasa_kv_type type) {
    const int32_t n_kv = 2, layer = 1, n_ctx = pos + n_tok, heads = n_kv * group;
    fasa_kv kv;
    assert_int_equal(kv_init(&kv, 2, n_kv, d, n_ctx, type), FASA_OK);
    float *k = malloc((size_t)n_kv * d * sizeof *k), *v = malloc((size_t)n_kv * d * sizeof *v);
    const int64_t stride = (int64_t)heads * d;
    float *q = malloc((size_t)(n_tok * stride) * sizeof *q), *out = malloc((size_t)(n_tok * stride) * sizeof *out);
    float *scratch = malloc((size_t)attn_prefill_scratch(group, d) * sizeof *scratch);
    float *row = malloc((size_t)d * sizeof *row);
    double *w = malloc((size_t)n_ctx * sizeof *w);
    assert_true(k && v && q && out && scratch && row && w);
    for (int32_t p = 0; p < n_ctx; p++) {
        for (int32_t i = 0; i < n_kv * d; i++) k[i] = gauss(), v[i] = gauss();
        kv_store(&kv, layer, p, k, v);
    }
    /* queries of sd 3: peaked softmax, so that a wrong mask or key shows */
    for (int64_t i = 0; i < n_tok * stride; i++) q[i] = 3.0f * gauss(), out[i] = NAN;
    const float scale = 1.0f / sqrtf((float)d);
    double worst = 0.0, vmax = 0.0;
    for (int32_t h = 0; h < n_kv; h++) {
        const int64_t off = (int64_t)h * group * d;
        attn_prefill_block(&kv, layer, h, q + off, stride, group, pos, n_tok, scale, out + off, scratch);
        for (int32_t t = 0; t < n_tok; t++)
            for (int32_t g = 0; g < group; g++) {
                const float *qr = q + t * stride + off + (int64_t)g * d;
                const int32_t n = pos + t + 1;
                double mx = -INFINITY, sum = 0.0;
                for (int32_t j = 0; j < n; j++) {
                    const float *kr = kv_row_f32(&kv, kv_k_row(&kv, layer, h, j), row);
                    double s = 0.0;
                    for (int32_t i = 0; i < d; i++) s += (double)qr[i] * kr[i];
                    w[j] = s * scale;
                    mx = fmax(mx, w[j]);
                }
                for (int32_t j = 0; j < n; j++) sum += (w[j] = exp(w[j] - mx));
                for (int32_t i = 0; i < d; i++) {
                    double want = 0.0;
                    for (int32_t j = 0; j < n; j++) {
                        const float vj = kv_row_f32(&kv, kv_v_row(&kv, layer, h, j), row)[i];
                        want += w[j] / sum * vj;
                        vmax = fmax(vmax, fabs(vj));
                    }
                    const double got = out[t * stride + off + (int64_t)g * d + i];
                    if (!(fabs(got - want) <= 1e-4)) /* values are N(0, 1) */
                        fail_msg("d %d group %d pos %d n_tok %d: token %d head %d dim %d = %.7f, want %.7f", d, group,
                                 pos, n_tok, t, g, i, got, want);
                    worst = fmax(worst, fabs(got - want));
                }
            }
    }
    kv_free(&kv);
    free(k), free(v), free(q), free(out), free(scratch), free(row), free(w);
    return worst / vmax;
}

static void test_prefill_block_matches_float64(void **state) {
    (void)state;
    const int32_t dims[] = {64, 128, 80}, groups[] = {1, 3, 6, 7};
    double worst = 0.0;
    for (int kt = 0; kt < 2; kt++)
        for (size_t di = 0; di < 3; di++)
            for (size_t gi = 0; gi < 4; gi++) {
                const int32_t d = dims[di], group = groups[gi], bt = attn_prefill_tokens(group);
                /* a whole block from position 0, a partial block deep in the
                 * cache (keys over several key blocks, the last one partial),
                 * and one token */
                const int32_t cases[3][2] = {{0, bt}, {150, bt > 5 ? bt - 5 : 1}, {67, 1}};
                for (int ci = 0; ci < 3; ci++)
                    worst = fmax(worst, check_block(d, group, cases[ci][0], cases[ci][1],
                                                    kt ? FASA_KV_F16 : FASA_KV_F32));
            }
    print_message("prefill attention: worst error %.3g of the largest |v|\n", worst);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_block_matches_float64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
