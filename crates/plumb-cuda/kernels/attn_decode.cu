// attn_decode.cu: attention of one token (decode) over a contiguous KV cache, split over the
// keys, with the splits merged by the last block of each KV head (no second launch).
//
// Shapes: q, out [n_heads, HD]; k, v [capacity, n_kv_heads, HD]. Query head h = kvh·G + g
// (G = n_heads / n_kv_heads ≤ MAX_G) attends to keys 0 ..= pos0, with pos0 read from the
// device (the step's position: a replayed step attends to its own context length); with
// window > 0 only to the last `window` keys (from max(0, pos0 + 1 - window)): splits before
// the window's start hold no key and are left out of the merge.
//
// v2 "split_kv" (v1 = attention.cu's flash kernel, which stages tiles in shared memory and
// gives decode one warp per head: 68 µs for 512 keys of Llama-3-8B).
// Launch: grid (n_kv_heads, n_splits), block 128 = 4 warps. n_splits and split_len come from
// the cache capacity, not from pos0 (src/attn_decode.rs), so the grid of a recorded step stays
// valid as the context grows; blocks whose split starts past pos0 only check in with the
// counter. Block (kvh, s) reads keys [s·split_len, (s+1)·split_len) ∩ [0, pos0]: warp w takes
// keys w, w+4, ... four at a time (8 row loads of HD floats in flight per warp before the
// first use), lane l owns dims l·DPL .. l·DPL + DPL (float4 for HD 128: one 512-byte
// coalesced load per key row), and keeps an online softmax (m, l, acc) for each of the G
// heads of its KV head: the K/V rows are read once for all G query heads. The 4 warps merge
// through shared memory; with one split the block writes the output, else it writes
// (m, l, acc[HD]) per head to `part` and bumps count[kvh]; the block that brings it to
// n_splits merges the splits that hold keys and resets the counter for the next launch.
// Measured (bench-ops, synchronized calls, ~10 µs of which is launch and sync): 29.6 µs at 512
// keys. A v2 that reduced a round's 4·G scores with interleaved shuffle trees, updated the
// softmax once per round and staged the merge weights in shared memory measured 31-33 µs and
// lost end to end (NOTES.md, runs 3-4); this is the measured winner. The merge below walks the
// splits with dependent L2 loads: the next thing to fix.
// With `qs` not null the output's q8_1 form (common.cuh) is written too, for the Wo matvec:
// the merge loops walk a head's HD (a multiple of 32) dims with whole warps, so each warp's
// 32 consecutive outputs are one q8 group.
// Llama-3-8B at pos0 = 511, capacity 640: split_len 32, 20 splits, 16 of them with keys;
// block (3, 5) serves query heads 12..15 over keys 160..191.
//
// Launched from src/attn_decode.rs (routed there by src/attention.rs).
// Check: `plumb check --device cuda --op attention` (variant attention=split_kv, the default).
// Time: `plumb bench-ops --device cuda --ctx 512` (its one-token attention row).

#define DEC_WARPS 4
#define MAX_G 8
#define DEC_UNROLL 4

// Loads through L2 only: partials written by other blocks of this launch.
static __device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

template <int DPL>
static __device__ __forceinline__ void load_dims(const float* p, float* v) {
    if constexpr (DPL == 8) {
        const float4 a = *reinterpret_cast<const float4*>(p);
        const float4 b = *reinterpret_cast<const float4*>(p + 4);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else if constexpr (DPL == 4) {
        const float4 t = *reinterpret_cast<const float4*>(p);
        v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
    } else {
        const float2 t = *reinterpret_cast<const float2*>(p);
        v[0] = t.x; v[1] = t.y;
    }
}

// Query heads per KV head a block holds: MAX_G, or 4 at HD 256 (the per-lane q and acc
// arrays are MG·HD/32 floats each; Gemma 3 has G ≤ 4). The launcher routes larger groups to
// attention.cu (DEC_MAX_G in src/launch.rs, dec_max_g in src/attention.rs).
template <int HD> struct DecShape {
    static constexpr int MG = HD == 256 ? 4 : MAX_G;
};

template <int HD>
static __device__ void attn_decode_impl(const float* q, const float* k, const float* v,
                                        float* out, float* part, u32* count, const u32* pos0p,
                                        int n_heads, int n_kv_heads, float scale,
                                        int split_len, int n_splits, int capacity, i8* qs,
                                        float2* ds, int window) {
    constexpr int DPL = HD / WARP;
    constexpr int MG = DecShape<HD>::MG;
    static_assert((2 * DEC_WARPS * MG + DEC_WARPS * MG * HD + 1) * sizeof(float) <= 48 * 1024,
                  "attn_decode's merge buffers exceed 48 KB of static shared memory");
    __shared__ float s_m[DEC_WARPS][MG], s_l[DEC_WARPS][MG];
    __shared__ float s_acc[DEC_WARPS][MG][HD];
    __shared__ int s_last;
    const int G = n_heads / n_kv_heads, kvh = blockIdx.x, split = blockIdx.y;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const size_t kv_dim = (size_t)n_kv_heads * HD;
    const int n_keys = min((int)*pos0p + 1, capacity);
    const int first = window > 0 ? max(0, n_keys - window) : 0;
    const int k_begin = max(split * split_len, first), k_end = min(split * split_len + split_len, n_keys);
    // The splits that hold keys: first_split .. n_active.
    const int first_split = first / split_len, n_active = (n_keys + split_len - 1) / split_len;

    if (k_begin < k_end) {
        float qr[MG][DPL], m[MG], l[MG], acc[MG][DPL];
#pragma unroll
        for (int g = 0; g < MG; g++) {
            if (g < G) load_dims<DPL>(q + (size_t)(kvh * G + g) * HD + lane * DPL, qr[g]);
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                qr[g][i] = g < G ? qr[g][i] * scale : 0.0f;
                acc[g][i] = 0.0f;
            }
            m[g] = NEG_INF; l[g] = 0.0f;
        }
        const float* kb = k + (size_t)kvh * HD + lane * DPL;
        const float* vb = v + (size_t)kvh * HD + lane * DPL;
        for (int k0 = k_begin + warp; k0 < k_end; k0 += DEC_WARPS * DEC_UNROLL) {
            float kx[DEC_UNROLL][DPL], vx[DEC_UNROLL][DPL];
#pragma unroll
            for (int j = 0; j < DEC_UNROLL; j++) {
                const int key = min(k0 + j * DEC_WARPS, k_end - 1);  // clamped: masked below
                load_dims<DPL>(kb + key * kv_dim, kx[j]);
                load_dims<DPL>(vb + key * kv_dim, vx[j]);
            }
#pragma unroll
            for (int j = 0; j < DEC_UNROLL; j++) {
                if (k0 + j * DEC_WARPS >= k_end) break;  // uniform over the warp
#pragma unroll
                for (int g = 0; g < MG; g++) {
                    if (g >= G) break;
                    float s = 0.0f;
#pragma unroll
                    for (int i = 0; i < DPL; i++) s += qr[g][i] * kx[j][i];
                    s = warp_sum(s);
                    const float m_new = fmaxf(m[g], s);
                    const float corr = expf(m[g] - m_new);  // 0 for the first key
                    const float p = expf(s - m_new);
                    l[g] = l[g] * corr + p;
#pragma unroll
                    for (int i = 0; i < DPL; i++) acc[g][i] = acc[g][i] * corr + p * vx[j][i];
                    m[g] = m_new;
                }
            }
        }
#pragma unroll
        for (int g = 0; g < MG; g++) {
            if (g >= G) break;
            if (lane == 0) { s_m[warp][g] = m[g]; s_l[warp][g] = l[g]; }
#pragma unroll
            for (int i = 0; i < DPL; i++) s_acc[warp][g][lane * DPL + i] = acc[g][i];
        }
        __syncthreads();
        // Merge the warps (a warp with no key has m = -inf and weighs 0).
        for (int idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
            const int g = idx / HD, d = idx % HD;
            float mx = NEG_INF;
            for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, s_m[w][g]);
            float den = 0.0f, num = 0.0f;
            for (int w = 0; w < DEC_WARPS; w++) {
                const float wt = s_m[w][g] == NEG_INF ? 0.0f : expf(s_m[w][g] - mx);
                den += s_l[w][g] * wt;
                num += s_acc[w][g][d] * wt;
            }
            const int h = kvh * G + g;
            if (n_splits == 1) {
                const int e = h * HD + d;
                out[e] = num / den;
                if (qs != nullptr) q8_group(num / den, e / 32, e, qs, ds);
            } else {
                // part: [n_kv_heads][n_splits][G][HD + 2] = (m, l, acc...)
                float* p = part + (((size_t)kvh * n_splits + split) * G + g) * (HD + 2);
                if (d == 0) { p[0] = mx; p[1] = den; }
                p[2 + d] = num;
            }
        }
    }
    if (n_splits == 1) return;

    // Check in; the last block of this KV head merges the splits that hold keys.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&count[kvh], 1u) == (u32)n_splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
        const int g = idx / HD, d = idx % HD;
        const float* p0 = part + ((size_t)kvh * n_splits * G + g) * (HD + 2);
        const size_t stride = (size_t)G * (HD + 2);  // one split further
        float mx = NEG_INF;
        for (int s = first_split; s < n_active; s++) mx = fmaxf(mx, ld_cg(p0 + s * stride));
        float den = 0.0f, num = 0.0f;
        for (int s = first_split; s < n_active; s++) {
            const float ms = ld_cg(p0 + s * stride);
            const float wt = ms == NEG_INF ? 0.0f : expf(ms - mx);
            den += ld_cg(p0 + s * stride + 1) * wt;
            num += ld_cg(p0 + s * stride + 2 + d) * wt;
        }
        const int e = (kvh * G + g) * HD + d;
        out[e] = num / den;
        if (qs != nullptr) q8_group(num / den, e / 32, e, qs, ds);
    }
    if (threadIdx.x == 0) count[kvh] = 0;  // ready for the next launch (stream order)
}

#define ATTN_DECODE(HD)                                                                       \
    extern "C" __global__ void attn_decode_hd##HD(                                            \
        const float* q, const float* k, const float* v, float* out, float* part, u32* count,  \
        const u32* pos0p, int n_heads, int n_kv_heads, float scale, int split_len,            \
        int n_splits, int capacity, i8* qs, float2* ds, int window) {                         \
        attn_decode_impl<HD>(q, k, v, out, part, count, pos0p, n_heads, n_kv_heads, scale,   \
                             split_len, n_splits, capacity, qs, ds, window);                  \
    }
ATTN_DECODE(64)
ATTN_DECODE(128)
ATTN_DECODE(256)
