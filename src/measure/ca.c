/* The CA probe: an attention policy that decodes exactly (attends to all)
 * while asking each candidate policy what it would have chosen. */
#include "measure/ca.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/policy.h"
#include "context.h"
#include "error.h"
#include "calib/calib.h"
#include "quant.h"

typedef struct probe_state {
    attn_policy **cands;  /* [n_cands * n_budgets] */
    int32_t n_cands;
    const int32_t *budgets;
    int32_t n_budgets;
    int32_t n_layers;
    /* Per KV head (calls for different KV heads run concurrently): */
    double *sum;          /* [n_kv][n_layers][n_cands * n_budgets] summed CA */
    double *mass;         /* [n_kv][n_layers][n_cands * n_budgets] summed mass recall */
    int64_t *count;       /* [n_kv][n_layers] (query head, step) samples */
    float *logits;        /* [n_kv][group][n_ctx] full logits */
    float *weights;       /* [n_kv][group][n_ctx] their softmax */
    int32_t *rank;        /* [n_kv][group][n_ctx] rank of each position by logit */
    struct ranked {
        float logit;
        int32_t pos;
    } *order;             /* [n_kv][n_ctx] */
    int32_t *idx;         /* [n_kv][n_ctx] */
    float *cand_scratch;  /* [n_kv][max candidate scratch] */
    int64_t cand_scratch_floats;
} probe_state;

static void probe_free(attn_policy *p) {
    probe_state *st = p->state;
    if (!st) return;
    for (int32_t i = 0; st->cands && i < st->n_cands * st->n_budgets; i++) attn_policy_free(st->cands[i]);
    free(st->cands);
    free(st->sum);
    free(st->mass);
    free(st->count);
    free(st->logits);
    free(st->weights);
    free(st->rank);
    free(st->order);
    free(st->idx);
    free(st->cand_scratch);
    free(st);
    p->state = NULL;
}

static fasa_status probe_alloc(attn_policy *p, probe_state *st) {
    const attn_shape *s = &p->shape;
    const size_t kv = (size_t)s->n_kv_heads, group = (size_t)(s->n_heads / s->n_kv_heads), T = (size_t)s->n_ctx;
    for (int32_t i = 0; i < st->n_cands * st->n_budgets; i++)
        if (st->cands[i]->scratch_floats > st->cand_scratch_floats) st->cand_scratch_floats = st->cands[i]->scratch_floats;
    const size_t cells = kv * (size_t)s->n_layers * (size_t)(st->n_cands * st->n_budgets);
    st->n_layers = s->n_layers;
    if (!(st->sum = fasa_calloc(cells, sizeof *st->sum, "CA sums")) ||
        !(st->mass = fasa_calloc(cells, sizeof *st->mass, "CA mass sums")) ||
        !(st->count = fasa_calloc(kv * (size_t)s->n_layers, sizeof *st->count, "CA counts")) ||
        !(st->logits = fasa_malloc(kv * group * T, sizeof *st->logits, "CA logits")) ||
        !(st->weights = fasa_malloc(kv * group * T, sizeof *st->weights, "CA weights")) ||
        !(st->rank = fasa_malloc(kv * group * T, sizeof *st->rank, "CA ranks")) ||
        !(st->order = fasa_malloc(kv * T, sizeof *st->order, "CA order")) ||
        !(st->idx = fasa_malloc(kv * T, sizeof *st->idx, "CA selection")) ||
        !(st->cand_scratch = fasa_malloc(kv * (size_t)(st->cand_scratch_floats + 1), sizeof(float), "CA scratch")))
        return FASA_E_NOMEM;
    return FASA_OK;
}

static void probe_append(attn_policy *p, const fasa_kv *kv, int32_t layer, int32_t pos) {
    probe_state *st = p->state;
    for (int32_t i = 0; i < st->n_cands * st->n_budgets; i++)
        if (st->cands[i]->ops->append) st->cands[i]->ops->append(st->cands[i], kv, layer, pos);
}

static void probe_prefill(attn_policy *p, const fasa_kv *kv, int32_t layer, const float *q, int32_t pos0, int32_t n) {
    probe_state *st = p->state;
    for (int32_t i = 0; i < st->n_cands * st->n_budgets; i++)
        if (st->cands[i]->ops->prefill) st->cands[i]->ops->prefill(st->cands[i], kv, layer, q, pos0, n);
}

static void probe_truncate(attn_policy *p, int32_t n_tokens) {
    probe_state *st = p->state;
    for (int32_t i = 0; i < st->n_cands * st->n_budgets; i++)
        if (st->cands[i]->ops->truncate) st->cands[i]->ops->truncate(st->cands[i], n_tokens);
}

static int cmp_desc(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->pos - y->pos;
}

/* rank[j] = place of position j when sorted by logit, descending, ties by
 * position (the order attn_topk also breaks ties in). */
static void rank_positions(const float *logits, int32_t n, struct ranked *order, int32_t *rank) {
    for (int32_t j = 0; j < n; j++) order[j] = (struct ranked){logits[j], j};
    qsort(order, (size_t)n, sizeof *order, cmp_desc);
    for (int32_t r = 0; r < n; r++) rank[order[r].pos] = r;
}

static int32_t probe_select(attn_policy *p, const attn_query *aq, int32_t *unused, float *unused_scratch) {
    probe_state *st = p->state;
    const attn_shape *s = &p->shape;
    const int32_t d = s->head_dim, n = aq->n_keys, group = aq->n_q, h = aq->kv_head;
    const int64_t T = s->n_ctx, nc = (int64_t)st->n_cands * st->n_budgets;
    float *logits = st->logits + (int64_t)h * group * T;
    int32_t *rank = st->rank + (int64_t)h * group * T, *idx = st->idx + h * T;
    struct ranked *order = st->order + h * T;
    float *cs = st->cand_scratch + (int64_t)h * (st->cand_scratch_floats + 1);
    float *row = cs; /* a widened key row, before the candidates use the scratch */
    for (int32_t j = 0; j < n; j++) {
        const float *k = kv_row_f32(aq->kv, kv_k_row(aq->kv, aq->layer, h, j), row);
        for (int32_t g = 0; g < group; g++) {
            float a = 0.0f;
            for (int32_t i = 0; i < d; i++) a += aq->q[(int64_t)g * d + i] * k[i];
            logits[g * T + j] = a;
        }
    }
    for (int32_t g = 0; g < group; g++) rank_positions(logits + g * T, n, order, rank + g * T);
    const float scale = 1.0f / sqrtf((float)d);
    float *weights = st->weights + (int64_t)h * group * T;
    for (int32_t g = 0; g < group; g++) {
        const float *a = logits + g * T;
        float *w = weights + g * T, mx = -INFINITY, z = 0.0f;
        for (int32_t j = 0; j < n; j++) mx = fmaxf(mx, a[j] * scale);
        for (int32_t j = 0; j < n; j++) z += (w[j] = expf(a[j] * scale - mx));
        for (int32_t j = 0; j < n; j++) w[j] /= z;
    }

    const int64_t cell0 = ((int64_t)h * st->n_layers + aq->layer) * nc;
    double *sum = st->sum + cell0, *mass = st->mass + cell0;
    for (int64_t c = 0; c < nc; c++) {
        attn_policy *cand = st->cands[c];
        const int32_t K = st->budgets[c % st->n_budgets], Kp = K < n ? K : n;
        const int32_t n_sel_calls = cand->per_head ? group : 1;
        for (int32_t call = 0; call < n_sel_calls; call++) {
            const int32_t g0 = cand->per_head ? call : 0, nq = cand->per_head ? 1 : group;
            const attn_query sub = {aq->kv, aq->layer, h, aq->q + (int64_t)g0 * d, nq, aq->q_head + g0, n};
            const int32_t m = cand->dense_layer[aq->layer] ? -1 : cand->ops->select(cand, &sub, idx, cs);
            for (int32_t g = g0; g < g0 + nq; g++) {
                int32_t hit = 0;
                double got = 0.0;
                if (m < 0) hit = Kp, got = 1.0;
                else
                    for (int32_t t = 0; t < m; t++) {
                        hit += rank[g * T + idx[t]] < Kp;
                        got += weights[g * T + idx[t]];
                    }
                sum[c] += (double)hit / Kp;
                mass[c] += got;
            }
        }
    }
    st->count[(int64_t)h * st->n_layers + aq->layer] += group;

    /* Candidates that learn from attention weights see the exact ones:
     * per-head observers each head's row in place, then the rows are packed
     * to [group][n] for the per-group ones. */
    int need_weights = 0;
    for (int64_t c = 0; c < nc; c++) need_weights |= st->cands[c]->ops->observe != NULL;
    if (need_weights) {
        for (int64_t c = 0; c < nc; c++) {
            attn_policy *cand = st->cands[c];
            if (!cand->ops->observe || !cand->per_head) continue;
            for (int32_t g = 0; g < group; g++) {
                const attn_query sub = {aq->kv, aq->layer, h, aq->q + (int64_t)g * d, 1, aq->q_head + g, n};
                cand->ops->observe(cand, &sub, NULL, n, weights + g * T);
            }
        }
        for (int32_t g = 1; g < group; g++) memmove(weights + (int64_t)g * n, weights + g * T, (size_t)n * sizeof(float));
        for (int64_t c = 0; c < nc; c++) {
            attn_policy *cand = st->cands[c];
            if (cand->ops->observe && !cand->per_head) cand->ops->observe(cand, aq, NULL, n, weights);
        }
    }
    return -1;
}

static fasa_status probe_init(attn_policy *p) {
    p->scratch_floats = 0;
    return FASA_OK;
}

static const attn_policy_ops probe_ops = {
    .name = "ca-probe",
    .per_head_default = false,
    .init = probe_init,
    .free = probe_free,
    .truncate = probe_truncate,
    .append = probe_append,
    .prefill = probe_prefill,
    .select = probe_select,
};

fasa_status ca_measure(fasa_model *m, const int32_t *tokens, int32_t n, const ca_request *req, const ca_result *out) {
    if (req->n_decode < 1 || req->n_decode >= n)
        return fasa_error(FASA_E_ARG, "CA: %d decode steps do not fit a text of %d tokens", req->n_decode, n);
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = n;
    cp.n_threads = req->n_threads;
    fasa_context *c;
    fasa_status st = fasa_context_init(m, &cp, &c);
    if (st) return st;
    const attn_shape shape = context_attn_shape(c);
    attn_policy *probe = NULL;
    const fasa_attn_params pp = {.method = "ca-probe", .budget = 1, .dense_layers = ""};
    st = attn_policy_create_ops(&probe_ops, &pp, &shape, 0, &probe);
    probe_state *ps = NULL;
    if (!st && !(ps = fasa_calloc(1, sizeof *ps, "CA probe"))) st = FASA_E_NOMEM;
    if (!st) {
        probe->state = ps;
        ps->n_cands = req->n_cands;
        ps->budgets = req->budgets;
        ps->n_budgets = req->n_budgets;
        ps->cands = fasa_calloc((size_t)req->n_cands * req->n_budgets, sizeof *ps->cands, "CA candidates");
        if (!ps->cands) st = FASA_E_NOMEM;
    }
    for (int32_t i = 0; !st && i < req->n_cands; i++)
        for (int32_t b = 0; !st && b < req->n_budgets; b++) {
            fasa_attn_params ap = req->cands[i].params;
            ap.budget = req->budgets[b];
            st = attn_policy_create(&ap, &shape, 0, &ps->cands[i * req->n_budgets + b]);
            if (!st) st = attn_policy_bind_cpu(ps->cands[i * req->n_budgets + b]);
        }
    if (!st) st = probe_alloc(probe, ps);
    if (st) {
        attn_policy_free(probe);
        fasa_context_free(c);
        return st;
    }
    st = context_install_policy(c, probe);
    const int32_t n_prefill = n - req->n_decode;
    if (!st) st = fasa_eval(c, tokens, n_prefill, NULL, false);
    for (int32_t i = 0; !st && i < req->n_decode; i++) {
        st = fasa_eval(c, tokens + n_prefill + i, 1, NULL, false);
        if (req->progress) req->progress(req->user, i + 1, req->n_decode);
    }
    if (!st) {
        const int64_t nc = (int64_t)req->n_cands * req->n_budgets;
        const int32_t L = shape.n_layers, KV = shape.n_kv_heads;
        for (int64_t k = 0; k < nc; k++) {
            double s = 0.0, w = 0.0;
            int64_t count = 0;
            for (int32_t l = 0; l < L; l++) {
                double sl = 0.0, wl = 0.0;
                int64_t cl = 0;
                for (int32_t h = 0; h < KV; h++) {
                    const int64_t at = ((int64_t)h * L + l) * nc + k;
                    sl += ps->sum[at];
                    wl += ps->mass[at];
                    cl += ps->count[(int64_t)h * L + l];
                }
                if (out->ca_layer) out->ca_layer[k * L + l] = cl ? sl / (double)cl : 0.0;
                if (out->mass_layer) out->mass_layer[k * L + l] = cl ? wl / (double)cl : 0.0;
                s += sl, w += wl, count += cl;
            }
            out->ca[k] = count ? s / (double)count : 0.0;
            if (out->mass) out->mass[k] = count ? w / (double)count : 0.0;
        }
    }
    fasa_context_free(c);
    return st;
}
