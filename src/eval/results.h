/* The results file of an evaluation: DIR/results.jsonl, one JSON object per
 * measured cell, appended and flushed as soon as the cell is done, so that an
 * interrupted run loses at most the cell in progress. Every line carries a
 * "cell" key naming everything that defines the measurement; a rerun skips
 * the cells whose key is already in the file. */
#ifndef FASA_EVAL_RESULTS_H
#define FASA_EVAL_RESULTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "eval/grid.h"
#include "fasa.h"

typedef struct eval_results eval_results;

/* Opens (creating DIR and the file when missing) and reads the keys of the
 * cells already measured. A last line without its newline (a write cut
 * short) is removed from the file; other lines that do not parse are
 * counted and skipped. */
fasa_status eval_results_open(const char *dir, eval_results **out);
void eval_results_close(eval_results *r);
bool eval_results_has(const eval_results *r, const char *cell);
int32_t eval_results_count(const eval_results *r);
int32_t eval_results_bad_lines(const eval_results *r);
/* Whether open removed a partial last line. */
bool eval_results_dropped_partial(const eval_results *r);
const char *eval_results_path(const eval_results *r);

/* Appends obj as one line with its "cell" key added, in a single write(2),
 * so that a killed run leaves whole lines only. Frees obj. */
fasa_status eval_results_write(eval_results *r, const char *cell, cJSON *obj);

/* What identifies one measured cell. `variant` holds the task's own
 * coordinates ("D=512", "kind=passkey;depth=0.50"). */
typedef struct eval_cell {
    const char *task;
    const eval_config *cfg;
    const char *model;   /* model name, so that one folder can hold several */
    int32_t ctx;         /* context length the cell is measured at */
    int32_t sample;
    uint64_t seed;
    const char *variant;
} eval_cell;

/* The cell's key: every field above plus the config's non-default options. */
void eval_cell_key(const eval_cell *c, char *buf, int32_t cap);
/* A JSON object with the cell's common fields (task, method, label, budget,
 * n_tip, ctx, sample, seed, model, options), for the task to complete. */
cJSON *eval_cell_json(const eval_cell *c);

/* Reads every parseable line of a results file into a JSON array. */
fasa_status eval_results_read(const char *path, cJSON **array, int32_t *bad_lines);

#endif
