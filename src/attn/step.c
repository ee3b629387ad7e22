/* fasa_attention_step: the FASA decode step over caller-owned buffers, built
 * from the same TIP scorer, top-k and exact attention kernel the engine uses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/dense.h"
#include "attn/tip.h"
#include "attn/policy.h"
#include "error.h"
#include "calib/calib.h"
#include "labels.h"
#include "model.h"

static fasa_status check_step(const fasa_step *s) {
    if (!s || !s->q || !s->k || !s->v || !s->labels || !s->label_coords || !s->out)
        return fasa_error(FASA_E_ARG, "fasa_attention_step: a required buffer is NULL");
    if (s->n_heads <= 0 || s->n_kv_heads <= 0 || s->n_heads % s->n_kv_heads || s->head_dim <= 0 || s->n_tokens <= 0)
        return fasa_error(FASA_E_ARG, "fasa_attention_step: invalid shape %d heads / %d KV heads, dim %d, %d tokens",
                          s->n_heads, s->n_kv_heads, s->head_dim, s->n_tokens);
    if (s->n_label <= 0 || s->n_label > s->head_dim)
        return fasa_error(FASA_E_ARG, "fasa_attention_step: n_label %d outside [1, %d]", s->n_label, s->head_dim);
    if (s->budget <= 0) return fasa_error(FASA_E_ARG, "fasa_attention_step: budget must be >= 1, got %d", s->budget);
    for (int64_t i = 0; i < (int64_t)s->n_kv_heads * s->n_label; i++)
        if (s->label_coords[i] < 0 || s->label_coords[i] >= s->head_dim)
            return fasa_error(FASA_E_ARG, "fasa_attention_step: label coordinate %d outside [0, %d)",
                              s->label_coords[i], s->head_dim);
    return FASA_OK;
}

fasa_status fasa_attention_step(const fasa_step *s) {
    fasa_status st = check_step(s);
    if (st) return st;
    const int32_t d = s->head_dim, n = s->n_tokens, group = s->n_heads / s->n_kv_heads, L = s->n_label;
    const int32_t n_q = s->per_head ? 1 : group;
    /* A one-layer f32 cache view over the caller's K and V. */
    const fasa_kv kv = {.n_layers = 1, .n_kv_heads = s->n_kv_heads, .head_dim = d, .n_ctx = n, .n_tokens = n,
                        .type = FASA_KV_F32, .elem_size = sizeof(float), .k = (void *)s->k, .v = (void *)s->v};
    const size_t floats = 2 * (size_t)n + (size_t)L + (size_t)attn_dense_scratch(group, n, d);
    float *buf = fasa_malloc(floats, sizeof(float), "FASA step scratch");
    int32_t *idx = buf ? fasa_malloc((size_t)n, sizeof(int32_t), "FASA step selection") : NULL;
    if (!idx) {
        free(buf);
        return FASA_E_NOMEM;
    }
    float *scores = buf, *work = scores + n, *w = work + n, *scratch = w + L;
    const float scale = 1.0f / sqrtf((float)d);
    for (int32_t qh = 0; qh < s->n_heads; qh += n_q) {
        const int32_t h = qh / group;
        const int32_t *coord = s->label_coords + (int64_t)h * L;
        for (int32_t c = 0; c < L; c++) {
            w[c] = 0.0f;
            for (int32_t g = 0; g < n_q; g++) w[c] += s->q[(int64_t)(qh + g) * d + coord[c]];
        }
        fasa_tip_scores(w, s->labels + (int64_t)h * n * L, L, n, 1, scores);
        const int32_t m = attn_topk(scores, n, s->budget, idx, work);
        attn_dense_group(&kv, 0, h, s->q + (int64_t)qh * d, n_q, idx, m, scale, s->out + (int64_t)qh * d, scratch);
        if (s->selected)
            for (int32_t g = 0; g < n_q; g++) {
                int32_t *sel = s->selected + (int64_t)(qh + g) * s->budget;
                memcpy(sel, idx, (size_t)m * sizeof *idx);
                for (int32_t t = m; t < s->budget; t++) sel[t] = -1;
            }
    }
    free(idx);
    free(buf);
    return FASA_OK;
}

fasa_status fasa_calib_label_coords(const fasa_calib *c, int32_t layer, int32_t kv_head, int32_t n_tip,
                                    int32_t *coords) {
    if (layer < 0 || layer >= c->n_layers || kv_head < 0 || kv_head >= c->n_kv_heads)
        return fasa_error(FASA_E_ARG, "label coordinates: layer %d or KV head %d out of range", layer, kv_head);
    const attn_shape s = {c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, 1, c->rope_layout};
    label_set *l;
    fasa_status st = label_set_from_calib(c, &s, n_tip, FASA_FC_KV_HEAD, NULL, &l);
    if (st) return st;
    memcpy(coords, label_coords(l, layer, kv_head), (size_t)label_count(l, layer, kv_head) * sizeof *coords);
    label_set_free(l);
    return FASA_OK;
}
