/* Prefill products with int8 activations: many tokens times one weight
 * matrix, with the numerics of the decode kernels (quant_x8.c).
 *
 * The f32 prefill path (matmul.c) widens each weight to a float once per
 * call and multiplies it by every token with one FMA per weight and token:
 * it runs at 85-90% of the FMA peak and cannot go further. Here a panel of
 * MR weight rows is unpacked once per call into its formats' codes (small
 * unsigned integers) and one float pair per group of G elements,
 *
 *     W[r][k] = a[r][g] code[r][k] + b[r][g],   g = k / G,
 *
 * and meets the tokens' int8 codes x[k] ~ d[k / 32] q[k] in integer dot
 * products: one vpdpbusd does 64 byte products where an FMA does 16. Per
 * group and token the integer sum is scaled once:
 *
 *     sum_{k in g} W x' = d (a sum(code q) + b sum(q)).
 *
 * The result is the same sum as the decode kernels compute (up to float
 * rounding), so a chunk of prompt tokens and the same tokens decoded one
 * by one agree as closely as two float summation orders do; the tests hold
 * both to the float64 product with x rounded from its definition.
 *
 * Formats unpacked here: Q4_K (G 32: a = d sc, b = -dmin mn) and Q6_K
 * (G 16: a = d sc, b = -32 d sc), the weights of Q4_K_M files. */
#include "quant_internal.h"

#include <omp.h>
#include <stdlib.h>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define VL 16 /* int32 / float lanes per register */
#define MV 2  /* registers per panel column: MR = 32 rows */
#define NR 4  /* tokens per tile: 2 x 4 integer and 2 x 4 float accumulators */
typedef __m512i vi;
typedef __m512 vf;
#define vi_zero() _mm512_setzero_si512()
#define vi_load(p) _mm512_loadu_si512((const void *)(p))
#define vi_set1(v) _mm512_set1_epi32(v)
#define vf_load(p) _mm512_loadu_ps(p)
#define vf_set1(v) _mm512_set1_ps(v)
#define vf_zero() _mm512_setzero_ps()
#define vf_mul(a, b) _mm512_mul_ps(a, b)
#define vf_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vf_add(a, b) _mm512_add_ps(a, b)
#define vf_store(p, v) _mm512_storeu_ps(p, v)
#define vf_of(v) _mm512_cvtepi32_ps(v)
#if defined(__AVX512VNNI__)
#define vi_dpbusd(acc, u, s) _mm512_dpbusd_epi32(acc, u, s)
#else /* pairs of byte products stay below 2^15: codes < 64, |q| <= 127 */
#define vi_dpbusd(acc, u, s) \
    _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)))
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VL 8
#define MV 1 /* MR = 8 rows: 16 registers hold 4 + 4 accumulators and the operands */
#define NR 4
typedef __m256i vi;
typedef __m256 vf;
#define vi_zero() _mm256_setzero_si256()
#define vi_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define vi_set1(v) _mm256_set1_epi32(v)
#define vf_load(p) _mm256_loadu_ps(p)
#define vf_set1(v) _mm256_set1_ps(v)
#define vf_zero() _mm256_setzero_ps()
#define vf_mul(a, b) _mm256_mul_ps(a, b)
#define vf_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vf_add(a, b) _mm256_add_ps(a, b)
#define vf_store(p, v) _mm256_storeu_ps(p, v)
#define vf_of(v) _mm256_cvtepi32_ps(v)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define vi_dpbusd(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#elif defined(__AVXVNNI__)
#define vi_dpbusd(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#else
#define vi_dpbusd(acc, u, s) \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#endif
#else /* plain C, the same panel and loops */
#define VL 1
#define MV 8
#define NR 4
#endif

#define MR (VL * MV)
/* Columns per panel: whole rows of most matrices (fewer passes over y);
 * the panel (MR x KC codes, 2 x MR x KC / 16 floats at most) stays in L2. */
#define KC 2048

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Loops over the tile's registers are unrolled so that the accumulators
 * are indexed by constants and stay in registers. */
#define UNROLL _Pragma("GCC unroll 16")

/* One 256-element block of a row: its codes in element order, and a, b of
 * each group. */
typedef void (*unpack_fn)(const uint8_t *blk, uint8_t *codes, float *a, float *b);

/* The loops run over the 32 bytes of a code plane with no data-dependent
 * shifts, so that the compiler vectorizes them. */
static void unpack_q4_k(const uint8_t *blk, uint8_t *codes, float *a, float *b) {
    const float d = quant_load_f16(blk), dmin = quant_load_f16(blk + 2);
    for (int s = 0; s < 8; s++) {
        int sc, mn;
        quant_k_scale_min(blk + 4, s, &sc, &mn);
        a[s] = d * (float)sc, b[s] = -dmin * (float)mn;
    }
    for (int j = 0; j < 4; j++) { /* sub-blocks 2j and 2j + 1: low and high nibbles of 32 bytes */
        const uint8_t *p = blk + 16 + 32 * j;
        for (int l = 0; l < 32; l++) {
            codes[64 * j + l] = p[l] & 0xF;
            codes[64 * j + 32 + l] = p[l] >> 4;
        }
    }
}

static void unpack_q6_k(const uint8_t *blk, uint8_t *codes, float *a, float *b) {
    const float d = quant_load_f16(blk + 208);
    for (int k = 0; k < 16; k++) {
        a[k] = d * (float)(int8_t)blk[192 + k];
        b[k] = -32.0f * a[k];
    }
    for (int h = 0; h < 2; h++) { /* 128 elements: low nibbles from 64 bytes, high pairs from 32 */
        const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
        uint8_t *c = codes + 128 * h;
        for (int l = 0; l < 32; l++) {
            c[l] = (uint8_t)((ql[l] & 0xF) | (qh[l] & 3) << 4);
            c[32 + l] = (uint8_t)((ql[32 + l] & 0xF) | (qh[l] >> 2 & 3) << 4);
            c[64 + l] = (uint8_t)(ql[l] >> 4 | (qh[l] >> 4 & 3) << 4);
            c[96 + l] = (uint8_t)(ql[32 + l] >> 4 | (qh[l] >> 6) << 4);
        }
    }
}

typedef struct x8_format {
    uint32_t type;
    int block_bytes, group; /* G */
    unpack_fn unpack;
} x8_format;

static const x8_format formats[] = {
    {FASA_TYPE_Q4_K, 144, 32, unpack_q4_k},
    {FASA_TYPE_Q6_K, 210, 16, unpack_q6_k},
};

static const x8_format *format_of(uint32_t type) {
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++)
        if (formats[i].type == type) return &formats[i];
    return NULL;
}

bool quant_gemm_x8_supports(uint32_t type) { return format_of(type) != NULL; }

/* A panel in the microkernel's order:
 *   codes[((k / 4) MR + r) 4 + k % 4]   rows r < MR, columns k < kc
 *   a[(k / G) MR + r], b[(k / G) MR + r]
 * Rows past mr are zero, so every tile can compute all MR. */
typedef struct panel {
    uint8_t *codes;
    float *a, *b;
} panel;

static void pack_panel(const x8_format *f, const uint8_t *w, size_t row_bytes, int64_t r0, int mr, int64_t k0,
                       int64_t kc, const panel *p) {
    const int gpb = 256 / f->group; /* groups per block */
    uint8_t codes[256];
    float a[16], b[16];
    for (int r = 0; r < MR; r++) {
        for (int64_t blk = 0; blk < kc / 256; blk++) {
            if (r < mr) {
                f->unpack(w + (size_t)(r0 + r) * row_bytes + (size_t)((k0 / 256 + blk) * f->block_bytes), codes, a, b);
            } else {
                memset(codes, 0, sizeof codes);
                for (int g = 0; g < gpb; g++) a[g] = b[g] = 0.0f;
            }
            for (int q = 0; q < 64; q++) memcpy(p->codes + ((blk * 64 + q) * MR + r) * 4, codes + 4 * q, 4);
            for (int g = 0; g < gpb; g++) {
                p->a[(blk * gpb + g) * MR + r] = a[g];
                p->b[(blk * gpb + g) * MR + r] = b[g];
            }
        }
    }
}

/* The tokens a tile reads: NR of them, the last repeated past nr. */
typedef struct tile_x {
    const int8_t *q[NR];
    const float *d[NR], *sum[NR]; /* d per 32 elements, sum(q) per G */
} tile_x;

static void tile_x_of(const quant_x8 *x8, int64_t t0, int nr, int64_t k0, int group, tile_x *tx) {
    for (int j = 0; j < NR; j++) {
        const quant_x8 *x = &x8[t0 + (j < nr ? j : nr - 1)];
        tx->q[j] = x->q + k0;
        tx->d[j] = x->d + k0 / 32;
        tx->sum[j] = group == 16 ? x->s16 + k0 / 16 : x->s32 + k0 / 32;
    }
}

#if VL > 1

/* y[j * ldy + r] (+)= sum_k W[r][k] x'_j[k] over the panel's kc columns,
 * for r < mr, j < nr. G is a constant in each instance. */
ALWAYS_INLINE void tile_g(const panel *p, int64_t kc, const tile_x *tx, int G, float *y, int64_t ldy, int mr,
                          int nr, bool accumulate) {
    vf acc[NR][MV];
    UNROLL
    for (int j = 0; j < NR; j++)
        UNROLL
        for (int v = 0; v < MV; v++) acc[j][v] = vf_zero();
    for (int64_t g = 0; g < kc / G; g++) {
        vi isum[NR][MV];
        UNROLL
        for (int j = 0; j < NR; j++)
            UNROLL
            for (int v = 0; v < MV; v++) isum[j][v] = vi_zero();
        const uint8_t *c = p->codes + g * G * MR;
        UNROLL
        for (int q = 0; q < G / 4; q++) {
            vi w[MV];
            UNROLL
            for (int v = 0; v < MV; v++) w[v] = vi_load(c + (q * MR + v * VL) * 4);
            UNROLL
            for (int j = 0; j < NR; j++) {
                int32_t x4;
                memcpy(&x4, tx->q[j] + g * G + 4 * q, 4);
                const vi xb = vi_set1(x4);
                UNROLL
                for (int v = 0; v < MV; v++) isum[j][v] = vi_dpbusd(isum[j][v], w[v], xb);
            }
        }
        vf a[MV], b[MV];
        UNROLL
        for (int v = 0; v < MV; v++) a[v] = vf_load(p->a + g * MR + v * VL), b[v] = vf_load(p->b + g * MR + v * VL);
        UNROLL
        for (int j = 0; j < NR; j++) {
            const float d = tx->d[j][g * G / 32];
            const vf dx = vf_set1(d), ds = vf_set1(d * tx->sum[j][g]);
            UNROLL
            for (int v = 0; v < MV; v++) {
                acc[j][v] = vf_fma(vf_of(isum[j][v]), vf_mul(a[v], dx), acc[j][v]);
                acc[j][v] = vf_fma(b[v], ds, acc[j][v]);
            }
        }
    }
    UNROLL
    for (int j = 0; j < NR && j < nr; j++) {
        float *yj = y + j * ldy;
        if (mr == MR) {
            UNROLL
            for (int v = 0; v < MV; v++)
                vf_store(yj + v * VL, accumulate ? vf_add(acc[j][v], vf_load(yj + v * VL)) : acc[j][v]);
        } else {
            float tmp[MR];
            UNROLL
            for (int v = 0; v < MV; v++) vf_store(tmp + v * VL, acc[j][v]);
            for (int r = 0; r < mr; r++) yj[r] = accumulate ? yj[r] + tmp[r] : tmp[r];
        }
    }
}

#else

ALWAYS_INLINE void tile_g(const panel *p, int64_t kc, const tile_x *tx, int G, float *y, int64_t ldy, int mr,
                          int nr, bool accumulate) {
    float acc[NR][MR] = {{0}};
    for (int64_t g = 0; g < kc / G; g++) {
        int32_t isum[NR][MR] = {{0}};
        for (int64_t k = g * G; k < (g + 1) * G; k++)
            for (int j = 0; j < NR; j++)
                for (int r = 0; r < MR; r++) isum[j][r] += p->codes[((k / 4) * MR + r) * 4 + k % 4] * tx->q[j][k];
        for (int j = 0; j < NR; j++) {
            const float d = tx->d[j][g * G / 32];
            for (int r = 0; r < MR; r++)
                acc[j][r] += d * (p->a[g * MR + r] * (float)isum[j][r] + p->b[g * MR + r] * tx->sum[j][g]);
        }
    }
    for (int j = 0; j < NR && j < nr; j++)
        for (int r = 0; r < mr; r++) y[j * ldy + r] = accumulate ? y[j * ldy + r] + acc[j][r] : acc[j][r];
}

#endif

static void tile(const panel *p, int64_t kc, const tile_x *tx, int group, float *y, int64_t ldy, int mr, int nr,
                 bool accumulate) {
    if (group == 16) tile_g(p, kc, tx, 16, y, ldy, mr, nr, accumulate);
    else tile_g(p, kc, tx, 32, y, ldy, mr, nr, accumulate);
}

/* Rows [r0, r1) (r0 a multiple of MR) times tokens [t0, t1). */
static void gemm_block(const x8_format *f, const uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols,
                       const quant_x8 *x8, int64_t r0, int64_t r1, int64_t t0, int64_t t1, float *y,
                       const panel *p) {
    for (int64_t k0 = 0; k0 < cols; k0 += KC) {
        const int64_t kc = cols - k0 < KC ? cols - k0 : KC;
        for (int64_t r = r0; r < r1; r += MR) {
            const int mr = (int)(r1 - r < MR ? r1 - r : MR);
            pack_panel(f, w, row_bytes, r, mr, k0, kc, p);
            for (int64_t t = t0; t < t1; t += NR) {
                const int nr = (int)(t1 - t < NR ? t1 - t : NR);
                tile_x tx;
                tile_x_of(x8, t, nr, k0, f->group, &tx);
                tile(p, kc, &tx, f->group, y + t * rows + r, rows, mr, nr, k0 > 0);
            }
        }
    }
}

/* Splits [0, n) into `parts` near-equal contiguous ranges in units of `unit`. */
static void split(int64_t n, int64_t unit, int part, int parts, int64_t *lo, int64_t *hi) {
    const int64_t units = (n + unit - 1) / unit, u0 = units * part / parts, u1 = units * (part + 1) / parts;
    *lo = u0 * unit < n ? u0 * unit : n;
    *hi = u1 * unit < n ? u1 * unit : n;
}

bool quant_gemm_x8(uint32_t type, const void *w, int64_t rows, int64_t cols, const quant_x8 *x8, int64_t n_tok,
                   float *y, int n_threads) {
    const x8_format *f = format_of(type);
    if (!f || cols <= 0 || cols % 256) return false;
    const size_t row_bytes = (size_t)(cols / 256) * (size_t)f->block_bytes;
    const size_t panel_bytes = (size_t)MR * KC + 2 * sizeof(float) * (size_t)MR * (KC / 16);
    const int nth = n_threads > 1 ? n_threads : 1;
    uint8_t *buf = malloc((size_t)nth * panel_bytes);
    if (!buf) return false;
    const bool by_rows = (rows + MR - 1) / MR >= nth;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int ith = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t r0 = 0, r1 = rows, t0 = 0, t1 = n_tok;
        if (by_rows) split(rows, MR, ith, n, &r0, &r1);
        else split(n_tok, NR, ith, n, &t0, &t1);
        uint8_t *mine = buf + (size_t)ith * panel_bytes;
        const panel p = {mine, (float *)(mine + (size_t)MR * KC), (float *)(mine + (size_t)MR * KC) + MR * (KC / 16)};
        if (r0 < r1 && t0 < t1) gemm_block(f, w, row_bytes, rows, cols, x8, r0, r1, t0, t1, y, &p);
    }
    free(buf);
    return true;
}
