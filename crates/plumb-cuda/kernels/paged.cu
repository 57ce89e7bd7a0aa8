// paged.cu: the paged KV cache (plumb_ops::ops::paged_attention): attention of many sequences
// over one pool of fixed-size blocks, and the write of new K/V rows into their slots, each one
// launch per call. v1 (NOTES.md run 5), written beside attention.cu's attn_fwd: the same tiles
// of rows and keys, the keys found through each sequence's block table.
//
// Launched from src/paged.rs.
// Check: `plumb check --device cuda --op attention_paged` (attn_paged: decode and prefill rows
// mixed, GQA 1-8, scattered block tables, positions ending mid-block). kv_write_slots has no
// case of its own there: it runs only through forward_paged (below), unchecked against a
// reference on the GPU.
// Time: `plumb bench-ops --device cuda` has no paged row; the kernels run in `plumb bench -m M
// --device cuda --parallel 8,64` (forward_paged: per layer one kv_write_slots for K and one for
// V, one attn_paged) and behind `plumb serve` (`plumb bench-serve`). Measured: not in isolation
// yet (NOTES.md, run 6: the step's time was the matmuls and the host's argmax).

#define ROWS 16  // rows per work item (ROWS in src/paged.rs)

// attn_paged — many sequences over one paged KV cache (plumb_ops::ops::paged_attention), one
// launch per call. Pools k, v: [n_blocks * block_size, n_kv_heads, HD]; position p of a
// sequence lives in slot tab[p / block_size] * block_size + p % block_size.
// meta (u32, uploaded once per call into a persistent buffer, src/paged.rs): n_items
// items of PG_ITEM words (q_row, n_tokens, pos0, table offset into meta, rho0), then the block
// tables. An item is ROWS rows (token, query head of KV head kvh) of one sequence, as
// attn_fwd's tiles; decode rows (n_tokens 1) and prefill rows mix freely.
// Launch: grid (n_items, n_kv_heads, ROWS / TROWS), block 128. Same tile walk as attn_fwd
// (no key splits), and the same sliding window (window > 0: a row sees its last `window`
// positions). Tiles as attn_fwd's (PagedTile = FwdTile): HD 64 and 128 take an item's 16
// rows in one block and keys 32 at a time; HD 256 takes 8 rows per block (grid.z = 2 blocks
// per item: the items, built without the head size by src/paged.rs and stage_paged, stay
// 16 rows) and 16 keys per tile, two lanes per key, to stay under 48 KB of shared memory.
#define PG_ITEM 5
template <int HD> struct PagedTile {
    static constexpr int BK = HD == 256 ? 16 : 32;     // keys per tile
    static constexpr int TROWS = HD == 256 ? 8 : 16;   // rows per block
    static constexpr int RPW = TROWS / 4;              // rows per warp
    static constexpr int LPK = WARP / BK;              // lanes per key
};
template <int HD>
static __device__ void attn_paged_impl(const float* q, const float* k, const float* v, float* out,
                                       const u32* meta, int n_heads, int n_kv_heads, float scale,
                                       int block_size, int window) {
    constexpr int DPL = HD / WARP;
    constexpr int BK = PagedTile<HD>::BK, TROWS = PagedTile<HD>::TROWS;
    constexpr int RPW = PagedTile<HD>::RPW, LPK = PagedTile<HD>::LPK;
    static_assert(ROWS % TROWS == 0, "an item is whole blocks of rows");
    static_assert((TROWS * HD + BK * (HD + 1) + BK * HD) * sizeof(float) <= 48 * 1024,
                  "attn_paged tiles exceed 48 KB of static shared memory");
    __shared__ float Qs[TROWS][HD];
    __shared__ float Ks[BK][HD + 1];
    __shared__ __align__(16) float Vs[BK][HD];
    const u32* it = meta + (size_t)blockIdx.x * PG_ITEM;
    const int q_row = (int)it[0], n_tokens = (int)it[1], pos0 = (int)it[2];
    const u32* tab = meta + it[3];
    int rho0 = (int)it[4];
    const int G = n_heads / n_kv_heads, kvh = blockIdx.y;
    const int n_rows = n_tokens * G;
    if constexpr (TROWS < ROWS) {
        rho0 += (int)blockIdx.z * TROWS;
        if (rho0 >= n_rows) return;  // the item's second half holds no row (whole block)
    }
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int kv_dim = n_kv_heads * HD;

    for (int i = threadIdx.x; i < TROWS * HD; i += blockDim.x) {
        const int lr = i / HD, d = i % HD, rho = rho0 + lr;
        float val = 0.0f;
        if (rho < n_rows) {
            const int t = rho / G, h = kvh * G + rho % G;
            val = q[((size_t)(q_row + t) * n_heads + h) * HD + d] * scale;
        }
        Qs[lr][d] = val;
    }
    const int last_rho = min(rho0 + TROWS, n_rows) - 1;
    const int k_end = pos0 + last_rho / G + 1;
    const int k_start = window > 0 ? max(0, pos0 + rho0 / G + 1 - window) / BK * BK : 0;

    float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = NEG_INF; l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }

    for (int kt = k_start; kt < k_end; kt += BK) {
        __syncthreads();
        for (int i = threadIdx.x; i < BK * HD / 4; i += blockDim.x) {
            const int j = i / (HD / 4), d = 4 * (i % (HD / 4)), key = kt + j;
            float4 kk = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kk;
            if (key < k_end) {
                const size_t slot = (size_t)tab[key / block_size] * block_size + key % block_size;
                const size_t off = slot * kv_dim + (size_t)kvh * HD + d;
                kk = *reinterpret_cast<const float4*>(k + off);
                vv = *reinterpret_cast<const float4*>(v + off);
            }
            Ks[j][d] = kk.x; Ks[j][d + 1] = kk.y; Ks[j][d + 2] = kk.z; Ks[j][d + 3] = kk.w;
            *reinterpret_cast<float4*>(&Vs[j][d]) = vv;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int lr = warp + 4 * r, rho = rho0 + lr;
            if (lr >= TROWS || rho >= n_rows) continue;  // uniform over the warp
            const int limit = pos0 + rho / G;
            const int first = window > 0 ? limit + 1 - window : 0;
            const int kj = lane % BK;  // the lane's key (two lanes per key at HD 256)
            const int key = kt + kj;
            const bool valid = key < k_end && key <= limit && key >= first;
            float s = NEG_INF;
            if (valid) {
                s = 0.0f;
                if constexpr (LPK == 1) {
#pragma unroll 16
                    for (int d = 0; d < HD; d++) s += Qs[lr][d] * Ks[kj][d];
                } else {
                    // As attn_fwd: the second lane takes the other 16 dims of each 32.
                    const int h16 = (lane / BK) * 16;
#pragma unroll 4
                    for (int d = h16; d < HD; d += 32) {
#pragma unroll
                        for (int e = 0; e < 16; e++) s += Qs[lr][d + e] * Ks[kj][d + e];
                    }
                }
            }
            if constexpr (LPK == 2) s += __shfl_xor_sync(FULL_MASK, s, BK);
            const float tile_max = warp_max(s);
            if (tile_max == NEG_INF) continue;
            const float m_new = fmaxf(m[r], tile_max);
            const float p = valid ? expf(s - m_new) : 0.0f;
            const float corr = expf(m[r] - m_new);
            l[r] = l[r] * corr + warp_sum(LPK == 1 || lane < BK ? p : 0.0f);
#pragma unroll
            for (int i = 0; i < DPL; i++) acc[r][i] *= corr;
            for (int j = 0; j < BK; j++) {
                const float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
                for (int i = 0; i < DPL; i++) acc[r][i] += pj * Vs[j][lane + WARP * i];
            }
            m[r] = m_new;
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int rho = rho0 + warp + 4 * r;
        if (rho >= n_rows) continue;
        const int t = rho / G, h = kvh * G + rho % G;
        const size_t row = (size_t)(q_row + t) * n_heads + h;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < DPL; i++) out[row * HD + lane + WARP * i] = acc[r][i] * inv;
    }
}

#define ATTN_PAGED(HD)                                                                         \
    extern "C" __global__ void attn_paged_hd##HD(const float* q, const float* k, const float* v,\
                                                 float* out, const u32* meta, int n_heads,     \
                                                 int n_kv_heads, float scale, int block_size,  \
                                                 int window) {                                 \
        attn_paged_impl<HD>(q, k, v, out, meta, n_heads, n_kv_heads, scale, block_size,        \
                            window);                                                           \
    }
ATTN_PAGED(64)
ATTN_PAGED(128)
ATTN_PAGED(256)

// kv_write_slots: pool[slots[i] * kv_dim + e] = src[i * kv_dim + e]; grid-stride over
// n * kv_dim / 4 float4s (kv_dim a multiple of 4, checked by the launcher).
extern "C" __global__ void kv_write_slots(const float* src, float* pool, const u32* slots, int n,
                                          int kv_dim) {
    const int per = kv_dim / 4;
    const size_t total = (size_t)n * per;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / per, e = 4 * (i % per);
        const float4 x = *reinterpret_cast<const float4*>(src + row * kv_dim + e);
        *reinterpret_cast<float4*>(pool + (size_t)slots[row] * kv_dim + e) = x;
    }
}
