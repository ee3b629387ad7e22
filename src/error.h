/* Error reporting shared by every module.
 *
 * Each fallible internal function returns a fasa_status. The place that
 * detects a problem records a one-line message with fasa_error(); callers
 * just propagate the code. The message lives in thread-local storage so that
 * concurrent contexts on different threads do not overwrite each other. */
#ifndef FASA_ERROR_H
#define FASA_ERROR_H

#include "fasa.h"

#if defined(__GNUC__)
#define FASA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FASA_PRINTF(a, b)
#endif

/* Records a formatted message for the calling thread and returns `code`,
 * so that `return fasa_error(FASA_E_FORMAT, "...", ...);` reads naturally. */
fasa_status fasa_error(fasa_status code, const char *fmt, ...) FASA_PRINTF(2, 3);

/* Wraps malloc/calloc with overflow checking and an error message on failure.
 * `what` names the buffer in the message ("KV cache", "token list"). */
void *fasa_malloc(size_t n, size_t size, const char *what);
void *fasa_calloc(size_t n, size_t size, const char *what);

/* For large, long-lived, randomly accessed buffers (KV and label caches):
 * zeroed, 2 MiB aligned and backed by huge pages where the kernel allows, so
 * that gathering scattered rows does not miss the TLB on every row. Freed
 * with free(). */
void *fasa_calloc_large(size_t n, size_t size, const char *what);

#endif
