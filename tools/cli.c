#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fasa %s: error: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

void cli_warn_ctx(const char *cmd, const fasa_model *m, int64_t n_ctx) {
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    if (n_ctx <= info.n_ctx_train) return;
    fprintf(stderr,
            "fasa %s: warning: a context of %lld tokens is longer than the %d the model was trained on; "
            "positions past %d are untested and usually degrade the output\n",
            cmd, (long long)n_ctx, info.n_ctx_train, info.n_ctx_train);
}

bool cli_int(const char *cmd, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        cli_fail(cmd, "%s expects an integer in [%lld, %lld], got '%s'", opt, (long long)lo, (long long)hi, val);
        return false;
    }
    *out = v;
    return true;
}

bool cli_float(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < lo || v > hi) {
        cli_fail(cmd, "%s expects a number in [%g, %g], got '%s'", opt, lo, hi, val);
        return false;
    }
    *out = v;
    return true;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_fail(cmd, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        cli_fail(cmd, "'%s' is not a regular file", path);
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        cli_fail(cmd, "'%s': cannot allocate %lld bytes", path, (long long)st.st_size);
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        cli_fail(cmd, "error reading '%s'", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

fasa_model *cli_load_model(const char *cmd, const char *path) {
    const char *p = path ? path : CLI_DEFAULT_MODEL;
    if (!path && access(p, R_OK) != 0) {
        cli_fail(cmd, "default model '%s' not found: run scripts/fetch-model.sh (or `make model`) "
                      "from the repository root, or pass -m MODEL.gguf", p);
        return NULL;
    }
    fasa_model *m;
    if (fasa_model_load(p, &m) != FASA_OK) {
        cli_fail(cmd, "%s", fasa_last_error());
        return NULL;
    }
    return m;
}

bool cli_kv_type(const char *cmd, const char *val, fasa_kv_type *out) {
    if (!strcmp(val, "f32")) *out = FASA_KV_F32;
    else if (!strcmp(val, "f16")) *out = FASA_KV_F16;
    else {
        cli_fail(cmd, "--kv-type expects f32 or f16, got '%s'", val);
        return false;
    }
    return true;
}

int32_t *cli_tokenize(const char *cmd, const fasa_model *m, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *n_out) {
    /* A token covers at least one byte, plus an optional BOS. */
    if (len > (size_t)INT32_MAX - 2) {
        cli_fail(cmd, "input of %zu bytes is too large", len);
        return NULL;
    }
    const int32_t cap = (int32_t)len + 2;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) {
        cli_fail(cmd, "cannot allocate a token buffer for %zu bytes of text", len);
        return NULL;
    }
    if (fasa_tokenize(m, text, len, add_bos, parse_special, ids, cap, n_out) != FASA_OK) {
        cli_fail(cmd, "tokenizing: %s", fasa_last_error());
        free(ids);
        return NULL;
    }
    return ids;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total) {
    const double now = cli_now();
    *p = (cli_progress){label, unit, total, now, now, isatty(STDERR_FILENO) != 0};
}

/* Into a log (stderr not a terminal), long jobs report a line every this
 * many seconds, so that a run in the background shows where it is; short
 * ones stay silent. */
#define CLI_PROGRESS_LOG_S 60.0

void cli_progress_update(cli_progress *p, int64_t done) {
    const double now = cli_now(), dt = now - p->start;
    const bool skip = p->tty ? now - p->last_draw < 0.2 && done < p->total
                             : now - p->last_draw < CLI_PROGRESS_LOG_S || done >= p->total;
    if (skip) return;
    p->last_draw = now;
    const double rate = dt > 0 ? (double)done / dt : 0.0;
    const double eta = rate > 0 ? (double)(p->total - done) / rate : 0.0;
    fprintf(stderr, "%s%s %lld/%lld %s  %.1f %s/s  ETA %.0fs%s", p->tty ? "\r" : "", p->label, (long long)done,
            (long long)p->total, p->unit, rate, p->unit, eta, p->tty ? "   " : "\n");
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->tty) fprintf(stderr, "\r\033[K");
}
