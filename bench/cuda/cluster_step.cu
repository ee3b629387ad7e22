/* The one-kernel FASA step on thread-block clusters (src/cuda/cluster.cuh),
 * launched directly so that it can be traced phase by phase.
 *
 * --validate  random labels, K, V and q; the selected set checked against
 *             the float64 CPU top-k of the label scores (ties aside) and the
 *             output against float64 attention over it, for every cluster
 *             size, both label types and both shapes.
 * --bench     per-layer time (events, median, several layers' label caches
 *             in turn so that the labels come from DRAM), the clusters that
 *             fit at once, an empty cluster kernel of the same shape (the
 *             launch floor), and where the time goes inside the kernel:
 *             clock64 at each phase end in every CTA, as microseconds after
 *             the CTA started (mean over the non-leading CTAs, and CTA 0).
 *
 * --profile   a few launches for a profiler (ncu): llama3-8b shapes, 32K
 *             and 128K tokens, fp16 labels, clusters of 14.
 *
 * usage: cluster_step [--validate] [--bench] [--profile]   (no flag: the first two) */
#include "common.cuh"
#include "../../src/cuda/cluster.cuh"

struct shape {
    const char *name;
    int n_heads, n_kv, D, n_tip;
};
static const shape SHAPES[] = {{"llama3-8b", 32, 8, 128, 16}, {"smollm2-135m", 9, 3, 64, 8}};

struct bufs {
    int n_layers = 0;
    std::vector<void *> labels;
    std::vector<float *> scales;
    __half *k = nullptr, *v = nullptr;
    float *q = nullptr, *out = nullptr;
    int32_t *lab_idx = nullptr, *sel = nullptr;
    uint2 *cand = nullptr;
    long long *trace = nullptr;
};

static void bufs_init(bufs &b, const shape &s, int n, bool int8, int layers, int k_max, uint64_t seed) {
    const int n_lab = 2 * s.n_tip;
    b.n_layers = layers;
    for (int l = 0; l < layers; ++l) {
        void *lab;
        float *sc = nullptr;
        if (int8) {
            CHECK(cudaMalloc(&lab, (size_t)s.n_kv * n * n_lab));
            fill_device((int8_t *)lab, (int64_t)s.n_kv * n * n_lab, seed + 11 * l, 127.f);
            CHECK(cudaMalloc(&sc, (size_t)s.n_kv * n * 4));
            fill_device(sc, (int64_t)s.n_kv * n, seed + 11 * l + 1, 0.01f);
        } else {
            CHECK(cudaMalloc(&lab, (size_t)s.n_kv * n * n_lab * 2));
            fill_device((__half *)lab, (int64_t)s.n_kv * n * n_lab, seed + 11 * l, 1.f);
        }
        b.labels.push_back(lab);
        b.scales.push_back(sc);
    }
    const size_t kv = (size_t)s.n_kv * n * s.D;
    CHECK(cudaMalloc(&b.k, kv * 2));
    CHECK(cudaMalloc(&b.v, kv * 2));
    fill_device(b.k, (int64_t)kv, seed + 3, 1.f);
    fill_device(b.v, (int64_t)kv, seed + 4, 1.f);
    CHECK(cudaMalloc(&b.q, (size_t)s.n_heads * s.D * 4));
    fill_device(b.q, (int64_t)s.n_heads * s.D, seed + 5, 8.f);
    CHECK(cudaMalloc(&b.out, (size_t)s.n_heads * s.D * 4));
    rng64 r = {seed};
    const std::vector<int32_t> idx = random_label_coords(&r, s.n_kv, s.D, n_lab);
    CHECK(cudaMalloc(&b.lab_idx, idx.size() * 4));
    CHECK(cudaMemcpy(b.lab_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&b.sel, (size_t)s.n_kv * k_max * 4));
    CHECK(cudaMalloc(&b.cand, (size_t)s.n_kv * (n + 2) * 8));
    CHECK(cudaMalloc(&b.trace, (size_t)s.n_kv * CL_MAX * CL_TRACE * 8));
    CHECK(cudaDeviceSynchronize());
}

static void bufs_free(bufs &b) {
    for (int l = 0; l < b.n_layers; ++l) {
        CHECK(cudaFree(b.labels[l]));
        if (b.scales[l]) CHECK(cudaFree(b.scales[l]));
    }
    CHECK(cudaFree(b.k));
    CHECK(cudaFree(b.v));
    CHECK(cudaFree(b.q));
    CHECK(cudaFree(b.out));
    CHECK(cudaFree(b.lab_idx));
    CHECK(cudaFree(b.sel));
    CHECK(cudaFree(b.cand));
    CHECK(cudaFree(b.trace));
    b = bufs();
}

static cluster_args args_for(const bufs &b, const shape &s, int n, int k, int C, int layer, bool trace) {
    cluster_args a;
    memset(&a, 0, sizeof a);
    tip_args &t = a.tip;
    t.labels = b.labels[layer];
    t.lab_scale = b.scales[layer];
    t.lab_head_stride = (int64_t)n * 2 * s.n_tip;
    t.scale_head_stride = n;
    t.lab_idx = b.lab_idx;
    t.q = b.q;
    t.D = s.D;
    t.n_lab = 2 * s.n_tip;
    t.group = t.hpu = s.n_heads / s.n_kv;
    t.n_tokens = n;
    t.chunk = (n + C - 1) / C;
    attn_args &at = a.attn;
    at.k = b.k;
    at.v = b.v;
    at.head_stride = (int64_t)n * s.D;
    at.q = b.q;
    at.out = b.out;
    at.n_rows = n;
    at.group = at.hpu = t.group;
    at.scale_log2 = 1.4426950408889634f / sqrtf((float)s.D);
    a.k = k;
    a.k_cap = k;
    a.sel = b.sel;
    a.sel_stride = k;
    a.cand = b.cand;
    a.cand_stride = n + 2;
    a.trace = trace ? b.trace : nullptr;
    return a;
}

static size_t smem_for(const shape &s, int n, int k, int C) {
    return cluster_layout_for((n + C - 1) / C, C, k, s.n_heads / s.n_kv, s.D).total;
}

static void launch(const cluster_args &a, const shape &s, bool int8, int C, size_t smem) {
    CHECK(cluster_launch(&a, int8, s.D, C, s.n_kv, smem, 0, false));
}

/* ---- validation --------------------------------------------------------- */

static int validate(uint64_t seed) {
    int fails = 0;
    printf("validation (seed %llu)\n", (unsigned long long)seed);
    for (const shape &s : SHAPES)
        for (bool int8 : {false, true})
            for (int n : {3000, 20000})
                for (int C : {1, 2, 3, 4, 8, 14, 16}) {
                    const int k = 256, n_lab = 2 * s.n_tip, group = s.n_heads / s.n_kv;
                    bufs b;
                    bufs_init(b, s, n, int8, 1, k, seed + n + C);
                    CHECK(cluster_prepare(int8, s.D, 200 * 1024));
                    int active = 0;
                    const size_t smem = smem_for(s, n, k, C);
                    CHECK(cluster_active(int8, s.D, C, s.n_kv, smem, &active));
                    if (active == 0) {
                        printf("  %s %s n=%d C=%d: does not fit, skipped\n", s.name, int8 ? "int8" : "fp16", n, C);
                        bufs_free(b);
                        continue;
                    }
                    CHECK(cudaMemset(b.out, 0xff, (size_t)s.n_heads * s.D * 4));
                    launch(args_for(b, s, n, k, C, 0, false), s, int8, C, smem);
                    CHECK_LAUNCH();
                    CHECK(cudaDeviceSynchronize());
                    /* host copies */
                    const size_t nl = (size_t)s.n_kv * n * n_lab, kv = (size_t)s.n_kv * n * s.D;
                    std::vector<double> lab(nl);
                    if (int8) {
                        std::vector<int8_t> c(nl);
                        std::vector<float> sc((size_t)s.n_kv * n);
                        CHECK(cudaMemcpy(c.data(), b.labels[0], nl, cudaMemcpyDeviceToHost));
                        CHECK(cudaMemcpy(sc.data(), b.scales[0], sc.size() * 4, cudaMemcpyDeviceToHost));
                        for (size_t i = 0; i < nl; ++i) lab[i] = (double)c[i] * sc[i / n_lab];
                    } else {
                        std::vector<uint16_t> h(nl);
                        CHECK(cudaMemcpy(h.data(), b.labels[0], nl * 2, cudaMemcpyDeviceToHost));
                        for (size_t i = 0; i < nl; ++i) lab[i] = f16_value(h[i]);
                    }
                    std::vector<uint16_t> K(kv), V(kv);
                    std::vector<float> q((size_t)s.n_heads * s.D), got(q.size());
                    std::vector<int32_t> idx((size_t)s.n_kv * n_lab), sel((size_t)s.n_kv * k);
                    CHECK(cudaMemcpy(K.data(), b.k, kv * 2, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(V.data(), b.v, kv * 2, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(q.data(), b.q, q.size() * 4, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(got.data(), b.out, got.size() * 4, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(idx.data(), b.lab_idx, idx.size() * 4, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(sel.data(), b.sel, sel.size() * 4, cudaMemcpyDeviceToHost));
                    bool ok = true;
                    const char *why = "";
                    std::vector<double> ref(q.size());
                    for (int u = 0; u < s.n_kv; ++u) {
                        std::vector<double> sc;
                        host_scores(lab, q.data(), s.D, n, n_lab, idx.data(), u, u * group, group, sc);
                        double smax = 0;
                        for (double x : sc) smax = std::max(smax, fabs(x));
                        bool o;
                        const char *w;
                        check_topk(sc, &sel[(size_t)u * k], k, 1e-5 * smax + 1e-6, &o, &w);
                        if (!o) ok = false, why = w;
                        for (int h = u * group; h < (u + 1) * group && o; ++h)
                            ref_attention(&q[(size_t)h * s.D], &K[(size_t)u * n * s.D], &V[(size_t)u * n * s.D], s.D,
                                          &sel[(size_t)u * k], k, &ref[(size_t)h * s.D]);
                    }
                    const double e = ok ? rel_error(got.data(), ref.data(), got.size()) : INFINITY;
                    const bool pass = ok && e < 1e-3;
                    printf("  %-13s %s n=%6d C=%2d: set %s, rel.err %.2e  %s\n", s.name, int8 ? "int8" : "fp16", n, C,
                           ok ? "exact" : why, e, pass ? "ok" : "FAIL");
                    fails += !pass;
                    bufs_free(b);
                }
    printf("cluster_step validation: %s (%d failures)\n", fails ? "FAILED" : "passed", fails);
    return fails;
}

/* ---- benchmark ---------------------------------------------------------- */

__global__ void cl_empty_kernel(int *p) {
    if (p && threadIdx.x == 0 && blockIdx.x == 9999) *p = 0;
}

static void bench(uint64_t seed) {
    int clock_khz = 0;
    CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
    const double cyc_per_us = clock_khz * 1e-3;
    printf("\nphase ends, us after the CTA's start (clock64 at %.0f MHz): 1 TIP, 2 barrier, 3 histogram slice,\n"
           "4 scan, 5 own attention + barrier, 6 partial pushed (CTA 0: candidates gathered), 7 last barrier;\n"
           "CTA 0 also 8 boundary resolved, 9 merged\n",
           cyc_per_us);
    printf("%-13s %7s %4s %3s %7s %8s %8s | %-46s | %s\n", "shape", "n", "lab", "C", "fit", "us", "empty", "others 1..7",
           "CTA 0 1..9");
    CHECK(cudaFuncSetAttribute(cl_empty_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    CHECK(cudaFuncSetAttribute(cl_empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    for (const shape &s : SHAPES)
        for (int n : {4096, 32768, 131072})
            for (bool int8 : {false, true})
                for (int C : {16, 14, 12, 8}) {
                    if (int8 && C != 14) continue;
                    const int k = 256;
                    const double lab_mb = (double)s.n_kv * n * 2 * s.n_tip * (int8 ? 1 : 2) / 1e6;
                    const int layers = std::max(2, std::min(16, (int)(600 / lab_mb)));
                    bufs b;
                    bufs_init(b, s, n, int8, layers, k, seed);
                    CHECK(cluster_prepare(int8, s.D, 200 * 1024));
                    const size_t smem = smem_for(s, n, k, C);
                    int active = 0;
                    CHECK(cluster_active(int8, s.D, C, s.n_kv, smem, &active));
                    if (!active) {
                        bufs_free(b);
                        continue;
                    }
                    int li = 0;
                    const double ms = time_ms(0, 3, 25, [&] {
                        for (int l = 0; l < layers; ++l) launch(args_for(b, s, n, k, C, (li++) % layers, false), s, int8, C, smem);
                    });
                    const double empty = time_ms(0, 3, 25, [&] {
                        for (int l = 0; l < layers; ++l)
                            CHECK(launch_kc(cl_empty_kernel, dim3(C, s.n_kv), dim3(CL_THREADS), smem, 0, false, (unsigned)C,
                                            (int *)nullptr));
                    });
                    launch(args_for(b, s, n, k, C, 0, true), s, int8, C, smem);
                    CHECK_LAUNCH();
                    CHECK(cudaDeviceSynchronize());
                    std::vector<long long> tr((size_t)s.n_kv * C * CL_TRACE);
                    CHECK(cudaMemcpy(tr.data(), b.trace, tr.size() * 8, cudaMemcpyDeviceToHost));
                    double oth[CL_TRACE] = {0}, lead[CL_TRACE] = {0};
                    for (int u = 0; u < s.n_kv; ++u)
                        for (int r = 0; r < C; ++r) {
                            const long long *p = &tr[((size_t)u * C + r) * CL_TRACE];
                            for (int i = 1; i < CL_TRACE; ++i) {
                                const double us = (p[i] - p[0]) / cyc_per_us;
                                if (r == 0) lead[i] += us / s.n_kv;
                                else oth[i] += us / (s.n_kv * (C - 1));
                            }
                        }
                    char o[160] = "", l0[160] = "";
                    for (int i = 1; i <= 7; ++i) snprintf(o + strlen(o), sizeof o - strlen(o), "%5.1f", C > 1 ? oth[i] : 0.0);
                    for (int i = 1; i <= 9; ++i)
                        if (i != 6 && i != 7 && i != 8 && i != 9) snprintf(l0 + strlen(l0), sizeof l0 - strlen(l0), "%5.1f", lead[i]);
                    snprintf(l0 + strlen(l0), sizeof l0 - strlen(l0), "  gath %.1f res %.1f bar %.1f end %.1f", lead[6],
                             lead[8], lead[7], lead[9]);
                    printf("%-13s %7d %4s %3d %3d/%-3d %8.2f %8.2f | %s | %s\n", s.name, n, int8 ? "i8" : "f16", C, active,
                           s.n_kv, ms * 1e3 / layers, empty * 1e3 / layers, o, l0);
                    bufs_free(b);
                }
}

static void profile(uint64_t seed) {
    const shape &s = SHAPES[0];
    for (int n : {32768, 131072}) {
        const int k = 256, C = 14;
        bufs b;
        bufs_init(b, s, n, false, 1, k, seed);
        CHECK(cluster_prepare(false, s.D, 200 * 1024));
        for (int i = 0; i < 3; ++i) launch(args_for(b, s, n, k, C, 0, false), s, false, C, smem_for(s, n, k, C));
        CHECK_LAUNCH();
        CHECK(cudaDeviceSynchronize());
        bufs_free(b);
    }
}

int main(int argc, char **argv) {
    bool do_val = false, do_bench = false, do_profile = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--validate")) do_val = true;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else if (!strcmp(argv[i], "--profile")) do_profile = true;
        else {
            fprintf(stderr, "usage: cluster_step [--validate] [--bench] [--profile]\n");
            return 2;
        }
    }
    if (!do_val && !do_bench && !do_profile) do_val = do_bench = true;
    const uint64_t seed = fresh_seed();
    if (do_profile) profile(seed);
    int fails = 0;
    if (do_val) fails = validate(seed);
    if (do_bench) bench(seed);
    return fails ? 1 : 0;
}
