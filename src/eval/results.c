#include "eval/results.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

struct eval_results {
    char *path;
    FILE *f;       /* opened for appending */
    char **keys;   /* cells present; a linear scan is plenty for a few thousand */
    int32_t n, cap;
    int32_t bad;
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

/* A line cut short by a killed run must not swallow the next one. */
static void end_last_line(FILE *f) {
    if (fseek(f, 0, SEEK_END) != 0 || ftell(f) <= 0) return;
    if (fseek(f, -1, SEEK_END) == 0 && fgetc(f) != '\n') {
        fseek(f, 0, SEEK_END);
        fputc('\n', f);
        fflush(f);
    }
    fseek(f, 0, SEEK_END);
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
    const size_t n = strlen(dir) + sizeof "/results.jsonl";
    fasa_status st = FASA_OK;
    if (!(r->path = fasa_malloc(n, 1, "results path"))) {
        st = FASA_E_NOMEM;
        goto fail;
    }
    snprintf(r->path, n, "%s/results.jsonl", dir);
    if (!(r->f = fopen(r->path, "a+b"))) {
        st = fasa_error(FASA_E_IO, "cannot open results file '%s' for writing: %s", r->path, strerror(errno));
        goto fail;
    }
    int32_t bad = 0;
    if ((st = for_each_line(r->path, index_line, r, &bad))) goto fail;
    r->bad += bad;
    end_last_line(r->f);
    *out = r;
    return FASA_OK;
fail:
    eval_results_close(r);
    return st;
}

void eval_results_close(eval_results *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
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
const char *eval_results_path(const eval_results *r) { return r->path; }

fasa_status eval_results_write(eval_results *r, const char *cell, cJSON *obj) {
    fasa_status st = FASA_OK;
    char *line = NULL;
    if (!cJSON_AddStringToObject(obj, "cell", cell) || !(line = cJSON_PrintUnformatted(obj))) {
        st = fasa_error(FASA_E_NOMEM, "out of memory formatting a result line");
        goto done;
    }
    if (fprintf(r->f, "%s\n", line) < 0 || fflush(r->f) != 0) {
        st = fasa_error(FASA_E_IO, "cannot write to '%s': %s", r->path, strerror(errno));
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
