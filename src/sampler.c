/* Token sampling: greedy, or temperature with optional top-k and top-p
 * (nucleus) truncation, from a seeded generator so runs are reproducible. */
#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "sampler.h"


fasa_sampler_params fasa_sampler_default_params(void) {
    return (fasa_sampler_params){.temp = 0.0f, .top_p = 1.0f, .top_k = 0, .seed = 42};
}

fasa_status fasa_sampler_init(const fasa_sampler_params *p, int32_t n_vocab, fasa_sampler **out) {
    *out = NULL;
    if (n_vocab <= 0) return fasa_error(FASA_E_ARG, "sampler: vocabulary size %d", n_vocab);
    if (!(p->temp >= 0.0f) || !isfinite(p->temp))
        return fasa_error(FASA_E_ARG, "temperature must be a finite number >= 0, got %g", p->temp);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return fasa_error(FASA_E_ARG, "top-p must be in (0, 1], got %g", p->top_p);
    if (p->top_k < 0) return fasa_error(FASA_E_ARG, "top-k must be >= 0, got %d", p->top_k);
    fasa_sampler *s = fasa_calloc(1, sizeof *s, "sampler");
    if (!s) return FASA_E_NOMEM;
    s->cand = fasa_malloc((size_t)n_vocab, sizeof *s->cand, "sampler candidates");
    s->prob = s->cand ? fasa_malloc((size_t)n_vocab, sizeof *s->prob, "sampler candidates") : NULL;
    if (!s->prob) {
        fasa_sampler_free(s);
        return FASA_E_NOMEM;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->state = p->seed ^ 0x9E3779B97F4A7C15ull;
    *out = s;
    return FASA_OK;
}

void fasa_sampler_free(fasa_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s);
}

/* splitmix64: small, fast, and good enough for sampling. */
static double next_uniform(fasa_sampler *s) {
    uint64_t z = (s->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static int cmp_cand_desc(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

int32_t fasa_sampler_sample(fasa_sampler *s, const float *logits) {
    const int32_t n = s->n_vocab;
    if (s->p.temp == 0.0f) return argmax(logits, n);
    for (int32_t i = 0; i < n; i++) s->cand[i] = (struct cand){logits[i], i};
    qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_cand_desc);
    int32_t keep = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    /* Softmax over the kept candidates, then cut the nucleus. */
    double total = 0.0;
    const double mx = s->cand[0].logit;
    double *prob = s->prob;
    for (int32_t i = 0; i < keep; i++) total += prob[i] = exp((s->cand[i].logit - mx) / s->p.temp);
    double cum = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; i++) {
        cum += prob[i] / total;
        if (cum >= s->p.top_p) {
            cut = i + 1;
            break;
        }
    }
    double mass = 0.0;
    for (int32_t i = 0; i < cut; i++) mass += prob[i];
    double r = next_uniform(s) * mass;
    int32_t pick = cut - 1;
    for (int32_t i = 0; i < cut; i++) {
        r -= prob[i];
        if (r < 0.0) {
            pick = i;
            break;
        }
    }
    return s->cand[pick].id;
}
