/* Private interface between quant.c (format table, scalar reference
 * kernels), quant_simd.c (vector kernels) and matmul.c (matrix products).
 * The tests include it too, to check the vector kernels against the scalar
 * ones. */
#ifndef FASA_QUANT_INTERNAL_H
#define FASA_QUANT_INTERNAL_H

#include "quant.h"
#include "quant_block.h"

#include <string.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

typedef void (*quant_dequant_fn)(const void *src, float *dst, int64_t n);
typedef float (*quant_dot_fn)(const void *row, const float *x, int64_t n);

/* Every format this build computes with, in type id order (the order
 * quant_supported_names lists them in). Adding a format means one entry
 * here, a scalar decoder and a table row in quant.c, and a vector decoder
 * plus its QUANT_SIMD_KERNELS / QUANT_SCALAR_KERNELS lines in quant_simd.c. */
#define QUANT_FORMATS(X)                                                                   \
    X(f32) X(f16) X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(q8_0) X(q2_k) X(q3_k) X(q4_k) X(q5_k) \
    X(q6_k) X(bf16)

#define QUANT_DECLARE_KERNELS(fmt)                                                \
    void quant_ref_dequant_##fmt(const void *src, float *dst, int64_t n);        \
    void quant_simd_dequant_##fmt(const void *src, float *dst, int64_t n);       \
    float quant_simd_dot_##fmt(const void *row, const float *x, int64_t n);
QUANT_FORMATS(QUANT_DECLARE_KERNELS)
#undef QUANT_DECLARE_KERNELS

/* One row of the format table: what the public functions dispatch through.
 * `dequant` and `dot` are the fastest versions this build has (vector or,
 * on a machine without AVX2, the scalar ones); `dequant_ref` is always the
 * plain scalar decoder. */
typedef struct quant_kernels {
    quant_traits traits;
    quant_dequant_fn dequant_ref;
    quant_dequant_fn dequant;
    quant_dot_fn dot;
} quant_kernels;

/* NULL for an unsupported type id. */
const quant_kernels *quant_kernels_of(uint32_t type);

/* Scalar references: dequantize with the plain decoder; the dot product
 * accumulates in double. The fallback kernels and the tests use them. */
void quant_dequant_ref(uint32_t type, const void *src, float *dst, int64_t n);
float quant_dot_ref(uint32_t type, const void *row, const float *x, int64_t n);

/* The portable conversions behind fasa_f16_to_f32 / fasa_f32_to_f16, kept
 * callable so the tests can compare them with the F16C instructions. */
float quant_f16_to_f32_scalar(uint16_t h);
uint16_t quant_f32_to_f16_scalar(float f);

/* Activations rounded to int8 for the decode kernels of quant_x8.c, in
 * groups of 32: x[c] ~ d[c / 32] q[c]; s16 and s32 hold the sums of q over
 * each 16 and 32 elements (exact small integers, as floats). */
typedef struct quant_x8 {
    int8_t *q;  /* n */
    float *d;   /* n / 32 */
    float *s16; /* n / 16 */
    float *s32; /* n / 32 */
} quant_x8;

/* Rounds x[0, n) (n a multiple of 32) into o's arrays. */
void quant_x8_quantize(const float *x, int64_t n, const quant_x8 *o);

/* sum_c W[c] d[c / 32] q[c] over one row of n elements (a multiple of 256). */
typedef float (*quant_dot_x8_fn)(const void *row, const quant_x8 *x, int64_t n);

/* The integer kernel of a format; NULL where it has none. */
quant_dot_x8_fn quant_dot_x8_of(uint32_t type);

/* Prefill product with int8 activations (gemm_x8.c): y[t * rows + r] =
 * sum_c W[r][c] x'_t[c] for the n_tok rounded tokens x8[t]. False, with y
 * untouched, for a format it has no unpacking for, rows that are not whole
 * 256-element blocks, or no memory for its panels. */
bool quant_gemm_x8_supports(uint32_t type);
bool quant_gemm_x8(uint32_t type, const void *w, int64_t rows, int64_t cols, const quant_x8 *x8, int64_t n_tok,
                   float *y, int n_threads);

/* "avx512", "avx2" or "scalar": which kernels this build compiled. */
const char *quant_simd_isa(void);

/* Reads the little-endian f16 scale at p (block fields are unaligned). */
static inline float quant_load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return quant_f16_to_f32_scalar(h);
#endif
}

/* Field unpacking shared by the scalar, vector and GPU decoders:
 * quant_k_scale_min (q4_k, q5_k) and quant_q3_k_scale, in quant_block.h. */

/* Floats per vector register of the kernels this build compiles: AVX-512
 * (16), AVX2 with FMA and F16C (8), or none (scalar fallback). */
#if defined(__AVX512F__)
#define QUANT_SIMD_LANES 16
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QUANT_SIMD_LANES 8
#else
#define QUANT_SIMD_LANES 0
#endif

/* Register tile of the prefill microkernel: QUANT_GEMM_MR weight rows by
 * QUANT_GEMM_NR tokens of accumulators (AVX-512: 2 x 12 zmm of 32; AVX2:
 * 2 x 6 ymm of 16 out of 16 registers). */
#if QUANT_SIMD_LANES == 16
#define QUANT_GEMM_MR 32
#define QUANT_GEMM_NR 12
#elif QUANT_SIMD_LANES == 8
#define QUANT_GEMM_MR 16
#define QUANT_GEMM_NR 6
#else
#define QUANT_GEMM_MR 8
#define QUANT_GEMM_NR 4
#endif

/* Prefill packing: wp[k * MR + r] = rows[r * ld + k] for r < MR, k < kc,
 * i.e. a panel of MR dequantized rows turned so that one k is MR floats. */
void quant_pack_panel(const float *rows, int64_t ld, int64_t kc, float *wp);

/* Prefill microkernel: a packed panel times NR token rows of x,
 *   y[j * ldy + r] (+)= sum_k wp[k * MR + r] * x[j * ldx + k]
 * for r < mr <= MR, j < nr <= NR; `accumulate` adds to y instead of
 * overwriting it. All NR rows of x are read, whatever nr is. */
void quant_gemm_tile(const float *wp, const float *x, int64_t ldx, int64_t kc, float *y, int64_t ldy,
                     int mr, int nr, bool accumulate);

#endif
