/* cuBLAS when the machine has it, loaded at run time.
 *
 * A prompt chunk's products are fp16 matrix products (gemm.cuh); cuBLAS's
 * Hopper kernels (wgmma, TMA) run them 2-3x faster than our m16n8k16 kernel
 * (bench/cuda/prefill.cu, docs/gpu.md). Linking it would make every fasa
 * binary built with CUDA need libcublas at start, on machines that run only
 * the CPU too; so it is opened with dlopen the first time a GPU context
 * asks, and without it the products take our own kernel.
 * FASA_CUDA_GEMM=own in the environment skips it (to compare the two). */
#ifndef FASA_CUDA_CUBLAS_DL_CUH
#define FASA_CUDA_CUBLAS_DL_CUH

#include <cublas_api.h> /* types and enums only: nothing here links against cuBLAS */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cublas_dl {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_pointer_mode)(cublasHandle_t, cublasPointerMode_t);
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
};

/* The functions, or NULL when the library (of the major version these
 * headers describe) is not there or is skipped. Loaded once per process;
 * the library stays open. */
static inline const cublas_dl *cublas_dl_get(void) {
    static const cublas_dl *loaded = [] () -> const cublas_dl * {
        const char *skip = getenv("FASA_CUDA_GEMM");
        if (skip && !strcmp(skip, "own")) return nullptr;
        char name[32];
        snprintf(name, sizeof name, "libcublas.so.%d", CUBLAS_VER_MAJOR);
        void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (!lib) return nullptr;
        static cublas_dl f;
        f.create = (cublasStatus_t (*)(cublasHandle_t *))dlsym(lib, "cublasCreate_v2");
        f.destroy = (cublasStatus_t (*)(cublasHandle_t))dlsym(lib, "cublasDestroy_v2");
        f.set_stream = (cublasStatus_t (*)(cublasHandle_t, cudaStream_t))dlsym(lib, "cublasSetStream_v2");
        f.set_pointer_mode =
            (cublasStatus_t (*)(cublasHandle_t, cublasPointerMode_t))dlsym(lib, "cublasSetPointerMode_v2");
        f.gemm_ex = (decltype(f.gemm_ex))dlsym(lib, "cublasGemmEx");
        if (!f.create || !f.destroy || !f.set_stream || !f.set_pointer_mode || !f.gemm_ex) {
            dlclose(lib);
            return nullptr;
        }
        return &f;
    }();
    return loaded;
}

#endif
