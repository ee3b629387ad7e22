/* One decode step per layer through the library API (src/cuda/fasa_cuda.h):
 * dense, FASA-C (fp16 and int8 labels, per group and per head) and FASA-M.
 *
 * --validate  fresh random K/V/q appended through the API; every output
 *             checked against a float64 CPU reference (relative error
 *             < 1e-3), every selected set against the CPU top-k (ties
 *             aside), the appended cache against the input bits.
 * --small     the same on a small case (for compute-sanitizer).
 * --bench     per-layer latency of a multi-layer step captured in a CUDA
 *             graph (median of replays), achieved GB/s, device memory;
 *             also writes CSV rows to the file given by --csv.
 *
 * --quick     with --bench: contexts 4K, 32K and 128K only.
 * --profile   a few steps for a profiler (per-kernel durations with ncu).
 *
 * usage: fasa_step [--validate] [--small] [--bench] [--quick] [--csv FILE] [--profile] */
#include "common.cuh"

extern "C" {
#include "fasa_cuda.h"
#include "fasa_cuda_internal.h"
}

#define TRY(call)                                                                               \
    do {                                                                                        \
        fasa_status s_ = (call);                                                                \
        if (s_ != FASA_OK) {                                                                    \
            fprintf(stderr, "%s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, fasa_last_error()); \
            exit(2);                                                                            \
        }                                                                                       \
    } while (0)

struct shape {
    const char *name;
    int n_heads, n_kv, D;
};
static const shape SHAPES[] = {{"llama3-8b", 32, 8, 128}, {"smollm2-135m", 9, 3, 64}};

struct variant {
    const char *name;
    fasa_cuda_mode mode;
    fasa_cuda_label_type lt;
    bool per_head;
};
static const variant VARIANTS[] = {{"C fp16", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_F16, false},
                                   {"C int8", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_I8, false},
                                   {"C fp16 per-head", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_F16, true},
                                   {"M fp16", FASA_CUDA_MODE_M, FASA_CUDA_LABEL_F16, false}};

static fasa_cuda_params params_for(const shape &s, const variant &v, int n_ctx, int n_tip, int n_fac_max) {
    fasa_cuda_params p = fasa_cuda_default_params();
    p.n_heads = s.n_heads;
    p.n_kv_heads = s.n_kv;
    p.head_dim = s.D;
    p.n_ctx = n_ctx;
    p.mode = v.mode;
    p.n_lab = 2 * n_tip;
    p.label_type = v.lt;
    p.per_head_select = v.per_head;
    p.n_fac_max = n_fac_max;
    return p;
}

/* ---- validation --------------------------------------------------------- */

static int check(bool ok, const char *what, const char *detail) {
    printf("  %-58s %s %s\n", what, ok ? "ok" : "FAIL", detail);
    return ok ? 0 : 1;
}

static int validate_case(const shape &s, const variant &v, int n, rng64 *r) {
    const int n_tip = s.D == 128 ? 16 : 8, n_lab = 2 * n_tip, group = s.n_heads / s.n_kv;
    const int n_fac_max = 1024;
    fasa_cuda_ctx *ctx;
    fasa_cuda_layer *l;
    const fasa_cuda_params p = params_for(s, v, n + 16, n_tip, n_fac_max);
    TRY(fasa_cuda_ctx_init(&p, &ctx));
    const std::vector<int32_t> lab_idx = random_label_coords(r, s.n_kv, s.D, n_lab);
    TRY(fasa_cuda_layer_init(ctx, lab_idx.data(), &l));
    printf("%s, %s, n = %d, N_tip = %d\n", s.name, v.name, n, n_tip);
    int fails = 0;
    char msg[256];

    /* Append n-1 tokens, then 1, as a prefill followed by a decode step would. */
    const size_t row = (size_t)s.n_kv * s.D;
    std::vector<float> hk(n * row), hv(n * row);
    for (float &x : hk) x = rng_uniform(r);
    for (float &x : hv) x = rng_uniform(r);
    TRY(fasa_cuda_layer_append(l, hk.data(), hv.data(), n - 1));
    TRY(fasa_cuda_layer_append(l, hk.data() + (n - 1) * row, hv.data() + (n - 1) * row, 1));
    std::vector<uint16_t> K((size_t)n * row), V((size_t)n * row);
    TRY(fasa_cuda_layer_read_kv(l, K.data(), V.data()));
    size_t bad = 0;
    for (int t = 0; t < n; ++t)
        for (int h = 0; h < s.n_kv; ++h)
            for (int d = 0; d < s.D; ++d) {
                const size_t src = ((size_t)t * s.n_kv + h) * s.D + d, dst = ((size_t)h * n + t) * s.D + d;
                bad += K[dst] != f16_bits(hk[src]) || V[dst] != f16_bits(hv[src]);
            }
    snprintf(msg, sizeof msg, "(%zu mismatches)", bad);
    fails += check(bad == 0, "append: cache holds fp16(K), fp16(V)", msg);
    fasa_status over = fasa_cuda_layer_append(l, hk.data(), hv.data(), 17);
    fails += check(over == FASA_E_CONTEXT, "append past n_ctx is refused with FASA_E_CONTEXT", fasa_last_error());

    std::vector<float> q((size_t)s.n_heads * s.D), got(q.size());
    for (float &x : q) x = 8.f * rng_uniform(r);
    float *dq, *dout;
    TRY(fasa_cuda_alloc(ctx, q.size() * 4, (void **)&dq));
    TRY(fasa_cuda_alloc(ctx, q.size() * 4, (void **)&dout));
    TRY(fasa_cuda_upload(ctx, dq, q.data(), q.size() * 4));
    auto run = [&](int n_fac) {
        CHECK(cudaMemset(dout, 0xff, q.size() * 4)); /* NaN poison: every output must be written */
        CHECK(cudaDeviceSynchronize());
        if (n_fac == 0) TRY(fasa_cuda_dense_step(l, dq, dout));
        else TRY(fasa_cuda_fasa_step(l, n_fac, dq, dout));
        TRY(fasa_cuda_ctx_sync(ctx));
        TRY(fasa_cuda_download(ctx, got.data(), dout, got.size() * 4));
    };

    std::vector<double> ref(q.size());
    for (int h = 0; h < s.n_heads; ++h) {
        const size_t off = (size_t)(h / group) * n * s.D;
        ref_attention(&q[(size_t)h * s.D], &K[off], &V[off], s.D, NULL, n, &ref[(size_t)h * s.D]);
    }
    run(0);
    double e = rel_error(got.data(), ref.data(), got.size());
    snprintf(msg, sizeof msg, "(rel.err %.2e)", e);
    fails += check(e < 1e-3, "dense step vs float64 reference", msg);
    if (n <= n_fac_max) {
        run(n_fac_max);
        e = rel_error(got.data(), ref.data(), got.size());
        snprintf(msg, sizeof msg, "(rel.err %.2e)", e);
        fails += check(e < 1e-3, "FASA step with a budget covering every token == dense", msg);
    }

    std::vector<double> labels;
    host_labels(K.data(), s.n_kv, n, s.D, lab_idx.data(), n_lab, v.lt == FASA_CUDA_LABEL_I8, labels);
    const int U = fasa_cuda_ctx_n_units(ctx), hpu = s.n_heads / U;
    struct tuning_case { const char *name; int fused, pdl, cluster; };
    const tuning_case tunings[] = {{"3 launches+PDL", 0, 1, -1}, {"3 launches", 0, 0, -1}, {"fused+PDL", 1, 1, -1},
                                   {"cluster auto+PDL", 0, 1, 0},  {"cluster auto", 0, 0, 0},
                                   {"cluster 1", 0, 1, 1},         {"cluster 2", 0, 1, 2},
                                   {"cluster 4", 0, 1, 4},         {"cluster 8", 0, 1, 8},
                                   {"cluster 13", 0, 1, 13},       {"cluster 16", 0, 1, 16}};
    /* Every score equal (q = 0): the boundary bin holds every token, more
     * than the cluster kernel stages in shared memory when n is large. */
    for (int zero_q = 0; zero_q < 2; ++zero_q) {
        if (zero_q) {
            std::fill(q.begin(), q.end(), 0.f);
            TRY(fasa_cuda_upload(ctx, dq, q.data(), q.size() * 4));
        }
        for (const tuning_case &tc : tunings)
            for (int n_fac : {256, 1000}) {
                if (n_fac >= n) continue;
                if (zero_q && tc.cluster < 0 && tc.pdl == 0) continue;
                fasa_cuda_tuning tu;
                fasa_cuda_ctx_get_tuning(ctx, &tu);
                tu.fused = tc.fused;
                tu.pdl = tc.pdl;
                tu.cluster = tc.cluster;
                fasa_cuda_ctx_set_tuning(ctx, &tu);
                /* a cluster size this device or context cannot run is skipped, not failed */
                if (tc.cluster >= 0 && fasa_cuda_ctx_cluster_size(ctx) == 0) continue;
                char name[64];
                snprintf(name, sizeof name, "%s%s%s", zero_q ? "q = 0, " : "", tc.name,
                         tc.cluster == 0 ? " (chosen)" : "");
                run(n_fac);
                std::vector<int32_t> sel((size_t)U * n_fac);
                TRY(fasa_cuda_ctx_read_selection(ctx, n_fac, sel.data()));
                bool sets_ok = true;
                int outside = 0;
                const char *why = "";
                for (int u = 0; u < U; ++u) {
                    std::vector<double> sc;
                    const int head0 = u * hpu, kvh = head0 / group;
                    host_scores(labels, q.data(), s.D, n, n_lab, lab_idx.data(), kvh, head0, hpu, sc);
                    double smax = 0;
                    for (double x : sc) smax = std::max(smax, fabs(x));
                    bool ok;
                    const char *w;
                    outside = std::max(outside,
                                       check_topk(sc, &sel[(size_t)u * n_fac], n_fac, 1e-5 * smax + 1e-6, &ok, &w));
                    if (!ok) sets_ok = false, why = w;
                }
                snprintf(msg, sizeof msg, "(%s, n_fac %d: %s; at most %d tied tokens differ)", name, n_fac,
                         sets_ok ? "exact" : why, outside);
                fails += check(sets_ok, "selected sets == CPU top-n_fac of the label scores", msg);
                if (!sets_ok) continue;
                for (int h = 0; h < s.n_heads; ++h) {
                    const size_t off = (size_t)(h / group) * n * s.D;
                    ref_attention(&q[(size_t)h * s.D], &K[off], &V[off], s.D, &sel[(size_t)(h / hpu) * n_fac], n_fac,
                                  &ref[(size_t)h * s.D]);
                }
                e = rel_error(got.data(), ref.data(), got.size());
                snprintf(msg, sizeof msg, "(%s, n_fac %d: rel.err %.2e)", name, n_fac, e);
                fails += check(e < 1e-3, "FASA output == exact attention over the selected tokens", msg);
            }
    }
    fasa_status bad_budget = fasa_cuda_fasa_step(l, 0, dq, dout);
    fails += check(bad_budget == FASA_E_ARG, "n_fac = 0 is refused with FASA_E_ARG", fasa_last_error());

    fasa_cuda_free(dq);
    fasa_cuda_free(dout);
    fasa_cuda_layer_free(l);
    fasa_cuda_ctx_free(ctx);
    return fails;
}

static int validate(bool small, uint64_t seed) {
    rng64 r = {seed};
    printf("validation through the API (seed %llu)\n", (unsigned long long)seed);
    int fails = 0;
    for (const shape &s : SHAPES)
        for (const variant &v : VARIANTS)
            for (int n : small ? std::vector<int>{300} : std::vector<int>{700, 9000}) fails += validate_case(s, v, n, &r);
    /* Refused configurations name the problem. */
    fasa_cuda_ctx *ctx = NULL;
    fasa_cuda_params p = params_for(SHAPES[0], VARIANTS[0], 1024, 16, 256);
    p.head_dim = 96;
    fails += check(fasa_cuda_ctx_init(&p, &ctx) == FASA_E_UNSUPPORTED && !ctx, "head_dim 96 is refused",
                   fasa_last_error());
    return fails;
}

/* ---- benchmark ---------------------------------------------------------- */

struct stack {
    fasa_cuda_ctx *ctx;
    std::vector<fasa_cuda_layer *> layers;
    std::vector<float *> q, out;
};

static void stack_init(stack *st, const fasa_cuda_params &p, int n_layers, int n, uint64_t seed) {
    TRY(fasa_cuda_ctx_init(&p, &st->ctx));
    rng64 r = {seed};
    const std::vector<int32_t> lab_idx = random_label_coords(&r, p.n_kv_heads, p.head_dim, p.n_lab);
    for (int i = 0; i < n_layers; ++i) {
        fasa_cuda_layer *l;
        TRY(fasa_cuda_layer_init(st->ctx, lab_idx.data(), &l));
        TRY(fasa_cuda_layer_fill_random(l, n, seed + 101 * i));
        float *q, *o;
        TRY(fasa_cuda_alloc(st->ctx, (size_t)p.n_heads * p.head_dim * 4, (void **)&q));
        TRY(fasa_cuda_alloc(st->ctx, (size_t)p.n_heads * p.head_dim * 4, (void **)&o));
        fill_device(q, (int64_t)p.n_heads * p.head_dim, seed + 101 * i + 7, 8.f);
        st->layers.push_back(l);
        st->q.push_back(q);
        st->out.push_back(o);
    }
    CHECK(cudaDeviceSynchronize());
}

static void stack_free(stack *st) {
    for (size_t i = 0; i < st->layers.size(); ++i) {
        fasa_cuda_layer_free(st->layers[i]);
        fasa_cuda_free(st->q[i]);
        fasa_cuda_free(st->out[i]);
    }
    fasa_cuda_ctx_free(st->ctx);
    *st = stack();
}

/* Per-layer microseconds of one multi-layer step: n_fac 0 = dense. Returns
 * -1 when the step cannot be captured in a graph (reported, not fatal). */
static double step_us(stack *st, int n_fac, unsigned stages, bool graph) {
    cudaStream_t s = (cudaStream_t)fasa_cuda_ctx_stream(st->ctx);
    bool failed = false;
    auto enqueue = [&] {
        for (size_t i = 0; i < st->layers.size() && !failed; ++i) {
            const fasa_status r = n_fac == 0 ? fasa_cuda_dense_step(st->layers[i], st->q[i], st->out[i])
                                             : fasa_cuda_fasa_stages(st->layers[i], n_fac, st->q[i], st->out[i], stages);
            if (r != FASA_OK) {
                printf("  (step failed: %s)\n", fasa_last_error());
                failed = true;
            }
        }
    };
    double ms;
    if (graph) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        enqueue();
        cudaError_t e = cudaStreamEndCapture(s, &g);
        if (e == cudaSuccess && failed) e = cudaErrorUnknown;
        if (e == cudaSuccess) {
            e = cudaGraphInstantiate(&ge, g, 0);
            cudaGraphDestroy(g);
        }
        if (e != cudaSuccess) {
            printf("  (graph capture failed: %s)\n", cudaGetErrorString(e));
            cudaGetLastError();
            return -1;
        }
        ms = time_ms(s, 3, 25, [&] { CHECK(cudaGraphLaunch(ge, s)); });
        CHECK(cudaGraphExecDestroy(ge));
    } else {
        ms = time_ms(s, 3, 25, enqueue);
        if (failed) return -1;
    }
    TRY(fasa_cuda_ctx_sync(st->ctx));
    return ms * 1e3 / st->layers.size();
}

static void set_tuning(stack *st, int fused, int pdl, int cluster) {
    fasa_cuda_tuning t;
    fasa_cuda_ctx_get_tuning(st->ctx, &t);
    t.fused = fused;
    t.pdl = pdl;
    t.cluster = cluster;
    fasa_cuda_ctx_set_tuning(st->ctx, &t);
}

static FILE *csv;

static void report(const shape &s, int n, const char *method, int n_tip, int n_fac, double us, double bytes,
                   double dense_us, uint64_t dev_bytes, double copy_gbs) {
    const double gbs = bytes / (us * 1e-6) / 1e9;
    printf("%-13s %7d %-24s %5d %5d %10.2f %8.0f %6.1f%% %8.2fx %10.1f\n", s.name, n, method, n_tip, n_fac, us, gbs,
           100.0 * gbs / copy_gbs, dense_us / us, dev_bytes / 1048576.0);
    if (csv)
        fprintf(csv, "%s,%d,%s,%d,%d,%.3f,%.1f,%.1f\n", s.name, n, method, n_tip, n_fac, us, gbs,
                dev_bytes / 1048576.0);
}

static void bench(uint64_t seed, bool quick) {
    cudaStream_t st;
    CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const double copy = copy_bandwidth_gbs(st);
    CHECK(cudaStreamDestroy(st));
    printf("\ncopy bandwidth (device-to-device, read + write): %.0f GB/s\n", copy);
    printf("per-layer latency of a multi-layer decode step in a CUDA graph (median of 25 replays)\n");
    printf("GB/s = bytes that must be read (dense: K+V; FASA: labels + selected K/V rows) / time\n");
    printf("%-13s %7s %-24s %5s %5s %10s %8s %7s %9s %10s\n", "shape", "n", "method", "N_tip", "N_fac", "us/layer",
           "GB/s", "%copy", "vs dense", "dev MB/L");
    if (csv) {
        fprintf(csv, "shape,n,method,n_tip,n_fac,us_per_layer,gbs,device_mb_per_layer\n");
        fprintf(csv, "all,0,copy bandwidth,0,0,0,%.1f,0\n", copy);
    }
    const std::vector<int> ns = quick ? std::vector<int>{4096, 32768, 131072}
                                      : std::vector<int>{4096, 16384, 32768, 65536, 131072};
    for (const shape &s : SHAPES)
        for (int n : ns) {
            const double kv_bytes = 4.0 * s.n_kv * (double)n * s.D;
            int L = (int)ceil(768e6 / kv_bytes);
            L = L < 2 ? 2 : L > 16 ? 16 : L;
            double dense_us = 0;
            for (const variant &v : VARIANTS)
                for (int n_tip : {16, 8}) {
                    const bool main_variant = v.mode == FASA_CUDA_MODE_C && v.lt == FASA_CUDA_LABEL_F16 && !v.per_head;
                    if (n_tip == 8 && !main_variant) continue;
                    stack sk;
                    const int layers = v.mode == FASA_CUDA_MODE_M ? 2 : L;
                    stack_init(&sk, params_for(s, v, n, n_tip, 2048), layers, n, seed);
                    const uint64_t dev = fasa_cuda_layer_device_bytes(sk.layers[0]);
                    /* per token: the labels, plus a 4-byte scale for int8 */
                    const double lab_bytes =
                        (double)s.n_kv * n * (v.lt == FASA_CUDA_LABEL_I8 ? 2 * n_tip + 4 : 2 * n_tip * 2);
                    if (main_variant && n_tip == 16) {
                        dense_us = step_us(&sk, 0, 7, true);
                        report(s, n, "dense (ours)", 0, 0, dense_us, kv_bytes, dense_us,
                               (uint64_t)kv_bytes, copy);
                    }
                    const int U = v.per_head ? s.n_heads : s.n_kv;
                    for (int n_fac : {256, 1024, 2048}) {
                        if (v.per_head && n_fac != 256) continue;
                        const double rows = (double)U * n_fac * s.D * 4; /* K + V rows, fp16 */
                        char name[64];
                        snprintf(name, sizeof name, "FASA-%s", v.name);
                        const double us = step_us(&sk, n_fac, 7, true);
                        report(s, n, name, n_tip, n_fac, us, lab_bytes + rows, dense_us, dev, copy);
                        if (main_variant && n_fac == 256) {
                            /* The default (automatic pipeline) eagerly launched; each pipeline
                             * forced: three launches (with and without PDL, and split into its
                             * stages, each timed alone in a graph), the one-kernel cluster step,
                             * and two launches with the attention fused into the selection. */
                            const double t_eager = step_us(&sk, n_fac, 7, false);
                            report(s, n, "  no graph", n_tip, n_fac, t_eager, lab_bytes + rows, dense_us, dev, copy);
                            set_tuning(&sk, 0, 1, -1);
                            const double l3 = step_us(&sk, n_fac, 7, true);
                            report(s, n, "  3 launches", n_tip, n_fac, l3, lab_bytes + rows, dense_us, dev, copy);
                            set_tuning(&sk, 0, 0, -1);
                            const double l_np = step_us(&sk, n_fac, 7, true);
                            report(s, n, "  3 launches, no PDL", n_tip, n_fac, l_np, lab_bytes + rows, dense_us, dev,
                                   copy);
                            set_tuning(&sk, 0, 1, -1);
                            const double t_tip = step_us(&sk, n_fac, 1, true);
                            const double t_att = step_us(&sk, n_fac, 4, true);
                            report(s, n, "  stage: TIP alone", n_tip, n_fac, t_tip, lab_bytes, dense_us, dev, copy);
                            /* selection consumes the histogram TIP builds: timed as step - TIP - attention */
                            report(s, n, "  stage: select (diff)", n_tip, n_fac, l3 - t_tip - t_att, 0, dense_us, dev,
                                   copy);
                            report(s, n, "  stage: attention alone", n_tip, n_fac, t_att, rows, dense_us, dev, copy);
                            set_tuning(&sk, 0, 1, 0);
                            const int C = fasa_cuda_ctx_cluster_size(sk.ctx);
                            set_tuning(&sk, 0, 1, C > 0 ? C : -1); /* forced: auto may take the launches */
                            if (C > 0) {
                                char cname[64];
                                snprintf(cname, sizeof cname, "  one kernel, clusters of %d", C);
                                const double c_all = step_us(&sk, n_fac, 7, true);
                                report(s, n, cname, n_tip, n_fac, c_all, lab_bytes + rows, dense_us, dev, copy);
                            }
                            set_tuning(&sk, 1, 1, -1);
                            const double f_all = step_us(&sk, n_fac, 7, true);
                            report(s, n, "  2 launches (fused attn)", n_tip, n_fac, f_all, lab_bytes + rows, dense_us,
                                   dev, copy);
                            set_tuning(&sk, 0, 1, 0);
                            if (n_tip == 16) {
                                set_tuning(&sk, 0, 0, 0);
                                const double d_np = step_us(&sk, 0, 7, true);
                                report(s, n, "  dense without PDL", 0, 0, d_np, kv_bytes, dense_us, (uint64_t)kv_bytes,
                                       copy);
                                set_tuning(&sk, 0, 1, 0);
                            }
                        }
                    }
                    stack_free(&sk);
                }
        }
}

/* A few steps to run under a profiler (ncu): dense, FASA-C default, FASA-C
 * fused, at 32K and 128K tokens, llama3-8b shapes, N_tip 16, N_fac 256. */
static void profile(uint64_t seed) {
    for (int n : {32768, 131072}) {
        stack sk;
        stack_init(&sk, params_for(SHAPES[0], VARIANTS[0], n, 16, 2048), 1, n, seed);
        printf("profile n=%d: dense x2, FASA x2 (TIP, select, attention), one-kernel FASA x2, fused FASA x2 "
               "(TIP, select+attention)\n", n);
        for (int i = 0; i < 2; ++i) TRY(fasa_cuda_dense_step(sk.layers[0], sk.q[0], sk.out[0]));
        for (int i = 0; i < 2; ++i) TRY(fasa_cuda_fasa_step(sk.layers[0], 256, sk.q[0], sk.out[0]));
        set_tuning(&sk, 0, 1, 0);
        for (int i = 0; i < 2; ++i) TRY(fasa_cuda_fasa_step(sk.layers[0], 256, sk.q[0], sk.out[0]));
        set_tuning(&sk, 1, 1, -1);
        for (int i = 0; i < 2; ++i) TRY(fasa_cuda_fasa_step(sk.layers[0], 256, sk.q[0], sk.out[0]));
        TRY(fasa_cuda_ctx_sync(sk.ctx));
        stack_free(&sk);
    }
}

int main(int argc, char **argv) {
    bool do_val = false, small = false, do_bench = false, do_profile = false, quick = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--validate")) do_val = true;
        else if (!strcmp(argv[i], "--small")) do_val = small = true;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else if (!strcmp(argv[i], "--profile")) do_profile = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) {
            csv = fopen(argv[++i], "w");
            if (!csv) {
                perror(argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: fasa_step [--validate] [--small] [--bench] [--quick] [--csv FILE] [--profile]\n");
            return 2;
        }
    }
    if (!do_val && !do_bench && !do_profile) do_val = do_bench = true;
    const uint64_t seed = fresh_seed();
    int fails = 0;
    if (do_profile) profile(seed);
    if (do_val) fails = validate(small, seed);
    if (do_bench) bench(seed, quick);
    if (csv) fclose(csv);
    if (do_val) printf("\nfasa_step validation: %s (%d failures)\n", fails ? "FAILED" : "passed", fails);
    return fails ? 1 : 0;
}
