/* Workbench of a prompt chunk's kernels (gemm.cuh, flash.cuh): validates the
 * tensor-core product and the causal flash attention against float64 CPU
 * references on shapes with ragged edges, then times them on Llama-3.1-8B
 * shapes, beside cuBLAS on the same fp16 operands when built with
 * -DWITH_CUBLAS -lcublas.
 *
 *   prefill [--check] [--bench] [--seed S]     (no flag: both)
 *
 * Exit status 1 when a check fails. */
#include "common.cuh"
#include "flash.cuh"
#include "gemm.cuh"

extern "C" {
#include "quant.h"
}
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

static rng64 R;

/* Random block-format weights: random codes, small positive fp16 scales. */
static std::vector<uint8_t> random_weights(uint32_t type, int64_t rows, int64_t cols) {
    const int64_t rb = (int64_t)quant_row_bytes(type, cols);
    std::vector<uint8_t> w((size_t)(rows * rb + 16));
    for (auto &x : w) x = (uint8_t)rng_next(&R);
    const int bb = type == FASA_TYPE_Q4_K ? 144 : 210;
    for (int64_t off = 0; off + bb <= rows * rb; off += bb) {
        const uint16_t d = f16_bits(0.001f * (float)(1 + rng_next(&R) % 16)), m = f16_bits(0.001f * (float)(rng_next(&R) % 16));
        if (type == FASA_TYPE_Q4_K) memcpy(&w[off], &d, 2), memcpy(&w[off + 2], &m, 2);
        else memcpy(&w[off + 208], &d, 2);
    }
    return w;
}

/* ---- the product ------------------------------------------------------- */

/* y = W x for M tokens of K columns, through gemm_input_f16, the expansion
 * and gemm_f16 exactly as the backend runs them. Two references in double:
 * with W and x rounded to fp16 as the kernel sees them (checks the kernel's
 * arithmetic: fp32 accumulation) and with W from quant_dequant_row and x as
 * given (what the fp16 operands cost: about 2^-12 relative each). */
static bool check_gemm(uint32_t type, int M, int N, int K, float xscale, bool bias) {
    std::vector<uint8_t> w = random_weights(type, N, K);
    const int64_t rb = (int64_t)quant_row_bytes(type, K);
    std::vector<float> x((size_t)M * K), bv(N), y((size_t)M * N);
    for (auto &v : x) v = rng_uniform(&R) * xscale;
    for (auto &v : bv) v = rng_uniform(&R);
    uint8_t *dw;
    float *dx, *dy, *db, *dalpha;
    __half *dxh, *dwh;
    unsigned *damax;
    CHECK(cudaMalloc(&dw, w.size()));
    CHECK(cudaMalloc(&dx, x.size() * 4));
    CHECK(cudaMalloc(&dy, y.size() * 4));
    CHECK(cudaMalloc(&db, N * 4));
    CHECK(cudaMalloc(&dxh, x.size() * 2));
    CHECK(cudaMalloc(&dwh, (size_t)N * K * 2));
    CHECK(cudaMalloc(&damax, 4));
    CHECK(cudaMalloc(&dalpha, 4));
    CHECK(cudaMemcpy(dw, w.data(), w.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, bv.data(), N * 4, cudaMemcpyHostToDevice));
    cudaError_t e = cudaSuccess;
    CHECK(gemm_input_f16(dx, M, K, dxh, damax, dalpha, 0));
    if (!gemm_dequant_f16(type, dw, rb, N, K, dwh, 0, &e)) return false;
    CHECK(e);
    const gemm_args a = {dxh, K, dwh, K, dy, N, M, N, K, bias ? db : nullptr, dalpha};
    CHECK(gemm_f16(a, 0));
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
    /* the input's scale, as gemm_input_scale picks it */
    float amax = 0;
    for (float v : x) amax = fmaxf(amax, fabsf(v));
    const double sc = amax > GEMM_XMAX ? exp2(-ceil(log2(amax / GEMM_XMAX))) : 1.0;
    std::vector<double> xr(x.size());
    for (size_t i = 0; i < x.size(); i++) xr[i] = f16_value(f16_bits((float)(x[i] * sc))) / sc;
    std::vector<float> wr(K);
    double err = 0, err_exact = 0, mag = 0;
    for (int n = 0; n < N; n++) {
        quant_dequant_row(type, w.data() + n * rb, wr.data(), K);
        for (int m = 0; m < M; m++) {
            double s = bias ? bv[n] : 0.0, e = s;
            for (int k = 0; k < K; k++) {
                s += f16_value(f16_bits(wr[k])) * xr[(size_t)m * K + k];
                e += (double)wr[k] * x[(size_t)m * K + k];
            }
            err = fmax(err, fabs(s - y[(size_t)m * N + n]));
            err_exact = fmax(err_exact, fabs(e - y[(size_t)m * N + n]));
            mag = fmax(mag, fabs(e));
        }
    }
    const bool ok = err <= 2e-5 * mag && err_exact <= 2e-3 * mag && mag > 0;
    printf("gemm %s M=%d N=%d K=%d x*%g%s: max err %.2g of max |y| (fp16 operands: %.2g; tol 2e-5, 2e-3) %s\n",
           type == FASA_TYPE_Q4_K ? "Q4_K" : "Q6_K", M, N, K, xscale, bias ? " +bias" : "", err / mag,
           err_exact / mag, ok ? "ok" : "FAIL");
    cudaFree(dw), cudaFree(dx), cudaFree(dy), cudaFree(db), cudaFree(dxh), cudaFree(dwh), cudaFree(damax), cudaFree(dalpha);
    return ok;
}

/* ---- the attention ------------------------------------------------------ */

static bool check_flash(int D, int n_kv, int G, int pos0, int n, float qscale, int rows) {
    const int H = n_kv * G, cap = pos0 + n + 5;
    std::vector<float> q((size_t)n * H * D);
    std::vector<__half> k((size_t)n_kv * cap * D), v(k.size());
    for (auto &x : q) x = rng_uniform(&R) * qscale;
    for (size_t i = 0; i < k.size(); i++) k[i] = __float2half(rng_uniform(&R)), v[i] = __float2half(rng_uniform(&R));
    float *dq;
    __half *dk, *dv, *dout;
    CHECK(cudaMalloc(&dq, q.size() * 4));
    CHECK(cudaMalloc(&dk, k.size() * 2));
    CHECK(cudaMalloc(&dv, v.size() * 2));
    CHECK(cudaMalloc(&dout, q.size() * 2));
    CHECK(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dk, k.data(), k.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
    flash_args a = {dq, dout, dk, dv, (int64_t)cap * D, n, H, G, pos0, 0, 1.4426950408889634f / sqrtf((float)D)};
    CHECK(flash_launch(a, n_kv, D, 0, rows));
    CHECK(cudaDeviceSynchronize());
    std::vector<__half> out(q.size());
    CHECK(cudaMemcpy(out.data(), dout, out.size() * 2, cudaMemcpyDeviceToHost));
    double err = 0;
    std::vector<double> p(pos0 + n);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const int kh = h / G, len = pos0 + t + 1;
            const float *qr = &q[((size_t)t * H + h) * D];
            double mx = -1e300, sum = 0;
            for (int j = 0; j < len; j++) {
                double s = 0;
                for (int d = 0; d < D; d++) s += (double)qr[d] * __half2float(k[((size_t)kh * cap + j) * D + d]);
                p[j] = s / sqrt((double)D);
                mx = fmax(mx, p[j]);
            }
            for (int j = 0; j < len; j++) sum += (p[j] = exp(p[j] - mx));
            for (int d = 0; d < D; d++) {
                double o = 0;
                for (int j = 0; j < len; j++) o += p[j] * __half2float(v[((size_t)kh * cap + j) * D + d]);
                err = fmax(err, fabs(o / sum - __half2float(out[((size_t)t * H + h) * D + d])));
            }
        }
    /* fp16 Q and P (2^-11 relative), fp16 output of values in [-1, 1] */
    const bool ok = err <= 4e-3;
    printf("flash D=%d rows=%d kv=%d group=%d pos0=%d n=%d q*%g: max abs err %.3g %s\n", D, rows, n_kv, G, pos0, n, qscale, err,
           ok ? "ok" : "FAIL");
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout);
    return ok;
}

static bool checks() {
    bool ok = true;
    ok &= check_gemm(FASA_TYPE_Q4_K, 37, 200, 512, 1.0f, false);
    ok &= check_gemm(FASA_TYPE_Q4_K, 300, 576, 768, 1.0f, true);
    ok &= check_gemm(FASA_TYPE_Q6_K, 129, 256, 1536, 1.0f, false);
    ok &= check_gemm(FASA_TYPE_Q6_K, 64, 130, 8960, 3.0e5f, true); /* scaled into fp16 range */
    ok &= check_gemm(FASA_TYPE_Q4_K, 1, 64, 256, 1.0f, false);
    for (int rows : {64, 128}) {
        ok &= check_flash(64, 3, 3, 0, 100, 4.0f, rows);
        ok &= check_flash(128, 2, 4, 700, 257, 4.0f, rows);
        ok &= check_flash(128, 2, 6, 0, 333, 8.0f, rows);
        ok &= check_flash(128, 1, 1, 65, 130, 4.0f, rows);
        ok &= check_flash(64, 1, 8, 1000, 70, 2.0f, rows);
        ok &= check_flash(128, 8, 4, 3, 1, 4.0f, rows);
    }
    return ok;
}

/* ---- timing -------------------------------------------------------------- */

static float time_ms(const std::function<void()> &f, int reps) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    f();
    std::vector<float> t(reps);
    for (int r = 0; r < reps; r++) {
        CHECK(cudaEventRecord(a));
        f();
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        CHECK(cudaEventElapsedTime(&t[r], a, b));
    }
    std::sort(t.begin(), t.end());
    return t[reps / 2];
}

static void bench() {
    const int E = 4096, F = 14336, KVD = 1024;
    const int shapes[4][2] = {{E, E}, {KVD, E}, {F, E}, {E, F}};
    __half *xh, *wh;
    float *y;
    uint8_t *wq;
    const int Mmax = 4096;
    CHECK(cudaMalloc(&xh, (size_t)Mmax * F * 2));
    CHECK(cudaMalloc(&wh, (size_t)F * E * 2));
    CHECK(cudaMalloc(&y, (size_t)Mmax * F * 4));
    CHECK(cudaMemset(xh, 0x11, (size_t)Mmax * F * 2));
    CHECK(cudaMemset(wh, 0x11, (size_t)F * E * 2));
    std::vector<uint8_t> w = random_weights(FASA_TYPE_Q4_K, F, E);
    CHECK(cudaMalloc(&wq, w.size()));
    CHECK(cudaMemcpy(wq, w.data(), w.size(), cudaMemcpyHostToDevice));
#ifdef WITH_CUBLAS
    cublasHandle_t h;
    cublasCreate(&h);
#endif
    printf("\n| M | N | K | gemm ms | TFLOP/s |%s\n", 
#ifdef WITH_CUBLAS
           " cuBLAS ms | TFLOP/s |"
#else
           ""
#endif
    );
    for (int M : {512, 1024, 2048, 4096})
        for (auto &s : shapes) {
            const int N = s[0], K = s[1];
            const gemm_args a = {xh, K, wh, K, y, N, M, N, K, nullptr, nullptr};
            const float ms = time_ms([&] { CHECK(gemm_f16(a, 0)); }, 9);
            const double fl = 2.0 * M * N * K;
            printf("| %d | %d | %d | %.3f | %.0f |", M, N, K, ms, fl / ms / 1e9);
#ifdef WITH_CUBLAS
            const float one = 1.f, zero = 0.f;
            const float cms = time_ms(
                [&] {
                    cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, wh, CUDA_R_16F, K, xh, CUDA_R_16F, K, &zero,
                                 y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                },
                9);
            printf(" %.3f | %.0f |", cms, fl / cms / 1e9);
#endif
            printf("\n");
        }
    {
        cudaError_t e = cudaSuccess;
        const int64_t rb = (int64_t)quant_row_bytes(FASA_TYPE_Q4_K, E);
        const float ms = time_ms([&] { gemm_dequant_f16(FASA_TYPE_Q4_K, wq, rb, F, E, wh, 0, &e); }, 9);
        CHECK(e);
        const double bytes = (double)F * rb + (double)F * E * 2;
        printf("\nexpand Q4_K %dx%d to fp16: %.3f ms, %.0f GB/s\n", F, E, ms, bytes / ms / 1e6);
    }
    /* attention: Llama-3.1-8B heads (32 query, 8 KV, D 128) */
    printf("\n| chunk | depth | rows/CTA | flash ms | TFLOP/s |\n");
    const int n_kv = 8, G = 4, D = 128;
    for (auto cfg : {std::pair<int, int>{1024, 0}, {4096, 0}, {1024, 32768 - 1024}, {1024, 131072 - 1024}}) {
        const int n = cfg.first, pos0 = cfg.second, cap = pos0 + n;
        float *q;
        __half *k, *v, *o;
        CHECK(cudaMalloc(&q, (size_t)n * n_kv * G * D * 4));
        CHECK(cudaMalloc(&o, (size_t)n * n_kv * G * D * 2));
        CHECK(cudaMalloc(&k, (size_t)n_kv * cap * D * 2));
        CHECK(cudaMalloc(&v, (size_t)n_kv * cap * D * 2));
        CHECK(cudaMemset(q, 0, (size_t)n * n_kv * G * D * 4));
        CHECK(cudaMemset(k, 0, (size_t)n_kv * cap * D * 2));
        CHECK(cudaMemset(v, 0, (size_t)n_kv * cap * D * 2));
        flash_args a = {q, o, k, v, (int64_t)cap * D, n, n_kv * G, G, pos0, 0, 0.0883883f * 1.442695f};
        for (int rows : {64, 128}) {
            const float ms = time_ms([&] { CHECK(flash_launch(a, n_kv, D, 0, rows)); }, 5);
            const double pairs = (double)n * pos0 + (double)n * (n + 1) / 2; /* (query, key) pairs per head */
            const double fl = 4.0 * D * pairs * n_kv * G;
            printf("| %d | %d | %d | %.3f | %.0f |\n", n, pos0, rows, ms, fl / ms / 1e9);
        }
        cudaFree(q), cudaFree(o), cudaFree(k), cudaFree(v);
    }
    cudaFree(xh), cudaFree(wh), cudaFree(y), cudaFree(wq);
}

int main(int argc, char **argv) {
    bool do_check = false, do_bench = false;
    uint64_t seed = fresh_seed();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check")) do_check = true;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: prefill [--check] [--bench] [--seed S]\n");
            return 2;
        }
    }
    if (!do_check && !do_bench) do_check = do_bench = true;
    R.s = seed;
    printf("seed %llu\n", (unsigned long long)seed);
    bool ok = true;
    if (do_check) ok = checks();
    if (do_bench) bench();
    printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
    return ok ? 0 : 1;
}
