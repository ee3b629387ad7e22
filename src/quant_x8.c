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
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VNNI__)
#define X8_AVX512 1
#endif
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

/* A Q4_K block's eight 6-bit scales and mins (layout in quant_block.h) in
 * vector registers: the bytes that hold each value's low bits and its top
 * two bits are gathered by two byte shuffles. (Unpacked four bytes at a time
 * in general registers, this took 30 of the 90 instructions of a block.) */
ALWAYS_INLINE void q4_k_scales(const uint8_t *blk, __m256 *sc, __m256 *mn) {
    /* the 12 bytes of scales and the first 4 of codes, unused */
    const __m128i s = _mm_loadu_si128((const __m128i *)(blk + 4));
    /* result bytes 0-7: sc[0..7], 8-15: mn[0..7] */
    const __m128i low = _mm_shuffle_epi8(s, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i top = _mm_shuffle_epi8(s, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i in_low = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m128i in_high = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
    const __m128i sm = _mm_or_si128(
        _mm_or_si128(_mm_and_si128(low, in_low), _mm_and_si128(_mm_srli_epi16(low, 4), in_high)),
        _mm_and_si128(_mm_srli_epi16(top, 2), _mm_set1_epi8(0x30))); /* bits 6-7 of top to bits 4-5 */
    *sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
    *mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
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
        __m256 sc, mn;
        q4_k_scales(blk, &sc, &mn);
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

#if X8_AVX512
/* Q6_K in 512-bit registers: the 256-bit kernel spends most of its
 * instructions rearranging codes and scales (the high pairs, the scale pairs
 * of set_m128), which 512-bit registers do for 64 weights at a time: the low
 * nibbles of a half's 64 bytes are its elements 0-63, the high nibbles
 * 64-127, and the 32 bytes of high pairs, loaded into both halves, are
 * shifted per half. From L1, one thread on an AMD Zen 4: 18.6 -> 28.3 GB/s.
 * (Q4_K gained nothing this way there, 20.3 -> 17.9 GB/s: its sub-blocks 2k
 * and 2k + 1 share bytes, so a 512-bit register of 64 consecutive weights
 * needs a broadcast and a shift that the 256-bit kernel does not, and
 * Zen 4 runs a 512-bit instruction as two 256-bit halves.) */

ALWAYS_INLINE __m512i dpbusd512(__m512i u, const int8_t *q) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(q));
}

ALWAYS_INLINE __m512i halves_epi16(short lo, short hi) {
    return _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1);
}

static float dot_x8_q6_k(const void *row, const quant_x8 *x, int64_t n) {
    const __m512i low4 = _mm512_set1_epi8(0x0F), six = _mm512_set1_epi8(0x3F);
    /* where the high pair of group g sits in the byte (bits 2g), moved to bits 4-5 */
    const __m512i up01 = halves_epi16(4, 2), down23 = halves_epi16(0, 2);
    /* lane l of a 64-element product has scale k + l / 4 */
    const __m512i quads = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, offset = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = (const uint8_t *)row + 210 * b;
        const int8_t *q = x->q + 256 * b;
        /* f[k] = d sc[k] d_x[k / 2] for the 16 scales of the block */
        const __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 192))));
        const __m512 dx = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(_mm256_loadu_ps(x->d + 8 * b)));
        const __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(quant_load_f16(blk + 208)), sc), dx);
        offset = _mm512_fmadd_ps(f, _mm512_loadu_ps(x->s16 + 16 * b), offset);
        for (int h = 0; h < 2; h++) {
            const __m512i lo = _mm512_loadu_si512(blk + 64 * h);
            const __m512i hb = _mm512_broadcast_i64x4(load32(blk + 128 + 32 * h));
            /* 0xCA: bits of the first operand where the mask (low4) is set, of the second elsewhere */
            const __m512i g01 = _mm512_and_si512(
                _mm512_ternarylogic_epi32(low4, lo, _mm512_sllv_epi16(hb, up01), 0xCA), six);
            const __m512i g23 = _mm512_and_si512(
                _mm512_ternarylogic_epi32(low4, _mm512_srli_epi16(lo, 4), _mm512_srlv_epi16(hb, down23), 0xCA), six);
            const __m512i s01 = dpbusd512(g01, q + 128 * h), s23 = dpbusd512(g23, q + 128 * h + 64);
            const __m512i k = _mm512_set1_epi32(8 * h);
            acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s01), _mm512_permutexvar_ps(_mm512_add_epi32(quads, k), f), acc[0]);
            acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s23),
                                     _mm512_permutexvar_ps(_mm512_add_epi32(quads, _mm512_add_epi32(k, _mm512_set1_epi32(4))), f),
                                     acc[1]);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) - 32.0f * _mm512_reduce_add_ps(offset);
}

#else

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

#endif

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
