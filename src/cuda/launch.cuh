/* Kernel launches shared by the CUDA code: programmatic dependent launch
 * (PDL) and thread-block clusters through cudaLaunchKernelEx. */
#ifndef FASA_CUDA_LAUNCH_CUH
#define FASA_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>

/* Programmatic dependent launch (sm_90): a kernel launched with the PDL
 * attribute may start while its predecessor finishes; it must wait before
 * touching anything the predecessor writes or reads. Without the attribute
 * both are no-ops. */
__device__ __forceinline__ void pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* The start of a small kernel that reads what its predecessor wrote and
 * does little itself: wait for the predecessor, then let the successor
 * launch at once (it too waits before touching our outputs). */
__device__ __forceinline__ void pdl_enter(void) {
    pdl_wait();
    pdl_trigger();
}

/* Enqueues a kernel, with the programmatic-dependent-launch attribute when
 * pdl, and as clusters of `cluster` CTAs along x when cluster > 0. */
template <typename... P, typename... A>
static inline cudaError_t launch_kc(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                    bool pdl, unsigned cluster, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[2];
    unsigned n = 0;
    if (pdl) {
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster > 0) {
        attr[n].id = cudaLaunchAttributeClusterDimension;
        attr[n].val.clusterDim.x = cluster;
        attr[n].val.clusterDim.y = 1;
        attr[n++].val.clusterDim.z = 1;
    }
    cfg.attrs = attr;
    cfg.numAttrs = n;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

template <typename... P, typename... A>
static inline cudaError_t launch_k(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                   bool pdl, A... args) {
    return launch_kc(kernel, grid, block, smem, st, pdl, 0u, args...);
}

#endif
