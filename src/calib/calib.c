/* Calibration results as data: allocation, ranking, and the choice of a KV
 * group's chunks that every user of a calibration shares. Making one is
 * src/measure/calibrate.c; reading and writing one, calib_io.c. */
#include "calib/calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

fasa_calib *calib_alloc(const fasa_model_info *in) {
    fasa_calib *c = fasa_calloc(1, sizeof *c, "calibration");
    if (!c) return NULL;
    snprintf(c->arch, sizeof c->arch, "%s", in->arch);
    c->n_layers = in->n_layers;
    c->n_heads = in->n_heads;
    c->n_kv_heads = in->n_kv_heads;
    c->head_dim = in->head_dim;
    c->rope_layout = in->rope_layout;
    c->rope_base = in->rope_base;
    c->tensor_hash = in->tensor_hash;
    const size_t n = (size_t)in->n_layers * in->n_heads * (in->head_dim / 2);
    c->ca = fasa_calloc(n, sizeof *c->ca, "calibration table");
    c->rank = c->ca ? fasa_calloc(n, sizeof *c->rank, "calibration ranking") : NULL;
    if (!c->rank) {
        fasa_calib_free(c);
        return NULL;
    }
    return c;
}

void fasa_calib_free(fasa_calib *c) {
    if (!c) return;
    free(c->ca);
    free(c->rank);
    free(c->greedy);
    free(c->greedy_mass);
    free(c);
}

fasa_status calib_alloc_greedy(fasa_calib *c, int32_t n) {
    const size_t cells = (size_t)c->n_layers * c->n_kv_heads * (size_t)n;
    free(c->greedy);
    free(c->greedy_mass);
    c->greedy_mass = NULL;
    c->n_greedy = c->greedy_cap = 0;
    if (!(c->greedy = fasa_calloc(cells ? cells : 1, sizeof *c->greedy, "greedy calibration order")) ||
        !(c->greedy_mass = fasa_calloc(cells ? cells : 1, sizeof *c->greedy_mass, "greedy calibration recall")))
        return FASA_E_NOMEM;
    c->n_greedy = c->greedy_cap = n;
    return FASA_OK;
}

void calib_rank(fasa_calib *c) {
    const int32_t F = c->head_dim / 2;
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t h = 0; h < c->n_heads; h++) {
            const double *ca = c->ca + calib_at(c, l, h);
            int32_t *r = c->rank + calib_at(c, l, h);
            /* Insertion sort: F is at most a few hundred. */
            for (int32_t i = 0; i < F; i++) {
                int32_t j = i;
                while (j > 0 && ca[r[j - 1]] < ca[i]) {
                    r[j] = r[j - 1];
                    j--;
                }
                r[j] = i;
            }
        }
}

fasa_status calib_check_shape(const fasa_calib *c, int32_t n_layers, int32_t n_heads, int32_t head_dim) {
    if (c->n_layers != n_layers || c->n_heads != n_heads || c->head_dim != head_dim)
        return fasa_error(FASA_E_ARG,
                          "the calibration is for %d layers x %d heads x head dim %d, the model has %d x %d x %d",
                          c->n_layers, c->n_heads, c->head_dim, n_layers, n_heads, head_dim);
    return FASA_OK;
}

double fasa_calib_ca(const fasa_calib *c, int32_t layer, int32_t head, int32_t fc) {
    return c->ca[calib_at(c, layer, head) + fc];
}

const int32_t *fasa_calib_ranking(const fasa_calib *c, int32_t layer, int32_t head) {
    return c->rank + calib_at(c, layer, head);
}

void calib_group_top_fcs(const fasa_calib *c, int32_t layer, int32_t kv_head, int32_t n_tip, unsigned char *chosen) {
    const int32_t F = c->head_dim / 2, group = c->n_heads / c->n_kv_heads;
    memset(chosen, 0, (size_t)F);
    const int32_t from_greedy = n_tip < c->n_greedy ? n_tip : c->n_greedy;
    for (int32_t t = 0; t < from_greedy; t++) chosen[c->greedy[calib_group_at(c, layer, kv_head) + t]] = 1;
    for (int32_t t = from_greedy; t < n_tip && t < F; t++) {
        int32_t best = -1;
        double best_ca = 0.0;
        for (int32_t i = 0; i < F; i++) {
            if (chosen[i]) continue;
            double m = 0.0;
            for (int32_t g = 0; g < group; g++) m += fasa_calib_ca(c, layer, kv_head * group + g, i);
            if (best < 0 || m > best_ca) best = i, best_ca = m;
        }
        chosen[best] = 1;
    }
}

