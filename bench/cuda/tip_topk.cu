/* Token importance prediction (TIP) + exact top-k selection over the label cache.
 *
 * Versions:
 *   1  a score kernel (one thread per token) writes every score, then CUB's
 *      segmented radix sort orders all n scores of each unit; the first k
 *      indices are the selection. Simple, but sorts n to keep k.
 *   2  the product (src/cuda/tip.cuh): a 16-byte-per-lane scoring pass that
 *      also builds an 11-bit key histogram and finds the boundary bin in its
 *      last CTA, then one selection pass that emits the tokens above the
 *      boundary and finishes the boundary bin's candidates in its last CTA.
 * Validated on random labels, on labels with massive ties, and with q = 0
 * (every score equal), for fp16 and int8 labels, per group and per head.
 *
 * usage: tip_topk [--validate] [--bench]   (no flag: both) */
#include <cub/device/device_segmented_radix_sort.cuh>

#include "common.cuh"
#include "../../src/cuda/tip.cuh"

struct shape {
    const char *name;
    int n_heads, n_kv, D;
};
static const shape SHAPES[] = {{"llama3-8b", 32, 8, 128}, {"smollm2-135m", 9, 3, 64}};

/* ---- version 1 ---------------------------------------------------------- */

template <typename LT>
__global__ void tip_v1_scores(const tip_args a, int U) {
    const int kvh = blockIdx.y;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= a.n_tokens) return;
    const LT *lab = reinterpret_cast<const LT *>(a.labels) + kvh * a.lab_head_stride + (int64_t)t * a.n_lab;
    const float sc = a.lab_scale ? a.lab_scale[kvh * a.scale_head_stride + t] : 1.f;
    for (int u = 0; u < U; ++u) {
        float s = 0.f;
        for (int j = 0; j < a.n_lab; ++j) {
            float qs = 0.f;
            for (int h = 0; h < a.hpu; ++h)
                qs += a.q[(int64_t)(kvh * a.group + u * a.hpu + h) * a.D + a.lab_idx[kvh * a.n_lab + j]];
            s += qs * (float)lab[j];
        }
        a.scores[(int64_t)(kvh * U + u) * a.score_stride + t] = s * sc;
    }
}

/* ---- buffers ------------------------------------------------------------ */

struct tcase {
    const shape *sh;
    int n, n_lab, k;
    bool int8, per_head;
};

struct dbufs {
    void *labels;
    float *scale, *q, *scores, *keys_out;
    int32_t *lab_idx, *sel, *iota, *vals_out, *offsets;
    uint32_t *hist, *sel_count, *cand_count, *sel_arr;
    uint2 *cand;
    void *cub_tmp;
    size_t cub_bytes;
};

static int units_per_kv(const tcase &c) { return c.per_head ? c.sh->n_heads / c.sh->n_kv : 1; }
static int n_units(const tcase &c) { return c.sh->n_kv * units_per_kv(c); }

static void alloc_dbufs(dbufs *b, const tcase &c) {
    memset(b, 0, sizeof *b);
    const int64_t U = n_units(c), n = c.n;
    const size_t esz = c.int8 ? 1 : 2;
    CHECK(cudaMalloc(&b->labels, (size_t)c.sh->n_kv * n * c.n_lab * esz));
    CHECK(cudaMalloc(&b->scale, (size_t)c.sh->n_kv * n * 4));
    CHECK(cudaMalloc(&b->q, (size_t)c.sh->n_heads * c.sh->D * 4));
    CHECK(cudaMalloc(&b->lab_idx, (size_t)c.sh->n_kv * c.n_lab * 4));
    CHECK(cudaMalloc(&b->scores, U * n * 4));
    CHECK(cudaMalloc(&b->keys_out, U * n * 4));
    CHECK(cudaMalloc(&b->iota, U * n * 4));
    CHECK(cudaMalloc(&b->vals_out, U * n * 4));
    CHECK(cudaMalloc(&b->offsets, (U + 1) * 4));
    CHECK(cudaMalloc(&b->sel, U * c.k * 4));
    CHECK(cudaMalloc(&b->hist, U * TIP_BINS1 * 4));
    CHECK(cudaMalloc(&b->sel_count, U * 4));
    CHECK(cudaMalloc(&b->cand, (U * ((n + 1) & ~1) + 2) * sizeof(uint2)));
    CHECK(cudaMalloc(&b->cand_count, U * 4));
    CHECK(cudaMalloc(&b->sel_arr, U * 4));
    CHECK(cudaMemset(b->hist, 0, U * TIP_BINS1 * 4));
    CHECK(cudaMemset(b->sel_count, 0, U * 4));
    CHECK(cudaMemset(b->cand_count, 0, U * 4));
    CHECK(cudaMemset(b->sel_arr, 0, U * 4));
    std::vector<int32_t> iota(U * n), off(U + 1);
    for (int64_t i = 0; i < U * n; ++i) iota[i] = (int32_t)(i % n);
    for (int64_t u = 0; u <= U; ++u) off[u] = (int32_t)(u * n);
    CHECK(cudaMemcpy(b->iota, iota.data(), iota.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b->offsets, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
    cub::DeviceSegmentedRadixSort::SortPairsDescending(NULL, b->cub_bytes, b->scores, b->keys_out, b->iota,
                                                       b->vals_out, (int)(U * n), (int)U, b->offsets,
                                                       b->offsets + 1);
    CHECK(cudaMalloc(&b->cub_tmp, b->cub_bytes));
}

static void free_dbufs(dbufs *b) {
    void *p[] = {b->labels, b->scale, b->q, b->lab_idx, b->scores, b->keys_out, b->iota, b->vals_out, b->offsets,
                 b->sel, b->hist, b->sel_count, b->cand, b->cand_count, b->sel_arr,
                 b->cub_tmp};
    for (void *x : p) cudaFree(x);
}

static tip_args tip_args_for(const tcase &c, const dbufs &b, int n_sms, int chunk = 0) {
    tip_args t;
    memset(&t, 0, sizeof t);
    t.labels = b.labels;
    t.lab_scale = c.int8 ? b.scale : NULL;
    t.lab_head_stride = (int64_t)c.n * c.n_lab;
    t.scale_head_stride = c.n;
    t.lab_idx = b.lab_idx;
    t.q = b.q;
    t.D = c.sh->D;
    t.n_lab = c.n_lab;
    t.group = c.sh->n_heads / c.sh->n_kv;
    t.hpu = c.per_head ? 1 : t.group;
    t.n_tokens = c.n;
    t.chunk = chunk > 0 ? chunk : tip_chunk_for(c.n, c.sh->n_kv, n_sms, 2, 512, 16384, 256);
    t.scores = b.scores;
    t.score_stride = c.n;
    t.hist = b.hist;
    return t;
}

static select_args select_args_for(const tcase &c, const dbufs &b, size_t *smem) {
    select_args s;
    memset(&s, 0, sizeof s);
    s.scores = b.scores;
    s.score_stride = c.n;
    s.n_tokens = c.n;
    int64_t chunk = ((int64_t)c.n / 32 + 1023) / 1024 * 1024;
    s.chunk = (int32_t)(chunk < 1024 ? 1024 : chunk > 4096 ? 4096 : chunk);
    s.k = c.k;
    s.hist = b.hist;
    s.sel = b.sel;
    s.sel_stride = c.k;
    s.sel_count = b.sel_count;
    s.cand = b.cand;
    s.cand_stride = (c.n + 1) & ~1;
    s.cand_count = b.cand_count;
    s.arrivals = b.sel_arr;
    s.attn.hpu = c.per_head ? 1 : c.sh->n_heads / c.sh->n_kv;
    select_smem(&s, 64, s.attn.hpu, false, smem);
    return s;
}

static void run_v1(const tcase &c, const dbufs &b, int n_sms, cudaStream_t st) {
    const tip_args t = tip_args_for(c, b, n_sms);
    const dim3 grid(ceil_div(c.n, 256), c.sh->n_kv);
    if (c.int8) tip_v1_scores<int8_t><<<grid, 256, 0, st>>>(t, units_per_kv(c));
    else tip_v1_scores<__half><<<grid, 256, 0, st>>>(t, units_per_kv(c));
    CHECK_LAUNCH();
    size_t bytes = b.cub_bytes;
    CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(b.cub_tmp, bytes, b.scores, b.keys_out, b.iota,
                                                             b.vals_out, n_units(c) * c.n, n_units(c), b.offsets,
                                                             b.offsets + 1, 0, 32, st));
}

static void run_v2(const tcase &c, const dbufs &b, int n_sms, cudaStream_t st, unsigned stages = 3, int chunk = 0) {
    if (stages & 1) {
        const tip_args t = tip_args_for(c, b, n_sms, chunk);
        CHECK(tip_launch(&t, c.int8, c.sh->n_kv, units_per_kv(c), st, false));
    }
    if (stages & 2) {
        size_t smem;
        const select_args s = select_args_for(c, b, &smem);
        CHECK(select_launch(&s, n_units(c), 64, false, smem, st, false));
    }
}

/* Host data -> device: K ([n_kv][n][D] fp16 bits) gives the labels. */
static void upload_case(const tcase &c, const dbufs &b, const std::vector<uint16_t> &K,
                        const std::vector<int32_t> &lab_idx, const std::vector<float> &q,
                        std::vector<double> &labels) {
    std::vector<int8_t> codes;
    std::vector<float> scales;
    host_labels(K.data(), c.sh->n_kv, c.n, c.sh->D, lab_idx.data(), c.n_lab, c.int8, labels, &codes, &scales);
    const size_t nl = labels.size();
    if (c.int8) {
        CHECK(cudaMemcpy(b.labels, codes.data(), nl, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(b.scale, scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
    } else {
        std::vector<uint16_t> l16(nl);
        for (size_t i = 0; i < nl; ++i) l16[i] = f16_bits((float)labels[i]);
        CHECK(cudaMemcpy(b.labels, l16.data(), nl * 2, cudaMemcpyHostToDevice));
    }
    CHECK(cudaMemcpy(b.lab_idx, lab_idx.data(), lab_idx.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b.q, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
}

enum dist { DIST_UNIFORM, DIST_TIES, DIST_ZERO_Q };
static const char *DIST_NAME[] = {"uniform", "ties", "q=0"};

static int validate(int n_sms, uint64_t seed) {
    rng64 r = {seed};
    int failures = 0;
    printf("validation (seed %llu): selected sets vs float64 CPU top-k (ties aside)\n", (unsigned long long)seed);
    printf("%-13s %6s %5s %4s %-5s %-9s %-8s | %-22s | %-22s\n", "shape", "n", "k", "lab", "type", "select",
           "dist", "v1 sort (outside ref)", "v2 product (outside ref)");
    for (const shape &s : SHAPES)
        for (int n : {3000, 20000})
            for (int k : {256, 2048})
                for (int variant = 0; variant < 4; ++variant)
                    for (int d = 0; d < 3; ++d) {
                        if (k >= n) continue;
                        tcase c = {&s, n, s.D == 128 ? 32 : 16, k, variant == 1 || variant == 3, variant >= 2};
                        if (c.int8 && c.n_lab % 16) continue;
                        dbufs b;
                        alloc_dbufs(&b, c);
                        const size_t kv = (size_t)s.n_kv * n * s.D;
                        std::vector<uint16_t> K(kv);
                        for (size_t i = 0; i < kv; ++i) {
                            float x = rng_uniform(&r);
                            if (d == DIST_TIES) x = 0.5f * (float)((int)floorf(x * 1.5f + 1.5f) - 1); /* -0.5, 0, 0.5 */
                            K[i] = f16_bits(x);
                        }
                        std::vector<float> q((size_t)s.n_heads * s.D);
                        for (float &x : q) x = d == DIST_ZERO_Q ? 0.f : rng_uniform(&r);
                        if (d == DIST_TIES) for (float &x : q) x = (float)(int)(x * 2.f); /* small integers */
                        const std::vector<int32_t> lab_idx = random_label_coords(&r, s.n_kv, s.D, c.n_lab);
                        std::vector<double> labels;
                        upload_case(c, b, K, lab_idx, q, labels);
                        const int U = units_per_kv(c), group = s.n_heads / s.n_kv, hpu = c.per_head ? 1 : group;
                        char res[2][64];
                        for (int ver = 1; ver <= 2; ++ver) {
                            CHECK(cudaMemset(b.sel, 0xff, (size_t)n_units(c) * k * 4));
                            CHECK(cudaMemset(b.vals_out, 0xff, (size_t)n_units(c) * n * 4));
                            if (ver == 1) run_v1(c, b, n_sms, 0);
                            else run_v2(c, b, n_sms, 0);
                            CHECK(cudaDeviceSynchronize());
                            int worst_outside = 0;
                            bool all_ok = true;
                            const char *why = "";
                            for (int uu = 0; uu < n_units(c); ++uu) {
                                std::vector<int32_t> got(k);
                                const int32_t *src = ver == 1 ? b.vals_out + (size_t)uu * n : b.sel + (size_t)uu * k;
                                CHECK(cudaMemcpy(got.data(), src, k * 4, cudaMemcpyDeviceToHost));
                                std::vector<double> sc;
                                const int kvh = uu / U;
                                host_scores(labels, q.data(), s.D, n, c.n_lab, lab_idx.data(), kvh,
                                            kvh * group + (uu % U) * hpu, hpu, sc);
                                double smax = 0;
                                for (double x : sc) smax = std::max(smax, fabs(x));
                                bool ok;
                                const char *w;
                                const int out = check_topk(sc, got.data(), k, 1e-5 * smax + 1e-6, &ok, &w);
                                if (!ok) all_ok = false, why = w;
                                worst_outside = std::max(worst_outside, out);
                            }
                            failures += !all_ok;
                            snprintf(res[ver - 1], sizeof res[0], "%s (%d)", all_ok ? "ok" : why, worst_outside);
                        }
                        printf("%-13s %6d %5d %4d %-5s %-9s %-8s | %-22s | %-22s\n", s.name, n, k, c.n_lab,
                               c.int8 ? "int8" : "fp16", c.per_head ? "per-head" : "per-group", DIST_NAME[d], res[0],
                               res[1]);
                        free_dbufs(&b);
                    }
    return failures;
}

static void bench(int n_sms, uint64_t seed) {
    printf("\nTIP + top-k, per-layer median ms (20 reps; one layer, label cache %s)\n", "rotated among 4 copies");
    printf("%-13s %7s %4s %-5s %5s | %9s | %9s %9s %9s | %7s\n", "shape", "n", "lab", "type", "k", "v1 sort",
           "v2 TIP", "v2 sel=b-T", "v2 both", "GB/s");
    cudaStream_t st;
    CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (const shape &s : SHAPES)
        for (int n : {4096, 32768, 131072})
            for (int n_lab : {16, 32})
                for (int int8 = 0; int8 < 2; ++int8) {
                    if (int8 && n_lab % 16) continue;
                    if (s.D == 64 && n_lab == 32 && int8) continue;
                    const int k = 256;
                    tcase c = {&s, n, n_lab, k, int8 != 0, false};
                    dbufs b[4];
                    for (int i = 0; i < 4; ++i) {
                        alloc_dbufs(&b[i], c);
                        const int64_t nl = (int64_t)s.n_kv * n * n_lab;
                        if (int8) fill_device((int8_t *)b[i].labels, nl, seed + i, 127.f);
                        else fill_device((__half *)b[i].labels, nl, seed + i, 1.f);
                        fill_device(b[i].scale, (int64_t)s.n_kv * n, seed + 7 + i, 0.01f);
                        fill_device(b[i].q, (int64_t)s.n_heads * s.D, seed + 11 + i, 1.f);
                        std::vector<int32_t> idx;
                        rng64 r = {seed + i};
                        idx = random_label_coords(&r, s.n_kv, s.D, n_lab);
                        CHECK(cudaMemcpy(b[i].lab_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
                    }
                    CHECK(cudaDeviceSynchronize());
                    int rot = 0;
                    auto t = [&](int ver, unsigned stages) {
                        return time_ms(st, 3, 20, [&] {
                            const dbufs &bb = b[rot++ % 4];
                            if (ver == 1) run_v1(c, bb, n_sms, st);
                            else run_v2(c, bb, n_sms, st, stages);
                        });
                    };
                    /* Selection needs the histogram its TIP just built: time it as both - TIP. */
                    const double t1 = t(1, 3), tt = t(2, 1), tb = t(2, 3), ts = tb - tt;
                    const double bytes = (double)s.n_kv * n * n_lab * (int8 ? 1 : 2);
                    printf("%-13s %7d %4d %-5s %5d | %9.4f | %9.4f %9.4f %9.4f | %7.0f\n", s.name, n, n_lab,
                           int8 ? "int8" : "fp16", k, t1, tt, ts, tb, bytes / tt / 1e6);
                    for (int i = 0; i < 4; ++i) free_dbufs(&b[i]);
                }
    printf("\nTIP chunk sweep (tokens per CTA), TIP alone, us; llama3-8b, 32 fp16 label coords\n");
    for (int n : {32768, 131072}) {
        tcase c = {&SHAPES[0], n, 32, 256, false, false};
        dbufs b[4];
        for (int i = 0; i < 4; ++i) {
            alloc_dbufs(&b[i], c);
            fill_device((__half *)b[i].labels, (int64_t)c.sh->n_kv * n * 32, seed + i, 1.f);
            fill_device(b[i].q, (int64_t)c.sh->n_heads * c.sh->D, seed + 11 + i, 1.f);
            rng64 r = {seed + i};
            const std::vector<int32_t> idx = random_label_coords(&r, c.sh->n_kv, c.sh->D, 32);
            CHECK(cudaMemcpy(b[i].lab_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
        }
        printf("n=%-7d", n);
        for (int chunk : {256, 512, 1024, 2048, 4096, 8192}) {
            int rot = 0;
            const double ms = time_ms(st, 3, 20, [&] { run_v2(c, b[rot++ % 4], n_sms, st, 1, chunk); });
            printf("  %5d: %7.2f", chunk, ms * 1e3);
        }
        printf("\n");
        for (int i = 0; i < 4; ++i) free_dbufs(&b[i]);
    }
    CHECK(cudaStreamDestroy(st));
}

int main(int argc, char **argv) {
    bool do_val = false, do_bench = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--validate")) do_val = true;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else {
            fprintf(stderr, "usage: tip_topk [--validate] [--bench]\n");
            return 2;
        }
    }
    if (!do_val && !do_bench) do_val = do_bench = true;
    int n_sms = 0;
    CHECK(cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK(tip_prepare());
    const uint64_t seed = fresh_seed();
    int failures = 0;
    if (do_val) failures = validate(n_sms, seed);
    if (do_bench) bench(n_sms, seed);
    if (do_val) printf("\ntip_topk validation: %s (%d failures)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
