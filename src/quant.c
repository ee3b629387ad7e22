/* Block formats: the table every quant_* call dispatches through, the IEEE
 * half conversions, and the scalar reference decoders.
 *
 * The scalar decoders are written for clarity, one block at a time, straight
 * from the layouts below; the vector kernels in quant_simd.c must agree with
 * them. Layouts (all little-endian, blocks packed without padding):
 *
 *   q4_0  32 elems, 18 B: f16 d, 16 B nibbles                  x = (q - 8) * d
 *   q4_1  32 elems, 20 B: f16 d, f16 m, 16 B nibbles           x = q * d + m
 *   q5_0  32 elems, 22 B: f16 d, 4 B qh, 16 B nibbles          x = (q - 16) * d
 *   q5_1  32 elems, 24 B: f16 d, f16 m, 4 B qh, 16 B nibbles   x = q * d + m
 *   q8_0  32 elems, 34 B: f16 d, 32 x int8                     x = q * d
 *   In these, byte j holds element j in its low nibble and element j + 16
 *   in its high nibble; q5's fifth bit of element j is bit j of the
 *   little-endian 32-bit qh.
 *
 *   q2_k  256 elems, 84 B: 16 B scales, 64 B 2-bit codes, f16 d, f16 dmin.
 *         One scale byte per 16 elements: x = d * (s & 15) * q - dmin * (s >> 4).
 *   q3_k  256 elems, 110 B: 32 B hmask, 64 B 2-bit codes, 12 B of 6-bit
 *         scales (one per 16 elements, offset by 32), f16 d.
 *         x = d * sc * (q - 4), q = low two bits | hmask bit << 2.
 *   In both, element e = 128h + 32g + l (h < 2, g < 4, l < 32) takes bits
 *   2g..2g+1 of code byte 32h + l; in q3_k its hmask bit is bit e / 32 of
 *   hmask byte l.
 *   q4_k  256 elems, 144 B: f16 d, f16 dmin, 12 B of 6-bit scales and mins
 *         for 8 sub-blocks of 32, 128 B nibbles. Sub-block s: x = q * d *
 *         sc[s] - dmin * mn[s]. Bytes 32k..32k+31 of the nibbles hold
 *         sub-block 2k (low nibbles) and 2k+1 (high nibbles).
 *   q5_k  256 elems, 176 B: q4_k with 32 B qh between the scales and the
 *         nibbles; element e's fifth bit is bit e / 32 of qh byte e % 32.
 *   q6_k  256 elems, 210 B: 128 B ql (low 4 bits), 64 B qh (high 2 bits),
 *         16 x int8 scales (one per 16 elements), f16 d. x = d * sc * (q - 32).
 *         Each half of 128 elements uses 64 B of ql and 32 B of qh; in a
 *         half, element 32g + l (g < 4, l < 32) takes ql byte l + 32 (g & 1),
 *         nibble g >> 1, and bits 2g..2g+1 of qh byte l.
 *
 * Every value is a single rounding of an exact product or sum (the codes,
 * scales and f16 fields are short enough that the products are exact in
 * f32), so every correct decoder gives the same floats. */
#include "quant_internal.h"

#include <math.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

/* ---- IEEE half / bfloat16 ---------------------------------------------- */

float quant_f16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        /* The quiet bit is set, as the F16C instruction does, so that both
         * paths turn a signaling NaN into the same quiet NaN. */
        bits = sign | 0x7f800000 | (mant ? 0x400000 | (mant << 13) : 0);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* Subnormal: mant * 2^-24, exact in f32 after normalizing. */
        int shift = 0;
        while (!(mant & 0x400)) {
            mant <<= 1;
            shift++;
        }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Shifts m right by s (1 <= s <= 31) rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, int s) {
    uint32_t r = m >> s;
    uint32_t rem = m & ((1u << s) - 1);
    uint32_t half = 1u << (s - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t quant_f32_to_f16_scalar(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t mant = x & 0x7fffff;
    if (exp == 0xff) /* inf stays inf; NaN keeps its top payload bits, quieted */
        return sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0);
    if (exp >= 113) {
        /* Normal half range (or overflow): a carry out of the mantissa bumps
         * the exponent, and past the largest finite half it lands on inf. */
        uint32_t h = ((exp - 112) << 10) + shift_round_even(mant, 13);
        return sign | (uint16_t)(h >= 0x7c00 ? 0x7c00 : h);
    }
    if (exp < 102) return sign; /* below half the smallest subnormal: zero */
    /* Subnormal half: value / 2^-24 = (mant | implicit 1) * 2^(exp - 126). */
    return sign | (uint16_t)shift_round_even(mant | 0x800000, (int)(126 - exp));
}

float fasa_f16_to_f32(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return quant_f16_to_f32_scalar(h);
#endif
}

uint16_t fasa_f32_to_f16(float f) {
#if defined(__F16C__)
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    return quant_f32_to_f16_scalar(f);
#endif
}

float fasa_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ---- scalar reference decoders ----------------------------------------- */

void quant_ref_dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_ref_dequant_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = quant_load_f16(p + 2 * i);
}

void quant_ref_dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, sizeof h);
        dst[i] = fasa_bf16_to_f32(h);
    }
}

/* Code of element j (< 32) of a 32-element block: a nibble of the 16 bytes
 * at qs, plus bit j of qh as a fifth bit. */
static int code32(const uint8_t *qs, uint32_t qh, int j) {
    int nibble = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
    return nibble | (int)((qh >> j) & 1) << 4;
}

/* The 32-element nibble formats: f16 d, an f16 m if `has_min`, a 32-bit qh
 * if `fifth_bit`, 16 B of nibbles. Without m the codes are centred on the
 * middle one (8 or 16). */
static void dequant_32(const uint8_t *b, float *dst, int64_t n, bool has_min, bool fifth_bit) {
    size_t qh_at = has_min ? 4 : 2, qs_at = qh_at + (fifth_bit ? 4 : 0);
    int zero = has_min ? 0 : fifth_bit ? 16 : 8;
    for (; n > 0; b += qs_at + 16, dst += 32, n -= 32) {
        float d = quant_load_f16(b), m = has_min ? quant_load_f16(b + 2) : 0.0f;
        uint32_t qh = 0;
        if (fifth_bit) memcpy(&qh, b + qh_at, sizeof qh);
        for (int j = 0; j < 32; j++) dst[j] = (float)(code32(b + qs_at, qh, j) - zero) * d + m;
    }
}

void quant_ref_dequant_q4_0(const void *src, float *dst, int64_t n) { dequant_32(src, dst, n, false, false); }
void quant_ref_dequant_q4_1(const void *src, float *dst, int64_t n) { dequant_32(src, dst, n, true, false); }
void quant_ref_dequant_q5_0(const void *src, float *dst, int64_t n) { dequant_32(src, dst, n, false, true); }
void quant_ref_dequant_q5_1(const void *src, float *dst, int64_t n) { dequant_32(src, dst, n, true, true); }

void quant_ref_dequant_q8_0(const void *src, float *dst, int64_t n) {
    for (const uint8_t *b = src; n > 0; b += 34, dst += 32, n -= 32) {
        float d = quant_load_f16(b);
        for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* Element e (< 256) of the 2-bit code plane of q2_k / q3_k. */
static int crumb(const uint8_t *qs, int e) {
    return (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
}

/* Element e (< 256) of the one-bit plane of q3_k (hmask) / q5_k (qh). */
static int plane_bit(const uint8_t *p, int e) { return (p[e % 32] >> (e / 32)) & 1; }

void quant_ref_dequant_q2_k(const void *src, float *dst, int64_t n) {
    for (const uint8_t *b = src; n > 0; b += 84, dst += 256, n -= 256) {
        float d = quant_load_f16(b + 80), dmin = quant_load_f16(b + 82);
        for (int e = 0; e < 256; e++) {
            int s = b[e / 16];
            dst[e] = d * (float)(s & 0xf) * (float)crumb(b + 16, e) - dmin * (float)(s >> 4);
        }
    }
}

void quant_ref_dequant_q3_k(const void *src, float *dst, int64_t n) {
    for (const uint8_t *b = src; n > 0; b += 110, dst += 256, n -= 256) {
        float d = quant_load_f16(b + 108);
        for (int e = 0; e < 256; e++) {
            int q = crumb(b + 32, e) - (plane_bit(b, e) ? 0 : 4);
            dst[e] = d * (float)quant_q3_k_scale(b + 96, e / 16) * (float)q;
        }
    }
}

/* q4_k, and q5_k (`fifth_bit`) with its qh plane before the nibbles. */
static void dequant_k(const uint8_t *b, float *dst, int64_t n, bool fifth_bit) {
    size_t qs_at = fifth_bit ? 48 : 16;
    for (; n > 0; b += qs_at + 128, dst += 256, n -= 256) {
        float d = quant_load_f16(b), dmin = quant_load_f16(b + 2);
        for (int sub = 0; sub < 8; sub++) {
            int sc, mn;
            quant_k_scale_min(b + 4, sub, &sc, &mn);
            float scale = d * (float)sc, min = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                int e = 32 * sub + l;
                int q = (b[qs_at + 32 * (sub / 2) + l] >> (4 * (sub & 1))) & 0xf;
                if (fifth_bit) q |= plane_bit(b + 16, e) << 4;
                dst[e] = scale * (float)q - min;
            }
        }
    }
}

void quant_ref_dequant_q4_k(const void *src, float *dst, int64_t n) { dequant_k(src, dst, n, false); }
void quant_ref_dequant_q5_k(const void *src, float *dst, int64_t n) { dequant_k(src, dst, n, true); }

void quant_ref_dequant_q6_k(const void *src, float *dst, int64_t n) {
    for (const uint8_t *b = src; n > 0; b += 210, dst += 256, n -= 256) {
        const int8_t *scales = (const int8_t *)(b + 192);
        float d = quant_load_f16(b + 208);
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
            for (int g = 0; g < 4; g++) {
                for (int l = 0; l < 32; l++) {
                    int lo = (ql[l + 32 * (g & 1)] >> (4 * (g >> 1))) & 0xf;
                    int hi = (qh[l] >> (2 * g)) & 3;
                    int e = 128 * half + 32 * g + l;
                    dst[e] = d * (float)scales[e / 16] * (float)((lo | (hi << 4)) - 32);
                }
            }
        }
    }
}

/* ---- the format table -------------------------------------------------- */

#define QUANT_ENTRY(fmt, bs, bb)                                                      \
    {{#fmt, bs, bb}, quant_ref_dequant_##fmt, quant_simd_dequant_##fmt, quant_simd_dot_##fmt}

static const quant_kernels quant_table[] = {
    [FASA_TYPE_F32] = QUANT_ENTRY(f32, 1, 4),
    [FASA_TYPE_F16] = QUANT_ENTRY(f16, 1, 2),
    [FASA_TYPE_Q4_0] = QUANT_ENTRY(q4_0, 32, 18),
    [FASA_TYPE_Q4_1] = QUANT_ENTRY(q4_1, 32, 20),
    [FASA_TYPE_Q5_0] = QUANT_ENTRY(q5_0, 32, 22),
    [FASA_TYPE_Q5_1] = QUANT_ENTRY(q5_1, 32, 24),
    [FASA_TYPE_Q8_0] = QUANT_ENTRY(q8_0, 32, 34),
    [FASA_TYPE_Q2_K] = QUANT_ENTRY(q2_k, 256, 84),
    [FASA_TYPE_Q3_K] = QUANT_ENTRY(q3_k, 256, 110),
    [FASA_TYPE_Q4_K] = QUANT_ENTRY(q4_k, 256, 144),
    [FASA_TYPE_Q5_K] = QUANT_ENTRY(q5_k, 256, 176),
    [FASA_TYPE_Q6_K] = QUANT_ENTRY(q6_k, 256, 210),
    [FASA_TYPE_BF16] = QUANT_ENTRY(bf16, 1, 2),
};

const quant_kernels *quant_kernels_of(uint32_t type) {
    if (type >= sizeof quant_table / sizeof quant_table[0]) return NULL;
    const quant_kernels *k = &quant_table[type];
    return k->traits.name ? k : NULL;
}

const quant_traits *quant_traits_of(uint32_t type) {
    const quant_kernels *k = quant_kernels_of(type);
    return k ? &k->traits : NULL;
}

/* Every tensor type id ggml has defined; the gaps are retired ids. */
static const char *const type_names[] = {
    [0] = "f32",     [1] = "f16",      [2] = "q4_0",   [3] = "q4_1",    [6] = "q5_0",
    [7] = "q5_1",    [8] = "q8_0",     [9] = "q8_1",   [10] = "q2_k",   [11] = "q3_k",
    [12] = "q4_k",   [13] = "q5_k",    [14] = "q6_k",  [15] = "q8_k",   [16] = "iq2_xxs",
    [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s",
    [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",    [25] = "i16",    [26] = "i32",
    [27] = "i64",    [28] = "f64",     [29] = "iq1_m", [30] = "bf16",   [34] = "tq1_0",
    [35] = "tq2_0",  [39] = "mxfp4",   [40] = "nvfp4", [41] = "q1_0",
};

const char *quant_type_name(uint32_t type) {
    return type < sizeof type_names / sizeof type_names[0] ? type_names[type] : NULL;
}

#define QUANT_LIST_NAME(fmt) ", " #fmt
const char *quant_supported_names(void) {
    static const char names[] = QUANT_FORMATS(QUANT_LIST_NAME);
    return names + 2; /* past the first ", " */
}
#undef QUANT_LIST_NAME

size_t quant_row_bytes(uint32_t type, int64_t n) {
    const quant_traits *t = quant_traits_of(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    uint64_t blocks = (uint64_t)(n / t->block_size);
    if (blocks > SIZE_MAX / t->block_bytes) return 0;
    return (size_t)blocks * t->block_bytes;
}

/* An unsupported type, or a length that is not whole blocks, is a caller
 * bug (tensor types and shapes are checked at load); NaNs make it loud
 * rather than a plausible wrong answer. */
static const quant_kernels *kernels_for_length(uint32_t type, int64_t n) {
    const quant_kernels *k = quant_kernels_of(type);
    return k && n >= 0 && n % k->traits.block_size == 0 ? k : NULL;
}

static void fill_nan(float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = NAN;
}

void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const quant_kernels *k = kernels_for_length(type, n);
    if (k)
        k->dequant(src, dst, n);
    else
        fill_nan(dst, n);
}

float quant_dot(uint32_t type, const void *row, const float *x, int64_t n) {
    const quant_kernels *k = kernels_for_length(type, n);
    return k ? k->dot(row, x, n) : NAN;
}

void quant_dequant_ref(uint32_t type, const void *src, float *dst, int64_t n) {
    const quant_kernels *k = kernels_for_length(type, n);
    if (k)
        k->dequant_ref(src, dst, n);
    else
        fill_nan(dst, n);
}

float quant_dot_ref(uint32_t type, const void *row, const float *x, int64_t n) {
    const quant_kernels *k = kernels_for_length(type, n);
    if (!k) return NAN;
    /* 256 elements at a time: a whole number of blocks of every format. */
    float buf[256];
    const uint8_t *p = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i += 256) {
        int64_t len = n - i < 256 ? n - i : 256;
        k->dequant_ref(p + (size_t)(i / k->traits.block_size) * k->traits.block_bytes, buf, len);
        for (int64_t j = 0; j < len; j++) sum += (double)buf[j] * (double)x[i + j];
    }
    return (float)sum;
}
