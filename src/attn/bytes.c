/* The bytes a decode step reads from the KV cache and a policy's own
 * structures, from the policy's parameters alone (no context needed), for
 * result lines and benchmark limits. */
#include "attn/bytes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/policy.h"

/* Whether the method selects per query head unless told otherwise. */
static bool selects_per_head(const char *method) {
    const attn_policy_ops *ops = attn_policy_find(method);
    return ops && ops->per_head_default;
}

static int32_t count_dense_layers(const char *spec, const char *method, int32_t n_layers) {
    if (!spec) spec = strcmp(method, "fasa") ? "" : "0";
    int32_t n = 0;
    for (const char *s = spec; *s;) {
        char *end;
        const long v = strtol(s, &end, 10);
        if (end == s) break;
        n += v >= 0 && v < n_layers;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* Bytes one KV head of a sparse layer reads. */
static double sparse_head_bytes(const fasa_model_info *in, const fasa_attn_params *p, double T, double e) {
    const double d = in->head_dim, group = (double)in->n_heads / in->n_kv_heads;
    const bool per_head = p->per_head ? p->per_head == 1 : selects_per_head(p->method);
    /* Rows of K and V gathered: the union of the group's choices when each
     * query head chooses (at most group x budget), else one budget. */
    double rows = per_head ? group * p->budget : p->budget;
    if (rows > T) rows = T;
    const double gather = rows * 2.0 * d * e;
    if (!strcmp(p->method, "fasa")) {
        const double tip = p->n_tip ? p->n_tip : d / 8;
        /* FASA_FC_ALLOC: tip on average over the sparse layers */
        double chunks = p->fc_union == FASA_FC_UNION ? group * tip : tip;
        if (chunks > d / 2) chunks = d / 2;
        /* f32, f16, or int8 with one f32 scale per token */
        const double label = p->label_type == FASA_LABELS_INT8  ? 2.0 * chunks + sizeof(float)
                             : p->label_type == FASA_LABELS_F16 ? 2.0 * chunks * 2
                                                                : 2.0 * chunks * sizeof(float);
        return T * label + gather;
    }
    if (!strcmp(p->method, "oracle")) return T * d * e + rows * d * e; /* all of K, chosen V */
    if (!strcmp(p->method, "quest")) {
        const double page = p->page ? p->page : 16;
        return ceil(T / page) * 2.0 * d * sizeof(float) + gather; /* per-page min and max, f32 */
    }
    if (!strcmp(p->method, "sparq")) {
        const double r = p->sparq_r ? p->sparq_r : d / 4;
        return T * r * e + gather; /* r coordinates of every key */
    }
    return gather; /* stream, h2o, snapkv, random: only the chosen rows */
}

double attn_step_bytes(const fasa_model_info *in, const fasa_attn_params *p, int32_t ctx, int32_t elem) {
    const double T = ctx, e = elem, d = in->head_dim;
    const double dense_head = 2.0 * T * d * e;
    const double kv_layer = (double)in->n_kv_heads;
    if (!p || !p->method || !strcmp(p->method, "full") || p->budget >= ctx) return in->n_layers * kv_layer * dense_head;
    const int32_t n_dense = count_dense_layers(p->dense_layers, p->method, in->n_layers);
    return kv_layer * (n_dense * dense_head + (in->n_layers - n_dense) * sparse_head_bytes(in, p, T, e));
}
