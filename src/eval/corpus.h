/* Evaluation texts and the passages drawn from them. Sample s of a task
 * reads document s mod n (so that consecutive samples come from different
 * books) at an offset chosen by the seed; the same (sample, seed) always
 * gives the same passage. Only the bytes a passage needs are tokenized. */
#ifndef FASA_EVAL_CORPUS_H
#define FASA_EVAL_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fasa.h"

typedef struct eval_doc {
    char name[64]; /* file name without folder and extension */
    char *text;
    size_t len;
} eval_doc;

typedef struct eval_corpus {
    eval_doc *docs;
    int32_t n_docs;
} eval_corpus;

fasa_status eval_corpus_load(const char *const *paths, int32_t n_paths, eval_corpus *out);
void eval_corpus_free(eval_corpus *c);

/* Writes exactly n tokens of sample s's passage to tokens (a BOS first when
 * bos), starting at a line boundary. Fails when the document is too short. */
fasa_status eval_corpus_passage(const eval_corpus *c, const fasa_model *m, int32_t sample, uint64_t seed,
                                int32_t n, bool bos, int32_t *tokens);
/* The document sample s reads. */
const char *eval_corpus_doc_name(const eval_corpus *c, int32_t sample);

/* splitmix64: a tiny, well-mixed generator, so that generated tasks do not
 * depend on the C library's rand(). */
static inline uint64_t eval_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Uniform in [0, 1). */
static inline double eval_rng_unit(uint64_t *state) { return (double)(eval_rng_next(state) >> 11) * 0x1.0p-53; }

#endif
