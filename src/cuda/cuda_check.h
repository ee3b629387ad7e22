/* Checked CUDA calls: every runtime call and every launch goes through
 * CUDA_TRY, which turns a failure into a fasa_status whose message names the
 * call, the source line and CUDA's own explanation. */
#ifndef FASA_CUDA_CHECK_H
#define FASA_CUDA_CHECK_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "error.h"
#ifdef __cplusplus
}
#endif

/* The file's name without the build machine's directories. No device or a
 * driver too old for the runtime is a missing feature, not an internal error. */
static inline fasa_status cuda_status(cudaError_t e, const char *call, const char *file, int line) {
    const char *base = file;
    for (const char *s = file; *s; s++)
        if (*s == '/') base = s + 1;
    fasa_status code = e == cudaErrorMemoryAllocation ? FASA_E_NOMEM
                       : e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? FASA_E_UNSUPPORTED
                                                                                      : FASA_E_INTERNAL;
    return fasa_error(code, "CUDA: %s failed at %s:%d: %s (%s)", call, base, line, cudaGetErrorString(e),
                      cudaGetErrorName(e));
}

#define CUDA_TRY(call)                                                                  \
    do {                                                                                \
        cudaError_t cuda_try_e_ = (call);                                               \
        if (cuda_try_e_ != cudaSuccess) return cuda_status(cuda_try_e_, #call, __FILE__, __LINE__); \
    } while (0)

/* After a <<<>>> launch: configuration errors surface here, faults at sync. */
#define CUDA_TRY_LAUNCH(name)                                                           \
    do {                                                                                \
        cudaError_t cuda_try_e_ = cudaGetLastError();                                   \
        if (cuda_try_e_ != cudaSuccess)                                                 \
            return cuda_status(cuda_try_e_, "launch of " name, __FILE__, __LINE__);     \
    } while (0)

#endif
