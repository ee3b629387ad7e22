/* Shared pieces of the command-line tool: argument parsing helpers, model
 * loading with user-facing errors, timing and progress display. */
#ifndef FASA_CLI_H
#define FASA_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"

#define CLI_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* Each command's entry point; argv[0] is the command name. Returns the exit code. */
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_ca(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_synth(int argc, char **argv);

/* Prints "fasa CMD: error: ..." to stderr and returns 1 (for `return cli_fail(...)`). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Warns on stderr when a requested context is longer than the model's training context. */
void cli_warn_ctx(const char *cmd, const fasa_model *m, int64_t n_ctx);

/* Strict number parsing for option values: the whole string must be a number
 * inside [lo, hi]; otherwise an error naming the option is printed. */

bool cli_int(const char *cmd, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out);
bool cli_float(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out);

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
char *cli_read_file(const char *cmd, const char *path, size_t *len);

/* The model named by -m, or the default one, with an actionable message when absent. */
fasa_model *cli_load_model(const char *cmd, const char *path);

/* Parses "f32" / "f16". */
bool cli_kv_type(const char *cmd, const char *val, fasa_kv_type *out);

/* Tokenizes text into a malloc'd array. */
int32_t *cli_tokenize(const char *cmd, const fasa_model *m, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *n_out);

double cli_now(void);

/* Progress on stderr, "label  done/total  rate unit/s  ETA": one line
 * redrawn when stderr is a terminal, else (a log) a line a minute. */
typedef struct cli_progress {
    const char *label;
    const char *unit;
    int64_t total;
    double start;
    double last_draw;
    bool tty; /* stderr is a terminal: one line redrawn; else a line every CLI_PROGRESS_LOG_S */
} cli_progress;

void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total);
void cli_progress_update(cli_progress *p, int64_t done);
void cli_progress_end(cli_progress *p);

#endif

/* ---- attention policy options, shared by generate, perplexity and eval ---- */

typedef struct cli_attn {
    fasa_attn_params p;
    fasa_device device; /* --device: where the model runs */
    bool f32_act;       /* --f32-act: f32 activations in the CPU's decode products */
    const char *calib_path;
    fasa_calib *calib; /* loaded by cli_attn_apply */
} cli_attn;

/* getopt_long codes of the shared options start here. */
enum { CLI_ATTN_BASE = 1000 };

#define CLI_ATTN_OPTIONS                                                                        \
    {"attn", required_argument, 0, CLI_ATTN_BASE + 0},                                          \
        {"budget", required_argument, 0, CLI_ATTN_BASE + 1},                                    \
        {"fc", required_argument, 0, CLI_ATTN_BASE + 2},                                        \
        {"calib", required_argument, 0, CLI_ATTN_BASE + 3},                                     \
        {"dense-layers", required_argument, 0, CLI_ATTN_BASE + 4},                              \
        {"select", required_argument, 0, CLI_ATTN_BASE + 5},                                    \
        {"fc-choice", required_argument, 0, CLI_ATTN_BASE + 6},                                 \
        {"sinks", required_argument, 0, CLI_ATTN_BASE + 7},                                     \
        {"recent", required_argument, 0, CLI_ATTN_BASE + 8},                                    \
        {"window", required_argument, 0, CLI_ATTN_BASE + 9},                                    \
        {"pool", required_argument, 0, CLI_ATTN_BASE + 10},                                    \
        {"refresh", required_argument, 0, CLI_ATTN_BASE + 11},                                  \
        {"page", required_argument, 0, CLI_ATTN_BASE + 12},                                     \
        {"sparq-r", required_argument, 0, CLI_ATTN_BASE + 13},                                  \
        {"attn-seed", required_argument, 0, CLI_ATTN_BASE + 14},                                \
        {"device", required_argument, 0, CLI_ATTN_BASE + 15},                                   \
        {"f32-act", no_argument, 0, CLI_ATTN_BASE + 16},                                        \
        {"labels", required_argument, 0, CLI_ATTN_BASE + 17}

void cli_attn_init(cli_attn *a);
/* Handles one shared option; false after printing an error. */
bool cli_attn_option(const char *cmd, int code, const char *val, cli_attn *a);
void cli_attn_help(void);
/* Loads the calibration if one is needed or given, and installs the policy. */
bool cli_attn_apply(const char *cmd, const fasa_model *m, fasa_context *c, cli_attn *a);
bool cli_attn_is_sparse(const cli_attn *a);
/* "cpu", "cuda" or "cuda-m", as --device spells it. */
const char *cli_device_name(fasa_device d);
/* For commands that run on the CPU only: false, with an error, for any other --device. */
bool cli_attn_cpu_only(const char *cmd, const cli_attn *a);
void cli_attn_free(cli_attn *a);
