/* Scoring functions shared by the tasks: next-token statistics, answer
 * matching and repetition. */
#ifndef FASA_EVAL_SCORE_H
#define FASA_EVAL_SCORE_H

#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"

/* -log p(target) under softmax(logits), in double. */
double eval_token_nll(const float *logits, int32_t n, int32_t target);
/* log-softmax of logits into out. */
void eval_log_softmax(const float *logits, int32_t n, float *out);
/* KL(ref || q) in nats, ref given as log-probabilities, q as logits. */
double eval_kl(const float *ref_logp, const float *logits, int32_t n);
/* Index of the largest entry; entries with skip[i] set are passed over
 * (skip may be NULL). Ties go to the lower index. */
int32_t eval_argmax(const float *x, int32_t n, const bool *skip);

/* Fraction of the n-grams of tok that already occurred earlier in tok
 * (0 for no repetition, near 1 for a loop); 0 when there are none. */
double eval_repetition(const int32_t *tok, int32_t n_tok, int32_t ngram);

/* Whether value occurs in text as a whole word: the characters around it
 * are not letters, digits, '-' or '_' (so "1234" is not found in "12345"). */
bool eval_contains_value(const char *text, const char *value);
/* Fraction of the values that text contains. */
double eval_score_values(const char *text, const char (*values)[40], int32_t n_values);

#endif
