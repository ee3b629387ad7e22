/* Dense decode attention, one query token against the whole KV cache.
 *
 * Versions (each validated against a float64 CPU reference, then timed):
 *   1  one CTA per query head, scores through global memory: the obvious
 *      kernel; K and V are read once per query head (group-times redundant)
 *      by only n_heads CTAs.
 *   2  split-K flash decoding on CUDA cores: one CTA per (KV head, chunk),
 *      the query heads of the group share each K/V read, online softmax,
 *      warp-shuffle dot products, and a second kernel merging the chunks.
 *   3  the product kernel (src/cuda/attn.cuh): split-K on tensor cores fed
 *      straight from 16-byte loads, merge in the last CTA to finish.
 * Then a launch-shape sweep of version 3 (warps per CTA x steps per warp).
 *
 * usage: dense_decode [--validate] [--bench] [--sweep]   (no flag: all) */
#include "common.cuh"
#include "../../src/cuda/attn.cuh"

struct shape {
    const char *name;
    int n_heads, n_kv, D;
};
static const shape SHAPES[] = {{"llama3-8b", 32, 8, 128}, {"smollm2-135m", 9, 3, 64}};

/* ---- version 1 ---------------------------------------------------------- */

__device__ float block_reduce(float x, bool is_max, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    float r = sh[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) r = is_max ? fmaxf(r, sh[w]) : r + sh[w];
    return r;
}

__global__ void dense_v1(const __half *K, const __half *V, int64_t head_stride, const float *q, float *out,
                         float *scratch, int n, int D, int group, float scale) {
    __shared__ float sh[32];
    const int h = blockIdx.x;
    const __half *Kh = K + (h / group) * head_stride, *Vh = V + (h / group) * head_stride;
    const float *qh = q + (int64_t)h * D;
    float *s = scratch + (int64_t)h * n;
    float mx = -INFINITY;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        float acc = 0.f;
        for (int d = 0; d < D; ++d) acc += qh[d] * __half2float(Kh[(int64_t)t * D + d]);
        s[t] = acc * scale;
        mx = fmaxf(mx, acc * scale);
    }
    mx = block_reduce(mx, true, sh);
    float den = 0.f;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const float p = expf(s[t] - mx);
        s[t] = p;
        den += p;
    }
    den = block_reduce(den, false, sh);
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.f;
        for (int t = 0; t < n; ++t) acc += s[t] * __half2float(Vh[(int64_t)t * D + d]);
        out[(int64_t)h * D + d] = acc / den;
    }
}

/* ---- version 2 ---------------------------------------------------------- */

#define V2_WARPS 4

/* E consecutive halves in one 4- or 8-byte load. */
template <int E>
__device__ __forceinline__ void load_lane(const __half *p, float *f) {
    if (E == 4) {
        const uint2 u = *reinterpret_cast<const uint2 *>(p);
        const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&u.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&u.y));
        f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    } else {
        const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(p));
        f[0] = a.x, f[1] = a.y;
    }
}

template <int D>
__global__ void __launch_bounds__(V2_WARPS * 32)
    dense_v2_split(const __half *K, const __half *V, int64_t head_stride, const float *q, float *part_o,
                   float2 *part_ml, int n, int chunk, int group, float scale_log2) {
    constexpr int E = D / 32; /* dims per lane */
    __shared__ float so[V2_WARPS][8][D];
    __shared__ float2 sml[V2_WARPS][8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kvh = blockIdx.y, split = blockIdx.x, n_splits = gridDim.x;
    const __half *Kh = K + kvh * head_stride, *Vh = V + kvh * head_stride;
    float qv[8][E], acc[8][E], m[8], l[8];
#pragma unroll
    for (int g = 0; g < 8; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < E; ++i) {
            qv[g][i] = g < group ? q[(int64_t)(kvh * group + g) * D + lane * E + i] * scale_log2 : 0.f;
            acc[g][i] = 0.f;
        }
    }
    const int start = split * chunk, end = min(start + chunk, n);
    for (int t = start + warp; t < end; t += V2_WARPS) {
        float kf[E], vf[E];
        load_lane<E>(Kh + (int64_t)t * D + lane * E, kf);
        load_lane<E>(Vh + (int64_t)t * D + lane * E, vf);
#pragma unroll
        for (int g = 0; g < 8; ++g) {
            if (g >= group) break;
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < E; ++i) s += qv[g][i] * kf[i];
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            const float mn = fmaxf(m[g], s), alpha = exp2f(m[g] - mn), p = exp2f(s - mn);
            l[g] = l[g] * alpha + p;
#pragma unroll
            for (int i = 0; i < E; ++i) acc[g][i] = acc[g][i] * alpha + p * vf[i];
            m[g] = mn;
        }
    }
#pragma unroll
    for (int g = 0; g < 8; ++g) {
        if (g >= group) break;
#pragma unroll
        for (int i = 0; i < E; ++i) so[warp][g][lane * E + i] = acc[g][i];
        if (lane == 0) sml[warp][g] = make_float2(m[g], l[g]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < group * D; i += blockDim.x) {
        const int g = i / D, d = i % D;
        float M = -INFINITY, O = 0.f, L = 0.f;
        for (int w = 0; w < V2_WARPS; ++w) M = fmaxf(M, sml[w][g].x);
        for (int w = 0; w < V2_WARPS; ++w) {
            const float e = exp2f(sml[w][g].x - M);
            O += e * so[w][g][d];
            L += e * sml[w][g].y;
        }
        const int64_t slot = ((int64_t)kvh * n_splits + split) * group + g;
        part_o[slot * D + d] = O;
        if (d == 0) part_ml[slot] = make_float2(M, L);
    }
}

__global__ void dense_v2_merge(const float *part_o, const float2 *part_ml, float *out, int n_splits, int group,
                               int D) {
    const int h = blockIdx.x, kvh = h / group, g = h % group;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M = -INFINITY, O = 0.f, L = 0.f;
        for (int s = 0; s < n_splits; ++s) M = fmaxf(M, part_ml[((int64_t)kvh * n_splits + s) * group + g].x);
        for (int s = 0; s < n_splits; ++s) {
            const int64_t slot = ((int64_t)kvh * n_splits + s) * group + g;
            const float e = exp2f(part_ml[slot].x - M);
            O += e * part_o[slot * D + d];
            L += e * part_ml[slot].y;
        }
        out[(int64_t)h * D + d] = O / L;
    }
}

/* ---- runner ------------------------------------------------------------- */

struct bufs {
    const shape *sh;
    int n, cap;             /* tokens, rows allocated per head */
    __half *k, *v;          /* [n_kv][cap][D] */
    float *q, *out, *scratch, *part_o;
    float2 *part_ml;
    unsigned *arrivals;
    int32_t *rows;          /* gather list [n_units][n_rows_sel] */
    int n_sms;
};

static void run_version(int ver, const bufs &b, int warps, int spw, cudaStream_t st, int gather_n = 0,
                        int hpu = 0) {
    const shape &s = *b.sh;
    const int group = s.n_heads / s.n_kv;
    const int64_t hs = (int64_t)b.cap * s.D;
    if (ver == 1) {
        dense_v1<<<s.n_heads, 256, 0, st>>>(b.k, b.v, hs, b.q, b.out, b.scratch, b.n, s.D, group,
                                             1.f / sqrtf((float)s.D));
    } else if (ver == 2) {
        attn_args a;
        memset(&a, 0, sizeof a);
        a.n_tokens = b.n;
        attn_plan(&a, s.n_kv, b.n_sms, 2, V2_WARPS, 0);
        const dim3 grid(a.n_splits, s.n_kv);
        const float sl = 1.4426950408889634f / sqrtf((float)s.D);
        if (s.D == 128)
            dense_v2_split<128><<<grid, V2_WARPS * 32, 0, st>>>(b.k, b.v, hs, b.q, b.part_o, b.part_ml, b.n,
                                                                a.chunk, group, sl);
        else
            dense_v2_split<64><<<grid, V2_WARPS * 32, 0, st>>>(b.k, b.v, hs, b.q, b.part_o, b.part_ml, b.n,
                                                               a.chunk, group, sl);
        CHECK_LAUNCH();
        dense_v2_merge<<<s.n_heads, 128, 0, st>>>(b.part_o, b.part_ml, b.out, a.n_splits, group, s.D);
    } else {
        attn_args a;
        memset(&a, 0, sizeof a);
        a.k = b.k;
        a.v = b.v;
        a.head_stride = hs;
        a.q = b.q;
        a.out = b.out;
        a.n_rows = b.n;
        a.group = group;
        a.hpu = gather_n ? hpu : group;
        a.scale_log2 = 1.4426950408889634f / sqrtf((float)s.D);
        a.part_o = b.part_o;
        a.part_ml = b.part_ml;
        a.arrivals = b.arrivals;
        const int n_units = s.n_heads / a.hpu;
        if (gather_n) {
            a.rows = b.rows;
            a.rows_stride = gather_n;
            a.n_tokens = gather_n;
        } else {
            a.n_tokens = b.n;
        }
        static int cps[2][2][ATTN_MAX_WARPS + 1][9]; /* occupancy queries cost host time: cache them */
        int &c = cps[s.D == 128][gather_n > 0][warps][a.hpu];
        if (!c) c = attn_ctas_per_sm(s.D, gather_n > 0, warps, a.hpu);
        attn_plan(&a, n_units, b.n_sms, c, warps, spw);
        CHECK(attn_launch(&a, n_units, s.D, warps, st, false));
    }
    CHECK_LAUNCH();
}

static void alloc_bufs(bufs *b, const shape *s, int n, int n_sms) {
    memset(b, 0, sizeof *b);
    b->sh = s;
    b->n = n;
    b->cap = n;
    b->n_sms = n_sms;
    const size_t kv = (size_t)s->n_kv * n * s->D;
    CHECK(cudaMalloc(&b->k, kv * 2));
    CHECK(cudaMalloc(&b->v, kv * 2));
    CHECK(cudaMalloc(&b->q, (size_t)s->n_heads * s->D * 4));
    CHECK(cudaMalloc(&b->out, (size_t)s->n_heads * s->D * 4));
    CHECK(cudaMalloc(&b->scratch, (size_t)s->n_heads * n * 4));
    CHECK(cudaMalloc(&b->part_o, (size_t)s->n_heads * ATTN_MAX_SPLITS * s->D * 4));
    CHECK(cudaMalloc(&b->part_ml, (size_t)s->n_heads * ATTN_MAX_SPLITS * 8));
    CHECK(cudaMalloc(&b->arrivals, (size_t)s->n_heads * 4));
    CHECK(cudaMemset(b->arrivals, 0, (size_t)s->n_heads * 4));
    CHECK(cudaMalloc(&b->rows, (size_t)s->n_heads * n * 4));
}

static void free_bufs(bufs *b) {
    cudaFree(b->k), cudaFree(b->v), cudaFree(b->q), cudaFree(b->out), cudaFree(b->scratch);
    cudaFree(b->part_o), cudaFree(b->part_ml), cudaFree(b->arrivals), cudaFree(b->rows);
}

/* ---- validation --------------------------------------------------------- */

static int validate(int n_sms, uint64_t seed) {
    rng64 r = {seed};
    int failures = 0;
    printf("validation (seed %llu): relative error vs float64 CPU reference, limit 1e-3\n",
           (unsigned long long)seed);
    printf("%-13s %6s %-22s %10s\n", "shape", "n", "version", "rel.err");
    const int ns[] = {1, 15, 33, 1000, 5003};
    for (const shape &s : SHAPES) {
        const int group = s.n_heads / s.n_kv;
        for (int n : ns) {
            bufs b;
            alloc_bufs(&b, &s, n, n_sms);
            const size_t kv = (size_t)s.n_kv * n * s.D;
            std::vector<uint16_t> hk(kv), hv(kv);
            std::vector<float> hq((size_t)s.n_heads * s.D), got(hq.size());
            for (size_t i = 0; i < kv; ++i) hk[i] = f16_bits(rng_uniform(&r)), hv[i] = f16_bits(rng_uniform(&r));
            /* Scale q so that softmax is peaked (scores spread over several units). */
            for (float &x : hq) x = 8.f * rng_uniform(&r);
            CHECK(cudaMemcpy(b.k, hk.data(), kv * 2, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(b.v, hv.data(), kv * 2, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(b.q, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
            std::vector<double> ref(hq.size());
            for (int h = 0; h < s.n_heads; ++h) {
                const size_t off = (size_t)(h / group) * n * s.D;
                ref_attention(&hq[(size_t)h * s.D], &hk[off], &hv[off], s.D, NULL, n, &ref[(size_t)h * s.D]);
            }
            struct variant { int ver, warps, spw; const char *name; };
            const variant vs[] = {{1, 0, 0, "v1 naive"},           {2, 0, 0, "v2 split-K cuda-core"},
                                  {3, 8, 0, "v3 tensor-core auto"}, {3, 4, 0, "v3 4 warps auto"},
                                  {3, 2, 1, "v3 2 warps, 1 step"},  {3, 8, 3, "v3 8 warps, 3 steps"}};
            for (const variant &v : vs) {
                CHECK(cudaMemset(b.out, 0xff, hq.size() * 4)); /* NaN poison */
                run_version(v.ver, b, v.warps, v.spw, 0);
                CHECK(cudaDeviceSynchronize());
                CHECK(cudaMemcpy(got.data(), b.out, got.size() * 4, cudaMemcpyDeviceToHost));
                const double e = rel_error(got.data(), ref.data(), got.size());
                const bool ok = e < 1e-3;
                failures += !ok;
                printf("%-13s %6d %-22s %10.2e %s\n", s.name, n, v.name, e, ok ? "ok" : "FAIL");
            }
            /* Gather variant: attention over a random subset of rows, per group
             * (hpu = group) and per query head (hpu = 1). */
            for (int hpu : {group, 1}) {
                const int n_units = s.n_heads / hpu;
                const int m = n < 300 ? n : 300;
                std::vector<int32_t> rows((size_t)n_units * m);
                for (int u = 0; u < n_units; ++u) {
                    std::vector<int32_t> perm(n);
                    for (int i = 0; i < n; ++i) perm[i] = i;
                    for (int i = 0; i < m; ++i) std::swap(perm[i], perm[i + rng_next(&r) % (uint64_t)(n - i)]);
                    std::copy(perm.begin(), perm.begin() + m, rows.begin() + (size_t)u * m);
                }
                CHECK(cudaMemcpy(b.rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));
                for (int h = 0; h < s.n_heads; ++h) {
                    const size_t off = (size_t)(h / group) * n * s.D;
                    ref_attention(&hq[(size_t)h * s.D], &hk[off], &hv[off], s.D, &rows[(size_t)(h / hpu) * m], m,
                                  &ref[(size_t)h * s.D]);
                }
                CHECK(cudaMemset(b.out, 0xff, hq.size() * 4));
                run_version(3, b, 4, 0, 0, m, hpu);
                CHECK(cudaDeviceSynchronize());
                CHECK(cudaMemcpy(got.data(), b.out, got.size() * 4, cudaMemcpyDeviceToHost));
                const double e = rel_error(got.data(), ref.data(), got.size());
                const bool ok = e < 1e-3;
                failures += !ok;
                char name[64];
                snprintf(name, sizeof name, "v3 gather %d, hpu %d", m, hpu);
                printf("%-13s %6d %-22s %10.2e %s\n", s.name, n, name, e, ok ? "ok" : "FAIL");
            }
            free_bufs(&b);
        }
    }
    return failures;
}

/* ---- timing ------------------------------------------------------------- */

/* Per-layer milliseconds with `layers` separate caches used in turn, so that
 * the working set exceeds L2 as in a real decode step. */
static double time_layers(std::vector<bufs> &L, int ver, int warps, int spw, cudaStream_t st) {
    const int reps = 20;
    const double ms = time_ms(st, 3, reps, [&] {
        for (bufs &b : L) run_version(ver, b, warps, spw, st);
    });
    return ms / L.size();
}

static void make_layers(std::vector<bufs> &L, const shape &s, int n, int n_sms, uint64_t seed) {
    const double per_layer = 4.0 * s.n_kv * (double)n * s.D;
    int layers = (int)ceil(768e6 / per_layer);
    layers = layers < 2 ? 2 : layers > 16 ? 16 : layers;
    L.resize(layers);
    for (int i = 0; i < layers; ++i) {
        alloc_bufs(&L[i], &s, n, n_sms);
        const int64_t kv = (int64_t)s.n_kv * n * s.D;
        fill_device(L[i].k, kv, seed + 3 * i, 1.f);
        fill_device(L[i].v, kv, seed + 3 * i + 1, 1.f);
        fill_device(L[i].q, (int64_t)s.n_heads * s.D, seed + 3 * i + 2, 8.f);
    }
    CHECK(cudaDeviceSynchronize());
}

int main(int argc, char **argv) {
    bool do_val = false, do_bench = false, do_sweep = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--validate")) do_val = true;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else if (!strcmp(argv[i], "--sweep")) do_sweep = true;
        else {
            fprintf(stderr, "usage: dense_decode [--validate] [--bench] [--sweep]\n");
            return 2;
        }
    }
    if (!do_val && !do_bench && !do_sweep) do_val = do_bench = do_sweep = true;
    int n_sms = 0;
    CHECK(cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0));
    const uint64_t seed = fresh_seed();
    int failures = 0;
    if (do_val) failures = validate(n_sms, seed);
    cudaStream_t st;
    CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    if (do_bench) {
        printf("\ndense decode, per-layer median (20 reps, layers rotated); GB/s = K+V bytes / time\n");
        printf("%-13s %7s %7s | %10s %8s | %10s %8s | %10s %8s\n", "shape", "n", "layers", "v1 ms", "GB/s",
               "v2 ms", "GB/s", "v3 ms", "GB/s");
        for (const shape &s : SHAPES)
            for (int n : {32768, 131072}) {
                std::vector<bufs> L;
                make_layers(L, s, n, n_sms, seed);
                const double bytes = 4.0 * s.n_kv * (double)n * s.D;
                double t[4];
                for (int ver = 1; ver <= 3; ++ver) t[ver] = time_layers(L, ver, 8, 0, st); /* v3: product default */
                printf("%-13s %7d %7zu | %10.4f %8.0f | %10.4f %8.0f | %10.4f %8.0f\n", s.name, n, L.size(), t[1],
                       bytes / t[1] / 1e6, t[2], bytes / t[2] / 1e6, t[3], bytes / t[3] / 1e6);
                for (bufs &b : L) free_bufs(&b);
            }
    }
    if (do_sweep) {
        printf("\nv3 launch-shape sweep (per-layer ms; GB/s in brackets); steps = 16-token steps per warp per CTA\n");
        const int spws[] = {0, 1, 2, 4, 8, 16, 32};
        for (const shape &s : SHAPES)
            for (int n : {4096, 32768, 131072}) {
                std::vector<bufs> L;
                make_layers(L, s, n, n_sms, seed);
                const double bytes = 4.0 * s.n_kv * (double)n * s.D;
                printf("%-13s n=%-7d %5s", s.name, n, "warps");
                for (int spw : spws) {
                    char h[16];
                    snprintf(h, sizeof h, spw ? "steps=%d" : "steps=auto", spw);
                    printf(" %13s", h);
                }
                printf("\n");
                for (int warps : {2, 4, 8}) {
                    printf("%29d", warps);
                    for (int spw : spws) {
                        const double t = time_layers(L, 3, warps, spw, st);
                        printf(" %6.4f[%5.0f]", t, bytes / t / 1e6);
                    }
                    printf("\n");
                }
                for (bufs &b : L) free_bufs(&b);
            }
    }
    CHECK(cudaStreamDestroy(st));
    if (do_val) printf("\ndense_decode validation: %s (%d failures)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
