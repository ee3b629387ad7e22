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
    if (fc_union == 2) {
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

fasa_status label_set_from_calib(const fasa_calib *cal, const attn_shape *s, int32_t n_tip, int32_t fc_union,
                                 label_set **out) {
    *out = NULL;
    const int32_t d = s->head_dim, F = d / 2, group = s->n_heads / s->n_kv_heads;
    if (n_tip < 1 || n_tip > F)
        return fasa_error(FASA_E_ARG, "fasa: --fc (dominant chunks per head) must be in [1, %d], got %d", F, n_tip);
    fasa_status st = calib_check_shape(cal, s->n_layers, s->n_heads, d);
    if (st) return st;
    label_set *l = fasa_calloc(1, sizeof *l, "label layout");
    if (!l) return FASA_E_NOMEM;
    *l = (label_set){.n_layers = s->n_layers, .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads, .head_dim = d,
                     .shared = fc_union != 2};
    l->lab_max = fc_union == 2 ? (2 * n_tip * group < d ? 2 * n_tip * group : d) : 2 * n_tip;
    const size_t n_lh = (size_t)s->n_layers * s->n_kv_heads;
    unsigned char *chosen = fasa_malloc((size_t)group * F, 1, "FASA chunk choice");
    if (!chosen || !(l->n_lab = fasa_calloc(n_lh, sizeof *l->n_lab, "label sizes")) ||
        !(l->coord = fasa_calloc(n_lh * l->lab_max, sizeof *l->coord, "label coordinates")) ||
        !(l->mask = fasa_calloc((size_t)s->n_layers * s->n_heads * l->lab_max, sizeof *l->mask, "label masks"))) {
        free(chosen);
        label_set_free(l);
        return FASA_E_NOMEM;
    }
    for (int32_t layer = 0; layer < s->n_layers; layer++)
        for (int32_t h = 0; h < s->n_kv_heads; h++) {
            choose_fcs(cal, s, layer, h, n_tip, fc_union, chosen);
            fill_head(l, s, layer, h, chosen);
        }
    free(chosen);
    *out = l;
    return FASA_OK;
}
