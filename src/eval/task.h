/* The evaluation tasks. Each runs the grid's configurations over its
 * samples, appends one result line per cell and skips cells the results
 * file already holds. What each measures is described in docs/eval.md.
 *   ppl     dense prefill of P tokens, then D tokens decoded one by one
 *           under the method: perplexity of those D tokens
 *   needle  retrieval (needle.h): the question decoded through the method,
 *           the answer generated greedily, exact match of the value(s)
 *   gen     greedy generation under full; each method teacher-forced on it
 *           (agreement of argmax, KL) and free-running (repetition)
 *   ca      contextual agreement of each method's selection (fasa/ca.h)
 *   qa      a question about a given document, answered under each method */
#ifndef FASA_EVAL_TASK_H
#define FASA_EVAL_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "eval/corpus.h"
#include "eval/grid.h"
#include "eval/needle.h"
#include "eval/results.h"
#include "fasa.h"

typedef struct eval_progress {
    int64_t done;      /* cells measured in this run */
    int64_t todo;      /* cells this run has to measure (the rest were in the file) */
    int64_t total;     /* cells in the grid */
    double elapsed;    /* seconds since the task started */
    bool cell;         /* a cell was just measured (else `line` is a note) */
    const char *line;  /* what was measured or is starting */
} eval_progress;

typedef struct eval_env {
    fasa_model *model;
    const eval_grid *grid;
    eval_results *results;
    const eval_corpus *corpus; /* passages and haystacks */
    int32_t n_threads;
    fasa_kv_type kv_type;
    bool f32_activations;      /* fasa_context_params.f32_activations */
    uint64_t seed;
    int32_t n_samples;
    const int32_t *ctxs;       /* ppl: prefill P; needle: prompt length; gen: prompt (book); ca: context */
    int32_t n_ctxs;
    int32_t decode;            /* ppl: D tokens scored; gen: tokens generated; ca: steps measured */
    /* needle */
    const needle_kind *kinds;
    int32_t n_kinds;
    const double *depths;
    int32_t n_depths;
    bool filler;               /* synthetic filler haystack instead of book text */
    bool chat;                 /* needle, gen and qa prompts in the chat template */
    /* qa */
    const char *qa_doc;        /* document file */
    const char *qa_question;
    const char *const *qa_expect; /* strings a right answer holds */
    int32_t n_qa_expect;
    /* progress: called for notes and after every cell (may be NULL) */
    void (*progress)(void *user, const eval_progress *p);
    void *user;
} eval_env;

fasa_status eval_run_ppl(const eval_env *e);
fasa_status eval_run_needle(const eval_env *e);
fasa_status eval_run_gen(const eval_env *e);
fasa_status eval_run_ca(const eval_env *e);
fasa_status eval_run_qa(const eval_env *e);

/* ---- shared by the task files ---- */

typedef struct eval_tracker {
    const eval_env *env;
    eval_progress p;
    double t0;
} eval_tracker;

void eval_tracker_start(eval_tracker *t, const eval_env *e, int64_t total);
/* Counts a cell that the file already holds, or that this run will measure. */
void eval_tracker_plan(eval_tracker *t, bool present);
void eval_tracker_note(eval_tracker *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void eval_tracker_cell(eval_tracker *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

double eval_seconds(void);
/* The model's name for result lines. */
const char *eval_model_name(const fasa_model *m, char *buf, int32_t cap);
/* Checks every configuration on an empty context of the session. */
struct eval_session;
fasa_status eval_check_grid(struct eval_session *s, const eval_grid *g);
/* KV (and label) bytes one decode step reads at ctx cached tokens under p,
 * for the result lines (attn_step_bytes with the env's model and KV
 * element size). */
double eval_step_bytes(const eval_env *e, const fasa_attn_params *p, int32_t ctx);
/* The greatest of a list. */
int32_t eval_max_int(const int32_t *v, int32_t n);

#endif
