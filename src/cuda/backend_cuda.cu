/* The CUDA backend: the whole forward pass on an NVIDIA GPU.
 *
 * The weights are copied once into device memory in their GGUF block
 * formats (one allocation); the norms and biases as f32. K, V and the labels
 * of a FASA policy live in the attention library's layers (fasa_cuda.h): in
 * device memory (cuda, FASA-C) or with K and V in pinned host memory
 * (cuda-m, FASA-M). Every kernel of a pass is enqueued on one stream; a
 * decode step synchronizes once, when its logits or its sampled token come
 * back.
 *
 * Policies: this backend runs those that declare a label-score selection
 * (attn_policy.labels) it can provide: one token set per KV group over a
 * label the group shares, no forced tokens. Anything else selects through
 * CPU callbacks and is refused with the reason. */
#include <cub/cub.cuh>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "context.h"
#include "error.h"
#include "labels.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
}

#include "cuda_check.h"
#include "fasa_cuda.h"
#include "fasa_cuda_internal.h"
#include "cublas_dl.cuh"
#include "gemm.cuh"
#include "model_ops.cuh"
#include "qmatmul.cuh"

namespace {

struct dev_weight {
    const uint8_t *data;
    uint32_t type;
    int64_t rows, cols, row_bytes;
};

struct dev_layer {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    dev_weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct cuda_backend {
    const fasa_model *m;
    int device;
    fasa_cuda_mode mode;
    int32_t n_batch;
    uint8_t *weights;        /* every tensor, 256-byte aligned, 16 bytes of slack after each */
    uint64_t weight_bytes;
    dev_weight tok_embd, output;
    float *output_norm, *inv_freq;
    dev_layer *layers;
    fasa_cuda_ctx *actx;     /* attention: K, V, labels and their scratch */
    fasa_cuda_layer **kv;    /* [n_layers] */
    float *x, *xb, *q, *k, *v, *gate, *up, *proj, *logits; /* activations, [n_batch][...] */
    int8_t *x8q;             /* a decoded token's product input rounded to int8 (qmm_quantize_x8) */
    float *x8d;
    __half *xh;              /* a prompt chunk's product input in fp16, [n_batch][widest] (gemm.cuh) */
    __half *wh;              /* one weight matrix expanded to fp16 for a chunk's products */
    int64_t wh_elems;
    unsigned *amax;          /* the chunk input's largest magnitude (float bits) */
    float *alpha;            /* the inverse of the scale that brought it into fp16 range: the products' alpha */
    float *one_zero;         /* device 1.0f, 0.0f: cuBLAS's alpha and beta, read from device memory */
    const cublas_dl *blas_f; /* cuBLAS for a chunk's products, when the machine has it (cublas_dl.cuh) */
    cublasHandle_t blas;
    int32_t *tokens;
    sample_state *sample;
    uint32_t *keys[2];
    int32_t *ids[2];
    void *sort_tmp;
    size_t sort_tmp_bytes;
    uint64_t act_bytes;
    attn_policy *policy;
    int32_t budget;          /* FASA step budget, 0 = dense */
    cudaGraphExec_t *graphs; /* [n_layers]: each layer's decode launches, re-captured per step */
    bool use_graphs;         /* FASA_CUDA_GRAPHS=1 in the environment: decode layers as graphs */
    bool no_flash;           /* FASA_CUDA_FLASH=0: every chunk's attention token by token (tests) */
};

cuda_backend *be(const fasa_context *c) { return (cuda_backend *)c->be; }
cudaStream_t stream_of(const cuda_backend *b) { return (cudaStream_t)fasa_cuda_ctx_stream(b->actx); }

unsigned grid_for(int64_t n, int threads) {
    const int64_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 1 ? 1 : g > 65535 * 4 ? 65535 * 4 : g);
}

/* ---- sizes and memory ----------------------------------------------- */

/* Each tensor's place: 256-byte aligned, with 16 bytes of slack after it
 * (the matrix kernels' 16-byte loads may reach past a row's last byte). */
uint64_t slot(uint64_t bytes) { return (bytes + 16 + 255) & ~(uint64_t)255; }

uint64_t weight_slot(const fasa_weight *w) { return slot((uint64_t)w->rows * quant_row_bytes(w->type, w->cols)); }

/* Bytes of the weights as this backend stores them. */
uint64_t weights_size(const fasa_model *m) {
    const fasa_model_info *in = &m->info;
    uint64_t n = weight_slot(&m->tok_embd) + slot((uint64_t)in->n_embd * 4) + slot((uint64_t)in->head_dim / 2 * 4);
    if (m->output.data != m->tok_embd.data) n += weight_slot(&m->output);
    const uint64_t HD = (uint64_t)in->n_heads * in->head_dim, KVD = (uint64_t)in->n_kv_heads * in->head_dim;
    for (int32_t l = 0; l < in->n_layers; l++) {
        const fasa_layer *L = &m->layers[l];
        n += 2 * slot((uint64_t)in->n_embd * 4);
        if (L->bq) n += slot(HD * 4) + 2 * slot(KVD * 4);
        const fasa_weight *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) n += weight_slot(w[i]);
    }
    return n;
}

/* Elements of the fp16 weight scratch of a chunk's products: the largest
 * layer matrix, at least 4096 rows of the output matrix (which the products
 * take in pieces of that size). */
int64_t weight_scratch_elems(const fasa_model_info *in) {
    const int64_t E = in->n_embd, HD = (int64_t)in->n_heads * in->head_dim, F = in->n_ff;
    int64_t n = HD * E > F * E ? HD * E : F * E;
    const int64_t out_rows = in->n_vocab < 4096 ? in->n_vocab : 4096;
    return n > out_rows * E ? n : out_rows * E;
}

uint64_t activation_size(const fasa_model_info *in, int32_t n_batch) {
    const uint64_t B = (uint64_t)n_batch, E = in->n_embd, HD = (uint64_t)in->n_heads * in->head_dim;
    const uint64_t KVD = (uint64_t)in->n_kv_heads * in->head_dim, wide = E > HD ? E : HD;
    const uint64_t widest = wide > (uint64_t)in->n_ff ? wide : (uint64_t)in->n_ff;
    return 4 * B * (E + wide + HD + 2 * KVD + 2 * (uint64_t)in->n_ff + E + (uint64_t)in->n_vocab) + 4 * B +
           2 * B * widest + 2 * (uint64_t)weight_scratch_elems(in);
}

/* The device memory this context needs, checked before anything is
 * allocated: a model or context that does not fit is refused with sizes. */
fasa_status check_fit(const fasa_context *c, const fasa_context_params *p, int32_t n_batch) {
    const fasa_model_info *in = &c->model->info;
    size_t free_b = 0, total_b = 0;
    CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
    const double kv = p->device == FASA_DEVICE_CUDA
                          ? 2.0 * in->n_layers * in->n_kv_heads * (double)c->n_ctx * in->head_dim * 2.0
                          : 0.0;
    const double weights = (double)weights_size(c->model), acts = (double)activation_size(in, n_batch);
    const double sort = 16.0 * in->n_vocab + (64 << 20); /* sampling keys, ids and sort scratch, attention scratch */
    const double need = weights + kv + acts + sort;
    if (need <= (double)free_b) return FASA_OK;
    return fasa_error(FASA_E_NOMEM,
                      "the model needs %.2f GB of GPU memory for its weights, %.2f GB for a KV cache of %d tokens and "
                      "%.2f GB of buffers: %.2f GB in all, more than the %.2f GB free on GPU %d (of %.2f GB); lower "
                      "the context size (-c)%s",
                      weights / 1e9, kv / 1e9, c->n_ctx, (acts + sort) / 1e9, need / 1e9, free_b / 1e9, p->cuda_device,
                      total_b / 1e9, p->device == FASA_DEVICE_CUDA ? " or keep K and V in host memory (--device cuda-m)" : "");
}

/* ---- weights -------------------------------------------------------- */

struct uploader {
    uint8_t *base;
    uint64_t used, cap;
};

fasa_status put(uploader *u, const void *src, uint64_t bytes, const uint8_t **dst) {
    const uint64_t n = slot(bytes);
    if (u->used + n > u->cap) return fasa_error(FASA_E_INTERNAL, "CUDA backend: weight layout overflow");
    uint8_t *d = u->base + u->used;
    CUDA_TRY(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
    u->used += n;
    *dst = d;
    return FASA_OK;
}

fasa_status put_weight(uploader *u, const fasa_weight *w, dev_weight *out) {
    *out = dev_weight{nullptr, w->type, w->rows, w->cols, (int64_t)quant_row_bytes(w->type, w->cols)};
    if (!qfmt_dispatch(w->type, qfmt_known{}))
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend has no kernel for tensor type %s",
                          quant_type_name(w->type) ? quant_type_name(w->type) : "?");
    return put(u, w->data, (uint64_t)w->rows * out->row_bytes, &out->data);
}

fasa_status put_vector(uploader *u, const float *v, int64_t n, float **out) {
    if (!v) {
        *out = nullptr;
        return FASA_OK;
    }
    const uint8_t *d = nullptr;
    fasa_status st = put(u, v, (uint64_t)n * 4, &d);
    *out = (float *)d;
    return st;
}

fasa_status upload_weights(cuda_backend *b) {
    const fasa_model *m = b->m;
    const fasa_model_info *in = &m->info;
    uploader u = {nullptr, 0, weights_size(m)};
    CUDA_TRY(cudaMalloc((void **)&u.base, u.cap));
    b->weights = u.base;
    b->weight_bytes = u.cap;
    const int64_t E = in->n_embd, HD = (int64_t)in->n_heads * in->head_dim, KVD = (int64_t)in->n_kv_heads * in->head_dim;
    fasa_status st = put_weight(&u, &m->tok_embd, &b->tok_embd);
    if (!st) {
        if (m->output.data == m->tok_embd.data) b->output = b->tok_embd;
        else st = put_weight(&u, &m->output, &b->output);
    }
    if (!st) st = put_vector(&u, m->output_norm, E, &b->output_norm);
    if (!st) st = put_vector(&u, m->inv_freq, in->head_dim / 2, &b->inv_freq);
    for (int32_t l = 0; !st && l < in->n_layers; l++) {
        const fasa_layer *L = &m->layers[l];
        dev_layer *D = &b->layers[l];
        if ((st = put_vector(&u, L->attn_norm, E, &D->attn_norm)) || (st = put_vector(&u, L->ffn_norm, E, &D->ffn_norm)) ||
            (st = put_vector(&u, L->bq, HD, &D->bq)) || (st = put_vector(&u, L->bk, KVD, &D->bk)) ||
            (st = put_vector(&u, L->bv, KVD, &D->bv)) || (st = put_weight(&u, &L->wq, &D->wq)) ||
            (st = put_weight(&u, &L->wk, &D->wk)) || (st = put_weight(&u, &L->wv, &D->wv)) ||
            (st = put_weight(&u, &L->wo, &D->wo)) || (st = put_weight(&u, &L->w_gate, &D->w_gate)) ||
            (st = put_weight(&u, &L->w_up, &D->w_up)) || (st = put_weight(&u, &L->w_down, &D->w_down)))
            break;
    }
    return st;
}

/* ---- attention caches ------------------------------------------------ */

/* A fresh attention context and layers: dense (labels NULL) or with the
 * labels of a policy (its budget the largest step). With K and V in host
 * memory (cuda-m), the layers a sparse policy keeps dense (dense_layer)
 * keep theirs on the device: they read every row every step. */
fasa_status make_caches(const cuda_backend *b, const fasa_context *c, const label_set *labels, int32_t budget,
                        const bool *dense_layer, fasa_cuda_label_type label_type, fasa_cuda_ctx **actx,
                        fasa_cuda_layer ***layers) {
    const fasa_model_info *in = &b->m->info;
    fasa_cuda_params cp = fasa_cuda_default_params();
    cp.n_heads = in->n_heads;
    cp.n_kv_heads = in->n_kv_heads;
    cp.head_dim = in->head_dim;
    cp.n_ctx = c->n_ctx;
    cp.mode = b->mode;
    cp.n_lab = labels ? labels->lab_max : 0;
    cp.label_type = label_type;
    cp.n_fac_max = budget > 0 ? budget : 1;
    cp.device = b->device;
    *actx = nullptr;
    *layers = nullptr;
    fasa_status st = fasa_cuda_ctx_init(&cp, actx);
    if (st) return st;
    *layers = (fasa_cuda_layer **)calloc((size_t)in->n_layers, sizeof **layers);
    if (!*layers) st = fasa_error(FASA_E_NOMEM, "out of memory for the GPU layer table");
    for (int32_t l = 0; !st && l < in->n_layers; l++) {
        const fasa_cuda_mode kv = labels && dense_layer && dense_layer[l] ? FASA_CUDA_MODE_C : b->mode;
        st = fasa_cuda_layer_init_kv(*actx, labels ? label_coords(labels, l, 0) : nullptr, kv, &(*layers)[l]);
    }
    return st;
}

void free_caches(const fasa_model_info *in, fasa_cuda_ctx *actx, fasa_cuda_layer **layers) {
    for (int32_t l = 0; layers && l < in->n_layers; l++) fasa_cuda_layer_free(layers[l]);
    free(layers);
    fasa_cuda_ctx_free(actx);
}

/* ---- init / free ------------------------------------------------------ */

void drop_graphs(cuda_backend *b) {
    for (int32_t l = 0; b->graphs && l < b->m->info.n_layers; l++)
        if (b->graphs[l]) {
            cudaGraphExecDestroy(b->graphs[l]);
            b->graphs[l] = nullptr;
        }
}

fasa_status alloc_activations(cuda_backend *b) {
    const fasa_model_info *in = &b->m->info;
    const int64_t B = b->n_batch, E = in->n_embd, HD = (int64_t)in->n_heads * in->head_dim;
    const int64_t KVD = (int64_t)in->n_kv_heads * in->head_dim, wide = E > HD ? E : HD, V = in->n_vocab;
    float **f[] = {&b->x, &b->xb, &b->q, &b->k, &b->v, &b->gate, &b->up, &b->proj, &b->logits};
    const int64_t n[] = {B * E, B * wide, B * HD, B * KVD, B * KVD, B * in->n_ff, B * in->n_ff, B * E, B * V};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        CUDA_TRY(cudaMalloc((void **)f[i], (size_t)n[i] * sizeof(float)));
        b->act_bytes += (uint64_t)n[i] * 4;
    }
    const int64_t widest = wide > in->n_ff ? wide : in->n_ff;
    CUDA_TRY(cudaMalloc((void **)&b->x8q, (size_t)widest));
    CUDA_TRY(cudaMalloc((void **)&b->x8d, (size_t)widest / 32 * sizeof(float)));
    b->act_bytes += (uint64_t)widest * 9 / 8;
    CUDA_TRY(cudaMalloc((void **)&b->xh, (size_t)B * widest * sizeof(__half)));
    b->wh_elems = weight_scratch_elems(in);
    CUDA_TRY(cudaMalloc((void **)&b->wh, (size_t)b->wh_elems * sizeof(__half)));
    CUDA_TRY(cudaMalloc((void **)&b->amax, sizeof(unsigned)));
    CUDA_TRY(cudaMalloc((void **)&b->alpha, sizeof(float)));
    const float one_zero[2] = {1.0f, 0.0f};
    CUDA_TRY(cudaMalloc((void **)&b->one_zero, sizeof one_zero));
    CUDA_TRY(cudaMemcpy(b->one_zero, one_zero, sizeof one_zero, cudaMemcpyHostToDevice));
    b->act_bytes += (uint64_t)B * widest * 2 + (uint64_t)b->wh_elems * 2 + 8;
    CUDA_TRY(cudaMalloc((void **)&b->tokens, (size_t)B * sizeof(int32_t)));
    CUDA_TRY(cudaMalloc((void **)&b->sample, sizeof(sample_state)));
    for (int i = 0; i < 2; i++) {
        CUDA_TRY(cudaMalloc((void **)&b->keys[i], (size_t)V * sizeof(uint32_t)));
        CUDA_TRY(cudaMalloc((void **)&b->ids[i], (size_t)V * sizeof(int32_t)));
    }
    cub::DoubleBuffer<uint32_t> k(b->keys[0], b->keys[1]);
    cub::DoubleBuffer<int32_t> v(b->ids[0], b->ids[1]);
    CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, b->sort_tmp_bytes, k, v, (int)V));
    CUDA_TRY(cudaMalloc(&b->sort_tmp, b->sort_tmp_bytes));
    b->act_bytes += 16 * (uint64_t)V + b->sort_tmp_bytes;
    return FASA_OK;
}

void cuda_free(fasa_context *c) {
    cuda_backend *b = be(c);
    if (!b) return;
    if (b->actx) cudaStreamSynchronize(stream_of(b));
    drop_graphs(b);
    free(b->graphs);
    if (b->blas) b->blas_f->destroy(b->blas);
    free_caches(&b->m->info, b->actx, b->kv);
    void *bufs[] = {b->weights, b->x,       b->xb,      b->q,       b->k,      b->v,      b->gate,
                    b->up,      b->proj,    b->logits,  b->tokens,  b->sample, b->keys[0], b->keys[1],
                    b->ids[0],  b->ids[1],  b->sort_tmp, b->x8q,      b->x8d,    b->xh,     b->wh,
                    b->amax,    b->alpha,   b->one_zero};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    free(b->layers);
    attn_policy_free(b->policy);
    free(b);
    c->be = nullptr;
}

/* cuBLAS on the context's stream, alpha and beta in device memory (the
 * chunk input's scale is known only there); without the library the
 * products take gemm.cuh's kernel. */
fasa_status open_blas(cuda_backend *b) {
    const cublas_dl *f = cublas_dl_get();
    if (!f) return FASA_OK;
    cublasHandle_t h = nullptr;
    cublasStatus_t e = f->create(&h);
    if (e == CUBLAS_STATUS_SUCCESS && (e = f->set_stream(h, stream_of(b))) == CUBLAS_STATUS_SUCCESS)
        e = f->set_pointer_mode(h, CUBLAS_POINTER_MODE_DEVICE);
    if (e != CUBLAS_STATUS_SUCCESS) {
        if (h) f->destroy(h);
        return fasa_error(FASA_E_INTERNAL, "cuBLAS: setting up a handle failed (status %d)", (int)e);
    }
    b->blas_f = f;
    b->blas = h;
    return FASA_OK;
}

fasa_status cuda_init(fasa_context *c, const fasa_context_params *p) {
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0)
        return fasa_error(FASA_E_UNSUPPORTED, "CUDA: no usable GPU on this machine (%s)",
                          e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    if (p->cuda_device < 0 || p->cuda_device >= n_dev)
        return fasa_error(FASA_E_ARG, "CUDA: device %d does not exist (this machine has %d)", p->cuda_device, n_dev);
    CUDA_TRY(cudaSetDevice(p->cuda_device));
    const fasa_model_info *in = &c->model->info;
    if (in->head_dim != 64 && in->head_dim != 128)
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend runs head dimensions 64 and 128, not %d", in->head_dim);
    if (in->n_embd % 8 || in->n_ff % 8)
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend needs widths that are multiples of 8");
    /* Chunks of 1024 tokens keep the tensor cores of a large GPU busy in
     * every product of a prompt chunk (docs/gpu.md). */
    const int32_t n_batch = p->n_batch ? p->n_batch : 1024;
    fasa_status st = check_fit(c, p, n_batch);
    if (st) return st;
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b) return fasa_error(FASA_E_NOMEM, "out of memory for the CUDA backend");
    c->be = b;
    b->m = c->model;
    b->device = p->cuda_device;
    b->mode = p->device == FASA_DEVICE_CUDA ? FASA_CUDA_MODE_C : FASA_CUDA_MODE_M;
    b->n_batch = n_batch;
    const char *g = getenv("FASA_CUDA_GRAPHS");
    b->use_graphs = g && !strcmp(g, "1");
    const char *fl = getenv("FASA_CUDA_FLASH");
    b->no_flash = fl && !strcmp(fl, "0");
    if (!(b->layers = (dev_layer *)calloc((size_t)in->n_layers, sizeof *b->layers)) ||
        !(b->graphs = (cudaGraphExec_t *)calloc((size_t)in->n_layers, sizeof *b->graphs)))
        st = fasa_error(FASA_E_NOMEM, "out of memory for the GPU layer table");
    if (!st) st = make_caches(b, c, nullptr, 0, nullptr, FASA_CUDA_LABEL_F16, &b->actx, &b->kv);
    if (!st) st = upload_weights(b);
    if (!st) st = alloc_activations(b);
    if (!st) st = open_blas(b);
    if (st) cuda_free(c);
    return st;
}

/* ---- the forward pass ------------------------------------------------ */

/* Whether a product of one of these weights with n tokens takes the int8
 * path (qmm_takes_x8), so that its input must be rounded first. */
bool any_takes_x8(int32_t n, const dev_weight &w0, const dev_weight *w1 = nullptr, const dev_weight *w2 = nullptr) {
    return qmm_takes_x8(w0.type, n) || (w1 && qmm_takes_x8(w1->type, n)) || (w2 && qmm_takes_x8(w2->type, n));
}

/* For one decoded token: rounds x, the input of the product with w, to int8
 * into b->x8q / x8d when that product takes the int8 path; returns whether
 * it did, for matmul's `rounded`. */
bool round_x8(const cuda_backend *b, const float *x, int32_t n, const dev_weight &w) {
    if (!qmm_takes_x8(w.type, n)) return false;
    qmm_quantize_x8(x, w.cols, b->x8q, b->x8d, stream_of(b));
    return true;
}

/* y = W x (+ bias); `rounded`: b->x8q / x8d hold x rounded, so a product
 * that takes the int8 path reads it from there. */
fasa_status matmul(const cuda_backend *b, const dev_weight &w, const float *x, int32_t n, float *y,
                   const float *bias, bool rounded) {
    qmm_args a = {w.data, w.row_bytes, w.rows, w.cols, x, w.cols, y, w.rows, n, bias};
    if (rounded && qmm_launch_x8(w.type, a, qmm_x8{b->x8q, b->x8d}, stream_of(b))) {
        CUDA_TRY_LAUNCH("qmm_kq_kernel");
        return FASA_OK;
    }
    if (!qmm_launch(w.type, a, stream_of(b)))
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend has no kernel for tensor type %u", w.type);
    CUDA_TRY_LAUNCH("qmm_kernel");
    return FASA_OK;
}

/* The products of count (<= 3) matrices with one input: runs of the same
 * format on the int8 path in one launch (version 7's segments: Q and K of a
 * Q4_K_M layer), the others one by one. */
fasa_status matmul_group(const cuda_backend *b, const dev_weight *const *w, float *const *y, const float *const *bias,
                         int count, const float *x, int32_t n, bool rounded) {
    for (int i = 0; i < count;) {
        int j = i + 1;
        if (rounded && QMM_KQ_DEFAULT == -2 && qmm_takes_x8(w[i]->type, n)) {
            qmm_multi m = {};
            for (; j < count && w[j]->type == w[i]->type; j++) {}
            for (int k = i; k < j; k++) m.s[k - i] = qmm_seg{w[k]->data, w[k]->row_bytes, w[k]->rows, y[k], bias[k]};
            m.n = j - i;
            m.cols = w[i]->cols;
            qmm7_launch_type(w[i]->type, m, qmm_x8{b->x8q, b->x8d}, stream_of(b));
            CUDA_TRY_LAUNCH("qmm7_kernel");
        } else {
            fasa_status st = matmul(b, *w[i], x, n, y[i], bias[i], rounded);
            if (st) return st;
        }
        i = j;
    }
    return FASA_OK;
}

/* b->gate = silu(W_gate x) * (W_up x): one launch on the int8 path when
 * both have one format (version 7's gate-and-up form), else two products
 * and the SwiGLU kernel. */
fasa_status matmul_glu(const cuda_backend *b, const dev_layer *L, const float *x, int32_t n, bool rounded) {
    if (rounded && QMM_KQ_DEFAULT == -2 && qmm_takes_x8(L->w_gate.type, n) && L->w_up.type == L->w_gate.type) {
        qmm_multi m = {};
        m.s[0] = qmm_seg{L->w_gate.data, L->w_gate.row_bytes, L->w_gate.rows, b->gate, nullptr};
        m.s[1] = qmm_seg{L->w_up.data, L->w_up.row_bytes, L->w_up.rows, b->up, nullptr};
        m.n = 2;
        m.glu = 1;
        m.cols = L->w_gate.cols;
        qmm7_launch_type(L->w_gate.type, m, qmm_x8{b->x8q, b->x8d}, stream_of(b));
        CUDA_TRY_LAUNCH("qmm7_kernel (gate and up)");
        return FASA_OK;
    }
    const int64_t F = b->m->info.n_ff;
    fasa_status st;
    if ((st = matmul(b, L->w_gate, x, n, b->gate, nullptr, rounded)) ||
        (st = matmul(b, L->w_up, x, n, b->up, nullptr, rounded)))
        return st;
    CUDA_TRY(launch_k(swiglu_kernel, dim3(grid_for((int64_t)n * F, 256)), dim3(256), 0, stream_of(b), true, b->gate,
                      (const float *)b->up, (int64_t)n * F));
    return FASA_OK;
}

/* b->xb = RMSNorm(x) * w for n tokens, after x += add when add is given
 * (the residual of the block before, in the same launch). For one decoded
 * token whose next products (w0, w1, w2) take the int8 path, xb is also
 * rounded into b->x8q / x8d; *rounded says whether. */
fasa_status norm(const cuda_backend *b, float *x, const float *add, const float *w, int32_t n, bool *rounded,
                 const dev_weight &w0, const dev_weight *w1 = nullptr, const dev_weight *w2 = nullptr) {
    const int32_t E = b->m->info.n_embd;
    *rounded = any_takes_x8(n, w0, w1, w2);
    CUDA_TRY(launch_k(norm_kernel, dim3(n), dim3(256), 0, stream_of(b), true, x, add, w, b->xb, E, b->m->rms_eps,
                      *rounded ? b->x8q : nullptr, b->x8d));
    return FASA_OK;
}

/* ---- prompt chunks on tensor cores (gemm.cuh) ---------------------- */

/* Chunks of at least this many tokens take the tensor-core products; fewer
 * read the weights in their block format a few tokens per pass (qmatmul.cuh). */
#define TC_MIN_TOKENS 32

/* b->xh = x [n][cols] in fp16, scaled into range; b->alpha = the inverse scale. */
fasa_status tc_input(const cuda_backend *b, const float *x, int32_t n, int64_t cols) {
    CUDA_TRY(gemm_input_f16(x, n, cols, b->xh, b->amax, b->alpha, stream_of(b)));
    return FASA_OK;
}

/* y = W (rows first .. first + count) . b->xh for n tokens (+ bias), into
 * y with row stride ldy; scaled: b->xh came from tc_input (alpha applies). */
fasa_status tc_product_rows(const cuda_backend *b, const dev_weight &w, int64_t first, int64_t count, int32_t n,
                            float *y, int64_t ldy, const float *bias, bool scaled) {
    cudaStream_t s = stream_of(b);
    cudaError_t e = cudaSuccess;
    if (!gemm_dequant_f16(w.type, w.data + first * w.row_bytes, w.row_bytes, count, w.cols, b->wh, s, &e))
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend has no kernel for tensor type %u", w.type);
    CUDA_TRY(e);
    const gemm_args a = {b->xh, w.cols, b->wh, w.cols, y, ldy, n, (int32_t)count, (int32_t)w.cols, bias,
                         scaled ? b->alpha : nullptr};
    if (!b->blas) {
        CUDA_TRY(gemm_f16(a, s));
        return FASA_OK;
    }
    /* column-major for cuBLAS: y^T (count x n) = W (count x cols, i.e. its rows) . xh^T; the stream
     * is set each time because a policy change gives the backend a new one (make_caches) */
    cublasStatus_t bs = b->blas_f->set_stream(b->blas, s);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = b->blas_f->gemm_ex(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)count, n, (int)w.cols, scaled ? b->alpha : b->one_zero,
                           b->wh, CUDA_R_16F, (int)w.cols, b->xh, CUDA_R_16F, (int)w.cols, b->one_zero + 1, y, CUDA_R_32F,
                           (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return fasa_error(FASA_E_INTERNAL, "cuBLAS: a %lld x %lld x %d product failed (status %d)", (long long)count,
                          (long long)w.cols, n, (int)bs);
    if (bias) CUDA_TRY(launch_k(gemm_bias_kernel, dim3(grid_for((int64_t)n * count, 256)), dim3(256), 0, s, true, y, ldy,
                                (int64_t)n, count, bias));
    return FASA_OK;
}

fasa_status tc_product(const cuda_backend *b, const dev_weight &w, int32_t n, float *y, const float *bias,
                       bool scaled = true) {
    return tc_product_rows(b, w, 0, w.rows, n, y, w.rows, bias, scaled);
}

/* Whether a chunk's attention takes the flash kernel: it runs a CTA per 64
 * or 128 query rows and KV head, so a few tokens deep in a long cache (a chat
 * turn) leave most of the GPU idle there, and the decode kernel, which
 * splits the keys over CTAs, takes them one by one instead. */
bool use_flash(const cuda_backend *b, int32_t pos0, int32_t n) {
    return !b->no_flash && (n >= 128 || pos0 + n <= 8192);
}

/* Attention of layer l for n tokens at pos0 .. (keys already appended):
 * a decode step through the policy, or each prompt token over its prefix,
 * into b->xb. */
fasa_status attention(cuda_backend *b, int32_t l, int32_t pos0, int32_t n) {
    const fasa_model_info *in = &b->m->info;
    const int64_t HD = (int64_t)in->n_heads * in->head_dim;
    fasa_cuda_layer *L = b->kv[l];
    if (n == 1) {
        const bool sparse = b->budget > 0 && !b->policy->dense_layer[l];
        return sparse ? fasa_cuda_fasa_step(L, b->budget, b->q, b->xb) : fasa_cuda_dense_step(L, b->q, b->xb);
    }
    for (int32_t t = 0; t < n; t++) {
        fasa_status st = fasa_cuda_dense_rows(L, pos0 + t + 1, b->q + t * HD, b->xb + t * HD);
        if (st) return st;
    }
    return FASA_OK;
}

/* Q, K and V of a chunk on tensor cores, from b->xb (with their biases). */
fasa_status tc_qkv(const cuda_backend *b, const dev_layer *L, int32_t n) {
    fasa_status st;
    if ((st = tc_input(b, b->xb, n, b->m->info.n_embd)) || (st = tc_product(b, L->wq, n, b->q, L->bq)) ||
        (st = tc_product(b, L->wk, n, b->k, L->bk)))
        return st;
    return tc_product(b, L->wv, n, b->v, L->bv);
}

/* The feed-forward block of a chunk on tensor cores: b->proj = W_down
 * (silu(W_gate xb) * W_up xb). */
fasa_status tc_ffn(const cuda_backend *b, const dev_layer *L, int32_t n) {
    const fasa_model_info *in = &b->m->info;
    fasa_status st;
    if ((st = tc_input(b, b->xb, n, in->n_embd)) || (st = tc_product(b, L->w_gate, n, b->gate, nullptr)) ||
        (st = tc_product(b, L->w_up, n, b->up, nullptr)))
        return st;
    CUDA_TRY(launch_k(swiglu_kernel, dim3(grid_for((int64_t)n * in->n_ff, 256)), dim3(256), 0, stream_of(b), true,
                      b->gate, (const float *)b->up, (int64_t)n * in->n_ff));
    if ((st = tc_input(b, b->gate, n, in->n_ff))) return st;
    return tc_product(b, L->w_down, n, b->proj, nullptr);
}

/* Layer l for n tokens at pos0. `pending`: the previous layer's last
 * product, still to be added to the residual stream (its add runs in this
 * layer's first norm); this layer leaves its own in b->proj. A chunk of
 * TC_MIN_TOKENS or more takes the tensor-core products and, mostly, the
 * flash attention kernel; a decoded token the block-format products. */
fasa_status layer_forward(cuda_backend *b, int32_t l, int32_t pos0, int32_t n, const float *pending) {
    const fasa_model_info *in = &b->m->info;
    const dev_layer *L = &b->layers[l];
    const int32_t d = in->head_dim;
    const int half = in->rope_layout == FASA_ROPE_HALF;
    const bool tc = n >= TC_MIN_TOKENS;
    fasa_status st;
    bool r;
    if ((st = norm(b, b->x, pending, L->attn_norm, n, &r, L->wq, &L->wk, &L->wv))) return st;
    const dev_weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
    float *const out[3] = {b->q, b->k, b->v};
    const float *const bias[3] = {L->bq, L->bk, L->bv};
    if ((st = tc ? tc_qkv(b, L, n) : matmul_group(b, qkv, out, bias, 3, b->xb, n, r))) return st;
    CUDA_TRY(launch_k(rope_kernel, dim3(grid_for((int64_t)n * (in->n_heads + in->n_kv_heads) * d / 2, 256)), dim3(256),
                      0, stream_of(b), true, b->q, b->k, n, in->n_heads, in->n_kv_heads, d, pos0,
                      (const float *)b->inv_freq, half));
    if ((st = fasa_cuda_layer_append_dev(b->kv[l], b->k, b->v, n))) return st;
    if (tc && use_flash(b, pos0, n)) {
        if ((st = fasa_cuda_prefill_attn(b->kv[l], n, b->q, b->xh)) ||
            (st = tc_product(b, L->wo, n, b->proj, nullptr, false)))
            return st;
    } else {
        if ((st = attention(b, l, pos0, n))) return st;
        if (tc) {
            if ((st = tc_input(b, b->xb, n, (int64_t)in->n_heads * d)) || (st = tc_product(b, L->wo, n, b->proj, nullptr)))
                return st;
        } else {
            r = round_x8(b, b->xb, n, L->wo);
            if ((st = matmul(b, L->wo, b->xb, n, b->proj, nullptr, r))) return st;
        }
    }
    if ((st = norm(b, b->x, b->proj, L->ffn_norm, n, &r, L->w_gate, &L->w_up))) return st;
    if (tc) return tc_ffn(b, L, n);
    if ((st = matmul_glu(b, L, b->xb, n, r))) return st;
    r = round_x8(b, b->gate, n, L->w_down);
    return matmul(b, L->w_down, b->gate, n, b->proj, nullptr, r);
}

/* A decoded token's layer l as one CUDA graph: its launches are captured,
 * the layer's executable graph is updated in place with them (the kernels
 * and their order stay; positions, lengths and grids change from step to
 * step) or made anew when the pipeline changed shape, and launched; the
 * host captures the next layer while the GPU runs this one. Off by default
 * (FASA_CUDA_GRAPHS=1 turns it on): on an H200 it gained 5% over plain
 * launches, and lost 2% once every kernel of a layer was a programmatic
 * dependent launch, whose overlap a graph boundary cuts at every layer
 * (docs/perf-notes.md). A whole step as one graph needs the attention
 * kernels to read their lengths from device memory. */
fasa_status layer_graph(cuda_backend *b, int32_t l, int32_t pos0, const float *pending) {
    cudaStream_t s = stream_of(b);
    CUDA_TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    const fasa_status st = layer_forward(b, l, pos0, 1, pending);
    cudaGraph_t g = nullptr;
    const cudaError_t e = cudaStreamEndCapture(s, &g);
    if (st || e != cudaSuccess) {
        if (g) cudaGraphDestroy(g);
        return st ? st : cuda_status(e, "cudaStreamEndCapture (a layer's decode launches)", __FILE__, __LINE__);
    }
    cudaGraphExecUpdateResultInfo info;
    if (!b->graphs[l] || cudaGraphExecUpdate(b->graphs[l], g, &info) != cudaSuccess) {
        cudaGetLastError(); /* a failed update is not an error: the graph is made anew */
        if (b->graphs[l]) cudaGraphExecDestroy(b->graphs[l]);
        b->graphs[l] = nullptr;
        const cudaError_t ei = cudaGraphInstantiate(&b->graphs[l], g, 0);
        if (ei != cudaSuccess) {
            cudaGraphDestroy(g);
            b->graphs[l] = nullptr;
            return cuda_status(ei, "cudaGraphInstantiate (a layer's decode graph)", __FILE__, __LINE__);
        }
    }
    cudaGraphDestroy(g);
    CUDA_TRY(cudaGraphLaunch(b->graphs[l], s));
    return FASA_OK;
}

struct embed_launcher {
    const uint8_t *table;
    int64_t row_bytes;
    int32_t E;
    const int32_t *tokens;
    int32_t n;
    float *x;
    cudaStream_t s;
    cudaError_t *e;
    template <int T> void operator()() const {
        *e = launch_k(embed_kernel<T>, dim3(grid_for((int64_t)n * E / 8, 256)), dim3(256), 0, s, true, table, row_bytes,
                     E, tokens, n, x);
    }
};

/* n tokens at pos0; logits of tokens [first, n) into b->logits. */
fasa_status forward(cuda_backend *b, const int32_t *tokens, int32_t n, int32_t pos0, int32_t first) {
    const fasa_model_info *in = &b->m->info;
    cudaStream_t s = stream_of(b);
    CUDA_TRY(cudaMemcpyAsync(b->tokens, tokens, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, s));
    const int64_t E = in->n_embd;
    cudaError_t e = cudaSuccess;
    if (!qfmt_dispatch(b->tok_embd.type, embed_launcher{b->tok_embd.data, b->tok_embd.row_bytes, (int32_t)E, b->tokens,
                                                        n, b->x, s, &e}))
        return fasa_error(FASA_E_UNSUPPORTED, "the CUDA backend has no kernel for the embedding's type");
    CUDA_TRY(e);
    fasa_status st = FASA_OK;
    for (int32_t l = 0; !st && l < in->n_layers; l++) {
        const float *pending = l ? b->proj : nullptr;
        st = n == 1 && b->use_graphs ? layer_graph(b, l, pos0, pending) : layer_forward(b, l, pos0, n, pending);
    }
    if (st || first >= n) return st;
    bool r;
    const float *pending = in->n_layers ? b->proj + first * E : nullptr;
    const int32_t rows = n - first;
    if ((st = norm(b, b->x + first * E, pending, b->output_norm, rows, &r, b->output))) return st;
    if (rows < TC_MIN_TOKENS) return matmul(b, b->output, b->xb, rows, b->logits, nullptr, r);
    /* every token's logits (perplexity): the output matrix in pieces that fit the fp16 scratch */
    if ((st = tc_input(b, b->xb, rows, E))) return st;
    const int64_t piece = b->wh_elems / E, V = in->n_vocab;
    for (int64_t v0 = 0; !st && v0 < V; v0 += piece)
        st = tc_product_rows(b, b->output, v0, V - v0 < piece ? V - v0 : piece, rows, b->logits + v0, V, nullptr, true);
    return st;
}

fasa_status download_logits(cuda_backend *b, float *dst, int32_t n_rows) {
    cudaStream_t s = stream_of(b);
    CUDA_TRY(cudaMemcpyAsync(dst, b->logits, (size_t)n_rows * b->m->info.n_vocab * sizeof(float),
                             cudaMemcpyDeviceToHost, s));
    return fasa_cuda_ctx_sync(b->actx);
}

fasa_status cuda_prefill(fasa_context *c, const int32_t *tokens, int32_t n, float *logits, bool all_logits) {
    cuda_backend *b = be(c);
    const int64_t V = c->model->info.n_vocab;
    for (int32_t i = 0; i < n; i += b->n_batch) {
        const int32_t nb = n - i < b->n_batch ? n - i : b->n_batch;
        const bool last = i + nb == n;
        const int32_t first = !logits ? nb : all_logits ? 0 : last ? nb - 1 : nb;
        fasa_status st = forward(b, tokens + i, nb, c->n_past + i, first);
        if (!st && first < nb) st = download_logits(b, all_logits ? logits + i * V : logits, nb - first);
        if (!st && first == nb) st = fasa_cuda_ctx_sync(b->actx);
        if (st) return st;
    }
    return FASA_OK;
}

fasa_status cuda_decode(fasa_context *c, int32_t token, float *logits) {
    cuda_backend *b = be(c);
    fasa_status st = forward(b, &token, 1, c->n_past, 0);
    if (st) return st;
    return logits ? download_logits(b, logits, 1) : fasa_cuda_ctx_sync(b->actx);
}

/* The next token from b->logits by the sampler's rules (sampler.c). */
fasa_status sample_next(cuda_backend *b, fasa_sampler *smp, int32_t *next) {
    cudaStream_t s = stream_of(b);
    const int32_t V = b->m->info.n_vocab;
    sample_state host = {smp->state, 0};
    CUDA_TRY(cudaMemcpyAsync(b->sample, &host, sizeof host, cudaMemcpyHostToDevice, s));
    if (smp->p.temp == 0.0f) {
        CUDA_TRY(launch_k(argmax_kernel, dim3(1), dim3(1024), 0, s, true, (const float *)b->logits, V, b->sample));
    } else {
        sample_keys_kernel<<<grid_for(V, 256), 256, 0, s>>>(b->logits, V, b->keys[0], b->ids[0]);
        CUDA_TRY_LAUNCH("sample_keys_kernel");
        cub::DoubleBuffer<uint32_t> k(b->keys[0], b->keys[1]);
        cub::DoubleBuffer<int32_t> v(b->ids[0], b->ids[1]);
        CUDA_TRY(cub::DeviceRadixSort::SortPairs(b->sort_tmp, b->sort_tmp_bytes, k, v, V, 0, 32, s));
        const int32_t keep = smp->p.top_k > 0 && smp->p.top_k < V ? smp->p.top_k : V;
        sample_draw_kernel<<<1, 1024, 0, s>>>(b->logits, v.Current(), keep, smp->p.temp, smp->p.top_p, b->sample);
        CUDA_TRY_LAUNCH("sample_draw_kernel");
    }
    CUDA_TRY(cudaMemcpyAsync(&host, b->sample, sizeof host, cudaMemcpyDeviceToHost, s));
    fasa_status st = fasa_cuda_ctx_sync(b->actx);
    if (st) return st;
    smp->state = host.rng;
    *next = host.token;
    return FASA_OK;
}

fasa_status cuda_decode_sample(fasa_context *c, int32_t token, fasa_sampler *smp, int32_t *next) {
    cuda_backend *b = be(c);
    fasa_status st = forward(b, &token, 1, c->n_past, 0);
    return st ? st : sample_next(b, smp, next);
}

fasa_status cuda_truncate(fasa_context *c, int32_t n) {
    cuda_backend *b = be(c);
    for (int32_t l = 0; l < b->m->info.n_layers; l++) {
        fasa_status st = fasa_cuda_layer_truncate(b->kv[l], n);
        if (st) return st;
    }
    return FASA_OK;
}

fasa_status cuda_fill_random(fasa_context *c, int32_t n, uint64_t seed) {
    cuda_backend *b = be(c);
    for (int32_t l = 0; l < b->m->info.n_layers; l++) {
        fasa_status st = fasa_cuda_layer_fill_random(b->kv[l], n, seed + 0x9e3779b97f4a7c15ull * (uint64_t)l);
        if (st) return st;
    }
    return FASA_OK;
}

/* What this backend can select: dense, or the top tokens of each KV group by
 * a label the group shares. */
fasa_status check_policy(const attn_policy *p) {
    if (!p->labels)
        return fasa_error(FASA_E_UNSUPPORTED,
                          "--attn %s selects through callbacks on a CPU cache; on a GPU (--device cuda, cuda-m) the "
                          "methods are those that select by label scores: full and fasa", p->ops->name);
    if (p->per_head)
        return fasa_error(FASA_E_UNSUPPORTED, "%s on a GPU selects one token set per KV group (--select group)",
                          p->ops->name);
    if (!p->labels->shared)
        return fasa_error(FASA_E_UNSUPPORTED, "%s on a GPU takes the FCs per KV head (--fc-choice kv-head)",
                          p->ops->name);
    if (p->params.n_sink > 0 || p->params.n_recent > 0)
        return fasa_error(FASA_E_UNSUPPORTED, "%s on a GPU has no forced sink or recent tokens (--sinks 0, --recent 0)",
                          p->ops->name);
    /* The layer's label cache has one label length for all its KV heads. */
    for (int32_t l = 0; l < p->labels->n_layers; l++)
        for (int32_t h = 0; h < p->labels->n_kv_heads; h++)
            if (label_count(p->labels, l, h) != p->labels->lab_max)
                return fasa_error(FASA_E_UNSUPPORTED,
                                  "%s on a GPU needs labels of one length in every KV head (--fc-choice kv-head)",
                                  p->ops->name);
    /* The GPU keeps labels in f16 (the default there) or int8. */
    if (p->params.label_type == FASA_LABELS_F32)
        return fasa_error(FASA_E_UNSUPPORTED, "%s on a GPU keeps its labels in f16 or int8 (--labels f16 or int8)",
                          p->ops->name);
    return FASA_OK;
}

fasa_status cuda_set_policy(fasa_context *c, attn_policy *p) {
    cuda_backend *b = be(c);
    fasa_status st = p ? check_policy(p) : FASA_OK;
    fasa_cuda_ctx *actx = nullptr;
    fasa_cuda_layer **layers = nullptr;
    if (!st && p) {
        const fasa_cuda_label_type lt =
            p->params.label_type == FASA_LABELS_INT8 ? FASA_CUDA_LABEL_I8 : FASA_CUDA_LABEL_F16;
        st = make_caches(b, c, p->labels, p->params.budget, p->params.budget > 0 ? p->dense_layer : nullptr, lt, &actx,
                         &layers);
        if (st == FASA_E_UNSUPPORTED) {
            /* The kernels' limits (label sizes) with the option that set them. */
            char why[256];
            snprintf(why, sizeof why, "%s", fasa_last_error());
            st = fasa_error(st, "%s on a GPU (--fc %d): %s", p->ops->name, p->params.n_tip, why);
        }
        for (int32_t l = 0; !st && l < b->m->info.n_layers; l++) st = fasa_cuda_layer_copy(layers[l], b->kv[l]);
    }
    if (st) {
        free_caches(&b->m->info, actx, layers);
        attn_policy_free(p);
        return st;
    }
    if (p) {
        cudaStreamSynchronize(stream_of(b));
        drop_graphs(b); /* they name the old caches */
        free_caches(&b->m->info, b->actx, b->kv);
        b->actx = actx;
        b->kv = layers;
    }
    attn_policy_free(b->policy);
    b->policy = p;
    b->budget = p ? p->params.budget : 0;
    return FASA_OK;
}

uint64_t cuda_device_bytes(const fasa_context *c) {
    const cuda_backend *b = be(c);
    uint64_t n = b->weight_bytes + b->act_bytes + fasa_cuda_ctx_device_bytes(b->actx);
    for (int32_t l = 0; l < b->m->info.n_layers; l++) n += fasa_cuda_layer_device_bytes(b->kv[l]);
    return n;
}

const backend_ops ops_c = {
    "the GPU (cuda)", cuda_init,     cuda_free,       cuda_prefill,     cuda_decode,
    cuda_decode_sample, cuda_truncate, cuda_set_policy, cuda_fill_random, cuda_device_bytes,
};

} // namespace

extern "C" const backend_ops *backend_cuda_ops(void) { return &ops_c; }

extern "C" fasa_status backend_cuda_last_selection(const fasa_context *c, int32_t n_fac, int32_t *sel) {
    if (c->ops != &ops_c || !c->be)
        return fasa_error(FASA_E_ARG, "backend_cuda_last_selection: the context does not run on a GPU");
    const cuda_backend *b = be(c);
    if (!b->policy || b->budget <= 0)
        return fasa_error(FASA_E_ARG, "backend_cuda_last_selection: the context has no sparse policy");
    return fasa_cuda_ctx_read_selection(b->actx, n_fac, sel);
}
