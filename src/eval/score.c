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
