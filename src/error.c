#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static _Thread_local char last_error[512];

fasa_status fasa_error(fasa_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *fasa_last_error(void) { return last_error[0] ? last_error : "no error"; }

void fasa_clear_error(void) { last_error[0] = '\0'; }

const char *fasa_status_name(fasa_status s) {
    switch (s) {
    case FASA_OK: return "ok";
    case FASA_E_ARG: return "invalid argument";
    case FASA_E_IO: return "I/O error";
    case FASA_E_FORMAT: return "bad file format";
    case FASA_E_UNSUPPORTED: return "unsupported";
    case FASA_E_NOMEM: return "out of memory";
    case FASA_E_CONTEXT: return "context full";
    case FASA_E_INTERNAL: return "internal error";
    }
    return "unknown status";
}

void *fasa_malloc(size_t n, size_t size, const char *what) {
    if (size && n > SIZE_MAX / size) {
        fasa_error(FASA_E_NOMEM, "%s: size %zu x %zu overflows", what, n, size);
        return NULL;
    }
    void *p = malloc(n * size > 0 ? n * size : 1);
    if (!p) fasa_error(FASA_E_NOMEM, "%s: cannot allocate %zu bytes", what, n * size);
    return p;
}

void *fasa_calloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fasa_error(FASA_E_NOMEM, "%s: cannot allocate %zu x %zu bytes", what, n, size);
    return p;
}

void *fasa_calloc_large(size_t n, size_t size, const char *what) {
    const size_t huge = (size_t)2 << 20;
    if (size && n > SIZE_MAX / size - huge) {
        fasa_error(FASA_E_NOMEM, "%s: size %zu x %zu overflows", what, n, size);
        return NULL;
    }
    const size_t bytes = n * size < huge ? n * size : (n * size + huge - 1) / huge * huge;
    if (bytes < huge) return fasa_calloc(n, size, what);
    void *p = aligned_alloc(huge, bytes);
    if (!p) {
        fasa_error(FASA_E_NOMEM, "%s: cannot allocate %zu bytes", what, bytes);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure just means small pages */
#endif
    memset(p, 0, bytes);
    return p;
}
