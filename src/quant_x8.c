/* Decode products with the activations rounded to int8.
 *
 * A decoded token's products read every weight once, so on the CPU they are
 * bound by memory bandwidth only if the arithmetic per weight is small. The
 * f32 kernels (quant_simd.c) widen every weight to a float and FMA it: about
 * four instructions per weight, which holds a core near 5-6 GB/s of Q4_K.
 * Here the activations are rounded once per product to int8 in groups of 32,
 *
 *     x[c] ~ x'[c] = d[g] q[c],   g = c / 32,   d[g] = max |x in g| / 127,
 *
 * and a weight block's codes meet them in integer dot products (four
 * byte products per 32-bit lane per instruction: VNNI's vpdpbusd, or
 * AVX2's vpmaddubsw + vpmaddwd), scaled once per 16 or 32 elements.
 *
 * The kernels compute exactly sum_c W[r][c] x'[c] up to float rounding:
 * tests/test_quant.c holds them to the float64 product of weights decoded
 * from the format description with x' rounded from its definition. What
 * int8 activations cost against f32 ones (each x moves by at most d / 2; a
 * few 1e-3 of a product's largest output on random data; llama.cpp rounds
 * the same way on the CPU, in groups of 256) is bounded there too and
 * measured on a real model in docs/benchmarks.md.
 *
 * Formats with a kernel here: Q4_K and Q6_K (the weights of Q4_K_M files). */
#include "quant_internal.h"

#include <math.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define X8_SIMD 1
#endif

/* The rounding of one group, x[i] -> q[i] = round(x[i] / d) (ties to even),
 * in plain C; quant_x8_quantize's vector version gives the same codes. */
static void quantize_group(const float *v, int8_t *q, float *d, float *s16, float *s32) {
    float m = 0.0f;
    bool finite = true;
    for (int i = 0; i < 32; i++) {
        finite &= isfinite(v[i]);
        m = fmaxf(m, fabsf(v[i]));
    }
    /* A NaN or infinity makes the group's scale NaN, so that every product
     * it enters is NaN, as with f32 activations. */
    *d = finite ? m / 127.0f : NAN;
    int s[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        /* |v| <= m, so v / d rounds to at most 127 in magnitude */
        const int r = finite && m > 0.0f ? (int)lrintf(v[i] / *d) : 0;
        q[i] = (int8_t)r;
        s[i / 16] += r;
    }
    s16[0] = (float)s[0], s16[1] = (float)s[1], *s32 = (float)(s[0] + s[1]);
}

#if X8_SIMD
static float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

static int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}
#endif

void quant_x8_quantize(const float *x, int64_t n, const quant_x8 *o) {
    for (int64_t g = 0; g < n / 32; g++) {
        const float *v = x + 32 * g;
#if X8_SIMD
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 f[4], amax = _mm256_setzero_ps(), nan_test = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            f[k] = _mm256_loadu_ps(v + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, f[k]));
            nan_test = _mm256_add_ps(nan_test, _mm256_mul_ps(f[k], _mm256_setzero_ps())); /* NaN if any is not finite */
        }
        const float m = hmax(amax);
        if (_mm256_movemask_ps(_mm256_cmp_ps(nan_test, nan_test, _CMP_UNORD_Q)) || m == 0.0f) {
            quantize_group(v, o->q + 32 * g, o->d + g, o->s16 + 2 * g, o->s32 + g);
            continue;
        }
        const float d = m / 127.0f;
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_div_ps(f[k], _mm256_set1_ps(d)));
        const int s0 = hsum_i32(_mm256_add_epi32(q[0], q[1])), s1 = hsum_i32(_mm256_add_epi32(q[2], q[3]));
        /* the packs work within 128-bit halves: dwords come out as q0 q1 q2 q3 (low halves), then the high halves */
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(o->q + 32 * g),
                            _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        o->d[g] = d;
        o->s16[2 * g] = (float)s0, o->s16[2 * g + 1] = (float)s1, o->s32[g] = (float)(s0 + s1);
#else
        quantize_group(v, o->q + 32 * g, o->d + g, o->s16 + 2 * g, o->s32 + g);
#endif
    }
}

#if X8_SIMD

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* acc + sum over each 4 bytes of u (unsigned) times s (signed). Without
 * VNNI the byte products go through 16-bit pairs, which cannot saturate
 * here: codes are below 64 and |q| <= 127, so a pair is below 2^15. */
ALWAYS_INLINE __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

ALWAYS_INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

ALWAYS_INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Q4_K: sub-block s (32 elements) is x = d sc[s] n - dmin mn[s], so its
 * product is d sc[s] d_x[s] sum(n q) - dmin mn[s] d_x[s] sum(q). */
static float dot_x8_q4_k(const void *row, const quant_x8 *x, int64_t n) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    /* Four accumulators: with one, every FMA waits for the previous one's
     * latency (4 cycles) and the loop ran at 17 GB/s from L1; four chains
     * reach 20 GB/s. */
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 mins = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = (const uint8_t *)row + 144 * b;
        const int8_t *q = x->q + 256 * b;
        const float d = quant_load_f16(blk), dmin = quant_load_f16(blk + 2);
        /* the eight 6-bit scales and mins (layout in quant_block.h), unpacked four bytes at a time */
        uint32_t w[3];
        memcpy(w, blk + 4, sizeof w);
        const __m128i sm = _mm_setr_epi32((int)(w[0] & 0x3f3f3f3fu),
                                          (int)((w[2] & 0x0f0f0f0fu) | ((w[0] >> 2) & 0x30303030u)),
                                          (int)(w[1] & 0x3f3f3f3fu),
                                          (int)(((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 2) & 0x30303030u)));
        const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
        const __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
        const __m256 dx = _mm256_loadu_ps(x->d + 8 * b);
        float f[8];
        _mm256_storeu_ps(f, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(d), sc), dx));
        mins = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), mn), dx),
                               _mm256_loadu_ps(x->s32 + 8 * b), mins);
        for (int k = 0; k < 4; k++) {
            const __m256i codes = load32(blk + 16 + 32 * k);
            const __m256i lo = _mm256_and_si256(codes, low4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4);
            const __m256i s0 = dpbusd(_mm256_setzero_si256(), lo, load32(q + 64 * k));
            const __m256i s1 = dpbusd(_mm256_setzero_si256(), hi, load32(q + 64 * k + 32));
            acc[k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_broadcast_ss(f + 2 * k), acc[k & 1]);
            acc[2 + (k & 1)] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_broadcast_ss(f + 2 * k + 1), acc[2 + (k & 1)]);
        }
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) - hsum(mins);
}

/* Q6_K: 16 elements share the scale sc[k]: x = d sc[k] (n - 32), so their
 * product is d sc[k] d_x (sum(n q) - 32 sum(q)). */
static float dot_x8_q6_k(const void *row, const quant_x8 *x, int64_t n) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    const __m256i pairs_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), pairs_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
    __m256 acc = _mm256_setzero_ps(), offset = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = (const uint8_t *)row + 210 * b;
        const int8_t *q = x->q + 256 * b;
        const __m256 d = _mm256_set1_ps(quant_load_f16(blk + 208)), dx = _mm256_loadu_ps(x->d + 8 * b);
        /* f[k] = d sc[k] d_x[k / 2] for the 16 scales of the block */
        float f[16];
        const __m128i sc = _mm_loadu_si128((const __m128i *)(blk + 192));
        const __m256 f0 = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))),
                                        _mm256_permutevar8x32_ps(dx, pairs_lo));
        const __m256 f1 = _mm256_mul_ps(
            _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))),
            _mm256_permutevar8x32_ps(dx, pairs_hi));
        _mm256_storeu_ps(f, f0);
        _mm256_storeu_ps(f + 8, f1);
        offset = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x->s16 + 16 * b), offset);
        offset = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x->s16 + 16 * b + 8), offset);
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = load32(blk + 64 * h), l1 = load32(blk + 64 * h + 32), hb = load32(blk + 128 + 32 * h);
            /* group g of the half: low bits from l0 / l1, high pair = bits 2g of hb, moved to bits 4-5 */
            const __m256i codes[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), bits45)),
                _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(hb, bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                _mm256_and_si256(_mm256_srli_epi16(hb, 2), bits45)),
            };
            for (int g = 0; g < 4; g++) {
                const __m256i s = dpbusd(_mm256_setzero_si256(), codes[g], load32(q + 128 * h + 32 * g));
                const int k = 8 * h + 2 * g; /* lanes 0-3: scale k, lanes 4-7: k + 1 */
                const __m256 scale = _mm256_set_m128(_mm_broadcast_ss(f + k + 1), _mm_broadcast_ss(f + k));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc);
            }
        }
    }
    return hsum(acc) - 32.0f * hsum(offset);
}

#else /* no AVX2: the same integer sums, one element at a time */

static float dot_x8_q4_k(const void *row, const quant_x8 *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = (const uint8_t *)row + 144 * b;
        const float d = quant_load_f16(blk), dmin = quant_load_f16(blk + 2);
        for (int s = 0; s < 8; s++) {
            int sc, mn, acc = 0;
            quant_k_scale_min(blk + 4, s, &sc, &mn);
            for (int l = 0; l < 32; l++)
                acc += ((blk[16 + 32 * (s / 2) + l] >> (4 * (s & 1))) & 0xF) * x->q[256 * b + 32 * s + l];
            const float dx = x->d[8 * b + s];
            sum += d * (float)sc * dx * (float)acc - dmin * (float)mn * dx * x->s32[8 * b + s];
        }
    }
    return sum;
}

static float dot_x8_q6_k(const void *row, const quant_x8 *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = (const uint8_t *)row + 210 * b;
        const float d = quant_load_f16(blk + 208);
        for (int k = 0; k < 16; k++) {
            int acc = 0;
            for (int i = 0; i < 16; i++) {
                const int e = 16 * k + i, h = e / 128, g = e % 128 / 32, l = e % 32;
                const int lo = (blk[64 * h + l + 32 * (g & 1)] >> (4 * (g >> 1))) & 0xF;
                const int hi = (blk[128 + 32 * h + l] >> (2 * g)) & 3;
                acc += (lo | hi << 4) * x->q[256 * b + e];
            }
            sum += d * (float)(int8_t)blk[192 + k] * x->d[8 * b + k / 2] * ((float)acc - 32.0f * x->s16[16 * b + k]);
        }
    }
    return sum;
}

#endif

quant_dot_x8_fn quant_dot_x8_of(uint32_t type) {
    switch (type) {
    case FASA_TYPE_Q4_K: return dot_x8_q4_k;
    case FASA_TYPE_Q6_K: return dot_x8_q6_k;
    default: return NULL;
    }
}
