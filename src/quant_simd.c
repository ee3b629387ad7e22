/* Vector kernels: per-format decoders that turn 32 weights into f32
 * registers, and the two loops built on them (dequantize = decode + store,
 * dot = decode + FMA against x), plus the prefill microkernel.
 *
 * A thin layer of vf_* / vi_* helpers hides the vector width, so each
 * decoder is written once for AVX-512 (16 lanes) and AVX2 (8 lanes). The ISA
 * is chosen at compile time; without AVX2 every kernel forwards to the
 * scalar reference in quant.c. */
#include "quant_internal.h"

#if QUANT_SIMD_LANES
#include <immintrin.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Loops over the few vectors of a chunk or a register tile must be fully
 * unrolled, or the compiler keeps the accumulators in memory. */
#define UNROLL _Pragma("GCC unroll 32")

#if QUANT_SIMD_LANES == 16
#define VL 16
typedef __m512 vf;
typedef __m512i vi;
ALWAYS_INLINE vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
ALWAYS_INLINE void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
ALWAYS_INLINE vf vf_set1(float a) { return _mm512_set1_ps(a); }
ALWAYS_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
ALWAYS_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
ALWAYS_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
ALWAYS_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
ALWAYS_INLINE float vf_sum(vf a) { return _mm512_reduce_add_ps(a); }
ALWAYS_INLINE vf vf_of_vi(vi a) { return _mm512_cvtepi32_ps(a); }
ALWAYS_INLINE vf vf_of_bits(vi a) { return _mm512_castsi512_ps(a); }
ALWAYS_INLINE vf vf_of_f16(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
/* VL consecutive bytes / u16 widened to 32-bit lanes. */
ALWAYS_INLINE vi vi_of_u8(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
ALWAYS_INLINE vi vi_of_s8(const uint8_t *p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p));
}
ALWAYS_INLINE vi vi_of_u16(const uint8_t *p) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
}
ALWAYS_INLINE vi vi_set1(int a) { return _mm512_set1_epi32(a); }
ALWAYS_INLINE vi vi_and(vi a, vi b) { return _mm512_and_si512(a, b); }
ALWAYS_INLINE vi vi_or(vi a, vi b) { return _mm512_or_si512(a, b); }
ALWAYS_INLINE vi vi_sub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
ALWAYS_INLINE vi vi_srl(vi a, int n) { return _mm512_srli_epi32(a, (unsigned)n); }
ALWAYS_INLINE vi vi_sll(vi a, int n) { return _mm512_slli_epi32(a, (unsigned)n); }
/* A set of lanes: a mask register here, lanes of all ones / zeros with AVX2. */
typedef __mmask16 vmask;
/* Lane l set where bit first + l of `bits` is. */
ALWAYS_INLINE vmask vmask_of_bits(uint32_t bits, int first) { return (__mmask16)(bits >> first); }
/* Lane l set where bit `bit` of byte p[l] is. */
ALWAYS_INLINE vmask vmask_of_plane(const uint8_t *p, int bit) {
    return _mm512_test_epi32_mask(vi_of_u8(p), vi_set1(1 << bit));
}
#else
#define VL 8
typedef __m256 vf;
typedef __m256i vi;
ALWAYS_INLINE vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
ALWAYS_INLINE void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
ALWAYS_INLINE vf vf_set1(float a) { return _mm256_set1_ps(a); }
ALWAYS_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
ALWAYS_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
ALWAYS_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
ALWAYS_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
ALWAYS_INLINE float vf_sum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
ALWAYS_INLINE vf vf_of_vi(vi a) { return _mm256_cvtepi32_ps(a); }
ALWAYS_INLINE vf vf_of_bits(vi a) { return _mm256_castsi256_ps(a); }
ALWAYS_INLINE vf vf_of_f16(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
ALWAYS_INLINE vi vi_of_u8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
ALWAYS_INLINE vi vi_of_s8(const uint8_t *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
ALWAYS_INLINE vi vi_of_u16(const uint8_t *p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
}
ALWAYS_INLINE vi vi_set1(int a) { return _mm256_set1_epi32(a); }
ALWAYS_INLINE vi vi_and(vi a, vi b) { return _mm256_and_si256(a, b); }
ALWAYS_INLINE vi vi_or(vi a, vi b) { return _mm256_or_si256(a, b); }
ALWAYS_INLINE vi vi_sub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
ALWAYS_INLINE vi vi_srl(vi a, int n) { return _mm256_srli_epi32(a, n); }
ALWAYS_INLINE vi vi_sll(vi a, int n) { return _mm256_slli_epi32(a, n); }
typedef __m256i vmask;
/* `bits` is broadcast whole, so that the vectors of one block share it. */
ALWAYS_INLINE vmask vmask_of_bits(uint32_t bits, int first) {
    vi lane_bit = vi_sll(_mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128), first);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), lane_bit), lane_bit);
}
ALWAYS_INLINE vmask vmask_of_plane(const uint8_t *p, int bit) {
    vi b = vi_set1(1 << bit);
    return _mm256_cmpeq_epi32(_mm256_and_si256(vi_of_u8(p), b), b);
}
#endif

/* Vectors per 32-element chunk, the unit every decoder produces. */
#define NV (32 / VL)

/* ---- decoders: chunk c (elements 32c..32c+31) of a row into w[NV] ------- */

/* The two adjacent f16 values at p (a block's d and m, or d and dmin), each
 * broadcast to a vector: one load and one conversion for both. */
ALWAYS_INLINE void vf_set1_f16_pair(const uint8_t *p, vf *a, vf *b) {
    int32_t bits;
    memcpy(&bits, p, sizeof bits);
    __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
#if VL == 16
    *a = _mm512_broadcastss_ps(f);
    *b = _mm512_permutexvar_ps(_mm512_set1_epi32(1), _mm512_castps128_ps512(f));
#else
    *a = _mm256_broadcastss_ps(f);
    *b = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(f), _mm256_set1_epi32(1));
#endif
}

/* The values the codes of a 4- or 5-bit (sub-)block decode to: q * d + m.
 * With AVX-512 they fit one register (16 codes) or two (32) as a table, and
 * one permute per vector decodes; AVX2 converts the codes and applies the
 * FMA. Either way q * d is exact (5-bit times f16), so the result is
 * rounded once. */
typedef struct code_map {
    vf d, m;
#if VL == 16
    vf table[2]; /* codes 0-15, 16-31 */
#endif
} code_map;

ALWAYS_INLINE code_map code_map_of(vf d, vf m, bool fifth_bit) {
    code_map f;
    f.d = d;
    f.m = m;
#if VL == 16
    const vf iota = _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    f.table[0] = vf_fma(iota, d, m);
    f.table[1] = fifth_bit ? vf_fma(vf_add(iota, vf_set1(16.0f)), d, m) : f.table[0];
#endif
    return f;
}

/* VL codes: the low or high nibbles of bytes qs[0..VL), plus 16 in the
 * lanes of `fifth` unless it is NULL. The table permute reads only the low
 * 4 bits of each index, so there the low nibble needs no mask, and the
 * fifth bit picks the second table in a masked permute. */
ALWAYS_INLINE vf code_decode(code_map f, const uint8_t *qs, bool high, const vmask *fifth) {
    vi q = vi_of_u8(qs);
    if (high) q = vi_srl(q, 4);
#if VL == 16
    vf w = _mm512_permutexvar_ps(q, f.table[0]);
    return fifth ? _mm512_mask_permutexvar_ps(w, *fifth, q, f.table[1]) : w;
#else
    if (!high) q = vi_and(q, vi_set1(0xf));
    if (fifth) q = vi_or(q, vi_and(*fifth, vi_set1(16)));
    return vf_fma(vf_of_vi(q), f.d, f.m);
#endif
}

/* VL lanes of q3_k's hmask plane: bit `bit` of bytes p[0..VL), as 0 or 1. */
ALWAYS_INLINE vi plane_bits(const uint8_t *p, int bit) { return vi_and(vi_srl(vi_of_u8(p), bit), vi_set1(1)); }

/* VL 2-bit codes of q2_k / q3_k: bits 2g..2g+1 of bytes qs[0..VL). */
ALWAYS_INLINE vi crumbs(const uint8_t *qs, int g) { return vi_and(vi_srl(vi_of_u8(qs), 2 * g), vi_set1(3)); }

ALWAYS_INLINE void decode_f32(const uint8_t *row, int64_t c, vf w[NV]) {
    const float *p = (const float *)(const void *)(row + 128 * c);
    UNROLL
    for (int i = 0; i < NV; i++) w[i] = vf_load(p + i * VL);
}

ALWAYS_INLINE void decode_f16(const uint8_t *row, int64_t c, vf w[NV]) {
    UNROLL
    for (int i = 0; i < NV; i++) w[i] = vf_of_f16(row + 64 * c + 2 * i * VL);
}

ALWAYS_INLINE void decode_bf16(const uint8_t *row, int64_t c, vf w[NV]) {
    UNROLL
    for (int i = 0; i < NV; i++) w[i] = vf_of_bits(vi_sll(vi_of_u16(row + 64 * c + 2 * i * VL), 16));
}

/* The 32-element nibble formats, one block per chunk (layout as in
 * dequant_32, quant.c). */
ALWAYS_INLINE void decode_32(const uint8_t *row, int64_t c, bool has_min, bool fifth_bit, vf w[NV]) {
    size_t qh_at = has_min ? 4 : 2, qs_at = qh_at + (fifth_bit ? 4 : 0);
    const uint8_t *b = row + (qs_at + 16) * (size_t)c;
    vf d, m;
    if (has_min) {
        vf_set1_f16_pair(b, &d, &m);
    } else {
        d = vf_set1(quant_load_f16(b));
        m = vf_mul(d, vf_set1(fifth_bit ? -16.0f : -8.0f)); /* (q - zero) * d, exactly */
    }
    uint32_t qh = 0;
    if (fifth_bit) memcpy(&qh, b + qh_at, sizeof qh);
    code_map f = code_map_of(d, m, fifth_bit);
    UNROLL
    for (int i = 0; i < NV; i++) {
        int e = i * VL; /* elements 0-15: low nibbles of the 16 bytes; 16-31: high */
        vmask hi = vmask_of_bits(qh, e);
        w[i] = code_decode(f, b + qs_at + e % 16, e >= 16, fifth_bit ? &hi : NULL);
    }
}

ALWAYS_INLINE void decode_q4_0(const uint8_t *row, int64_t c, vf w[NV]) { decode_32(row, c, false, false, w); }
ALWAYS_INLINE void decode_q4_1(const uint8_t *row, int64_t c, vf w[NV]) { decode_32(row, c, true, false, w); }
ALWAYS_INLINE void decode_q5_0(const uint8_t *row, int64_t c, vf w[NV]) { decode_32(row, c, false, true, w); }
ALWAYS_INLINE void decode_q5_1(const uint8_t *row, int64_t c, vf w[NV]) { decode_32(row, c, true, true, w); }

ALWAYS_INLINE void decode_q8_0(const uint8_t *row, int64_t c, vf w[NV]) {
    const uint8_t *b = row + 34 * c;
    vf d = vf_set1(quant_load_f16(b));
    UNROLL
    for (int i = 0; i < NV; i++) w[i] = vf_mul(vf_of_vi(vi_of_s8(b + 2 + i * VL)), d);
}

/* In q2_k and q3_k chunk c is sub-block c % 8 = 4h + g of block c / 8: bits
 * 2g..2g+1 of code bytes 32h..32h+31, and two scales of 16 elements. */
ALWAYS_INLINE void decode_q2_k(const uint8_t *row, int64_t c, vf w[NV]) {
    const uint8_t *b = row + 84 * (c / 8);
    int sub = (int)(c % 8);
    float d = quant_load_f16(b + 80), dmin = quant_load_f16(b + 82);
    UNROLL
    for (int i = 0; i < NV; i++) {
        int s = b[2 * sub + i * VL / 16];
        vf q = vf_of_vi(crumbs(b + 16 + 32 * (sub / 4) + i * VL, sub % 4));
        w[i] = vf_fma(q, vf_set1(d * (float)(s & 0xf)), vf_set1(-dmin * (float)(s >> 4)));
    }
}

ALWAYS_INLINE void decode_q3_k(const uint8_t *row, int64_t c, vf w[NV]) {
    const uint8_t *b = row + 110 * (c / 8);
    int sub = (int)(c % 8);
    float d = quant_load_f16(b + 108);
    UNROLL
    for (int i = 0; i < NV; i++) {
        vi lo = crumbs(b + 32 + 32 * (sub / 4) + i * VL, sub % 4);
        vi q = vi_sub(vi_or(lo, vi_sll(plane_bits(b + i * VL, sub), 2)), vi_set1(4));
        w[i] = vf_mul(vf_of_vi(q), vf_set1(d * (float)quant_q3_k_scale(b + 96, 2 * sub + i * VL / 16)));
    }
}

/* q4_k, and q5_k with its qh plane (layout as in dequant_k, quant.c). */
ALWAYS_INLINE void decode_k(const uint8_t *row, int64_t c, bool fifth_bit, vf w[NV]) {
    size_t qs_at = fifth_bit ? 48 : 16;
    const uint8_t *b = row + (qs_at + 128) * (size_t)(c / 8);
    int sub = (int)(c % 8), sc, mn;
    quant_k_scale_min(b + 4, sub, &sc, &mn);
    vf d, dmin;
    vf_set1_f16_pair(b, &d, &dmin);
    code_map f = code_map_of(vf_mul(d, vf_set1((float)sc)), vf_mul(dmin, vf_set1((float)-mn)), fifth_bit);
    const uint8_t *qs = b + qs_at + 32 * (sub / 2);
    UNROLL
    for (int i = 0; i < NV; i++) {
        vmask hi = vmask_of_plane(b + 16 + i * VL, sub);
        w[i] = code_decode(f, qs + i * VL, sub & 1, fifth_bit ? &hi : NULL);
    }
}

ALWAYS_INLINE void decode_q4_k(const uint8_t *row, int64_t c, vf w[NV]) { decode_k(row, c, false, w); }
ALWAYS_INLINE void decode_q5_k(const uint8_t *row, int64_t c, vf w[NV]) { decode_k(row, c, true, w); }

ALWAYS_INLINE void decode_q6_k(const uint8_t *row, int64_t c, vf w[NV]) {
    const uint8_t *b = row + 210 * (c / 8);
    int half = (int)(c % 8) / 4, g = (int)(c % 4);
    const uint8_t *ql = b + 64 * half + 32 * (g & 1), *qh = b + 128 + 32 * half;
    const int8_t *scales = (const int8_t *)(b + 192) + 8 * half + 2 * g;
    float d = quant_load_f16(b + 208);
    UNROLL
    for (int i = 0; i < NV; i++) {
        vi lo = vi_and(vi_srl(vi_of_u8(ql + i * VL), 4 * (g >> 1)), vi_set1(0xf));
        vi hi = vi_and(vi_srl(vi_of_u8(qh + i * VL), 2 * g), vi_set1(3));
        vi q = vi_sub(vi_or(lo, vi_sll(hi, 4)), vi_set1(32));
        w[i] = vf_mul(vf_of_vi(q), vf_set1(d * (float)scales[i * VL / 16]));
    }
}

/* ---- the two loops, specialized per decoder by inlining ------------------ */

typedef void (*decode_fn)(const uint8_t *row, int64_t c, vf w[NV]);

/* Two chunks per iteration into separate accumulators, so consecutive FMAs
 * do not wait on each other's latency. */
ALWAYS_INLINE float dot_chunks(decode_fn decode, const uint8_t *row, const float *x, int64_t nc) {
    vf acc[2][NV];
    UNROLL
    for (int u = 0; u < 2; u++)
        UNROLL
        for (int i = 0; i < NV; i++) acc[u][i] = vf_zero();
    int64_t c = 0;
    for (; c + 2 <= nc; c += 2) {
        UNROLL
        for (int u = 0; u < 2; u++) {
            vf w[NV];
            decode(row, c + u, w);
            UNROLL
            for (int i = 0; i < NV; i++)
                acc[u][i] = vf_fma(w[i], vf_load(x + 32 * (c + u) + i * VL), acc[u][i]);
        }
    }
    if (c < nc) {
        vf w[NV];
        decode(row, c, w);
        UNROLL
        for (int i = 0; i < NV; i++) acc[0][i] = vf_fma(w[i], vf_load(x + 32 * c + i * VL), acc[0][i]);
    }
    vf s = acc[0][0];
    UNROLL
    for (int i = 1; i < NV; i++) s = vf_add(s, acc[0][i]);
    UNROLL
    for (int i = 0; i < NV; i++) s = vf_add(s, acc[1][i]);
    return vf_sum(s);
}

ALWAYS_INLINE void dequant_chunks(decode_fn decode, const uint8_t *row, float *dst, int64_t nc) {
    for (int64_t c = 0; c < nc; c++) {
        vf w[NV];
        decode(row, c, w);
        UNROLL
        for (int i = 0; i < NV; i++) vf_store(dst + 32 * c + i * VL, w[i]);
    }
}

/* Rows of the one-element-per-block formats (f32, f16, bf16) need not be a
 * multiple of 32 long; the last n % 32 elements go through the reference
 * decoder. Block formats always have tail == 0. */
#define QUANT_SIMD_KERNELS(fmt, type, elem_bytes)                                          \
    void quant_simd_dequant_##fmt(const void *src, float *dst, int64_t n) {                \
        int64_t nc = n / 32, tail = n - 32 * nc;                                           \
        dequant_chunks(decode_##fmt, src, dst, nc);                                        \
        if (tail)                                                                          \
            quant_ref_dequant_##fmt((const uint8_t *)src + 32 * nc * (elem_bytes),         \
                                    dst + 32 * nc, tail);                                  \
    }                                                                                      \
    float quant_simd_dot_##fmt(const void *row, const float *x, int64_t n) {               \
        int64_t nc = n / 32, tail = n - 32 * nc;                                           \
        float s = dot_chunks(decode_##fmt, row, x, nc);                                    \
        if (tail)                                                                          \
            s += quant_dot_ref(type, (const uint8_t *)row + 32 * nc * (elem_bytes),        \
                               x + 32 * nc, tail);                                         \
        return s;                                                                          \
    }

QUANT_SIMD_KERNELS(f32, FASA_TYPE_F32, 4)
QUANT_SIMD_KERNELS(f16, FASA_TYPE_F16, 2)
QUANT_SIMD_KERNELS(bf16, FASA_TYPE_BF16, 2)
/* For block formats `elem_bytes` is never used (tail is 0). */
QUANT_SIMD_KERNELS(q4_0, FASA_TYPE_Q4_0, 0)
QUANT_SIMD_KERNELS(q4_1, FASA_TYPE_Q4_1, 0)
QUANT_SIMD_KERNELS(q5_0, FASA_TYPE_Q5_0, 0)
QUANT_SIMD_KERNELS(q5_1, FASA_TYPE_Q5_1, 0)
QUANT_SIMD_KERNELS(q8_0, FASA_TYPE_Q8_0, 0)
QUANT_SIMD_KERNELS(q2_k, FASA_TYPE_Q2_K, 0)
QUANT_SIMD_KERNELS(q3_k, FASA_TYPE_Q3_K, 0)
QUANT_SIMD_KERNELS(q4_k, FASA_TYPE_Q4_K, 0)
QUANT_SIMD_KERNELS(q5_k, FASA_TYPE_Q5_K, 0)
QUANT_SIMD_KERNELS(q6_k, FASA_TYPE_Q6_K, 0)

/* ---- prefill: panel packing and microkernel ------------------------------ */

#define MR QUANT_GEMM_MR
#define NR QUANT_GEMM_NR
#define MV (MR / VL)

/* dst[c * ldd + r] = src[r * lds + c] for a VL x VL block. */
#if VL == 16
ALWAYS_INLINE void transpose_block(const float *src, int64_t lds, float *dst, int64_t ldd) {
    __m512 r[16], t[16];
    UNROLL
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    /* Pairs of rows interleaved, then groups of four within 128-bit lanes,
     * then 128-bit lanes gathered across the four groups. */
    UNROLL
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    UNROLL
    for (int g = 0; g < 4; g++) { /* rows 4g..4g+3 -> r[g], r[g+4], ... */
        r[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    /* r[4g + m], lane L: column 4L + m of rows 4g..4g+3. */
    UNROLL
    for (int m = 0; m < 4; m++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
        __m512 w0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
        __m512 v1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
        _mm512_storeu_ps(dst + (m + 0) * ldd, _mm512_shuffle_f32x4(v0, v1, 0x88));
        _mm512_storeu_ps(dst + (m + 8) * ldd, _mm512_shuffle_f32x4(v0, v1, 0xdd));
        _mm512_storeu_ps(dst + (m + 4) * ldd, _mm512_shuffle_f32x4(w0, w1, 0x88));
        _mm512_storeu_ps(dst + (m + 12) * ldd, _mm512_shuffle_f32x4(w0, w1, 0xdd));
    }
}
#else
ALWAYS_INLINE void transpose_block(const float *src, int64_t lds, float *dst, int64_t ldd) {
    __m256 r[8], t[8];
    UNROLL
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    UNROLL
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    UNROLL
    for (int g = 0; g < 2; g++) {
        r[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        r[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        r[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        r[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    UNROLL
    for (int m = 0; m < 4; m++) {
        _mm256_storeu_ps(dst + m * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
        _mm256_storeu_ps(dst + (m + 4) * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
    }
}
#endif

void quant_pack_panel(const float *rows, int64_t ld, int64_t kc, float *wp) {
    int64_t k = 0;
    for (; k + VL <= kc; k += VL)
        UNROLL
        for (int v = 0; v < MV; v++) transpose_block(rows + v * VL * ld + k, ld, wp + k * MR + v * VL, MR);
    for (; k < kc; k++)
        for (int r = 0; r < MR; r++) wp[k * MR + r] = rows[r * ld + k];
}

void quant_gemm_tile(const float *wp, const float *x, int64_t ldx, int64_t kc, float *y, int64_t ldy,
                     int mr, int nr, bool accumulate) {
    vf acc[NR][MV];
    UNROLL
    for (int j = 0; j < NR; j++)
        UNROLL
        for (int v = 0; v < MV; v++) acc[j][v] = vf_zero();
    for (int64_t k = 0; k < kc; k++) {
        vf w[MV];
        UNROLL
        for (int v = 0; v < MV; v++) w[v] = vf_load(wp + k * MR + v * VL);
        UNROLL
        for (int j = 0; j < NR; j++) {
            vf xb = vf_set1(x[j * ldx + k]);
            UNROLL
            for (int v = 0; v < MV; v++) acc[j][v] = vf_fma(w[v], xb, acc[j][v]);
        }
    }
    /* Over all NR with a guard, so that after unrolling acc is indexed by
     * constants only and stays in registers. */
    UNROLL
    for (int j = 0; j < NR; j++) {
        if (j >= nr) break;
        float *yj = y + j * ldy;
        if (mr == MR) {
            UNROLL
            for (int v = 0; v < MV; v++) {
                vf a = accumulate ? vf_add(acc[j][v], vf_load(yj + v * VL)) : acc[j][v];
                vf_store(yj + v * VL, a);
            }
        } else {
            float tmp[MR];
            UNROLL
            for (int v = 0; v < MV; v++) vf_store(tmp + v * VL, acc[j][v]);
            for (int r = 0; r < mr; r++) yj[r] = accumulate ? yj[r] + tmp[r] : tmp[r];
        }
    }
}

const char *quant_simd_isa(void) { return VL == 16 ? "avx512" : "avx2"; }

#else /* no SIMD: forward every kernel to the scalar reference */

#define QUANT_SCALAR_KERNELS(fmt, type)                                                    \
    void quant_simd_dequant_##fmt(const void *src, float *dst, int64_t n) {                \
        quant_ref_dequant_##fmt(src, dst, n);                                              \
    }                                                                                      \
    float quant_simd_dot_##fmt(const void *row, const float *x, int64_t n) {               \
        return quant_dot_ref(type, row, x, n);                                             \
    }

QUANT_SCALAR_KERNELS(f32, FASA_TYPE_F32)
QUANT_SCALAR_KERNELS(f16, FASA_TYPE_F16)
QUANT_SCALAR_KERNELS(bf16, FASA_TYPE_BF16)
QUANT_SCALAR_KERNELS(q4_0, FASA_TYPE_Q4_0)
QUANT_SCALAR_KERNELS(q4_1, FASA_TYPE_Q4_1)
QUANT_SCALAR_KERNELS(q5_0, FASA_TYPE_Q5_0)
QUANT_SCALAR_KERNELS(q5_1, FASA_TYPE_Q5_1)
QUANT_SCALAR_KERNELS(q8_0, FASA_TYPE_Q8_0)
QUANT_SCALAR_KERNELS(q2_k, FASA_TYPE_Q2_K)
QUANT_SCALAR_KERNELS(q3_k, FASA_TYPE_Q3_K)
QUANT_SCALAR_KERNELS(q4_k, FASA_TYPE_Q4_K)
QUANT_SCALAR_KERNELS(q5_k, FASA_TYPE_Q5_K)
QUANT_SCALAR_KERNELS(q6_k, FASA_TYPE_Q6_K)

void quant_pack_panel(const float *rows, int64_t ld, int64_t kc, float *wp) {
    for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < QUANT_GEMM_MR; r++) wp[k * QUANT_GEMM_MR + r] = rows[r * ld + k];
}

void quant_gemm_tile(const float *wp, const float *x, int64_t ldx, int64_t kc, float *y, int64_t ldy,
                     int mr, int nr, bool accumulate) {
    float acc[QUANT_GEMM_NR][QUANT_GEMM_MR] = {{0}};
    for (int64_t k = 0; k < kc; k++)
        for (int j = 0; j < QUANT_GEMM_NR; j++)
            for (int r = 0; r < QUANT_GEMM_MR; r++)
                acc[j][r] += wp[k * QUANT_GEMM_MR + r] * x[j * ldx + k];
    for (int j = 0; j < nr; j++)
        for (int r = 0; r < mr; r++)
            y[j * ldy + r] = accumulate ? y[j * ldy + r] + acc[j][r] : acc[j][r];
}

const char *quant_simd_isa(void) { return "scalar"; }

#endif
