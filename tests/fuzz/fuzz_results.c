/* libFuzzer target for the results file an evaluation resumes from
 * (DIR/results.jsonl, read by eval_results_open and eval_results_read).
 * The input is written as the file of a scratch folder, then:
 *   - opening it must succeed whatever it holds (a damaged line is skipped
 *     and counted, never an error) and change nothing but a partial last
 *     line, which it removes;
 *   - every line of the file is either indexed (an object with a string
 *     "cell") or counted as bad: indexed + bad = the number of lines that
 *     are not empty;
 *   - eval_results_read sees the same lines: objects + bad = that number,
 *     and the index holds exactly the string "cell" values of the objects;
 *   - a cell written after that is found on the next open, with one more
 *     cell and the same bad lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "eval/results.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NEW_CELL "fuzz|new cell"

static char dir[4096], path[4200];

static void die(const char *what) {
    fprintf(stderr, "fuzz_results: %s\n", what);
    abort();
}

static void remove_dir(void) {
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fuzz_results_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) die("cannot make a scratch folder (set TMPDIR)");
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    atexit(remove_dir);
    return 0;
}

static void write_file(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) die("cannot write the scratch results file");
}

/* After open, the file must be the input up to its last newline: only a
 * partial last line (a write cut short) is removed. Returns the number of
 * lines that are not empty. */
static int32_t check_lines_kept(const uint8_t *data, size_t size) {
    size_t keep = size;
    while (keep > 0 && data[keep - 1] != '\n') keep--;
    FILE *f = fopen(path, "rb");
    if (!f) die("the results file is gone");
    uint8_t *text = malloc(keep + 1);
    if (!text) die("out of memory");
    const size_t got = fread(text, 1, keep + 1, f);
    fclose(f);
    if (got != keep || memcmp(text, data, keep)) die("open changed more than a partial last line");
    free(text);
    int32_t n = 0;
    for (size_t i = 0; i < keep; i++) n += data[i] == '\n' && i > 0 && data[i - 1] != '\n';
    return n;
}

static eval_results *open_results(void) {
    eval_results *r = NULL;
    if (eval_results_open(dir, &r) != FASA_OK || !r) {
        fprintf(stderr, "%s\n", fasa_last_error());
        die("opening a results file must not fail on its contents");
    }
    return r;
}

/* The index against eval_results_read: the same lines, the same cells. */
static void check_read(const eval_results *r, int32_t n_lines) {
    cJSON *arr = NULL;
    int32_t bad = -1;
    if (eval_results_read(path, &arr, &bad) != FASA_OK) die(fasa_last_error());
    if (cJSON_GetArraySize(arr) + bad != n_lines) die("eval_results_read lost or added a line");
    int32_t cells = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) {
        const cJSON *cell = cJSON_GetObjectItemCaseSensitive(o, "cell");
        if (!cJSON_IsObject(o)) die("eval_results_read returned something other than an object");
        if (!cJSON_IsString(cell)) continue;
        cells++;
        if (!eval_results_has(r, cell->valuestring)) die("a cell of the file is missing from the index");
    }
    if (cells != eval_results_count(r)) die("the index and eval_results_read disagree on the cells");
    cJSON_Delete(arr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(data, size);
    eval_results *r = open_results();
    const int32_t n_lines = check_lines_kept(data, size);
    if (eval_results_count(r) + eval_results_bad_lines(r) != n_lines) die("the index lost or added a line");
    check_read(r, n_lines);
    const int32_t n_cells = eval_results_count(r), n_bad = eval_results_bad_lines(r);
    cJSON *o = cJSON_CreateObject();
    if (!o || eval_results_write(r, NEW_CELL, o) != FASA_OK) die(fasa_last_error());
    eval_results_close(r);
    r = open_results();
    if (eval_results_count(r) != n_cells + 1 || eval_results_bad_lines(r) != n_bad || !eval_results_has(r, NEW_CELL))
        die("a cell written after the input is not found on the next open");
    eval_results_close(r);
    unlink(path);
    return 0;
}
