/* Retrieval tasks generated locally: a haystack of filler text with one or
 * more "needles" (short statements holding a value) spliced in, followed by
 * a question about them. Kinds, after the passkey test and RULER:
 *   passkey     "The pass key is 68213. ..."              answer: 68213
 *   number      one key with a 7-digit value               answer: the value
 *   uuid        one key with a UUID value                  answer: the UUID
 *   multikey    the asked key among 3 distractor keys      answer: its value
 *   multivalue  one key given 4 different values           answer: all 4 (scored by fraction)
 *   vartrack    a chain VAR A = v, VAR B = VAR A, ...      answer: all 5 names (fraction)
 * The prompt is split in two: the prefix (instruction and haystack), which
 * the evaluation prefills densely, and the question, which it decodes token
 * by token through the method under test before generating the answer. */
#ifndef FASA_EVAL_NEEDLE_H
#define FASA_EVAL_NEEDLE_H

#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"

typedef enum needle_kind {
    NEEDLE_PASSKEY,
    NEEDLE_NUMBER,
    NEEDLE_UUID,
    NEEDLE_MULTIKEY,
    NEEDLE_MULTIVALUE,
    NEEDLE_VARTRACK,
    NEEDLE_N_KINDS
} needle_kind;

const char *needle_kind_name(needle_kind k);
/* Parses a kind name; false for an unknown one. */
bool needle_kind_parse(const char *s, size_t len, needle_kind *out);

enum { NEEDLE_MAX_VALUES = 8 };

typedef struct needle_spec {
    needle_kind kind;
    int32_t length; /* tokens of the prefix (instruction + haystack + needles) */
    double depth;   /* where the first needle goes, as a fraction of the haystack */
    uint64_t seed;  /* values, keys and distractor positions */
    bool chat;      /* wrap the prompt in the model's chat template */
} needle_spec;

typedef struct needle_case {
    int32_t *tokens;   /* the prefix: prefilled densely */
    int32_t n_tokens;  /* == spec.length */
    int32_t *question; /* decoded one token at a time, ends where the answer begins */
    int32_t n_question;
    int32_t hay_start; /* index in tokens where the haystack begins */
    int32_t n_fill;    /* haystack tokens, not counting the needles */
    int32_t needle_pos;        /* index in tokens where the first needle begins */
    char needle_text[160];     /* the first needle as spliced in */
    char values[NEEDLE_MAX_VALUES][40]; /* what a correct answer contains */
    int32_t n_values;
    int32_t max_answer;        /* tokens to generate for the answer */
} needle_case;

/* Builds a case from filler tokens hay[0..n_hay) (at least spec.length of
 * them; only the needed ones are used). Fails when the length cannot hold
 * the instruction and the needles. */
fasa_status needle_make(const fasa_model *m, const needle_spec *spec, const int32_t *hay, int32_t n_hay,
                        needle_case *out);
void needle_case_free(needle_case *c);

/* Synthetic filler: a few plain sentences repeated, n tokens. */
fasa_status needle_filler(const fasa_model *m, int32_t n, int32_t *tokens);

#endif
