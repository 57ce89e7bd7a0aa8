// attn_prefill.cu: causal grouped-query attention of several tokens over a contiguous KV
// cache, f32, register-tiled (v2 of attention.cu's flash kernel for n_tokens > 1, part of the
// `split_kv` variant).
//
// Shapes and rows as attention.cu: q, out [n_tokens, n_heads, HD]; k, v [capacity,
// n_kv_heads, HD]; row ρ of KV head kvh is token ρ / G, head kvh·G + ρ % G; token i sits at
// pos0 + i (pos0 read on the device) and sees keys 0 ..= pos0 + i, or with window > 0 the
// last `window` of them (the key loop then starts at the block's first row's first key).
//
// v1 (attention.cu) gives each lane one key and walks HD with two scalar shared-memory loads
// per multiply-add: 464 µs for 512 tokens of Llama-3-8B (4.6 TFLOP/s, 7% of the H100's f32
// rate). v2 tiles registers like a GEMM: a block owns 32 rows and walks the keys in tiles of
// 32; thread t owns rows 2(t/8), 2(t/8)+1 and, for the scores, keys t%8 + 8c (c < 4; 8 lanes
// read 8 consecutive K rows, padded to HD + 4 floats, so their 16-byte loads hit 8 different
// bank groups) — 6 16-byte loads per 32 multiply-adds — then, for P·V, dims 4(t%8) + 32i
// (i < 4) of the same two rows, so the softmax rescale of a row stays in the thread that
// accumulates it. K and V share one tile buffer (K, scores, V, P·V), 38 KB with HD 128.
// Launch: grid (ceil(n_tokens·G / 32), n_kv_heads), block 128.
// Llama-3-8B chunk of 256 tokens: 1024 rows per KV head -> grid (32, 8).
// Measured (H100, bench-ops, NOTES.md run 2): 206 µs for 512 tokens (10.4 TFLOP/s, 2.25× v1;
// 3× was predicted); 8B pp512 9,828 t/s with v1, 11,790 with v2.
//
// Launched from src/attn_prefill.rs (routed there by src/attention.rs).
// Check: `plumb check --device cuda --op attention` (variant attention=split_kv, the default).
// Time: `plumb bench-ops --device cuda --prefill 512` (its prefill attention row).

// Tile shape per head size: HD 64 and 128 take 32 rows and 32 keys per tile, each thread 2
// rows and 4 keys (PtTile: RPT 2, KPT 4): 32·132 + 32·132 + 32·33 floats = 37.9 KB of shared
// memory at HD 128. HD 256 takes 16 rows and 16 keys, each thread 1 row and 2 keys (and 32
// dims of P·V): 16·260 + 16·260 + 16·17 floats = 33.6 KB, under the 48 KB static limit that
// 32 × 32 tiles (69 KB) would pass. src/attn_prefill.rs plans the grid with the same rows per
// block (pt_rows).
template <int HD> struct PtTile {
    static constexpr int RPT = HD == 256 ? 1 : 2;   // rows per thread
    static constexpr int KPT = HD == 256 ? 2 : 4;   // keys per thread per tile
    static constexpr int ROWS = 16 * RPT;           // rows per block (16 row groups)
    static constexpr int BK = 8 * KPT;              // keys per tile (8 key groups)
    static constexpr int NI = HD == 256 ? 8 : 4;    // float4s of P·V per row (up to)
};

template <int HD>
static __device__ void attn_prefill_impl(const float* q, const float* k, const float* v,
                                         float* out, int n_tokens, const u32* pos0p,
                                         int n_heads, int n_kv_heads, float scale,
                                         int capacity, int window) {
    constexpr int HDP = HD + 4;
    constexpr int D4 = HD / 4;
    constexpr int RPT = PtTile<HD>::RPT, KPT = PtTile<HD>::KPT, NI = PtTile<HD>::NI;
    constexpr int PT_ROWS = PtTile<HD>::ROWS, PT_BK = PtTile<HD>::BK;
    static_assert((PT_ROWS * HDP + PT_BK * HDP + PT_ROWS * (PT_BK + 1)) * sizeof(float) <=
                      48 * 1024,
                  "attn_prefill tiles exceed 48 KB of static shared memory");
    __shared__ __align__(16) float Qs[PT_ROWS][HDP];
    __shared__ __align__(16) float KVs[PT_BK][HDP];
    __shared__ float Ps[PT_ROWS][PT_BK + 1];
    const int G = n_heads / n_kv_heads, kvh = blockIdx.y;
    const int n_rows = n_tokens * G, rho0 = blockIdx.x * PT_ROWS;
    const int tid = threadIdx.x, rg = tid / 8, kg = tid % 8;
    const size_t kv_dim = (size_t)n_kv_heads * HD;
    const int pos0 = (int)*pos0p;

    for (int i = tid; i < PT_ROWS * D4; i += blockDim.x) {
        const int lr = i / D4, d4 = i % D4, rho = rho0 + lr;
        float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (rho < n_rows) {
            const int t = rho / G, h = kvh * G + rho % G;
            val = *reinterpret_cast<const float4*>(q + ((size_t)t * n_heads + h) * HD + 4 * d4);
            val.x *= scale; val.y *= scale; val.z *= scale; val.w *= scale;
        }
        *reinterpret_cast<float4*>(&Qs[lr][4 * d4]) = val;
    }
    // The thread's rows (local row RPT·rg + r), their causal limits (inclusive) and first keys.
    int rl[RPT], lim[RPT], first[RPT];
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        rl[r] = RPT * rg + r;
        lim[r] = pos0 + (rho0 + rl[r]) / G;
        first[r] = window > 0 ? lim[r] + 1 - window : 0;
    }
    const int last_rho = min(rho0 + PT_ROWS, n_rows) - 1;
    const int k_end = min(pos0 + last_rho / G + 1, capacity);
    const int k_start = window > 0 ? max(0, pos0 + rho0 / G + 1 - window) / PT_BK * PT_BK : 0;

    float m[RPT], l[RPT], acc[RPT][4 * NI];
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        m[r] = NEG_INF; l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < 4 * NI; i++) acc[r][i] = 0.0f;
    }

    for (int kt = k_start; kt < k_end; kt += PT_BK) {
        __syncthreads();  // Qs written / the previous V tile and Ps no longer read
        for (int i = tid; i < PT_BK * D4; i += blockDim.x) {
            const int j = i / D4, d4 = i % D4, key = kt + j;
            float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (key < k_end)
                val = *reinterpret_cast<const float4*>(k + key * kv_dim + (size_t)kvh * HD + 4 * d4);
            *reinterpret_cast<float4*>(&KVs[j][4 * d4]) = val;
        }
        __syncthreads();
        float s[RPT][KPT];
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < KPT; c++) s[r][c] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < HD; d += 4) {
            float4 qv[RPT];
#pragma unroll
            for (int r = 0; r < RPT; r++) qv[r] = *reinterpret_cast<const float4*>(&Qs[rl[r]][d]);
#pragma unroll
            for (int c = 0; c < KPT; c++) {
                const float4 kk = *reinterpret_cast<const float4*>(&KVs[kg + 8 * c][d]);
#pragma unroll
                for (int r = 0; r < RPT; r++)
                    s[r][c] += qv[r].x * kk.x + qv[r].y * kk.y + qv[r].z * kk.z + qv[r].w * kk.w;
            }
        }
        // Online softmax of each row over this tile; the 8 lanes of a row group (consecutive
        // lanes t/8) hold its PT_BK keys.
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            float mx = NEG_INF;
#pragma unroll
            for (int c = 0; c < KPT; c++) {
                const int key = kt + kg + 8 * c;
                if (key > lim[r] || key >= k_end || key < first[r]) s[r][c] = NEG_INF;
                mx = fmaxf(mx, s[r][c]);
            }
#pragma unroll
            for (int o = 4; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
            const float m_new = fmaxf(m[r], mx);
            float ps = 0.0f;
#pragma unroll
            for (int c = 0; c < KPT; c++) {
                const float p = s[r][c] == NEG_INF ? 0.0f : expf(s[r][c] - m_new);
                Ps[rl[r]][kg + 8 * c] = p;
                ps += p;
            }
#pragma unroll
            for (int o = 4; o > 0; o >>= 1) ps += __shfl_xor_sync(FULL_MASK, ps, o);
            const float corr = m[r] == NEG_INF ? 0.0f : expf(m[r] - m_new);
            l[r] = l[r] * corr + ps;
#pragma unroll
            for (int i = 0; i < 4 * NI; i++) acc[r][i] *= corr;
            m[r] = m_new;
        }
        __syncthreads();  // K no longer read, Ps written
        for (int i = tid; i < PT_BK * D4; i += blockDim.x) {
            const int j = i / D4, d4 = i % D4, key = kt + j;
            float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (key < k_end)
                val = *reinterpret_cast<const float4*>(v + key * kv_dim + (size_t)kvh * HD + 4 * d4);
            *reinterpret_cast<float4*>(&KVs[j][4 * d4]) = val;
        }
        __syncthreads();
#pragma unroll 4
        for (int j = 0; j < PT_BK; j++) {
            float pr[RPT];
#pragma unroll
            for (int r = 0; r < RPT; r++) pr[r] = Ps[rl[r]][j];
#pragma unroll
            for (int i = 0; i < NI; i++) {
                if (4 * kg + 32 * i >= HD) break;  // HD 64: i < 2
                const float4 vv = *reinterpret_cast<const float4*>(&KVs[j][4 * kg + 32 * i]);
#pragma unroll
                for (int r = 0; r < RPT; r++) {
                    acc[r][4 * i] += pr[r] * vv.x; acc[r][4 * i + 1] += pr[r] * vv.y;
                    acc[r][4 * i + 2] += pr[r] * vv.z; acc[r][4 * i + 3] += pr[r] * vv.w;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int rho = rho0 + rl[r];
        if (rho >= n_rows) continue;
        const int t = rho / G, h = kvh * G + rho % G;
        float* o = out + ((size_t)t * n_heads + h) * HD;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < NI; i++) {
            if (4 * kg + 32 * i >= HD) break;
            *reinterpret_cast<float4*>(o + 4 * kg + 32 * i) =
                make_float4(acc[r][4 * i] * inv, acc[r][4 * i + 1] * inv,
                            acc[r][4 * i + 2] * inv, acc[r][4 * i + 3] * inv);
        }
    }
}

#define ATTN_PREFILL(HD)                                                                      \
    extern "C" __global__ void attn_prefill_hd##HD(const float* q, const float* k,           \
                                                   const float* v, float* out, int n_tokens,  \
                                                   const u32* pos0p, int n_heads,             \
                                                   int n_kv_heads, float scale, int capacity, \
                                                   int window) {                              \
        attn_prefill_impl<HD>(q, k, v, out, n_tokens, pos0p, n_heads, n_kv_heads, scale,      \
                              capacity, window);                                              \
    }
ATTN_PREFILL(64)
ATTN_PREFILL(128)
ATTN_PREFILL(256)
