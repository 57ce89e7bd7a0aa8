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
// Launch: grid (n_items, n_kv_heads, z), block 128. Same tile walk as attn_fwd, and the same
// sliding window (window > 0: a row sees its last `window` positions). Tiles as attn_fwd's
// (PagedTile = FwdTile): HD 64 and 128 take an item's 16 rows in one block and keys 32 at a
// time; HD 256 takes 8 rows per block (z = 2 blocks per item: the items, built without the
// head size by src/paged.rs and stage_paged, stay 16 rows) and 16 keys per tile, two lanes per
// key, to stay under 48 KB of shared memory. At HD 64 and 128, z = n_split: with n_split = 1 a
// block walks its item's keys and writes out; with n_split > 1 (few items: a decode batch of
// one to a few dozen sequences would leave most multiprocessors idle) the item's key range is
// cut into n_split whole-tile chunks, computed here from the item's own length, so the grid
// depends only on the batch (a recorded step replays it at any length); split z writes its
// rows' running max, sum and unnormalized output to part, and attn_paged_merge combines them.
#define PG_ITEM 5
template <int HD> struct PagedTile {
    static constexpr int BK = HD == 256 ? 16 : 32;     // keys per tile
    static constexpr int TROWS = HD == 256 ? 8 : 16;   // rows per block
    static constexpr int RPW = TROWS / 4;              // rows per warp
    static constexpr int LPK = WARP / BK;              // lanes per key
};
template <int HD>
static __device__ void attn_paged_impl(const float* q, const float* k, const float* v, float* out,
                                       float* part, const u32* meta, int n_heads,
                                       int n_kv_heads, float scale, int block_size, int window) {
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
    const int k_first = window > 0 ? max(0, pos0 + rho0 / G + 1 - window) / BK * BK : 0;
    // At HD 256 grid.z picks the item's rows (above), never a key split.
    const int n_split = TROWS < ROWS ? 1 : (int)gridDim.z;
    const int split = TROWS < ROWS ? 0 : (int)blockIdx.z;
    // This block's keys [k_start, k_stop): whole tiles of the item's range (all of it alone).
    const int chunk = ((k_end - k_first + n_split - 1) / n_split + BK - 1) / BK * BK;
    const int k_start = min(k_end, k_first + split * chunk);
    const int k_stop = n_split > 1 ? min(k_end, k_start + chunk) : k_end;

    float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = NEG_INF; l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }

    for (int kt = k_start; kt < k_stop; kt += BK) {
        __syncthreads();
        for (int i = threadIdx.x; i < BK * HD / 4; i += blockDim.x) {
            const int j = i / (HD / 4), d = 4 * (i % (HD / 4)), key = kt + j;
            float4 kk = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kk;
            if (key < k_stop) {
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
            const bool valid = key < k_stop && key <= limit && key >= first;
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

    if (n_split > 1) {
        // An empty chunk (a short item) leaves m = -inf, l = 0: the merge gives it no weight.
        float* base =
            part + (((size_t)blockIdx.x * n_kv_heads + kvh) * n_split + split) * ROWS * (HD + 2);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int lr = warp + 4 * r;
            if (rho0 + lr >= n_rows) continue;
            float* pr = base + (size_t)lr * (HD + 2);
            if (lane == 0) { pr[0] = m[r]; pr[1] = l[r]; }
#pragma unroll
            for (int i = 0; i < DPL; i++) pr[2 + lane + WARP * i] = acc[r][i];
        }
        return;
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

// attn_paged_merge — the n_split partials of attn_paged's rows into out: per row,
// M = max m_s, out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. Grid (n_items,
// n_kv_heads), block 128 (a warp per row, four rows each, lanes over HD).
template <int HD>
static __device__ void attn_paged_merge_impl(const float* part, float* out, const u32* meta,
                                             int n_heads, int n_kv_heads, int n_split) {
    constexpr int DPL = HD / WARP;
    const u32* it = meta + (size_t)blockIdx.x * PG_ITEM;
    const int q_row = (int)it[0], n_tokens = (int)it[1], rho0 = (int)it[4];
    const int G = n_heads / n_kv_heads, kvh = blockIdx.y, n_rows = n_tokens * G;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const size_t stride = (size_t)ROWS * (HD + 2);
    const float* base = part + ((size_t)blockIdx.x * n_kv_heads + kvh) * n_split * stride;
    for (int r = 0; r < 4; r++) {
        const int lr = warp + 4 * r, rho = rho0 + lr;
        if (rho >= n_rows) continue;
        const float* pr = base + (size_t)lr * (HD + 2);
        float mx = NEG_INF;
        for (int z = 0; z < n_split; z++) mx = fmaxf(mx, pr[z * stride]);
        float sum = 0.0f, o[DPL];
#pragma unroll
        for (int i = 0; i < DPL; i++) o[i] = 0.0f;
        for (int z = 0; z < n_split; z++) {
            const float mz = pr[z * stride];
            if (mz == NEG_INF) continue;
            const float w = expf(mz - mx);
            sum += w * pr[z * stride + 1];
#pragma unroll
            for (int i = 0; i < DPL; i++) o[i] += w * pr[z * stride + 2 + lane + WARP * i];
        }
        const int t = rho / G, h = kvh * G + rho % G;
        const size_t row = (size_t)(q_row + t) * n_heads + h;
        const float inv = 1.0f / sum;
#pragma unroll
        for (int i = 0; i < DPL; i++) out[row * HD + lane + WARP * i] = o[i] * inv;
    }
}

#define ATTN_PAGED(HD)                                                                         \
    extern "C" __global__ void attn_paged_hd##HD(const float* q, const float* k, const float* v,\
                                                 float* out, float* part, const u32* meta,     \
                                                 int n_heads, int n_kv_heads, float scale,     \
                                                 int block_size, int window) {                 \
        attn_paged_impl<HD>(q, k, v, out, part, meta, n_heads, n_kv_heads, scale, block_size,  \
                            window);                                                           \
    }                                                                                          \
    extern "C" __global__ void attn_paged_merge_hd##HD(const float* part, float* out,           \
                                                       const u32* meta, int n_heads,           \
                                                       int n_kv_heads, int n_split) {          \
        attn_paged_merge_impl<HD>(part, out, meta, n_heads, n_kv_heads, n_split);              \
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
