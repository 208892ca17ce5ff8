// Kestrel's CUDA kernels, compiled at start-up by NVRTC for the GPU's own architecture.
//
// Activations are f32 `[rows, cols]` row-major. Weights and the KV cache come in one of three
// element types, chosen at run time by a `dtype` argument (0 = f32, 1 = f16, 2 = bf16); the
// branch is uniform across a launch. No CUDA header is included, so the source compiles with
// NVRTC alone; half conversions go through PTX `cvt` and bf16 through bit arithmetic.
//
// Every kernel mirrors an op of the CPU backend (crates/kestrel-backend/src/cpu) and its
// numerics: the same formulas, f32 accumulation, and for sampling the same order of steps, the
// same exponential polynomial and the same Philox4x32-10 draw, so that equal logits give equal
// tokens on every backend.

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define NEG_INF (__int_as_float(0xff800000))
#define POS_INF (__int_as_float(0x7f800000))
#define MAX_TOP_LOGPROBS 20
#define MIN_LOGPROB (-9999.0f)

// ---------------------------------------------------------------------------------------------
// Element conversions
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest even, NaN kept quiet (as `half::bf16::from_f32`).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (u16)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float load_elem(const void* p, long long i, int dtype) {
    if (dtype == DT_F32) return ((const float*)p)[i];
    if (dtype == DT_F16) return f16_to_f32(((const u16*)p)[i]);
    return bf16_to_f32(((const u16*)p)[i]);
}

__device__ __forceinline__ void store_elem(void* p, long long i, int dtype, float v) {
    if (dtype == DT_F32) {
        ((float*)p)[i] = v;
    } else if (dtype == DT_F16) {
        ((u16*)p)[i] = f32_to_f16(v);
    } else {
        ((u16*)p)[i] = f32_to_bf16(v);
    }
}

// ---------------------------------------------------------------------------------------------
// Block reductions (blockDim.x a multiple of 32, at most 1024)
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ float block_sum(float v) {
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < warps ? part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

__device__ double block_sum_d(double v) {
    __shared__ double part[32];
    __shared__ double total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double s = lane < warps ? part[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) total = s;
    }
    __syncthreads();
    double r = total;
    __syncthreads();
    return r;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < warps ? part[lane] : NEG_INF;
        s = warp_max(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

// (value, id) ordered most likely first, ties by lower id; `id == 0xffffffff` is "none".
__device__ __forceinline__ bool ranks_before(float a, u32 ia, float b, u32 ib) {
    if (ib == 0xffffffffu) return ia != 0xffffffffu;
    if (ia == 0xffffffffu) return false;
    return a > b || (a == b && ia < ib);
}

__device__ void block_argmax(float& v, u32& id) {
    __shared__ float pv[32];
    __shared__ u32 pi[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        u32 oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (ranks_before(ov, oi, v, id)) { v = ov; id = oi; }
    }
    if (lane == 0) { pv[warp] = v; pi[warp] = id; }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? pv[lane] : NEG_INF;
        id = lane < warps ? pi[lane] : 0xffffffffu;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, v, o);
            u32 oi = __shfl_xor_sync(0xffffffffu, id, o);
            if (ranks_before(ov, oi, v, id)) { v = ov; id = oi; }
        }
        if (lane == 0) { pv[0] = v; pi[0] = id; }
    }
    __syncthreads();
    v = pv[0];
    id = pi[0];
    __syncthreads();
}

// Exclusive prefix sum of `v` over the block in thread order; returns the block total too.
__device__ double block_exclusive_scan_d(double v, double& total) {
    __shared__ double part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    double inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        double t = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += t;
    }
    if (lane == 31) part[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        double s = lane < warps ? part[lane] : 0.0;
        for (int o = 1; o < 32; o <<= 1) {
            double t = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += t;
        }
        part[lane] = s;  // inclusive over warps
    }
    __syncthreads();
    double before = warp > 0 ? part[warp - 1] : 0.0;
    total = part[warps - 1];
    __syncthreads();
    return before + inc - v;
}

// ---------------------------------------------------------------------------------------------
// Model ops
// ---------------------------------------------------------------------------------------------

// `table [vocab, hidden]`, `ids [n]` -> `out [n, hidden]`. Grid: n blocks.
extern "C" __global__ void embedding(const void* table, int dtype, const u32* ids, float* out,
                                     int hidden) {
    long long row = ids[blockIdx.x];
    float* dst = out + (long long)blockIdx.x * hidden;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        dst[c] = load_elem(table, row * hidden + c, dtype);
    }
}

// RMSNorm of each group of `group` values: grid rows * (cols / group) blocks. `out` may be `x`.
extern "C" __global__ void rms_norm(const float* x, const void* w, int wdtype, float* out,
                                   int group, float eps) {
    long long base = (long long)blockIdx.x * group;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < group; c += blockDim.x) {
        float v = x[base + c];
        ss += v * v;
    }
    ss = block_sum(ss) / (float)group;
    float inv = 1.0f / sqrtf(ss + eps);
    for (int c = threadIdx.x; c < group; c += blockDim.x) {
        out[base + c] = x[base + c] * inv * load_elem(w, c, wdtype);
    }
}

// `x [rows, cols] += bias [cols]`.
extern "C" __global__ void add_bias(float* x, const void* bias, int dtype, long long n, int cols) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        x[i] += load_elem(bias, i % cols, dtype);
    }
}

// NeoX rotary embedding in place on `x [rows, cols]`, heads of `head_dim`. Grid: rows blocks.
// The frequencies are `theta^(-2i/head_dim)`, or `inv_freq [head_dim/2]` (of `inv_dtype`) when
// `has_inv` (scaled RoPE); cos and sin are multiplied by `scale`. The angle is computed in double
// precision, as the CPU backend does.
extern "C" __global__ void rope_neox(float* x, const u32* positions, int cols, int head_dim,
                                    double theta, const void* inv_freq, int inv_dtype,
                                    int has_inv, float scale) {
    int half = head_dim / 2;
    int heads = cols / head_dim;
    double pos = (double)positions[blockIdx.x];
    float* row = x + (long long)blockIdx.x * cols;
    for (int j = threadIdx.x; j < heads * half; j += blockDim.x) {
        int h = j / half, i = j % half;
        double f = has_inv ? (double)load_elem(inv_freq, i, inv_dtype)
                           : pow(theta, -((double)(2 * i)) / (double)head_dim);
        double a = pos * f;
        float c = (float)cos(a) * scale, s = (float)sin(a) * scale;
        float* head = row + h * head_dim;
        float lo = head[i], hi = head[i + half];
        head[i] = lo * c - hi * s;
        head[i + half] = hi * c + lo * s;
    }
}

// Writes `k, v [n, width]` into the caches `[slots, width]` at `slots [n]`.
extern "C" __global__ void write_kv(const float* k, const float* v, const u32* slots, void* kc,
                                   void* vc, int dtype, int n, int width) {
    long long total = (long long)n * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long t = i / width, c = i % width;
        long long dst = (long long)slots[t] * width + c;
        store_elem(kc, dst, dtype, k[i]);
        store_elem(vc, dst, dtype, v[i]);
    }
}

// The KV copies of partial prefix-cache hits: for copy c = blockIdx.y, `copies[3c..3c+3]` =
// (source block, destination block, slots), the first `slots` slots of the source block are
// copied into the destination block, K and V, as bytes (`row_bytes` per slot).
extern "C" __global__ void copy_kv(unsigned char* kc, unsigned char* vc, const u32* copies,
                                   int block_size, long long row_bytes) {
    const u32* c = copies + 3 * blockIdx.y;
    long long src = (long long)c[0] * block_size * row_bytes;
    long long dst = (long long)c[1] * block_size * row_bytes;
    long long bytes = (long long)c[2] * row_bytes;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < bytes;
         i += (long long)gridDim.x * blockDim.x) {
        kc[dst + i] = kc[src + i];
        vc[dst + i] = vc[src + i];
    }
}

#define ATTN_WARPS 4
#define ATTN_MAX_PER_LANE 8  // head_dim <= 256

// Causal paged attention over a varlen batch. Grid: (num_tokens, num_heads); block: 4 warps.
// Each warp takes every 4th key of the token's context and keeps an online softmax (max, sum,
// weighted values; lane l holds dims l, l + 32, ...); the warps' partial results are merged at
// the end (flash-decoding's split, inside one block).
extern "C" __global__ void paged_attention(
    const float* q, const void* kc, const void* vc, int dtype, const u32* query_start_loc,
    const u32* block_tables, const u32* block_table_start, const u32* positions, float* out,
    int num_seqs, int num_heads, int num_kv_heads, int head_dim, int block_size, float scale) {
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // The token's sequence: the last s with query_start_loc[s] <= t.
    int lo = 0, hi = num_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (query_start_loc[mid] <= (u32)t) lo = mid; else hi = mid - 1;
    }
    const u32* table = block_tables + block_table_start[lo];
    int ctx = (int)positions[t] + 1;
    int kvh = h / (num_heads / num_kv_heads);
    long long q_off = ((long long)t * num_heads + h) * head_dim;

    float qv[ATTN_MAX_PER_LANE], acc[ATTN_MAX_PER_LANE];
#pragma unroll
    for (int j = 0; j < ATTN_MAX_PER_LANE; j++) {
        int d = lane + 32 * j;
        qv[j] = d < head_dim ? q[q_off + d] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int key = warp; key < ctx; key += ATTN_WARPS) {
        long long slot = (long long)table[key / block_size] * block_size + key % block_size;
        long long base = (slot * num_kv_heads + kvh) * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < ATTN_MAX_PER_LANE; j++) {
            int d = lane + 32 * j;
            if (d < head_dim) dot += qv[j] * load_elem(kc, base + d, dtype);
        }
        float s = warp_sum(dot) * scale;
        float m_new = fmaxf(m, s);
        float corr = __expf(m - m_new);
        float p = __expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int j = 0; j < ATTN_MAX_PER_LANE; j++) {
            int d = lane + 32 * j;
            float vv = d < head_dim ? load_elem(vc, base + d, dtype) : 0.0f;
            acc[j] = acc[j] * corr + p * vv;
        }
        m = m_new;
    }
    __shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS];
    __shared__ float sacc[ATTN_WARPS][32 * ATTN_MAX_PER_LANE];
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
#pragma unroll
    for (int j = 0; j < ATTN_MAX_PER_LANE; j++) sacc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    float big = NEG_INF;
    for (int w = 0; w < ATTN_WARPS; w++) big = fmaxf(big, sm[w]);
    float denom = 0.0f;
    for (int w = 0; w < ATTN_WARPS; w++) {
        if (sl[w] > 0.0f) denom += sl[w] * __expf(sm[w] - big);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float num = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            if (sl[w] > 0.0f) num += sacc[w][d] * __expf(sm[w] - big);
        }
        out[q_off + d] = num / denom;
    }
}

// `out = silu(gate) * up`.
extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// `x += y`.
extern "C" __global__ void add_assign(float* x, const float* y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        x[i] += y[i];
    }
}

// Rows `idx [n]` of `x [*, cols]` -> `out [n, cols]`. Grid: n blocks.
extern "C" __global__ void gather_rows(const float* x, const u32* idx, float* out, int cols) {
    const float* src = x + (long long)idx[blockIdx.x] * cols;
    float* dst = out + (long long)blockIdx.x * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// `ids[pairs[2i]] = prev[pairs[2i + 1]]`: the previous step's sampled ids into this step's input.
extern "C" __global__ void resolve_placeholders(u32* ids, const u32* pairs, int n,
                                               const u32* prev) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) ids[pairs[2 * i]] = prev[pairs[2 * i + 1]];
}

// f32 activations -> f16 or bf16, the input of a half-precision GEMM.
extern "C" __global__ void cast_f32(const float* x, void* out, int dtype, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        store_elem(out, i, dtype, x[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling (the semantics are in crates/kestrel-backend/src/sampling/mod.rs)
// ---------------------------------------------------------------------------------------------

// Mirrors `RowParams` (repr(C), 80 bytes).
struct RowParams {
    u64 seed;
    u64 position;
    float temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
    u32 top_k;
    int num_logprobs;
    u32 penalty_start, penalty_end, bias_start, bias_end, banned_start, banned_end;
    u32 mask_start, mask_end;
};

// Whether the row's allowed-token bitmask (`words[mask_start..mask_end]`, empty: all) allows t.
__device__ __forceinline__ bool is_allowed(const RowParams& p, const u32* words, u32 t) {
    if (p.mask_end <= p.mask_start) return true;
    u32 w = p.mask_start + t / 32;
    return w < p.mask_end && ((words[w] >> (t % 32)) & 1u);
}

// Philox4x32-10, as `sampling::philox`.
__device__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        u32 hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        u32 hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

__device__ double philox_uniform(u64 seed, u64 position, u32 stream) {
    u32 c[4] = {(u32)position, (u32)(position >> 32), stream, 0u};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    u64 bits = ((u64)c[0] << 21) | ((u64)c[1] >> 11);
    return (double)bits * (1.0 / 9007199254740992.0);
}

// `exp(x)` for `x <= 0`, the CPU sampler's polynomial (`vector::exp_nonpos`), with every
// operation rounded on its own (no fused multiply-add) so that it matches bit for bit.
__device__ float exp_nonpos(float x) {
    const float ROUND = 12582912.0f;
    bool underflow = x < -87.0f;
    if (underflow) x = -87.0f;
    float t = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), ROUND);
    float nf = __fsub_rn(t, ROUND);
    int n = __float_as_int(t) - __float_as_int(ROUND);
    float r = __fsub_rn(__fsub_rn(x, __fmul_rn(nf, 0.6933594f)), __fmul_rn(nf, -2.1219444e-4f));
    float p = __fadd_rn(__fmul_rn(1.9875691e-4f, r), 1.3981999e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.333452e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665796e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 0.16666665f);
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    float e = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.0f);
    float scale = __int_as_float((n + 127) << 23);
    return underflow ? 0.0f : __fmul_rn(e, scale);
}

__device__ __forceinline__ float clamp_logprob(double lp) {
    float f = (float)lp;
    if (f != f) return MIN_LOGPROB;
    return fmaxf(f, MIN_LOGPROB);
}

// Metric of a token in a ranking cut: 1 (top-k counts tokens) or its weight (top-p).
__device__ __forceinline__ double cut_metric(float x, float mx, int metric) {
    return metric == 0 ? 1.0 : (double)exp_nonpos(x - mx);
}

// The value of an ordered key: keys order as the floats they stand for (negative floats
// below positive ones).
__device__ __forceinline__ float key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The cut of a ranking (most likely first, ties by lower id) among the tokens with `in[i]`:
// a token is kept when the metric of every token ranked above it sums to less than `target`.
// Bisection over the ordered float keys finds the smallest value whose strictly-above metric
// is below `target`, snapped to a value that occurs; returns it with the metric above it.
// Tokens above the cut are kept, tokens below are not, ties at it are kept in id order while
// the running metric stays below `target`.
__device__ float find_cut(const float* x, const unsigned char* in, int vocab, int metric,
                          float mx, double target, double& above_cut) {
    u32 lo = 0u, hi = 0xffffffffu;
    while (lo < hi) {
        u32 mid = lo + (hi - lo) / 2;
        float v = key_value(mid);
        double s = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            if (in[i] && x[i] > v) s += cut_metric(x[i], mx, metric);
        }
        s = block_sum_d(s);
        if (s < target) hi = mid; else lo = mid + 1;
    }
    float cut = key_value(lo);
    // Snap the cut to the largest token value <= cut that exists, so ties are well defined.
    float best = NEG_INF;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (in[i] && x[i] <= cut && x[i] > best) best = x[i];
    }
    best = block_max(best);
    double s = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (in[i] && x[i] > best) s += cut_metric(x[i], mx, metric);
    }
    above_cut = block_sum_d(s);
    return best;
}

// Applies a cut to `in`: drops the tokens below it and the ties beyond its budget (in id
// order, each tie adding its metric to the running total that must stay below `target`).
__device__ void apply_cut(const float* x, unsigned char* in, int vocab, int metric, float mx,
                          float cut, double above, double target) {
    double run = above;
    for (int base = 0; base < vocab; base += blockDim.x) {
        int i = base + threadIdx.x;
        bool cand = i < vocab && in[i];
        float v = cand ? x[i] : NEG_INF;
        bool tie = cand && v == cut;
        double chunk_total;
        double before = block_exclusive_scan_d(tie ? cut_metric(v, mx, metric) : 0.0, chunk_total);
        if (cand && !(v > cut || (tie && run + before < target))) in[i] = 0;
        run += chunk_total;
    }
    __syncthreads();
}

// One token per row of `logits [rows, vocab]`; `work [rows, vocab]` holds the processed row,
// `keep [rows, vocab]` (bytes) the candidate flags. Grid: rows blocks of 1024 threads.
extern "C" __global__ void sample_rows(
    const float* logits, float* work, unsigned char* keep, const RowParams* params,
    const u32* penalty_tokens, const u32* penalty_counts, const u32* bias_tokens,
    const float* bias_values, const u32* banned_tokens, const u32* allowed_words, int vocab,
    u32* out_tokens,
    float* out_logprobs, u32* out_top_ids, float* out_top_lps) {
    const int row = blockIdx.x;
    const RowParams p = params[row];
    const float* raw = logits + (long long)row * vocab;
    float* x = work + (long long)row * vocab;
    unsigned char* kp = keep + (long long)row * vocab;
    __shared__ u32 s_token;
    __shared__ double s_lse;

    // 1. The raw row, NaN, tokens outside the allowed mask and banned tokens at -inf.
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = raw[i];
        x[i] = (v != v || !is_allowed(p, allowed_words, i)) ? NEG_INF : v;
    }
    __syncthreads();
    for (u32 j = p.banned_start + threadIdx.x; j < p.banned_end; j += blockDim.x) {
        x[banned_tokens[j]] = NEG_INF;
    }
    __syncthreads();

    // 2. Raw logprobs: log-sum-exp and the n most likely (ties by lower id).
    if (p.num_logprobs >= 0) {
        float mx = NEG_INF;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
        mx = block_max(mx);
        double s = 0.0;
        if (mx == mx && mx != NEG_INF && mx != POS_INF) {
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                s += (double)exp_nonpos(x[i] - mx);
            }
        }
        s = block_sum_d(s);
        double lse = (mx != NEG_INF && mx != POS_INF) ? (double)mx + log(s) : (double)mx;
        if (threadIdx.x == 0) s_lse = lse;
        int n = min(p.num_logprobs, vocab);
        float pv = POS_INF;
        u32 pi = 0xffffffffu;
        for (int r = 0; r < n; r++) {
            float bv = NEG_INF;
            u32 bi = 0xffffffffu;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                float v = x[i];
                bool eligible = pi == 0xffffffffu || v < pv || (v == pv && (u32)i > pi);
                if (eligible && ranks_before(v, i, bv, bi)) { bv = v; bi = i; }
            }
            block_argmax(bv, bi);
            if (threadIdx.x == 0) {
                out_top_ids[row * MAX_TOP_LOGPROBS + r] = bi;
                out_top_lps[row * MAX_TOP_LOGPROBS + r] = clamp_logprob((double)bv - lse);
            }
            pv = bv;
            pi = bi;
        }
    }
    __syncthreads();

    // 3. Penalties over the sequence's distinct tokens, then the bias in order.
    float rp = p.repetition_penalty;
    for (u32 j = p.penalty_start + threadIdx.x; j < p.penalty_end; j += blockDim.x) {
        u32 t = penalty_tokens[j];
        float v = x[t];
        if (rp != 1.0f) v = v > 0.0f ? v / rp : v * rp;
        u32 c = penalty_counts[j];
        if (c > 0) v -= p.frequency_penalty * (float)c + p.presence_penalty;
        x[t] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (u32 j = p.bias_start; j < p.bias_end; j++) x[bias_tokens[j]] += bias_values[j];
    }
    __syncthreads();

    bool greedy = p.temperature < 1e-5f || p.top_k == 1;
    float mx = NEG_INF;
    if (!greedy) {
        if (p.temperature != 1.0f) {
            float inv_t = 1.0f / p.temperature;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) x[i] *= inv_t;
            __syncthreads();
        }
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
        mx = block_max(mx);
        // No finite maximum (all -inf, or a +inf logit): the argmax is the only sane pick.
        if (mx == NEG_INF || mx == POS_INF || mx != mx) greedy = true;
    }
    if (greedy) {
        float bv = NEG_INF;
        u32 bi = 0xffffffffu;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            if (ranks_before(x[i], i, bv, bi)) { bv = x[i]; bi = i; }
        }
        block_argmax(bv, bi);
        if (threadIdx.x == 0) s_token = bi == 0xffffffffu ? 0u : bi;
    } else {
        // 4. Candidates: all tokens, then the top-k cut, the top-p cut, min-p.
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) kp[i] = 1;
        __syncthreads();
        if (p.top_k > 0 && p.top_k < (u32)vocab) {
            double above;
            float cut = find_cut(x, kp, vocab, 0, mx, (double)p.top_k, above);
            apply_cut(x, kp, vocab, 0, mx, cut, above, (double)p.top_k);
        }
        // Top-p on the distribution renormalized after top-k.
        if (p.top_p < 1.0f) {
            double total = 0.0;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                if (kp[i]) total += (double)exp_nonpos(x[i] - mx);
            }
            double target = (double)p.top_p * block_sum_d(total);
            double above;
            float cut = find_cut(x, kp, vocab, 1, mx, target, above);
            apply_cut(x, kp, vocab, 1, mx, cut, above, target);
        }
        if (p.min_p > 0.0f) {
            float threshold = mx + logf(p.min_p);
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                if (x[i] < threshold) kp[i] = 0;
            }
            __syncthreads();
        }
        // 5. The draw: the first candidate in id order where the running weight exceeds u * total.
        double total = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            if (kp[i]) total += (double)exp_nonpos(x[i] - mx);
        }
        total = block_sum_d(total);
        double target = philox_uniform(p.seed, p.position, 0) * total;
        __shared__ u32 s_found;
        if (threadIdx.x == 0) s_found = 0xffffffffu;
        __syncthreads();
        double run = 0.0;
        u32 last = 0xffffffffu;
        for (int base = 0; base < vocab; base += blockDim.x) {
            int i = base + threadIdx.x;
            float w = (i < vocab && kp[i]) ? exp_nonpos(x[i] - mx) : 0.0f;
            double chunk_total;
            double before = block_exclusive_scan_d((double)w, chunk_total);
            if (w > 0.0f) {
                last = i;
                if (run + before + (double)w > target) atomicMin(&s_found, (u32)i);
            }
            run += chunk_total;
            __syncthreads();
            if (s_found != 0xffffffffu) break;
        }
        // Rounding left the sum a hair short of the target: the last weighted token wins
        // (the largest id with weight: an argmax with the id as the value).
        u32 li = last;
        float key = li == 0xffffffffu ? NEG_INF : (float)li;
        block_argmax(key, li);
        if (threadIdx.x == 0) {
            s_token = s_found != 0xffffffffu ? s_found : (li == 0xffffffffu ? 0u : li);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 tok = s_token;
        out_tokens[row] = tok;
        float lp = 0.0f;
        if (p.num_logprobs >= 0) {
            float v = raw[tok];
            bool banned = v != v || !is_allowed(p, allowed_words, tok);
            for (u32 j = p.banned_start; j < p.banned_end; j++) banned |= banned_tokens[j] == tok;
            lp = clamp_logprob((banned ? (double)NEG_INF : (double)v) - s_lse);
        }
        out_logprobs[row] = lp;
    }
}
