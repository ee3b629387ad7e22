/* quant_matmul: how the work is split across threads and caches.
 *
 * Decode (one token) streams every weight byte once, so it is bound by
 * memory bandwidth: each thread takes a contiguous range of rows and runs
 * the format's dot kernel, which dequantizes in registers.
 *
 * Prefill (many tokens) would be bound by the same stream if done row by
 * row, once per token. Instead each thread dequantizes a panel of MR rows x
 * KC columns into a small f32 buffer laid out for the microkernel, and
 * multiplies it by every token before moving on: W is decoded once per
 * call and the FMAs run from L1/L2. */
#include "error.h"
#include "quant_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MR QUANT_GEMM_MR
#define NR QUANT_GEMM_NR
/* Columns per packed panel. Whole rows of the model's matrices fit (the
 * panel is KC x MR floats, 256 KiB with AVX-512, resident in L2), so each
 * output is summed in registers over all columns and written once; longer
 * rows are cut into KC-column slices whose products add into y.
 * Dequantization goes through a small row buffer, DC columns at a time.
 * Both are multiples of every block size (32, 256). */
#define KC 2048
#define DC 256

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PARALLEL_MIN_WORK (1 << 15)

/* How far ahead of the dot products weight rows are prefetched. */
#define PREFETCH_BYTES 4096

/* Fewer tokens than this: per-token dot products beat packing W (measured
 * crossover: 5-6 tokens on 576 x 576). */
#define GEMM_MIN_TOKENS 6

typedef struct matmul_args {
    const quant_kernels *k;
    const uint8_t *w;
    size_t row_bytes;
    int64_t rows, cols;
    const float *x;
    int64_t n_tok;
    float *y;
    quant_dot_x8_fn dot_x8; /* set: the tokens of x8 replace x (quant_matmul_x8) */
    const quant_x8 *x8;
} matmul_args;

/* y[t][r] for rows [r0, r1) and tokens [t0, t1), one dot product each.
 * With f32 activations the row PREFETCH_BYTES ahead is requested before
 * each dot: the hardware prefetcher alone stalled at every 4 KiB page, and
 * measured single-thread streaming rose from about 4.3 to 6 GB/s with it.
 * The int8 kernels consume rows three times faster, and there the same
 * prefetches fill the line-fill buffers and stall: Qwen2.5-1.5B decode at
 * 512 tokens went from 16.3 to 20.3 tok/s without them. */
static void matmul_rows_by_dot(const matmul_args *a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    int64_t ahead = a->dot_x8 ? r1 : PREFETCH_BYTES / (int64_t)a->row_bytes + 1;
    for (int64_t t = t0; t < t1; t++) {
        for (int64_t r = r0; r < r1; r++) {
            if (r + ahead < r1) {
                const uint8_t *next = a->w + (size_t)(r + ahead) * a->row_bytes;
                for (size_t o = 0; o < a->row_bytes; o += 64) __builtin_prefetch(next + o);
            }
            const uint8_t *row = a->w + (size_t)r * a->row_bytes;
            a->y[t * a->rows + r] = a->dot_x8 ? a->dot_x8(row, &a->x8[t], a->cols) : a->k->dot(row, a->x + t * a->cols, a->cols);
        }
    }
}

/* Splits [0, n) into `parts` near-equal contiguous ranges in units of `unit`. */
static void split_range(int64_t n, int64_t unit, int part, int parts, int64_t *lo, int64_t *hi) {
    int64_t units = (n + unit - 1) / unit;
    int64_t u0 = units * part / parts, u1 = units * (part + 1) / parts;
    *lo = u0 * unit < n ? u0 * unit : n;
    *hi = u1 * unit < n ? u1 * unit : n;
}

/* Thread-local scratch of the prefill path. */
typedef struct gemm_buffers {
    float *rows;  /* MR x DC: a slice of the panel's rows, dequantized */
    float *panel; /* KC x MR: the panel, packed for the microkernel */
    float *x_pad; /* NR x KC: a last, partial token block padded with zeros */
} gemm_buffers;

/* Panel [r0, r0 + mr) x columns [k0, k0 + kc) into b->panel; rows past mr
 * are zero so the microkernel can always compute all MR. */
static void pack_w(const matmul_args *a, int64_t r0, int mr, int64_t k0, int64_t kc, gemm_buffers *b) {
    const quant_traits *tr = &a->k->traits;
    for (int64_t d0 = 0; d0 < kc; d0 += DC) {
        int64_t dc = kc - d0 < DC ? kc - d0 : DC;
        size_t offset = (size_t)((k0 + d0) / tr->block_size) * tr->block_bytes;
        for (int i = 0; i < MR; i++) {
            float *dst = b->rows + i * DC;
            if (i < mr)
                a->k->dequant(a->w + (size_t)(r0 + i) * a->row_bytes + offset, dst, dc);
            else
                memset(dst, 0, (size_t)dc * sizeof *dst);
        }
        quant_pack_panel(b->rows, DC, dc, b->panel + d0 * MR);
    }
}

/* Rows [r0, r1) (r0 a multiple of MR) times tokens [t0, t1). */
static void matmul_block(const matmul_args *a, int64_t r0, int64_t r1, int64_t t0, int64_t t1,
                         gemm_buffers *b) {
    int64_t t_full = t0 + (t1 - t0) / NR * NR; /* tokens past this go through x_pad */
    for (int64_t k0 = 0; k0 < a->cols; k0 += KC) {
        int64_t kc = a->cols - k0 < KC ? a->cols - k0 : KC;
        if (t_full < t1) {
            memset(b->x_pad, 0, (size_t)NR * KC * sizeof(float));
            for (int64_t t = t_full; t < t1; t++)
                memcpy(b->x_pad + (t - t_full) * KC, a->x + t * a->cols + k0, (size_t)kc * sizeof(float));
        }
        for (int64_t p = r0; p < r1; p += MR) {
            int mr = (int)(r1 - p < MR ? r1 - p : MR);
            pack_w(a, p, mr, k0, kc, b);
            for (int64_t t = t0; t < t_full; t += NR)
                quant_gemm_tile(b->panel, a->x + t * a->cols + k0, a->cols, kc, a->y + t * a->rows + p,
                                a->rows, mr, NR, k0 > 0);
            if (t_full < t1)
                quant_gemm_tile(b->panel, b->x_pad, KC, kc, a->y + t_full * a->rows + p, a->rows, mr,
                                (int)(t1 - t_full), k0 > 0);
        }
    }
}

/* One thread's share of the prefill product. Panels are split across
 * threads when there are enough of them; otherwise (few rows) tokens are. */
static void matmul_gemm_thread(const matmul_args *a, int ith, int nth) {
    int64_t r0 = 0, r1 = a->rows, t0 = 0, t1 = a->n_tok;
    if ((a->rows + MR - 1) / MR >= nth)
        split_range(a->rows, MR, ith, nth, &r0, &r1);
    else
        split_range(a->n_tok, NR, ith, nth, &t0, &t1);
    if (r0 >= r1 || t0 >= t1) return;

    float *buf = fasa_malloc((size_t)MR * DC + (size_t)(MR + NR) * KC, sizeof(float), "matmul tile buffer");
    if (!buf) {
        /* Out of memory for a few hundred KiB: still give the right answer. */
        matmul_rows_by_dot(a, r0, r1, t0, t1);
        return;
    }
    gemm_buffers b = {buf, buf + MR * DC, buf + MR * DC + MR * KC};
    matmul_block(a, r0, r1, t0, t1, &b);
    free(buf);
}

void quant_matmul(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x,
                  int64_t n_tok, float *y, int n_threads) {
    const quant_kernels *k = quant_kernels_of(type);
    size_t row_bytes = quant_row_bytes(type, cols);
    if (!k || (row_bytes == 0 && cols != 0)) {
        /* Unsupported type or a row that is not whole blocks: a caller bug
         * (tensor shapes are checked at load), made loud rather than plausible. */
        for (int64_t i = 0; i < rows * n_tok; i++) y[i] = NAN;
        return;
    }
    if (cols == 0) { /* empty sums */
        for (int64_t i = 0; i < rows * n_tok; i++) y[i] = 0.0f;
        return;
    }
    matmul_args a = {k, w, row_bytes, rows, cols, x, n_tok, y, NULL, NULL};
    bool gemm = n_tok >= GEMM_MIN_TOKENS;
    int nth = n_threads > 1 && rows * cols * n_tok >= PARALLEL_MIN_WORK ? n_threads : 1;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        int ith = omp_get_thread_num(), n = omp_get_num_threads();
        if (gemm) {
            matmul_gemm_thread(&a, ith, n);
        } else { /* decode, or so few tokens that W is re-read from cache */
            int64_t r0, r1;
            split_range(rows, 1, ith, n, &r0, &r1);
            matmul_rows_by_dot(&a, r0, r1, 0, n_tok);
        }
    }
}

/* A decode step's rows are split in two: the first 7/8 in equal contiguous
 * shares (one stream per thread, as the prefetchers like), the last 1/8 in
 * chunks of X8_TAIL_ROWS taken by whichever thread is free. With equal
 * shares alone, the two threads of a 2-core machine finished a product
 * ~10% of its time apart on average (Qwen2.5-1.5B at 512 tokens: 0.12-0.17
 * s of waiting in 1.1 s of products), with the tail 0.02-0.03 s; chunks
 * everywhere (32 rows) were slower than either. */
#define X8_TAIL_PART 8
#define X8_TAIL_ROWS 16
/* Rows [r0, r1) of matrices a[0..n) laid end to end. */
static void set_rows(const matmul_args *a, int n, int64_t r0, int64_t r1) {
    int64_t base = 0;
    for (int i = 0; i < n; base += a[i].rows, i++) {
        const int64_t lo = r0 > base ? r0 - base : 0, hi = r1 - base < a[i].rows ? r1 - base : a[i].rows;
        if (lo < hi) matmul_rows_by_dot(&a[i], lo, hi, 0, a[i].n_tok);
    }
}

/* The products of x8-eligible matrices sharing the activations x (whose
 * rows are all `cols` long): x rounded once, then either one prefill GEMM
 * per matrix, or, for decode, one parallel region over all their rows. */
static void x8_products(const quant_product *p, int n, int64_t cols, const float *x, int64_t n_tok, int n_threads) {
    /* per token: cols codes, then d, s16, s32 (cols / 32, / 16, / 32 floats) */
    const size_t codes = (size_t)cols, floats = (size_t)(cols / 32 * 2 + cols / 16);
    const size_t per_tok = codes + floats * sizeof(float);
    uint8_t *buf = malloc((size_t)n_tok * (per_tok + sizeof(quant_x8)));
    if (!buf) { /* the f32 path needs no scratch: slower, still right */
        for (int i = 0; i < n; i++) quant_matmul(p[i].type, p[i].w, p[i].rows, cols, x, n_tok, p[i].y, n_threads);
        return;
    }
    quant_x8 *x8 = (quant_x8 *)(buf + (size_t)n_tok * per_tok);
    for (int64_t t = 0; t < n_tok; t++) {
        float *f = (float *)(buf + (size_t)t * per_tok); /* floats first: aligned */
        x8[t] = (quant_x8){(int8_t *)(f + floats), f, f + cols / 32, f + cols / 32 + cols / 16};
        quant_x8_quantize(x + t * cols, cols, &x8[t]);
    }
    if (n_tok >= GEMM_MIN_TOKENS) {
        for (int i = 0; i < n; i++)
            if (!quant_gemm_x8(p[i].type, p[i].w, p[i].rows, cols, x8, n_tok, p[i].y, n_threads))
                quant_matmul(p[i].type, p[i].w, p[i].rows, cols, x, n_tok, p[i].y, n_threads); /* no memory for panels */
        free(buf);
        return;
    }
    matmul_args a[QUANT_MAX_PRODUCTS];
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        a[i] = (matmul_args){quant_kernels_of(p[i].type), p[i].w, quant_row_bytes(p[i].type, cols), p[i].rows, cols, x,
                             n_tok, p[i].y, quant_dot_x8_of(p[i].type), x8};
        total += p[i].rows;
    }
    const int nth = n_threads > 1 && total * cols * n_tok >= PARALLEL_MIN_WORK ? n_threads : 1;
    const int64_t head = nth > 1 ? total - total / X8_TAIL_PART : total;
    int64_t next = 0;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t r0, r1;
        split_range(head, 1, ith, nt, &r0, &r1);
        set_rows(a, n, r0, r1);
        for (;;) {
            int64_t ch;
#pragma omp atomic capture
            ch = next++;
            const int64_t lo = head + ch * X8_TAIL_ROWS, hi = lo + X8_TAIL_ROWS < total ? lo + X8_TAIL_ROWS : total;
            if (lo >= total) break;
            set_rows(a, n, lo, hi);
        }
    }
    free(buf);
}

static bool x8_eligible(uint32_t type, int64_t cols, int64_t n_tok) {
    return quant_dot_x8_of(type) && quant_kernels_of(type) && cols > 0 && cols % 256 == 0 &&
           (n_tok < GEMM_MIN_TOKENS || quant_gemm_x8_supports(type));
}

void quant_matmul_x8(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x,
                     int64_t n_tok, float *y, int n_threads) {
    const quant_product p = {type, w, rows, y};
    quant_matmul_x8_set(&p, 1, cols, x, n_tok, n_threads);
}

void quant_matmul_x8_set(const quant_product *p, int n, int64_t cols, const float *x, int64_t n_tok, int n_threads) {
    bool all = n <= QUANT_MAX_PRODUCTS;
    for (int i = 0; i < n; i++) all = all && x8_eligible(p[i].type, cols, n_tok);
    if (all) {
        x8_products(p, n, cols, x, n_tok, n_threads);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (x8_eligible(p[i].type, cols, n_tok)) x8_products(&p[i], 1, cols, x, n_tok, n_threads);
        else quant_matmul(p[i].type, p[i].w, p[i].rows, cols, x, n_tok, p[i].y, n_threads);
    }
}
