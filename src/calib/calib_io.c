/* Calibration files: JSON, written and read with cJSON.
 *
 *   {"format": "fasa-calibration", "version": 2,
 *    "model": {"arch", "n_layers", "n_heads", "n_kv_heads", "head_dim",
 *              "rope_layout", "rope_base", "tensor_hash"},
 *    "settings": {"budget", "n_tokens", "n_decode", "greedy"},
 *    "heads": [{"layer", "head", "ranking": [fc, ...], "ca": [ca of fc 0, 1, ...]}, ...],
 *    "groups": [{"layer", "kv_head", "greedy": [fc, ...], "mass": [recall, ...]}, ...]}
 *
 * "groups" (one entry per layer and KV head, "greedy" FCs each, with the
 * compound attention-mass recall after each) is there when the calibration
 * ran greedy passes; version 1 files have neither it nor "settings.greedy".
 * The ranking is written for people reading the file; on load it is
 * recomputed from the CA values, which are the data. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kv.h"
#include "calib/calib.h"
#include "model.h"

#define CALIB_FORMAT "fasa-calibration"
#define CALIB_VERSION 2 /* 1: no greedy order; still read */

static const char *layout_name(fasa_rope_layout l) { return l == FASA_ROPE_INTERLEAVED ? "interleaved" : "half"; }

/* Appends {"layer": l, <head_key>: h, <ints_key>: ints[0..n), <vals_key>:
 * vals[0..n)} to arr; values in [0, 1], rounded to 6 digits (plenty for a
 * mean overlap or recall). */
static bool add_entry(cJSON *arr, int32_t l, const char *head_key, int32_t h, const char *ints_key,
                      const int32_t *ints, const char *vals_key, const double *vals, int32_t n) {
    cJSON *e = cJSON_CreateObject(), *a = cJSON_CreateArray(), *b = cJSON_CreateArray();
    if (!e || !a || !b) {
        cJSON_Delete(e), cJSON_Delete(a), cJSON_Delete(b);
        return false;
    }
    cJSON_AddItemToArray(arr, e);
    cJSON_AddNumberToObject(e, "layer", l);
    cJSON_AddNumberToObject(e, head_key, h);
    cJSON_AddItemToObject(e, ints_key, a);
    cJSON_AddItemToObject(e, vals_key, b);
    for (int32_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ints[i]));
        cJSON_AddItemToArray(b, cJSON_CreateNumber(round(vals[i] * 1e6) / 1e6));
    }
    return true;
}

static cJSON *build_json(const fasa_calib *c) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *set = cJSON_CreateObject();
    cJSON *heads = cJSON_CreateArray();
    if (!root || !model || !set || !heads) goto fail;
    char hash[32];
    snprintf(hash, sizeof hash, "%016" PRIx64, c->tensor_hash);
    cJSON_AddStringToObject(root, "format", CALIB_FORMAT);
    cJSON_AddNumberToObject(root, "version", CALIB_VERSION);
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddStringToObject(model, "arch", c->arch);
    cJSON_AddNumberToObject(model, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(model, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(model, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(model, "head_dim", c->head_dim);
    cJSON_AddStringToObject(model, "rope_layout", layout_name(c->rope_layout));
    cJSON_AddNumberToObject(model, "rope_base", c->rope_base);
    cJSON_AddStringToObject(model, "tensor_hash", hash);
    cJSON_AddItemToObject(root, "settings", set);
    cJSON_AddNumberToObject(set, "budget", c->budget);
    cJSON_AddNumberToObject(set, "n_tokens", c->n_tokens);
    cJSON_AddNumberToObject(set, "n_decode", c->n_decode);
    cJSON_AddNumberToObject(set, "greedy", c->n_greedy);
    cJSON_AddItemToObject(root, "heads", heads);
    const int32_t F = c->head_dim / 2;
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t h = 0; h < c->n_heads; h++) {
            const int64_t at = calib_at(c, l, h);
            if (!add_entry(heads, l, "head", h, "ranking", c->rank + at, "ca", c->ca + at, F)) goto fail_root;
        }
    if (c->n_greedy > 0) {
        cJSON *groups = cJSON_AddArrayToObject(root, "groups");
        if (!groups) goto fail_root;
        for (int32_t l = 0; l < c->n_layers; l++)
            for (int32_t h = 0; h < c->n_kv_heads; h++) {
                const int64_t at = calib_group_at(c, l, h);
                if (!add_entry(groups, l, "kv_head", h, "greedy", c->greedy + at, "mass", c->greedy_mass + at,
                               c->n_greedy))
                    goto fail_root;
            }
    }
    return root;
fail_root:
    cJSON_Delete(root);
    return NULL;
fail:
    cJSON_Delete(root);
    cJSON_Delete(model);
    cJSON_Delete(set);
    cJSON_Delete(heads);
    return NULL;
}

fasa_status fasa_calib_save(const fasa_calib *c, const char *path) {
    cJSON *root = build_json(c);
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return fasa_error(FASA_E_NOMEM, "out of memory writing calibration '%s'", path);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(text);
        return fasa_error(FASA_E_IO, "cannot create '%s': %s", path, strerror(errno));
    }
    const size_t len = strlen(text);
    const int bad = fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF;
    free(text);
    if (fclose(f) != 0 || bad) return fasa_error(FASA_E_IO, "error writing '%s'", path);
    return FASA_OK;
}

/* ---- loading ---------------------------------------------------------- */

typedef struct loader {
    const char *path;
    fasa_status st;
} loader;

static fasa_status bad(loader *L, const char *what) {
    if (L->st == FASA_OK) L->st = fasa_error(FASA_E_FORMAT, "calibration '%s': %s", L->path, what);
    return L->st;
}

static int32_t get_int(loader *L, const cJSON *obj, const char *key, int32_t lo, int32_t hi) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' must be an integer in [%d, %d]", key, lo, hi);
        bad(L, msg);
        return lo;
    }
    return (int32_t)v->valuedouble;
}

static const char *get_str(loader *L, const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v)) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' must be a string", key);
        bad(L, msg);
        return "";
    }
    return v->valuestring;
}

/* Checks the file's model block against the model it is loaded for. */
static void check_model(loader *L, const cJSON *model, const fasa_model_info *in) {
    const char *arch = get_str(L, model, "arch");
    const int32_t nl = get_int(L, model, "n_layers", 1, 4096), nh = get_int(L, model, "n_heads", 1, 4096);
    const int32_t nkv = get_int(L, model, "n_kv_heads", 1, 4096), hd = get_int(L, model, "head_dim", 2, 4096);
    const char *layout = get_str(L, model, "rope_layout"), *hash = get_str(L, model, "tensor_hash");
    if (L->st) return;
    char want[32], msg[400];
    snprintf(want, sizeof want, "%016" PRIx64, in->tensor_hash);
    if (strcmp(arch, in->arch) || nl != in->n_layers || nh != in->n_heads || nkv != in->n_kv_heads ||
        hd != in->head_dim || strcmp(layout, layout_name(in->rope_layout))) {
        snprintf(msg, sizeof msg,
                 "made for a different model (%s, %d layers, %d/%d heads, head dim %d, %s RoPE); "
                 "this one is %s, %d layers, %d/%d heads, head dim %d, %s RoPE",
                 arch, nl, nh, nkv, hd, layout, in->arch, in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim,
                 layout_name(in->rope_layout));
        bad(L, msg);
    } else if (strcmp(hash, want)) {
        snprintf(msg, sizeof msg,
                 "made for a different model file of the same shape (tensor hash %s, this model %s); "
                 "calibrate this model with `fasa calibrate`",
                 hash, want);
        bad(L, msg);
    }
}

/* Copies a JSON array of numbers in [0, 1] (its length already checked). */
static bool read_fractions(loader *L, const cJSON *arr, double *out, const char *what) {
    int32_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0)) {
            char msg[96];
            snprintf(msg, sizeof msg, "%s must be numbers in [0, 1]", what);
            bad(L, msg);
            return false;
        }
        out[i++] = v->valuedouble;
    }
    return true;
}

/* The greedy group orders: one entry per (layer, KV head), n FCs each, all
 * distinct, with recalls in [0, 1]. */
static void read_groups(loader *L, const cJSON *groups, int32_t n, fasa_calib *c) {
    const int32_t F = c->head_dim / 2, n_expect = c->n_layers * c->n_kv_heads;
    if (!cJSON_IsArray(groups) || cJSON_GetArraySize(groups) != n_expect) {
        char msg[160];
        snprintf(msg, sizeof msg, "'groups' must be an array of %d entries (layers x KV heads) when "
                 "settings.greedy is %d", n_expect, n);
        bad(L, msg);
        return;
    }
    if (calib_alloc_greedy(c, n) != FASA_OK) {
        L->st = FASA_E_NOMEM;
        return;
    }
    unsigned char *seen = calloc((size_t)n_expect, 1);
    if (!seen) {
        L->st = fasa_error(FASA_E_NOMEM, "out of memory reading calibration");
        return;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, groups) {
        const int32_t l = get_int(L, e, "layer", 0, c->n_layers - 1), h = get_int(L, e, "kv_head", 0, c->n_kv_heads - 1);
        const cJSON *order = cJSON_GetObjectItemCaseSensitive(e, "greedy"), *mass = cJSON_GetObjectItemCaseSensitive(e, "mass");
        if (L->st) break;
        if (seen[l * c->n_kv_heads + h]++) {
            bad(L, "a (layer, KV head) group appears twice");
            break;
        }
        if (!cJSON_IsArray(order) || cJSON_GetArraySize(order) != n || !cJSON_IsArray(mass) ||
            cJSON_GetArraySize(mass) != n) {
            bad(L, "every group must list settings.greedy FCs in 'greedy' and as many recalls in 'mass'");
            break;
        }
        unsigned char used[FASA_MAX_HEAD_DIM / 2] = {0};
        int32_t i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, order) {
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble >= F || used[(int32_t)v->valuedouble]++) {
                bad(L, "a greedy order must list distinct frequency chunks in [0, head_dim / 2)");
                break;
            }
            c->greedy[calib_group_at(c, l, h) + i++] = (int32_t)v->valuedouble;
        }
        if (L->st || !read_fractions(L, mass, c->greedy_mass + calib_group_at(c, l, h), "greedy recall values")) break;
    }
    free(seen);
}

static void read_heads(loader *L, const cJSON *heads, fasa_calib *c) {
    const int32_t F = c->head_dim / 2, n_expect = c->n_layers * c->n_heads;
    if (!cJSON_IsArray(heads) || cJSON_GetArraySize(heads) != n_expect) {
        char msg[128];
        snprintf(msg, sizeof msg, "'heads' must be an array of %d entries (layers x heads)", n_expect);
        bad(L, msg);
        return;
    }
    unsigned char *seen = calloc((size_t)n_expect, 1);
    if (!seen) {
        L->st = fasa_error(FASA_E_NOMEM, "out of memory reading calibration");
        return;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, heads) {
        const int32_t l = get_int(L, e, "layer", 0, c->n_layers - 1), h = get_int(L, e, "head", 0, c->n_heads - 1);
        const cJSON *ca = cJSON_GetObjectItemCaseSensitive(e, "ca");
        if (L->st) break;
        if (seen[l * c->n_heads + h]++) {
            bad(L, "a (layer, head) entry appears twice");
            break;
        }
        if (!cJSON_IsArray(ca) || cJSON_GetArraySize(ca) != F) {
            bad(L, "every 'ca' must list one value per frequency chunk (head_dim / 2)");
            break;
        }
        if (!read_fractions(L, ca, c->ca + calib_at(c, l, h), "CA values")) break;
    }
    free(seen);
}

/* The whole file, NUL-terminated (see calib_parse). */
static fasa_status read_text(const char *path, char **text, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return fasa_error(FASA_E_IO, "cannot open calibration '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > (1L << 30)) {
        fclose(f);
        return fasa_error(FASA_E_FORMAT, "calibration '%s': unreasonable file size", path);
    }
    if (!(*text = fasa_malloc((size_t)size + 1, 1, "calibration text"))) {
        fclose(f);
        return FASA_E_NOMEM;
    }
    *len = fread(*text, 1, (size_t)size, f);
    fclose(f);
    (*text)[*len] = '\0';
    return FASA_OK;
}

fasa_status fasa_calib_load(const char *path, const fasa_model *m, fasa_calib **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    fasa_status st = read_text(path, &text, &len);
    if (!st) st = calib_parse(text, len, path, &m->info, out);
    free(text);
    return st;
}

/* The header: format, version, and the model block checked against `in`. */
static int32_t read_header(loader *L, const cJSON *root, const fasa_model_info *in) {
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, CALIB_FORMAT)) bad(L, "not a fasa calibration file");
    const int32_t version = L->st ? 0 : get_int(L, root, "version", 0, 1 << 30);
    if (!L->st && version != 1 && version != CALIB_VERSION)
        bad(L, "unsupported version (this build reads versions 1 and 2)");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(root, "settings");
    if (!L->st && (!cJSON_IsObject(model) || !cJSON_IsObject(set))) bad(L, "missing 'model' or 'settings'");
    if (!L->st) check_model(L, model, in);
    return version;
}

fasa_status calib_parse(const char *text, size_t len, const char *name, const fasa_model_info *in,
                        fasa_calib **out) {
    *out = NULL;
    loader L = {name, FASA_OK};
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return bad(&L, "not valid JSON (truncated or not a calibration file)");
    const int32_t version = read_header(&L, root, in);
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(root, "settings");
    fasa_calib *c = NULL;
    if (!L.st && !(c = calib_alloc(in))) L.st = FASA_E_NOMEM;
    if (!L.st) {
        c->budget = get_int(&L, set, "budget", 1, INT32_MAX);
        c->n_tokens = get_int(&L, set, "n_tokens", 1, INT32_MAX);
        c->n_decode = get_int(&L, set, "n_decode", 1, INT32_MAX);
    }
    if (!L.st) read_heads(&L, cJSON_GetObjectItemCaseSensitive(root, "heads"), c);
    const int32_t greedy = !L.st && version >= 2 ? get_int(&L, set, "greedy", 0, in->head_dim / 2) : 0;
    if (!L.st && greedy > 0) read_groups(&L, cJSON_GetObjectItemCaseSensitive(root, "groups"), greedy, c);
    cJSON_Delete(root);
    if (L.st) {
        fasa_calib_free(c);
        return L.st;
    }
    calib_rank(c);
    *out = c;
    return FASA_OK;
}
