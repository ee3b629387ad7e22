#include "eval/results.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

struct eval_results {
    char *path;
    int fd;        /* opened for appending; -1 when closed */
    char **keys;   /* cells present; a linear scan is plenty for a few thousand */
    int32_t n, cap;
    int32_t bad;
    bool dropped;  /* a partial last line was cut off at open */
};

static fasa_status add_key(eval_results *r, const char *key) {
    if (r->n == r->cap) {
        const int32_t nc = r->cap ? 2 * r->cap : 256;
        char **k = realloc(r->keys, (size_t)nc * sizeof *k);
        if (!k) return fasa_error(FASA_E_NOMEM, "out of memory for the results index");
        r->keys = k;
        r->cap = nc;
    }
    if (!(r->keys[r->n] = strdup(key))) return fasa_error(FASA_E_NOMEM, "out of memory for the results index");
    r->n++;
    return FASA_OK;
}

/* Calls fn on every line of the file that parses as a JSON object. */
static fasa_status for_each_line(const char *path, fasa_status (*fn)(void *user, cJSON *obj), void *user,
                                 int32_t *bad) {
    FILE *f = fopen(path, "rb");
    if (!f) return fasa_error(FASA_E_IO, "cannot open results file '%s': %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    fasa_status st = FASA_OK;
    *bad = 0;
    while (!st && (len = getline(&line, &cap, f)) >= 0) {
        if (len == 0 || (len == 1 && line[0] == '\n')) continue;
        cJSON *obj = cJSON_Parse(line);
        if (!cJSON_IsObject(obj)) {
            (*bad)++;
            cJSON_Delete(obj);
            continue;
        }
        st = fn(user, obj);
    }
    free(line);
    fclose(f);
    return st;
}

static fasa_status index_line(void *user, cJSON *obj) {
    eval_results *r = user;
    const cJSON *cell = cJSON_GetObjectItemCaseSensitive(obj, "cell");
    fasa_status st = FASA_OK;
    if (cJSON_IsString(cell)) st = add_key(r, cell->valuestring);
    else r->bad++;
    cJSON_Delete(obj);
    return st;
}

/* A run killed in the middle of a write leaves a last line without its
 * newline (each line is one write(2), so that takes a failed write, but a
 * copy or an older version may leave one too): cut it off, so the cell is
 * measured again and the file holds whole lines only. */
static fasa_status drop_partial_tail(eval_results *r) {
    struct stat sb;
    if (fstat(r->fd, &sb) != 0) return fasa_error(FASA_E_IO, "cannot stat '%s': %s", r->path, strerror(errno));
    off_t end = sb.st_size;
    char buf[4096];
    while (end > 0) {
        const off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        const ssize_t n = pread(r->fd, buf, (size_t)(end - start), start);
        if (n != end - start) return fasa_error(FASA_E_IO, "cannot read '%s': %s", r->path, strerror(errno));
        ssize_t i = n - 1;
        while (i >= 0 && buf[i] != '\n') i--;
        if (i >= 0) {
            end = start + i + 1;
            break;
        }
        end = start;
    }
    if (end == sb.st_size) return FASA_OK;
    if (ftruncate(r->fd, end) != 0)
        return fasa_error(FASA_E_IO, "cannot cut the partial last line of '%s': %s", r->path, strerror(errno));
    r->dropped = true;
    return FASA_OK;
}

/* mkdir -p: the folder and any missing parents. */
static fasa_status make_dirs(const char *dir) {
    char path[4096];
    const size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return fasa_error(FASA_E_ARG, "results folder name is empty or too long");
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        const char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return fasa_error(FASA_E_IO, "cannot create results folder '%s': %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return fasa_error(FASA_E_IO, "results folder '%s' exists but is not a folder", dir);
    return FASA_OK;
}

fasa_status eval_results_open(const char *dir, eval_results **out) {
    *out = NULL;
    fasa_status st0 = make_dirs(dir);
    if (st0) return st0;
    eval_results *r = fasa_calloc(1, sizeof *r, "results");
    if (!r) return FASA_E_NOMEM;
    r->fd = -1;
    const size_t n = strlen(dir) + sizeof "/results.jsonl";
    fasa_status st = FASA_OK;
    if (!(r->path = fasa_malloc(n, 1, "results path"))) {
        st = FASA_E_NOMEM;
        goto fail;
    }
    snprintf(r->path, n, "%s/results.jsonl", dir);
    if ((r->fd = open(r->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0666)) < 0) {
        st = fasa_error(FASA_E_IO, "cannot open results file '%s' for writing: %s", r->path, strerror(errno));
        goto fail;
    }
    int32_t bad = 0;
    if ((st = drop_partial_tail(r)) || (st = for_each_line(r->path, index_line, r, &bad))) goto fail;
    r->bad += bad;
    *out = r;
    return FASA_OK;
fail:
    eval_results_close(r);
    return st;
}

void eval_results_close(eval_results *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    for (int32_t i = 0; i < r->n; i++) free(r->keys[i]);
    free(r->keys);
    free(r->path);
    free(r);
}

bool eval_results_has(const eval_results *r, const char *cell) {
    for (int32_t i = r->n - 1; i >= 0; i--)
        if (!strcmp(r->keys[i], cell)) return true;
    return false;
}

int32_t eval_results_count(const eval_results *r) { return r->n; }
int32_t eval_results_bad_lines(const eval_results *r) { return r->bad; }
bool eval_results_dropped_partial(const eval_results *r) { return r->dropped; }
const char *eval_results_path(const eval_results *r) { return r->path; }

fasa_status eval_results_write(eval_results *r, const char *cell, cJSON *obj) {
    fasa_status st = FASA_OK;
    char *line = NULL;
    if (!cJSON_AddStringToObject(obj, "cell", cell) || !(line = cJSON_PrintUnformatted(obj))) {
        st = fasa_error(FASA_E_NOMEM, "out of memory formatting a result line");
        goto done;
    }
    /* One write(2) of the whole line: a kill lands before or after it. */
    const size_t n = strlen(line);
    line[n] = '\n'; /* over the terminator; the length is kept in n + 1 */
    const ssize_t w = write(r->fd, line, n + 1);
    if (w != (ssize_t)(n + 1)) {
        /* A short write (disk full) leaves a partial line: take it back. */
        const int err = w < 0 ? errno : ENOSPC;
        if (w > 0) {
            struct stat sb;
            if (fstat(r->fd, &sb) == 0 && ftruncate(r->fd, sb.st_size - w) != 0) r->bad++;
        }
        st = fasa_error(FASA_E_IO, "cannot write to '%s': %s", r->path, strerror(err));
        goto done;
    }
    st = add_key(r, cell);
done:
    free(line);
    cJSON_Delete(obj);
    return st;
}

void eval_cell_key(const eval_cell *c, char *buf, int32_t cap) {
    char opts[160];
    eval_config_options(&c->cfg->p, opts, sizeof opts);
    snprintf(buf, (size_t)cap, "%s|%s|%s|b%d|tip%d|ctx%d|s%d|seed%llu|%s|%s", c->task, c->model ? c->model : "",
             c->cfg->label, c->cfg->p.budget, c->cfg->p.n_tip, c->ctx, c->sample, (unsigned long long)c->seed,
             c->variant ? c->variant : "", opts);
}

cJSON *eval_cell_json(const eval_cell *c) {
    cJSON *o = cJSON_CreateObject();
    char opts[160];
    eval_config_options(&c->cfg->p, opts, sizeof opts);
    if (!o || !cJSON_AddStringToObject(o, "task", c->task) ||
        !cJSON_AddStringToObject(o, "method", c->cfg->p.method ? c->cfg->p.method : "full") ||
        !cJSON_AddStringToObject(o, "label", c->cfg->label) ||
        !cJSON_AddNumberToObject(o, "budget", c->cfg->p.budget) ||
        !cJSON_AddNumberToObject(o, "n_tip", c->cfg->p.n_tip) || !cJSON_AddNumberToObject(o, "ctx", c->ctx) ||
        !cJSON_AddNumberToObject(o, "sample", c->sample) ||
        !cJSON_AddNumberToObject(o, "seed", (double)c->seed) ||
        !cJSON_AddStringToObject(o, "model", c->model ? c->model : "") ||
        !cJSON_AddStringToObject(o, "options", opts)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

typedef struct reader {
    cJSON *array;
} reader;

static fasa_status collect_line(void *user, cJSON *obj) {
    cJSON_AddItemToArray(((reader *)user)->array, obj);
    return FASA_OK;
}

fasa_status eval_results_read(const char *path, cJSON **array, int32_t *bad_lines) {
    reader rd = {cJSON_CreateArray()};
    if (!rd.array) return fasa_error(FASA_E_NOMEM, "out of memory reading '%s'", path);
    fasa_status st = for_each_line(path, collect_line, &rd, bad_lines);
    if (st) {
        cJSON_Delete(rd.array);
        return st;
    }
    *array = rd.array;
    return FASA_OK;
}
