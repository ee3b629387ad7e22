#include "eval/score.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double log_sum_exp(const float *x, int32_t n, float *max_out) {
    float mx = x[0];
    for (int32_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    *max_out = mx;
    return log(sum) + mx;
}

double eval_token_nll(const float *logits, int32_t n, int32_t target) {
    float mx;
    return log_sum_exp(logits, n, &mx) - logits[target];
}

void eval_log_softmax(const float *logits, int32_t n, float *out) {
    float mx;
    const double lse = log_sum_exp(logits, n, &mx);
    for (int32_t i = 0; i < n; i++) out[i] = (float)((double)logits[i] - lse);
}

double eval_kl(const float *ref_logp, const float *logits, int32_t n) {
    float mx;
    const double lse = log_sum_exp(logits, n, &mx);
    double kl = 0.0;
    for (int32_t i = 0; i < n; i++) {
        const double lp = ref_logp[i];
        if (lp < -80.0) continue; /* exp underflows: no mass, no contribution */
        kl += exp(lp) * (lp - ((double)logits[i] - lse));
    }
    return kl > 0.0 ? kl : 0.0; /* rounding can leave a tiny negative */
}

int32_t eval_argmax(const float *x, int32_t n, const bool *skip) {
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++)
        if (!(skip && skip[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best;
}

double eval_repetition(const int32_t *tok, int32_t n_tok, int32_t ngram) {
    const int32_t n = n_tok - ngram + 1;
    if (ngram < 1 || n < 1) return 0.0;
    /* Quadratic, but generations are at most a few thousand tokens and this
     * runs once per cell. */
    int32_t repeated = 0;
    for (int32_t i = 1; i < n; i++)
        for (int32_t j = 0; j < i; j++)
            if (!memcmp(tok + i, tok + j, (size_t)ngram * sizeof *tok)) {
                repeated++;
                break;
            }
    return (double)repeated / n;
}

static bool word_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_'; }

bool eval_contains_value(const char *text, const char *value) {
    const size_t n = strlen(value);
    if (!n) return false;
    for (const char *p = strstr(text, value); p; p = strstr(p + 1, value)) {
        const bool left = p == text || !word_char(p[-1]);
        const bool right = !word_char(p[n]);
        if (left && right) return true;
    }
    return false;
}

double eval_score_values(const char *text, const char (*values)[40], int32_t n_values) {
    if (n_values < 1) return 0.0;
    int32_t found = 0;
    for (int32_t i = 0; i < n_values; i++) found += eval_contains_value(text, values[i]);
    return (double)found / n_values;
}

/* Which methods select per query head unless told otherwise; mirrors each
 * policy's per_head_default (only the byte count depends on it). */
static bool selects_per_head(const char *method) {
    static const char *const per_head[] = {"oracle", "h2o", "snapkv", "quest", "sparq"};
    for (size_t i = 0; i < sizeof per_head / sizeof per_head[0]; i++)
        if (!strcmp(method, per_head[i])) return true;
    return false;
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
        double chunks = p->fc_union == 2 ? group * tip : tip;
        if (chunks > d / 2) chunks = d / 2;
        return T * 2.0 * chunks * sizeof(float) + gather; /* labels are f32 */
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

double eval_kv_bytes_per_token(const fasa_model_info *in, const fasa_attn_params *p, int32_t ctx, int32_t elem) {
    const double T = ctx, e = elem, d = in->head_dim;
    const double dense_head = 2.0 * T * d * e;
    const double kv_layer = (double)in->n_kv_heads;
    if (!p || !p->method || !strcmp(p->method, "full") || p->budget >= ctx) return in->n_layers * kv_layer * dense_head;
    const int32_t n_dense = count_dense_layers(p->dense_layers, p->method, in->n_layers);
    return kv_layer * (n_dense * dense_head + (in->n_layers - n_dense) * sparse_head_bytes(in, p, T, e));
}
