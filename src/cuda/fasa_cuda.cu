/* Host side of the CUDA decode-attention backend: contexts, layers, appends
 * and the dense / FASA decode steps. Kernels live in attn.cuh (attention),
 * tip.cuh (scoring and selection) and cache.cuh (cache maintenance). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn.cuh"
#include "cache.cuh"
#include "cluster.cuh"
#include "cuda_check.h"
#include "flash.cuh"
#include "fasa_cuda.h"
#include "fasa_cuda_internal.h"
#include "tip.cuh"

#define STAGE_TOKENS 256 /* tokens per host-to-device copy in an append */

struct fasa_cuda_ctx {
    fasa_cuda_params p;
    int32_t group;   /* query heads per KV head */
    int32_t n_units; /* FASA token sets per step */
    int32_t hpu;     /* query heads per FASA unit */
    int32_t n_sms;
    int32_t attn_ctas_per_sm; /* resident dense-attention CTAs per multiprocessor */
    int32_t cl_auto;          /* cluster size of the one-kernel FASA step; 0 = not available */
    int32_t cl_ok[CL_MAX + 1]; /* [C]: clusters of C CTAs can run this context's largest step */
    cudaStream_t stream;
    fasa_cuda_tuning tune;
    uint64_t dev_bytes;
    /* attention: partial outputs of split CTAs and arrival counters */
    float *part_o;
    float2 *part_ml;
    uint32_t *attn_arrivals;
    /* TIP and selection */
    float *scores;
    uint32_t *hist;
    int32_t *sel;
    uint32_t *sel_count;
    uint2 *cand;
    uint32_t *cand_count;
    uint32_t *sel_arrivals;
    /* append staging: K then V, [STAGE_TOKENS][n_kv][D] fp32 each */
    float *stage;
};

struct fasa_cuda_layer {
    fasa_cuda_ctx *ctx;
    __half *k, *v;      /* device pointers (mode M: the mapped view of host memory) */
    __half *k_host;     /* mode M: the pinned allocation (V follows K in it) */
    void *labels;
    float *lab_scale;
    int32_t *lab_idx;
    int32_t n_past;
    uint64_t dev_bytes, host_bytes;
};

fasa_cuda_params fasa_cuda_default_params(void) {
    fasa_cuda_params p;
    memset(&p, 0, sizeof p);
    p.mode = FASA_CUDA_MODE_C;
    p.label_type = FASA_CUDA_LABEL_F16;
    p.n_fac_max = 2048;
    return p;
}

static size_t label_elem_size(const fasa_cuda_params *p) {
    return p->label_type == FASA_CUDA_LABEL_I8 ? 1 : 2;
}

static fasa_status params_check(const fasa_cuda_params *p) {
    if (p->n_heads <= 0 || p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads)
        return fasa_error(FASA_E_ARG, "fasa_cuda: n_heads (%d) must be a positive multiple of n_kv_heads (%d)",
                          p->n_heads, p->n_kv_heads);
    if (p->n_heads / p->n_kv_heads > 8)
        return fasa_error(FASA_E_UNSUPPORTED,
                          "fasa_cuda: %d query heads per KV head; the kernels handle at most 8",
                          p->n_heads / p->n_kv_heads);
    if (p->head_dim != 64 && p->head_dim != 128)
        return fasa_error(FASA_E_UNSUPPORTED, "fasa_cuda: head_dim %d; the kernels handle 64 and 128",
                          p->head_dim);
    if (p->n_ctx <= 0) return fasa_error(FASA_E_ARG, "fasa_cuda: n_ctx must be positive (got %d)", p->n_ctx);
    if (p->mode != FASA_CUDA_MODE_C && p->mode != FASA_CUDA_MODE_M)
        return fasa_error(FASA_E_ARG, "fasa_cuda: unknown mode %d", (int)p->mode);
    if (p->n_lab == 0) {
        if (p->per_head_select)
            return fasa_error(FASA_E_ARG, "fasa_cuda: per_head_select needs labels (n_lab > 0)");
        return FASA_OK;
    }
    if (p->label_type != FASA_CUDA_LABEL_F16 && p->label_type != FASA_CUDA_LABEL_I8)
        return fasa_error(FASA_E_ARG, "fasa_cuda: unknown label type %d", (int)p->label_type);
    const size_t bytes = (size_t)p->n_lab * label_elem_size(p);
    const size_t lpt = bytes / 16;
    if (p->n_lab < 0 || p->n_lab > p->head_dim || bytes % 16 || lpt == 0 || lpt > 32 || (lpt & (lpt - 1)))
        return fasa_error(FASA_E_UNSUPPORTED,
                          "fasa_cuda: n_lab %d: a token's labels must fill 16, 32, 64, ... 512 bytes "
                          "(fp16: a multiple of 8 coordinates; int8: of 16) and at most head_dim",
                          p->n_lab);
    if (p->n_fac_max <= 0)
        return fasa_error(FASA_E_ARG, "fasa_cuda: n_fac_max must be positive (got %d)", p->n_fac_max);
    return FASA_OK;
}

/* Candidate rows start 16-byte aligned (they are staged with 16-byte loads). */
static int64_t cand_stride(int64_t n_ctx) { return (n_ctx + 1) & ~(int64_t)1; }

static fasa_status dev_alloc(fasa_cuda_ctx *ctx, void **out, size_t bytes, const char *what) {
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *out = NULL;
        return fasa_error(e == cudaErrorMemoryAllocation ? FASA_E_NOMEM : FASA_E_INTERNAL,
                          "fasa_cuda: cannot allocate %zu bytes of device memory for %s: %s", bytes, what,
                          cudaGetErrorString(e));
    }
    ctx->dev_bytes += bytes;
    CUDA_TRY(cudaMemset(*out, 0, bytes ? bytes : 16));
    return FASA_OK;
}

/* Shared memory of the one-kernel step with clusters of C CTAs over n tokens. */
static size_t cluster_smem(const fasa_cuda_ctx *ctx, int32_t C, int64_t n, int32_t k) {
    return cluster_layout_for((int)((n + C - 1) / C), C, k, ctx->hpu, ctx->p.head_dim).total;
}

/* Which cluster sizes can run the context's largest step (n_ctx tokens,
 * n_fac_max), and the default: the one with the least work per CTA, waves
 * counted (waves / C smallest: on an H200 only 7 clusters of 12-16 CTAs fit
 * at a time, so 8 KV heads would need two waves, and 9 CTAs per cluster
 * wins). None on devices before sm_90, with per-head selection, when even 16
 * CTAs per unit would need more shared memory than a CTA may have, or when
 * the device refuses the kernel's attributes (the launches then serve). */
static fasa_status cluster_choose(fasa_cuda_ctx *ctx) {
    const fasa_cuda_params *p = &ctx->p;
    int major = 0, smem_max = 0;
    CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p->device));
    CUDA_TRY(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, p->device));
    if (major < 9 || p->per_head_select) return FASA_OK;
    const bool i8 = p->label_type == FASA_CUDA_LABEL_I8;
    const int static_smem = 1024; /* the kernel's own __shared__ variables, with room */
    if (cluster_prepare(i8, p->head_dim, smem_max - static_smem) != cudaSuccess) {
        cudaGetLastError();
        return FASA_OK;
    }
    double best = 0;
    int best_waves = 0;
    for (int32_t C = 1; C <= CL_MAX; ++C) {
        const size_t smem = cluster_smem(ctx, C, p->n_ctx, p->n_fac_max);
        if (smem + static_smem > (size_t)smem_max) continue;
        int active = 0;
        cudaError_t e = cluster_active(i8, p->head_dim, C, ctx->n_units, smem, &active);
        if (e != cudaSuccess || active <= 0) {
            cudaGetLastError(); /* a size the device cannot schedule is not an error */
            continue;
        }
        ctx->cl_ok[C] = 1;
        const int waves = (ctx->n_units + active - 1) / active;
        const double score = C / (double)waves;
        /* equal scores: the fewer waves (a second wave waits for the first) */
        if (score > best || (score == best && waves <= best_waves)) best = score, best_waves = waves, ctx->cl_auto = C;
    }
    return FASA_OK;
}

/* The cluster size of the one-kernel step as tuned (0: none). */
static int32_t cluster_size(const fasa_cuda_ctx *ctx) {
    const int32_t c = ctx->tune.cluster;
    if (c < 0) return 0;
    if (c == 0) return ctx->cl_auto;
    return c <= CL_MAX && ctx->cl_ok[c] ? c : 0;
}

int32_t fasa_cuda_ctx_cluster_size(const fasa_cuda_ctx *ctx) { return cluster_size(ctx); }

/* Label bytes per CTA up to which the automatic choice takes the one-kernel
 * step: the crossover measured on an H200 (docs/perf-notes.md). Below it the
 * launches and global round trips the one kernel saves dominate; above it the
 * label pass does, and the one kernel runs it on C x units multiprocessors
 * where the launches use all of them. */
#define CL_AUTO_MAX_LABEL_BYTES (192 * 1024)

/* The cluster size this step of layer l uses (0: the multi-launch pipeline). */
static int32_t step_cluster_size(const fasa_cuda_layer *l) {
    const fasa_cuda_ctx *ctx = l->ctx;
    const int32_t C = cluster_size(ctx);
    if (C == 0 || ctx->tune.cluster > 0) return C;
    const int64_t per_token = (int64_t)ctx->p.n_lab * label_elem_size(&ctx->p) +
                              (ctx->p.label_type == FASA_CUDA_LABEL_I8 ? 4 : 0);
    return ((int64_t)l->n_past + C - 1) / C * per_token <= CL_AUTO_MAX_LABEL_BYTES ? C : 0;
}

#define ALLOC(ptr, count, what)                                                                 \
    do {                                                                                        \
        fasa_status s_ = dev_alloc(ctx, (void **)&(ptr), (size_t)(count) * sizeof *(ptr), what); \
        if (s_ != FASA_OK) {                                                                    \
            fasa_cuda_ctx_free(ctx);                                                            \
            return s_;                                                                          \
        }                                                                                       \
    } while (0)

fasa_status fasa_cuda_ctx_init(const fasa_cuda_params *p, fasa_cuda_ctx **out) {
    *out = NULL;
    fasa_status s = params_check(p);
    if (s != FASA_OK) return s;
    CUDA_TRY(cudaSetDevice(p->device));
    fasa_cuda_ctx *ctx = (fasa_cuda_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) return fasa_error(FASA_E_NOMEM, "fasa_cuda: cannot allocate a context");
    ctx->p = *p;
    ctx->group = p->n_heads / p->n_kv_heads;
    ctx->n_units = p->per_head_select ? p->n_heads : p->n_kv_heads;
    ctx->hpu = p->per_head_select ? 1 : ctx->group;
    ctx->tune.attn_warps = 8;
    ctx->tune.pdl = 1;
    cudaError_t e = cudaDeviceGetAttribute(&ctx->n_sms, cudaDevAttrMultiProcessorCount, p->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = tip_prepare();
    ctx->attn_ctas_per_sm = attn_ctas_per_sm(p->head_dim, false, ctx->tune.attn_warps, ctx->group);
    if (e != cudaSuccess) {
        fasa_cuda_ctx_free(ctx);
        return cuda_status(e, "context setup (device attributes, stream, kernel attributes)", __FILE__, __LINE__);
    }
    const int64_t D = p->head_dim, H = p->n_heads, KV = p->n_kv_heads, N = p->n_ctx, U = ctx->n_units;
    ALLOC(ctx->part_o, H * ATTN_MAX_SPLITS * D, "partial attention outputs");
    ALLOC(ctx->part_ml, H * ATTN_MAX_SPLITS, "partial softmax statistics");
    ALLOC(ctx->attn_arrivals, H, "attention arrival counters");
    ALLOC(ctx->stage, 2 * STAGE_TOKENS * KV * D, "append staging");
    if (p->n_lab > 0) {
        ALLOC(ctx->scores, U * N, "TIP scores");
        ALLOC(ctx->hist, U * TIP_BINS1, "score histograms");
        ALLOC(ctx->sel, U * (int64_t)p->n_fac_max, "selected token lists");
        ALLOC(ctx->sel_count, U, "selection counters");
        ALLOC(ctx->cand, U * cand_stride(N) + 2, "selection candidates");
        ALLOC(ctx->cand_count, U, "candidate counters");
        ALLOC(ctx->sel_arrivals, U, "selection arrival counters");
        s = cluster_choose(ctx);
        if (s != FASA_OK) {
            fasa_cuda_ctx_free(ctx);
            return s;
        }
    }
    *out = ctx;
    return FASA_OK;
}

void fasa_cuda_ctx_free(fasa_cuda_ctx *ctx) {
    if (!ctx) return;
    void *bufs[] = {ctx->part_o,    ctx->part_ml, ctx->attn_arrivals, ctx->stage,
                    ctx->scores,    ctx->hist,    ctx->sel,           ctx->sel_count,
                    ctx->cand,      ctx->cand_count, ctx->sel_arrivals};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i) cudaFree(bufs[i]);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
}

void *fasa_cuda_ctx_stream(fasa_cuda_ctx *ctx) { return (void *)ctx->stream; }

fasa_status fasa_cuda_ctx_sync(fasa_cuda_ctx *ctx) {
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    CUDA_TRY(cudaGetLastError());
    return FASA_OK;
}

uint64_t fasa_cuda_ctx_device_bytes(const fasa_cuda_ctx *ctx) { return ctx->dev_bytes; }

void fasa_cuda_ctx_set_tuning(fasa_cuda_ctx *ctx, const fasa_cuda_tuning *t) {
    ctx->tune = *t;
    if (ctx->tune.attn_warps < 1 || ctx->tune.attn_warps > ATTN_MAX_WARPS) ctx->tune.attn_warps = 8;
    if (ctx->tune.select_chunk % 1024) ctx->tune.select_chunk = 0;
    ctx->attn_ctas_per_sm = attn_ctas_per_sm(ctx->p.head_dim, false, ctx->tune.attn_warps, ctx->group);
}

void fasa_cuda_ctx_get_tuning(const fasa_cuda_ctx *ctx, fasa_cuda_tuning *t) { *t = ctx->tune; }

int32_t fasa_cuda_ctx_n_units(const fasa_cuda_ctx *ctx) { return ctx->n_units; }

/* ---- layers ----------------------------------------------------------- */

fasa_status fasa_cuda_layer_init(fasa_cuda_ctx *ctx, const int32_t *lab_idx, fasa_cuda_layer **out) {
    return fasa_cuda_layer_init_kv(ctx, lab_idx, ctx->p.mode, out);
}

fasa_status fasa_cuda_layer_init_kv(fasa_cuda_ctx *ctx, const int32_t *lab_idx, fasa_cuda_mode kv_mode,
                                    fasa_cuda_layer **out) {
    *out = NULL;
    if (kv_mode != FASA_CUDA_MODE_C && kv_mode != FASA_CUDA_MODE_M)
        return fasa_error(FASA_E_ARG, "fasa_cuda: unknown mode %d", (int)kv_mode);
    const fasa_cuda_params *p = &ctx->p;
    if (p->n_lab > 0) {
        if (!lab_idx) return fasa_error(FASA_E_ARG, "fasa_cuda: the context has labels but lab_idx is NULL");
        for (int64_t i = 0; i < (int64_t)p->n_kv_heads * p->n_lab; ++i)
            if (lab_idx[i] < 0 || lab_idx[i] >= p->head_dim)
                return fasa_error(FASA_E_ARG, "fasa_cuda: label coordinate %d of KV head %d is %d, outside 0..%d",
                                  (int)(i % p->n_lab), (int)(i / p->n_lab), lab_idx[i], p->head_dim - 1);
    }
    fasa_cuda_layer *l = (fasa_cuda_layer *)calloc(1, sizeof *l);
    if (!l) return fasa_error(FASA_E_NOMEM, "fasa_cuda: cannot allocate a layer");
    l->ctx = ctx;
    const size_t kv_bytes = (size_t)p->n_kv_heads * p->n_ctx * p->head_dim * sizeof(__half);
    const uint64_t before = ctx->dev_bytes;
    fasa_status s = FASA_OK;
    if (kv_mode == FASA_CUDA_MODE_C) {
        s = dev_alloc(ctx, (void **)&l->k, kv_bytes, "the K cache");
        if (s == FASA_OK) s = dev_alloc(ctx, (void **)&l->v, kv_bytes, "the V cache");
    } else {
        cudaError_t e = cudaHostAlloc((void **)&l->k_host, 2 * kv_bytes, cudaHostAllocMapped | cudaHostAllocPortable);
        if (e != cudaSuccess) {
            l->k_host = NULL;
            s = fasa_error(FASA_E_NOMEM, "fasa_cuda: cannot pin %zu bytes of host memory for K and V: %s",
                           2 * kv_bytes, cudaGetErrorString(e));
        } else {
            l->host_bytes = 2 * kv_bytes;
            e = cudaHostGetDevicePointer((void **)&l->k, l->k_host, 0);
            if (e != cudaSuccess) s = cuda_status(e, "cudaHostGetDevicePointer", __FILE__, __LINE__);
            l->v = l->k + kv_bytes / sizeof(__half);
        }
    }
    if (s == FASA_OK && p->n_lab > 0) {
        const size_t n_tok = (size_t)p->n_kv_heads * p->n_ctx;
        s = dev_alloc(ctx, &l->labels, n_tok * p->n_lab * label_elem_size(p), "the label cache");
        if (s == FASA_OK && p->label_type == FASA_CUDA_LABEL_I8)
            s = dev_alloc(ctx, (void **)&l->lab_scale, n_tok * sizeof(float), "label scales");
        if (s == FASA_OK)
            s = dev_alloc(ctx, (void **)&l->lab_idx, (size_t)p->n_kv_heads * p->n_lab * sizeof(int32_t),
                          "label coordinates");
        if (s == FASA_OK) {
            cudaError_t e = cudaMemcpy(l->lab_idx, lab_idx, (size_t)p->n_kv_heads * p->n_lab * sizeof(int32_t),
                                       cudaMemcpyHostToDevice);
            if (e != cudaSuccess) s = cuda_status(e, "cudaMemcpy(label coordinates)", __FILE__, __LINE__);
        }
    }
    l->dev_bytes = ctx->dev_bytes - before;
    ctx->dev_bytes = before; /* the context counts its scratch only */
    if (s != FASA_OK) {
        fasa_cuda_layer_free(l);
        return s;
    }
    *out = l;
    return FASA_OK;
}

void fasa_cuda_layer_free(fasa_cuda_layer *l) {
    if (!l) return;
    if (l->k_host) cudaFreeHost(l->k_host);
    else {
        cudaFree(l->k);
        cudaFree(l->v);
    }
    cudaFree(l->labels);
    cudaFree(l->lab_scale);
    cudaFree(l->lab_idx);
    free(l);
}

int32_t fasa_cuda_layer_n_past(const fasa_cuda_layer *l) { return l->n_past; }
uint64_t fasa_cuda_layer_device_bytes(const fasa_cuda_layer *l) { return l->dev_bytes; }
uint64_t fasa_cuda_layer_host_bytes(const fasa_cuda_layer *l) { return l->host_bytes; }
void fasa_cuda_layer_reset(fasa_cuda_layer *l) { l->n_past = 0; }

fasa_status fasa_cuda_layer_truncate(fasa_cuda_layer *l, int32_t n) {
    if (n < 0 || n > l->n_past)
        return fasa_error(FASA_E_ARG, "fasa_cuda_layer_truncate: cannot cut %d cached tokens to %d", l->n_past, n);
    l->n_past = n; /* rows past n are rewritten by the next appends */
    return FASA_OK;
}

static cache_args cache_args_for(const fasa_cuda_layer *l, int32_t pos0, int32_t n) {
    const fasa_cuda_params *p = &l->ctx->p;
    cache_args a;
    memset(&a, 0, sizeof a);
    a.k = l->k;
    a.v = l->v;
    a.head_stride = (int64_t)p->n_ctx * p->head_dim;
    a.n_kv = p->n_kv_heads;
    a.D = p->head_dim;
    a.pos0 = pos0;
    a.n = n;
    a.labels = l->labels;
    a.lab_scale = l->lab_scale;
    a.cap = p->n_ctx;
    a.n_lab = p->n_lab;
    a.int8_labels = p->label_type == FASA_CUDA_LABEL_I8;
    a.lab_idx = l->lab_idx;
    return a;
}

static fasa_status launch_labels(const cache_args *a, cudaStream_t st) {
    if (!a->labels) return FASA_OK;
    const int64_t threads = (int64_t)a->n * a->n_kv * 32;
    cache_label_kernel<<<(unsigned)((threads + 255) / 256), 256, 0, st>>>(*a);
    CUDA_TRY_LAUNCH("cache_label_kernel");
    return FASA_OK;
}

fasa_status fasa_cuda_layer_append(fasa_cuda_layer *l, const float *k, const float *v, int32_t n) {
    fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    if (n < 0 || (n > 0 && (!k || !v))) return fasa_error(FASA_E_ARG, "fasa_cuda_layer_append: bad arguments");
    if ((int64_t)l->n_past + n > p->n_ctx)
        return fasa_error(FASA_E_CONTEXT, "fasa_cuda: appending %d tokens to %d cached would exceed n_ctx = %d",
                          n, l->n_past, p->n_ctx);
    const size_t row = (size_t)p->n_kv_heads * p->head_dim;
    for (int32_t done = 0; done < n; done += STAGE_TOKENS) {
        const int32_t m = n - done < STAGE_TOKENS ? n - done : STAGE_TOKENS;
        float *sk = ctx->stage, *sv = ctx->stage + (size_t)STAGE_TOKENS * row;
        CUDA_TRY(cudaMemcpyAsync(sk, k + done * row, m * row * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
        CUDA_TRY(cudaMemcpyAsync(sv, v + done * row, m * row * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
        const cache_args a = cache_args_for(l, l->n_past + done, m);
        cache_store_kernel<<<cache_grid((int64_t)m * row, 256), 256, 0, ctx->stream>>>(a, sk, sv);
        CUDA_TRY_LAUNCH("cache_store_kernel");
        fasa_status s = launch_labels(&a, ctx->stream);
        if (s != FASA_OK) return s;
    }
    fasa_status s = fasa_cuda_ctx_sync(ctx);
    if (s != FASA_OK) return s;
    l->n_past += n;
    return FASA_OK;
}

fasa_status fasa_cuda_layer_append_dev(fasa_cuda_layer *l, const float *k, const float *v, int32_t n) {
    fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    if (n < 0 || (n > 0 && (!k || !v))) return fasa_error(FASA_E_ARG, "fasa_cuda_layer_append_dev: bad arguments");
    if ((int64_t)l->n_past + n > p->n_ctx)
        return fasa_error(FASA_E_CONTEXT, "fasa_cuda: appending %d tokens to %d cached would exceed n_ctx = %d",
                          n, l->n_past, p->n_ctx);
    if (n == 0) return FASA_OK;
    const cache_args a = cache_args_for(l, l->n_past, n);
    cache_store_kernel<<<cache_grid((int64_t)n * p->n_kv_heads * p->head_dim, 256), 256, 0, ctx->stream>>>(a, k, v);
    CUDA_TRY_LAUNCH("cache_store_kernel");
    fasa_status s = launch_labels(&a, ctx->stream);
    if (s != FASA_OK) return s;
    l->n_past += n;
    return FASA_OK;
}

fasa_status fasa_cuda_layer_copy(fasa_cuda_layer *dst, const fasa_cuda_layer *src) {
    const fasa_cuda_params *p = &dst->ctx->p, *q = &src->ctx->p;
    if (p->n_kv_heads != q->n_kv_heads || p->head_dim != q->head_dim || src->n_past > p->n_ctx)
        return fasa_error(FASA_E_ARG, "fasa_cuda_layer_copy: layers of different shapes");
    cudaStream_t st = dst->ctx->stream;
    /* the source's pending work (its own stream) must have landed */
    CUDA_TRY(cudaStreamSynchronize(src->ctx->stream));
    const size_t rows = (size_t)src->n_past * p->head_dim * sizeof(__half);
    for (int32_t h = 0; h < p->n_kv_heads && rows; ++h) {
        CUDA_TRY(cudaMemcpyAsync(dst->k + (size_t)h * p->n_ctx * p->head_dim, src->k + (size_t)h * q->n_ctx * q->head_dim,
                                 rows, cudaMemcpyDefault, st));
        CUDA_TRY(cudaMemcpyAsync(dst->v + (size_t)h * p->n_ctx * p->head_dim, src->v + (size_t)h * q->n_ctx * q->head_dim,
                                 rows, cudaMemcpyDefault, st));
    }
    if (src->n_past > 0) {
        const cache_args a = cache_args_for(dst, 0, src->n_past);
        fasa_status s = launch_labels(&a, st);
        if (s != FASA_OK) return s;
    }
    dst->n_past = src->n_past;
    return fasa_cuda_ctx_sync(dst->ctx);
}

fasa_status fasa_cuda_layer_fill_random(fasa_cuda_layer *l, int32_t n, uint64_t seed) {
    fasa_cuda_ctx *ctx = l->ctx;
    if (n <= 0 || n > ctx->p.n_ctx)
        return fasa_error(FASA_E_ARG, "fasa_cuda_layer_fill_random: n = %d outside 1..%d", n, ctx->p.n_ctx);
    const cache_args a = cache_args_for(l, 0, n);
    cache_random_kernel<<<cache_grid((int64_t)n * a.n_kv * a.D, 256), 256, 0, ctx->stream>>>(a, seed);
    CUDA_TRY_LAUNCH("cache_random_kernel");
    fasa_status s = launch_labels(&a, ctx->stream);
    if (s != FASA_OK) return s;
    s = fasa_cuda_ctx_sync(ctx);
    if (s != FASA_OK) return s;
    l->n_past = n;
    return FASA_OK;
}

fasa_status fasa_cuda_layer_read_kv(const fasa_cuda_layer *l, uint16_t *k, uint16_t *v) {
    const fasa_cuda_params *p = &l->ctx->p;
    const size_t rows = (size_t)l->n_past * p->head_dim;
    for (int32_t h = 0; h < p->n_kv_heads; ++h) {
        const size_t src = (size_t)h * p->n_ctx * p->head_dim;
        CUDA_TRY(cudaMemcpy(k + h * rows, l->k + src, rows * 2, cudaMemcpyDefault));
        CUDA_TRY(cudaMemcpy(v + h * rows, l->v + src, rows * 2, cudaMemcpyDefault));
    }
    return FASA_OK;
}

/* ---- decode steps ----------------------------------------------------- */

static attn_args attn_args_for(const fasa_cuda_layer *l, const float *q, float *out) {
    const fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    attn_args a;
    memset(&a, 0, sizeof a);
    a.k = l->k;
    a.v = l->v;
    a.head_stride = (int64_t)p->n_ctx * p->head_dim;
    a.q = q;
    a.out = out;
    a.n_rows = l->n_past;
    a.group = ctx->group;
    a.scale_log2 = 1.4426950408889634f / sqrtf((float)p->head_dim);
    a.part_o = ctx->part_o;
    a.part_ml = ctx->part_ml;
    a.arrivals = ctx->attn_arrivals;
    return a;
}

static fasa_status check_step(const fasa_cuda_layer *l, const float *q, float *out, const char *what) {
    if (!q || !out) return fasa_error(FASA_E_ARG, "%s: q and out must be device arrays", what);
    if (l->n_past <= 0) return fasa_error(FASA_E_ARG, "%s: the layer caches no tokens yet", what);
    return FASA_OK;
}

fasa_status fasa_cuda_dense_step(fasa_cuda_layer *l, const float *q, float *out) {
    fasa_status s = check_step(l, q, out, "fasa_cuda_dense_step");
    if (s != FASA_OK) return s;
    const fasa_cuda_ctx *ctx = l->ctx;
    attn_args a = attn_args_for(l, q, out);
    a.n_tokens = l->n_past;
    a.hpu = ctx->group;
    attn_plan(&a, ctx->p.n_kv_heads, ctx->n_sms, ctx->attn_ctas_per_sm, ctx->tune.attn_warps,
              ctx->tune.attn_steps_per_warp);
    CUDA_TRY(attn_launch(&a, ctx->p.n_kv_heads, ctx->p.head_dim, ctx->tune.attn_warps, ctx->stream, ctx->tune.pdl));
    return FASA_OK;
}

fasa_status fasa_cuda_dense_rows(fasa_cuda_layer *l, int32_t n_rows, const float *q, float *out) {
    fasa_status s = check_step(l, q, out, "fasa_cuda_dense_rows");
    if (s != FASA_OK) return s;
    if (n_rows <= 0 || n_rows > l->n_past)
        return fasa_error(FASA_E_ARG, "fasa_cuda_dense_rows: %d rows of %d cached", n_rows, l->n_past);
    const fasa_cuda_ctx *ctx = l->ctx;
    attn_args a = attn_args_for(l, q, out);
    a.n_rows = n_rows;
    a.n_tokens = n_rows;
    a.hpu = ctx->group;
    attn_plan(&a, ctx->p.n_kv_heads, ctx->n_sms, ctx->attn_ctas_per_sm, ctx->tune.attn_warps,
              ctx->tune.attn_steps_per_warp);
    CUDA_TRY(attn_launch(&a, ctx->p.n_kv_heads, ctx->p.head_dim, ctx->tune.attn_warps, ctx->stream, ctx->tune.pdl));
    return FASA_OK;
}

fasa_status fasa_cuda_prefill_attn(fasa_cuda_layer *l, int32_t n, const float *q, void *out) {
    const fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    if (!q || !out) return fasa_error(FASA_E_ARG, "fasa_cuda_prefill_attn: q and out must be device arrays");
    if (n <= 0 || n > l->n_past)
        return fasa_error(FASA_E_ARG, "fasa_cuda_prefill_attn: %d queries of %d cached tokens", n, l->n_past);
    flash_args a;
    memset(&a, 0, sizeof a);
    a.q = q;
    a.out = (__half *)out;
    a.k = l->k;
    a.v = l->v;
    a.head_stride = (int64_t)p->n_ctx * p->head_dim;
    a.n = n;
    a.n_heads = p->n_heads;
    a.group = ctx->group;
    a.pos0 = l->n_past - n;
    a.scale_log2 = 1.4426950408889634f / sqrtf((float)p->head_dim);
    CUDA_TRY(flash_launch(a, p->n_kv_heads, p->head_dim, ctx->stream));
    return FASA_OK;
}

static tip_args tip_args_for(const fasa_cuda_layer *l, const float *q) {
    const fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    tip_args t;
    memset(&t, 0, sizeof t);
    t.labels = l->labels;
    t.lab_scale = l->lab_scale;
    t.lab_head_stride = (int64_t)p->n_ctx * p->n_lab;
    t.scale_head_stride = p->n_ctx;
    t.lab_idx = l->lab_idx;
    t.q = q;
    t.D = p->head_dim;
    t.n_lab = p->n_lab;
    t.group = ctx->group;
    t.hpu = ctx->hpu;
    t.n_tokens = l->n_past;
    return t;
}

static fasa_status tip_stage(fasa_cuda_layer *l, const float *q) {
    fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    tip_args t = tip_args_for(l, q);
    t.chunk = ctx->tune.tip_chunk > 0 ? ctx->tune.tip_chunk
                                      : tip_chunk_for(l->n_past, p->n_kv_heads, ctx->n_sms, 2, 512, 16384, 256);
    t.scores = ctx->scores;
    t.score_stride = p->n_ctx;
    t.hist = ctx->hist;
    CUDA_TRY(tip_launch(&t, p->label_type == FASA_CUDA_LABEL_I8, p->n_kv_heads, ctx->group / ctx->hpu, ctx->stream,
                        ctx->tune.pdl));
    return FASA_OK;
}

/* Selection over the TIP scores; with attn, the focused attention too. */
static fasa_status select_stage(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out, bool attn) {
    fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    select_args s;
    memset(&s, 0, sizeof s);
    s.scores = ctx->scores;
    s.score_stride = p->n_ctx;
    s.n_tokens = l->n_past;
    int64_t chunk = ctx->tune.select_chunk;
    if (chunk <= 0) {
        chunk = ((int64_t)l->n_past / 32 + 1023) / 1024 * 1024;
        chunk = chunk < 1024 ? 1024 : chunk > 4096 ? 4096 : chunk;
    }
    while ((l->n_past + chunk - 1) / chunk + 1 > ATTN_MAX_SPLITS) chunk *= 2;
    s.chunk = (int32_t)chunk;
    s.k = n_fac;
    s.hist = ctx->hist;
    s.sel = ctx->sel;
    s.sel_stride = p->n_fac_max;
    s.sel_count = ctx->sel_count;
    s.cand = ctx->cand;
    s.cand_stride = cand_stride(p->n_ctx);
    s.cand_count = ctx->cand_count;
    s.arrivals = ctx->sel_arrivals;
    s.attn = attn_args_for(l, q, out);
    s.attn.hpu = ctx->hpu;
    size_t smem = 0;
    select_smem(&s, p->head_dim, ctx->hpu, attn, &smem);
    if (smem > SELECT_MAX_SMEM)
        return fasa_error(FASA_E_UNSUPPORTED, "fasa_cuda: %d cached tokens need %zu bytes of shared memory per "
                          "selection CTA (at most %d)", l->n_past, smem, SELECT_MAX_SMEM);
    CUDA_TRY(select_launch(&s, ctx->n_units, p->head_dim, attn, smem, ctx->stream, ctx->tune.pdl));
    return FASA_OK;
}

/* The focused attention over the selected rows (third launch). Latency
 * bound: 8 warps of two pipelined 16-token steps each per CTA, so that a
 * budget of 256 needs one CTA per unit and no merge of partials. */
static fasa_status fac_stage(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out) {
    const fasa_cuda_ctx *ctx = l->ctx;
    attn_args a = attn_args_for(l, q, out);
    a.rows = ctx->sel;
    a.rows_stride = ctx->p.n_fac_max;
    a.n_tokens = n_fac;
    a.hpu = ctx->hpu;
    attn_plan(&a, ctx->n_units, ctx->n_sms, 1, 8, 2);
    CUDA_TRY(attn_launch(&a, ctx->n_units, ctx->p.head_dim, 8, ctx->stream, ctx->tune.pdl));
    return FASA_OK;
}

/* The whole step in one launch: a cluster of C CTAs per unit (cluster.cuh). */
static fasa_status cluster_stage(fasa_cuda_layer *l, int32_t n_fac, int32_t C, const float *q, float *out) {
    fasa_cuda_ctx *ctx = l->ctx;
    const fasa_cuda_params *p = &ctx->p;
    cluster_args a;
    memset(&a, 0, sizeof a);
    a.tip = tip_args_for(l, q);
    a.tip.chunk = (l->n_past + C - 1) / C;
    a.attn = attn_args_for(l, q, out);
    a.attn.hpu = ctx->hpu;
    a.k = n_fac;
    a.k_cap = n_fac;
    a.sel = ctx->sel;
    a.sel_stride = p->n_fac_max;
    a.cand = ctx->cand;
    a.cand_stride = cand_stride(p->n_ctx);
    const size_t smem = cluster_smem(ctx, C, l->n_past, n_fac);
    CUDA_TRY(cluster_launch(&a, p->label_type == FASA_CUDA_LABEL_I8, p->head_dim, C, ctx->n_units, smem,
                            ctx->stream, ctx->tune.pdl));
    return FASA_OK;
}

fasa_status fasa_cuda_fasa_stages(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out,
                                  unsigned stages) {
    fasa_status s = check_step(l, q, out, "fasa_cuda_fasa_step");
    if (s != FASA_OK) return s;
    const fasa_cuda_params *p = &l->ctx->p;
    if (p->n_lab == 0)
        return fasa_error(FASA_E_ARG, "fasa_cuda_fasa_step: the context was created without labels (n_lab = 0)");
    if (n_fac <= 0 || n_fac > p->n_fac_max)
        return fasa_error(FASA_E_ARG, "fasa_cuda_fasa_step: n_fac = %d outside 1..n_fac_max (%d)", n_fac,
                          p->n_fac_max);
    /* A budget that covers every token is dense attention. */
    if (n_fac >= l->n_past)
        return (stages & (FASA_CUDA_STAGE_SELECT | FASA_CUDA_STAGE_ATTN)) ? fasa_cuda_dense_step(l, q, out) : FASA_OK;
    const int32_t C = step_cluster_size(l);
    if (stages == 7u && C > 0) return cluster_stage(l, n_fac, C, q, out);
    const bool fused = l->ctx->tune.fused != 0;
    if ((stages & FASA_CUDA_STAGE_TIP) && (s = tip_stage(l, q)) != FASA_OK) return s;
    if ((stages & FASA_CUDA_STAGE_SELECT) && (s = select_stage(l, n_fac, q, out, fused)) != FASA_OK) return s;
    if (!fused && (stages & FASA_CUDA_STAGE_ATTN) && (s = fac_stage(l, n_fac, q, out)) != FASA_OK) return s;
    return FASA_OK;
}

fasa_status fasa_cuda_fasa_step(fasa_cuda_layer *l, int32_t n_fac, const float *q, float *out) {
    return fasa_cuda_fasa_stages(l, n_fac, q, out, 7u);
}

fasa_status fasa_cuda_ctx_read_selection(fasa_cuda_ctx *ctx, int32_t n_fac, int32_t *sel) {
    if (!ctx->sel || n_fac <= 0 || n_fac > ctx->p.n_fac_max)
        return fasa_error(FASA_E_ARG, "fasa_cuda_ctx_read_selection: no selection of %d tokens", n_fac);
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    CUDA_TRY(cudaMemcpy2D(sel, n_fac * sizeof(int32_t), ctx->sel, ctx->p.n_fac_max * sizeof(int32_t),
                          n_fac * sizeof(int32_t), ctx->n_units, cudaMemcpyDeviceToHost));
    return FASA_OK;
}

/* ---- buffers ---------------------------------------------------------- */

fasa_status fasa_cuda_alloc(fasa_cuda_ctx *ctx, size_t bytes, void **out) {
    (void)ctx;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *out = NULL;
        return fasa_error(FASA_E_NOMEM, "fasa_cuda_alloc: cannot allocate %zu bytes of device memory: %s", bytes,
                          cudaGetErrorString(e));
    }
    return FASA_OK;
}

void fasa_cuda_free(void *p) { cudaFree(p); }

fasa_status fasa_cuda_upload(fasa_cuda_ctx *ctx, void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    return FASA_OK;
}

fasa_status fasa_cuda_download(fasa_cuda_ctx *ctx, void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    return FASA_OK;
}
