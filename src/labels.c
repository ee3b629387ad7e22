#include "labels.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "calib/calib.h"
#include "model.h"

void label_set_free(label_set *l) {
    if (!l) return;
    free(l->n_lab);
    free(l->coord);
    free(l->mask);
    free(l);
}

/* Each query head's FCs of a KV group as flags, chosen[g * F + i]. */
static void choose_fcs(const fasa_calib *cal, const attn_shape *s, int32_t layer, int32_t kv_head, int32_t n_tip,
                       int32_t fc_union, unsigned char *chosen) {
    const int32_t F = s->head_dim / 2, group = s->n_heads / s->n_kv_heads;
    memset(chosen, 0, (size_t)group * F);
    if (fc_union == FASA_FC_UNION) {
        for (int32_t g = 0; g < group; g++) {
            const int32_t *r = fasa_calib_ranking(cal, layer, kv_head * group + g);
            for (int32_t i = 0; i < n_tip; i++) chosen[g * F + r[i]] = 1;
        }
        return;
    }
    calib_group_top_fcs(cal, layer, kv_head, n_tip, chosen);
    for (int32_t g = 1; g < group; g++) memcpy(chosen + g * F, chosen, (size_t)F);
}

/* The FC a coordinate belongs to under the model's RoPE layout. */
static int32_t fc_of(const attn_shape *s, int32_t coord) {
    const int32_t half = s->head_dim / 2;
    return s->rope_layout == FASA_ROPE_INTERLEAVED ? coord / 2 : coord % half;
}

static void fill_head(label_set *l, const attn_shape *s, int32_t layer, int32_t h, const unsigned char *chosen) {
    const int32_t d = s->head_dim, F = d / 2, group = s->n_heads / s->n_kv_heads;
    /* A coordinate is in the label if any query head of the group uses its FC. */
    int32_t *coord = l->coord + ((int64_t)layer * s->n_kv_heads + h) * l->lab_max, n = 0;
    for (int32_t c = 0; c < d; c++) {
        bool any = false;
        for (int32_t g = 0; g < group && !any; g++) any = chosen[g * F + fc_of(s, c)];
        if (any) coord[n++] = c;
    }
    l->n_lab[(int64_t)layer * s->n_kv_heads + h] = n;
    for (int32_t g = 0; g < group; g++) {
        float *mask = l->mask + ((int64_t)layer * s->n_heads + h * group + g) * l->lab_max;
        for (int32_t c = 0; c < n; c++) mask[c] = chosen[g * F + fc_of(s, coord[c])] ? 1.0f : 0.0f;
    }
}

/* FASA_FC_ALLOC: the chunks of the sparse layers' KV groups, n_tip per group
 * on average, given one at a time to the group whose attention-mass recall
 * the next chunk of its greedy order raises most (the calibration's greedy
 * passes measured that recall after each chunk). Every group keeps at least
 * one chunk and at most the calibration's greedy count. */
static fasa_status allocate_fcs(const fasa_calib *cal, const attn_shape *s, int32_t n_tip, const bool *dense_layer,
                                int32_t *n_fc) {
    const int32_t cap = cal->n_greedy;
    if (cap <= n_tip)
        return fasa_error(FASA_E_ARG,
                          "fasa: --fc-choice alloc shares the chunks between KV heads by the calibration's greedy "
                          "recall, so the calibration needs more greedy chunks than --fc %d (it has %d): make it "
                          "with `fasa calibrate --greedy %d` or more (at most head_dim / 2 = %d)", n_tip, cap,
                          2 * n_tip < s->head_dim / 2 ? 2 * n_tip : s->head_dim / 2, s->head_dim / 2);
    int64_t left = 0;
    for (int32_t layer = 0; layer < s->n_layers; layer++)
        for (int32_t h = 0; h < s->n_kv_heads; h++) {
            if (dense_layer && dense_layer[layer]) continue;
            n_fc[(int64_t)layer * s->n_kv_heads + h] = 1;
            left += n_tip - 1;
        }
    for (; left > 0; left--) {
        int64_t best = -1;
        double best_gain = 0.0;
        for (int32_t layer = 0; layer < s->n_layers; layer++)
            for (int32_t h = 0; h < s->n_kv_heads; h++) {
                const int64_t lh = (int64_t)layer * s->n_kv_heads + h;
                const int32_t m = n_fc[lh];
                if ((dense_layer && dense_layer[layer]) || m >= cap) continue;
                const double *mass = cal->greedy_mass + calib_group_at(cal, layer, h);
                const double gain = mass[m] - mass[m - 1]; /* mass[r]: recall with r + 1 chunks */
                if (best < 0 || gain > best_gain) best = lh, best_gain = gain;
            }
        if (best < 0) break; /* every group holds all its greedy chunks */
        n_fc[best]++;
    }
    return FASA_OK;
}

fasa_status label_set_from_calib(const fasa_calib *cal, const attn_shape *s, int32_t n_tip, int32_t fc_union,
                                 const bool *dense_layer, label_set **out) {
    *out = NULL;
    const int32_t d = s->head_dim, F = d / 2, group = s->n_heads / s->n_kv_heads;
    if (n_tip < 1 || n_tip > F)
        return fasa_error(FASA_E_ARG, "fasa: --fc (dominant chunks per head) must be in [1, %d], got %d", F, n_tip);
    fasa_status st = calib_check_shape(cal, s->n_layers, s->n_heads, d);
    if (st) return st;
    const size_t n_lh = (size_t)s->n_layers * s->n_kv_heads;
    int32_t *n_fc = fasa_malloc(n_lh, sizeof *n_fc, "FCs per KV head");
    if (!n_fc) return FASA_E_NOMEM;
    for (size_t i = 0; i < n_lh; i++) n_fc[i] = n_tip;
    if (fc_union == FASA_FC_ALLOC && (st = allocate_fcs(cal, s, n_tip, dense_layer, n_fc))) {
        free(n_fc);
        return st;
    }
    int32_t most = 0;
    for (size_t i = 0; i < n_lh; i++) most = n_fc[i] > most ? n_fc[i] : most;
    label_set *l = fasa_calloc(1, sizeof *l, "label layout");
    if (!l) {
        free(n_fc);
        return FASA_E_NOMEM;
    }
    *l = (label_set){.n_layers = s->n_layers, .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads, .head_dim = d,
                     .shared = fc_union != FASA_FC_UNION};
    l->lab_max = fc_union == FASA_FC_UNION ? (2 * n_tip * group < d ? 2 * n_tip * group : d) : 2 * most;
    unsigned char *chosen = fasa_malloc((size_t)group * F, 1, "FASA chunk choice");
    if (!chosen || !(l->n_lab = fasa_calloc(n_lh, sizeof *l->n_lab, "label sizes")) ||
        !(l->coord = fasa_calloc(n_lh * l->lab_max, sizeof *l->coord, "label coordinates")) ||
        !(l->mask = fasa_calloc((size_t)s->n_layers * s->n_heads * l->lab_max, sizeof *l->mask, "label masks"))) {
        free(chosen);
        free(n_fc);
        label_set_free(l);
        return FASA_E_NOMEM;
    }
    for (int32_t layer = 0; layer < s->n_layers; layer++)
        for (int32_t h = 0; h < s->n_kv_heads; h++) {
            choose_fcs(cal, s, layer, h, n_fc[(int64_t)layer * s->n_kv_heads + h], fc_union, chosen);
            fill_head(l, s, layer, h, chosen);
        }
    free(chosen);
    free(n_fc);
    *out = l;
    return FASA_OK;
}
