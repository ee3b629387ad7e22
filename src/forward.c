/* The forward pass over a chunk of tokens (Llama's block; Qwen2 adds the
 * biases b of Q, K and V, see arch.c):
 *   x = embed(tokens)
 *   per layer: x += Wo attn(rope(Wq n(x) + bq), rope(Wk n(x) + bk), Wv n(x) + bv)
 *              x += Wdown (silu(Wgate n(x)) * Wup n(x))
 *   logits = Wout n(x)
 * Matrix products run over the whole chunk at once (prefill), so each weight
 * tile is read once per chunk rather than once per token. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/dense.h"
#include "attn/prefill.h"
#include "backend_cpu.h"
#include "error.h"
#include "quant.h"

static void rmsnorm(float *out, const float *x, const float *w, int32_t n, float eps) {
    double ss = 0.0;
    for (int32_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int32_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void fasa_rope_apply(float *x, int32_t n_heads, int32_t head_dim, fasa_rope_layout layout,
                     const float *cos_t, const float *sin_t) {
    for (int32_t h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int32_t i = 0; i < head_dim / 2; i++) {
            int32_t a, b;
            fasa_rope_pair(layout, head_dim, i, &a, &b);
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_t[i] - x1 * sin_t[i];
            v[b] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}

/* y_i = W_i x for n tokens, the first at position pos, and n_w matrices
 * that share x. Activations are rounded to int8 (quant_matmul_x8_set)
 * unless the context asks for f32, except at position 0: the first token
 * carries the model's massive activations (one channel thousands of times
 * the others), which int8 groups cannot hold (its logits moved by up to 10%
 * on Qwen2.5), and every later token attends to it. */
static void matmul_set(const cpu_backend *c, const fasa_weight *const *w, float *const *y, int n_w, const float *x,
                       int32_t n, int32_t pos) {
    const int64_t cols = w[0]->cols;
    int32_t f32 = c->f32_activations ? n : pos == 0 && n > 0 ? 1 : 0; /* leading tokens on the f32 path */
    for (int i = 0; i < n_w; i++)
        if (f32) quant_matmul(w[i]->type, w[i]->data, w[i]->rows, cols, x, f32, y[i], c->n_threads);
    if (f32 == n) return;
    quant_product p[QUANT_MAX_PRODUCTS];
    for (int i = 0; i < n_w; i++) p[i] = (quant_product){w[i]->type, w[i]->data, w[i]->rows, y[i] + f32 * w[i]->rows};
    quant_matmul_x8_set(p, n_w, cols, x + f32 * cols, n - f32, c->n_threads);
}

static void matmul(const cpu_backend *c, const fasa_weight *w, const float *x, int32_t n, int32_t pos, float *y) {
    matmul_set(c, &w, &y, 1, x, n, pos);
}

static void add_into(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* Adds a bias vector (NULL: none) to each of n rows of y. */
static void add_bias(float *y, const float *b, int32_t n, int64_t rows) {
    if (!b) return;
    for (int32_t t = 0; t < n; t++) add_into(y + t * rows, b, rows);
}

/* Angles in double: at positions in the hundreds of thousands a float
 * product would lose the low bits that set the fast frequencies' phase. */
static void rope_tables(cpu_backend *c, int32_t pos0, int32_t n) {
    const fasa_model *m = c->model;
    const int32_t half = m->info.head_dim / 2;
    for (int32_t t = 0; t < n; t++)
        for (int32_t i = 0; i < half; i++) {
            const double a = (double)(pos0 + t) * m->inv_freq[i];
            c->rope_cos[(int64_t)t * half + i] = (float)cos(a);
            c->rope_sin[(int64_t)t * half + i] = (float)sin(a);
        }
}

/* Causal dense attention of the chunk's queries over the cache (which already
 * holds the chunk's own keys): token t at position pos0 + t sees pos0 + t + 1
 * keys. Blocks of tokens per KV head, the longest (last) first. */
static void attention_dense(cpu_backend *c, int32_t layer, int32_t pos0, int32_t n) {
    const fasa_model_info *in = &c->model->info;
    const int32_t d = in->head_dim, group = in->n_heads / in->n_kv_heads, bt = attn_prefill_tokens(group);
    const int64_t qstride = (int64_t)in->n_heads * d;
    const float scale = 1.0f / sqrtf((float)d);
    const int32_t n_blocks = (n + bt - 1) / bt, n_tasks = n_blocks * in->n_kv_heads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads) if (n_tasks > 1)
    for (int32_t task = 0; task < n_tasks; task++) {
        const int32_t b = n_blocks - 1 - task / in->n_kv_heads, h = task % in->n_kv_heads;
        const int32_t t0 = b * bt, nt = n - t0 < bt ? n - t0 : bt;
        float *scratch = c->attn_scratch + omp_get_thread_num() * c->attn_scratch_stride;
        const int64_t off = t0 * qstride + (int64_t)h * group * d;
        attn_prefill_block(&c->kv, layer, h, c->q + off, qstride, group, pos0 + t0, nt, scale, c->xb + off, scratch);
    }
}

/* One decode step. A selection unit is the set of query heads that share one
 * choice of tokens: a KV group, or a single query head when the policy
 * selects per head. First each unit's tokens are chosen (policy select, or
 * every cached token), then the attention over them runs in parts of
 * CPU_DECODE_PART tokens spread over all threads, then the parts are merged. A
 * policy that observes the weights gets each unit done in one part. */
static void attention_decode(cpu_backend *c, int32_t layer, int32_t pos) {
    attn_policy *p = c->policy;
    const fasa_model_info *in = &c->model->info;
    const int32_t d = in->head_dim, group = in->n_heads / in->n_kv_heads, n_ctx = c->kv.n_ctx;
    const int32_t uq = p && p->per_head ? 1 : group, n_units = in->n_heads / uq;
    const float scale = 1.0f / sqrtf((float)d);
    int32_t *count = c->unit_count;

    if (p) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
        for (int32_t u = 0; u < n_units; u++) {
            const int32_t qh = u * uq, th = omp_get_thread_num();
            const attn_query aq = {&c->kv, layer, qh / group, c->q + (int64_t)qh * d, uq, qh, pos + 1};
            count[u] = p->dense_layer[layer]
                           ? -1
                           : p->ops->select(p, &aq, c->unit_idx + (int64_t)u * n_ctx, c->policy_scratch + th * p->scratch_floats);
        }
    } else {
        for (int32_t u = 0; u < n_units; u++) count[u] = -1;
    }

    if (p && p->ops->observe) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
        for (int32_t u = 0; u < n_units; u++) {
            const int32_t qh = u * uq, n = count[u] < 0 ? pos + 1 : count[u];
            const int32_t *idx = count[u] < 0 ? NULL : c->unit_idx + (int64_t)u * n_ctx;
            float *scratch = c->attn_scratch + omp_get_thread_num() * c->attn_scratch_stride;
            const attn_query aq = {&c->kv, layer, qh / group, c->q + (int64_t)qh * d, uq, qh, pos + 1};
            attn_dense_group(&c->kv, layer, aq.kv_head, aq.q, uq, idx, n, scale, c->xb + (int64_t)qh * d, scratch);
            p->ops->observe(p, &aq, idx, n, scratch);
        }
        return;
    }

    /* Parts of every unit, numbered consecutively. */
    int32_t first_part[1025];
    first_part[0] = 0;
    for (int32_t u = 0; u < n_units; u++) {
        const int32_t n = count[u] < 0 ? pos + 1 : count[u];
        first_part[u + 1] = first_part[u] + (n + CPU_DECODE_PART - 1) / CPU_DECODE_PART;
    }
    const int64_t part_floats = attn_part_floats(uq, d);
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
    for (int32_t t = 0; t < first_part[n_units]; t++) {
        int32_t u = 0;
        while (first_part[u + 1] <= t) u++;
        const int32_t qh = u * uq, n = count[u] < 0 ? pos + 1 : count[u];
        const int32_t j0 = (t - first_part[u]) * CPU_DECODE_PART, j1 = j0 + CPU_DECODE_PART < n ? j0 + CPU_DECODE_PART : n;
        const int32_t *idx = count[u] < 0 ? NULL : c->unit_idx + (int64_t)u * n_ctx;
        float *scratch = c->attn_scratch + omp_get_thread_num() * c->attn_scratch_stride;
        attn_dense_part(&c->kv, layer, qh / group, c->q + (int64_t)qh * d, uq, idx, j0, j1, scale,
                        c->attn_parts + t * part_floats, scratch);
    }
    for (int32_t u = 0; u < n_units; u++)
        attn_merge(c->attn_parts + first_part[u] * part_floats, first_part[u + 1] - first_part[u], uq, d,
                   c->xb + (int64_t)u * uq * d);
}

static void remember_queries(cpu_backend *c, int32_t layer, int32_t pos0, int32_t n) {
    const int64_t HD = (int64_t)c->model->info.n_heads * c->model->info.head_dim;
    const int32_t first = n > ATTN_QUERY_HISTORY ? n - ATTN_QUERY_HISTORY : 0;
    for (int32_t t = first; t < n; t++)
        memcpy(c->q_hist + ((int64_t)layer * ATTN_QUERY_HISTORY + (pos0 + t) % ATTN_QUERY_HISTORY) * HD,
               c->q + t * HD, (size_t)HD * sizeof(float));
}

/* Prefill (n > 1) is dense for every policy, as in the paper; the policy
 * then sees the chunk's queries. A single token is a decode step. */
void forward_attention(cpu_backend *c, int32_t layer, int32_t pos0, int32_t n) {
    attn_policy *p = c->policy;
    if (n == 1) attention_decode(c, layer, pos0);
    else attention_dense(c, layer, pos0, n);
    if (p && n > 1 && p->ops->prefill) p->ops->prefill(p, &c->kv, layer, c->q, pos0, n);
    remember_queries(c, layer, pos0, n);
}

static void layer_forward(cpu_backend *c, int32_t l, int32_t pos0, int32_t n) {
    const fasa_model *m = c->model;
    const fasa_model_info *in = &m->info;
    const fasa_layer *L = &m->layers[l];
    const int32_t E = in->n_embd, d = in->head_dim, F = in->n_ff;
    const int64_t HD = (int64_t)in->n_heads * d, KVD = (int64_t)in->n_kv_heads * d;
    const int32_t half = d / 2;

    for (int32_t t = 0; t < n; t++) rmsnorm(c->xb + (int64_t)t * E, c->x + (int64_t)t * E, L->attn_norm, E, m->rms_eps);
    const fasa_weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
    matmul_set(c, qkv, (float *[]){c->q, c->k, c->v}, 3, c->xb, n, pos0);
    add_bias(c->q, L->bq, n, HD);
    add_bias(c->k, L->bk, n, KVD);
    add_bias(c->v, L->bv, n, KVD);
    for (int32_t t = 0; t < n; t++) {
        const float *cs = c->rope_cos + (int64_t)t * half, *sn = c->rope_sin + (int64_t)t * half;
        fasa_rope_apply(c->q + t * HD, in->n_heads, d, in->rope_layout, cs, sn);
        fasa_rope_apply(c->k + t * KVD, in->n_kv_heads, d, in->rope_layout, cs, sn);
        kv_store(&c->kv, l, pos0 + t, c->k + t * KVD, c->v + t * KVD);
        if (c->policy && c->policy->ops->append) c->policy->ops->append(c->policy, &c->kv, l, pos0 + t);
    }
    forward_attention(c, l, pos0, n);
    matmul(c, &L->wo, c->xb, n, pos0, c->proj);
    add_into(c->x, c->proj, (int64_t)n * E);

    for (int32_t t = 0; t < n; t++) rmsnorm(c->xb + (int64_t)t * E, c->x + (int64_t)t * E, L->ffn_norm, E, m->rms_eps);
    const fasa_weight *gate_up[2] = {&L->w_gate, &L->w_up};
    matmul_set(c, gate_up, (float *[]){c->gate, c->up}, 2, c->xb, n, pos0);
    for (int64_t i = 0; i < (int64_t)n * F; i++) {
        const float g = c->gate[i];
        c->gate[i] = g / (1.0f + expf(-g)) * c->up[i];
    }
    matmul(c, &L->w_down, c->gate, n, pos0, c->proj);
    add_into(c->x, c->proj, (int64_t)n * E);
}

void cpu_forward(cpu_backend *c, const int32_t *tokens, int32_t n, float *logits, bool all_logits) {
    const fasa_model *m = c->model;
    const int32_t E = m->info.n_embd, pos0 = c->kv.n_tokens;
    const size_t row_bytes = quant_row_bytes(m->tok_embd.type, E);
    for (int32_t t = 0; t < n; t++)
        quant_dequant_row(m->tok_embd.type, (const char *)m->tok_embd.data + (size_t)tokens[t] * row_bytes,
                          c->x + (int64_t)t * E, E);
    rope_tables(c, pos0, n);
    for (int32_t l = 0; l < m->info.n_layers; l++) layer_forward(c, l, pos0, n);
    c->kv.n_tokens += n;
    if (!logits) return;
    const int32_t first = all_logits ? 0 : n - 1, n_out = n - first;
    for (int32_t t = first; t < n; t++)
        rmsnorm(c->xb + (int64_t)(t - first) * E, c->x + (int64_t)t * E, m->output_norm, E, m->rms_eps);
    matmul(c, &m->output, c->xb, n_out, pos0 + first, logits);
}
