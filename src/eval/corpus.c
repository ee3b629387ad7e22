#include "eval/corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static fasa_status read_doc(const char *path, eval_doc *d) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return fasa_error(FASA_E_IO, "cannot open evaluation text '%s': %s (scripts/make-data.sh makes the default texts)",
                          path, strerror(errno));
    fasa_status st = FASA_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = fasa_error(FASA_E_IO, "cannot read '%s': %s", path, strerror(errno));
        goto done;
    }
    if (!(d->text = fasa_malloc((size_t)size + 1, 1, "evaluation text"))) {
        st = FASA_E_NOMEM;
        goto done;
    }
    d->len = fread(d->text, 1, (size_t)size, f);
    d->text[d->len] = '\0';
    if (ferror(f)) st = fasa_error(FASA_E_IO, "error reading '%s'", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    const int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(d->name, sizeof d->name, "%.*s", len, base);
done:
    fclose(f);
    return st;
}

fasa_status eval_corpus_load(const char *const *paths, int32_t n_paths, eval_corpus *out) {
    *out = (eval_corpus){0};
    if (n_paths < 1) return fasa_error(FASA_E_ARG, "no evaluation texts given");
    if (!(out->docs = fasa_calloc((size_t)n_paths, sizeof *out->docs, "evaluation texts"))) return FASA_E_NOMEM;
    for (int32_t i = 0; i < n_paths; i++) {
        out->n_docs = i + 1;
        fasa_status st = read_doc(paths[i], &out->docs[i]);
        if (st) {
            eval_corpus_free(out);
            return st;
        }
    }
    return FASA_OK;
}

void eval_corpus_free(eval_corpus *c) {
    for (int32_t i = 0; i < c->n_docs; i++) free(c->docs[i].text);
    free(c->docs);
    *c = (eval_corpus){0};
}

const char *eval_corpus_doc_name(const eval_corpus *c, int32_t sample) {
    return c->n_docs ? c->docs[sample % c->n_docs].name : "";
}

/* Start of the line at or after off. */
static size_t line_start(const eval_doc *d, size_t off) {
    if (off == 0) return 0;
    const char *nl = memchr(d->text + off - 1, '\n', d->len - (off - 1));
    return nl ? (size_t)(nl - d->text) + 1 : off;
}

fasa_status eval_corpus_passage(const eval_corpus *c, const fasa_model *m, int32_t sample, uint64_t seed,
                                int32_t n, bool bos, int32_t *tokens) {
    if (!c->n_docs || sample < 0 || n < 1) return fasa_error(FASA_E_ARG, "eval_corpus_passage: invalid arguments");
    const eval_doc *d = &c->docs[sample % c->n_docs];
    uint64_t rng = seed * 0x2545F4914F6CDD1Dull + (uint64_t)sample;
    const double u = eval_rng_unit(&rng);
    /* Prose runs about 4 bytes a token, code about 3: start at 6 and grow. */
    size_t span = (size_t)n * 6 + 256;
    enum { MARGIN = 8 }; /* tokens beyond n, so that the cut at the span's end is never used */
    for (;;) {
        if (span > d->len) span = d->len;
        const size_t off = line_start(d, (size_t)(u * (double)(d->len - span)));
        const size_t len = d->len - off < span ? d->len - off : span;
        const int32_t cap = (int32_t)len + 2;
        int32_t *ids = fasa_malloc((size_t)cap, sizeof *ids, "passage tokens"), got = 0;
        if (!ids) return FASA_E_NOMEM;
        fasa_status st = fasa_tokenize(m, d->text + off, len, bos, false, ids, cap, &got);
        if (!st && got >= n + MARGIN) memcpy(tokens, ids, (size_t)n * sizeof *tokens);
        free(ids);
        if (st) return st;
        if (got >= n + MARGIN) return FASA_OK;
        if (span == d->len)
            return fasa_error(FASA_E_ARG, "evaluation text '%s' has about %d tokens, too few for a passage of %d",
                              d->name, got, n);
        span *= 2;
    }
}
