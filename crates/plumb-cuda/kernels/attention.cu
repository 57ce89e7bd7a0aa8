// attention.cu: causal grouped-query attention over a contiguous KV cache, flash style.
//
// Shapes: q, out [n_tokens, n_heads, HD]; k, v [capacity, n_kv_heads, HD]. Query head h reads
// KV head h / G (G = n_heads / n_kv_heads); token i (position pos0 + i) sees keys 0..=pos0+i,
// or with window > 0 only the last `window` of them (a sliding-window layer: keys from
// max(0, pos0 + i + 1 - window)); window 0 is no window.
//
// A "row" is one (token, query head) pair. Rows are grouped by KV head: row ρ of KV head kvh is
// token ρ / G, head kvh*G + ρ % G, so one block serves every query head that shares a K/V tile
// (GQA: the tile is loaded once for all G heads). With G = 3, row 7 of KV head 1 is token 2,
// head 4.
//
// attn_fwd — launch: grid (ceil(n_tokens*G / 16), n_kv_heads, n_splits), block 128 = 4 warps.
//   A block owns 16 rows; warp w handles local rows w, w+4, w+8, w+12, so decode (G rows)
//   spreads its heads over the warps. Keys are walked in tiles of 32 staged in shared memory
//   (K padded to HD+1 columns: lane j reads key j's row without bank conflicts; V is read
//   row-wise, one key for all lanes). Per tile each row does: lane j scores key j, a warp max
//   and sum update the online softmax (m, l), and the 32 probabilities are broadcast by
//   shuffle into the output accumulator (lane l owns dims l, l+32, ...). 16 rows × 4 warps
//   keeps ~40 KB of shared memory for HD 128, under the 48 KB static limit.
//   pos0 is read from the device (the step's positions[0], src/step.rs); for one token the
//   launcher plans the splits on the cache capacity, so a recorded step's grid stays valid.
//   Split-K (decode over long contexts): split s covers keys [s*split_len, (s+1)*split_len);
//   with n_splits > 1 each block writes (m, l, acc[HD]) per row to `part` and attn_combine
//   merges the splits; with one split it writes the normalized output directly.
// attn_combine — launch: grid (n_tokens * n_heads), block HD: one thread per output dim of
//   one row; reads the n_splits partials of that row (row index t*n_heads + h).
//
// v1 of the op: every call with variant `flash_split`; with `split_kv` (the default) one token
// goes to attn_decode.cu and most prefill calls to attn_prefill.cu, the rest stays here.
// Launched from src/attention.rs.
// Check: `plumb check --device cuda --op attention --variant attention=flash_split` (the
// filter also runs attention_paged's cases).
// Time: `plumb bench-ops --device cuda --variant attention=flash_split` (its attention rows:
// one token over --ctx keys, a --prefill chunk). Measured (H100, NOTES.md): one token over 512
// keys of Llama-3-8B 68 µs per synchronized call; 512 tokens 464 µs (4.6 TFLOP/s).

// Tile shape per head size: HD 64 and 128 take 16 rows and 32 keys (one key per lane);
// HD 256 takes 8 rows (2 per warp) and 16 keys, each key scored by two lanes (lane j takes
// dims 0-15, 32-47, ... and lane j + 16 dims 16-31, 48-63, ...: with K padded to 257 columns
// the 32 lanes read 32 banks; a shuffle adds the halves), so its tiles
// stay under the 48 KB static shared-memory limit: 8·256 + 16·257 + 16·256 floats = 40.5 KB
// (HD 128: 16·128 + 32·129 + 32·128 = 40.4 KB). src/attention.rs plans the grid with the
// same rows per block (fwd_rows).
template <int HD> struct FwdTile {
    static constexpr int BK = HD == 256 ? 16 : 32;    // keys per tile
    static constexpr int ROWS = HD == 256 ? 8 : 16;   // rows per block
    static constexpr int RPW = ROWS / 4;              // rows per warp
    static constexpr int LPK = WARP / BK;             // lanes per key
};

template <int HD>
static __device__ void attn_fwd_impl(const float* q, const float* k, const float* v, float* out,
                                     float* part, int n_tokens, const u32* pos0p, int n_heads,
                                     int n_kv_heads, float scale, int split_len, int n_splits,
                                     int capacity, int window) {
    constexpr int DPL = HD / WARP;  // dims per lane
    constexpr int BK = FwdTile<HD>::BK, ROWS = FwdTile<HD>::ROWS, RPW = FwdTile<HD>::RPW;
    constexpr int LPK = FwdTile<HD>::LPK;
    static_assert((ROWS * HD + BK * (HD + 1) + BK * HD) * sizeof(float) <= 48 * 1024,
                  "attn_fwd tiles exceed 48 KB of static shared memory");
    __shared__ float Qs[ROWS][HD];
    __shared__ float Ks[BK][HD + 1];
    __shared__ float Vs[BK][HD];
    const int G = n_heads / n_kv_heads, kvh = blockIdx.y, split = blockIdx.z;
    const int n_rows = n_tokens * G, rho0 = blockIdx.x * ROWS;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int kv_dim = n_kv_heads * HD;
    const int pos0 = (int)*pos0p;  // from the device: the step's position (src/step.rs)

    // Stage the block's query rows, pre-scaled.
    for (int i = threadIdx.x; i < ROWS * HD; i += blockDim.x) {
        const int lr = i / HD, d = i % HD, rho = rho0 + lr;
        float val = 0.0f;
        if (rho < n_rows) {
            const int t = rho / G, h = kvh * G + rho % G;
            val = q[((size_t)t * n_heads + h) * HD + d] * scale;
        }
        Qs[lr][d] = val;
    }
    // Keys this block may need: up to the causal limit of its last row, within the split.
    const int last_rho = min(rho0 + ROWS, n_rows) - 1;
    const int kmax = pos0 + last_rho / G;  // inclusive
    // The block's first row sees the earliest keys; a window starts them past 0.
    const int kmin = window > 0 ? max(0, pos0 + rho0 / G + 1 - window) : 0;
    // The split's own keys [split·split_len, (split+1)·split_len), cut by the window and the
    // causal limit: a window that starts inside the split must not push its end into the
    // next split's keys (they would be counted twice).
    const int k_begin = max(split * split_len, kmin);
    const int k_end = min(min((split + 1) * split_len, kmax + 1), capacity);

    float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = NEG_INF; l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }

    for (int kt = k_begin; kt < k_end; kt += BK) {
        __syncthreads();  // Qs written / previous tile no longer read
        for (int i = threadIdx.x; i < BK * HD; i += blockDim.x) {
            const int j = i / HD, d = i % HD, key = kt + j;
            const bool ok = key < k_end;
            const size_t off = (size_t)key * kv_dim + (size_t)kvh * HD + d;
            Ks[j][d] = ok ? k[off] : 0.0f;
            Vs[j][d] = ok ? v[off] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int lr = warp + 4 * r, rho = rho0 + lr;
            if (rho >= n_rows) continue;  // uniform over the warp
            const int limit = pos0 + rho / G;
            const int first = window > 0 ? limit + 1 - window : 0;
            // Lane → key kj of the tile (with two lanes per key, each scores half the dims).
            const int kj = lane % BK;
            const int key = kt + kj;
            const bool valid = key < k_end && key <= limit && key >= first;
            float s = NEG_INF;
            if (valid) {
                s = 0.0f;
                if constexpr (LPK == 1) {
#pragma unroll 16
                    for (int d = 0; d < HD; d++) s += Qs[lr][d] * Ks[kj][d];
                } else {
                    // The second lane of a key takes the other 16 dims of each 32: its K
                    // reads fall in the 16 banks the first lanes leave free.
                    const int h16 = (lane / BK) * 16;
#pragma unroll 4
                    for (int d = h16; d < HD; d += 32) {
#pragma unroll
                        for (int e = 0; e < 16; e++) s += Qs[lr][d + e] * Ks[kj][d + e];
                    }
                }
            }
            // Both lanes of a key are valid or neither: -inf stays -inf.
            if constexpr (LPK == 2) s += __shfl_xor_sync(FULL_MASK, s, BK);
            const float tile_max = warp_max(s);
            if (tile_max == NEG_INF) continue;  // no visible key in this tile for this row
            const float m_new = fmaxf(m[r], tile_max);
            const float p = valid ? expf(s - m_new) : 0.0f;
            const float corr = expf(m[r] - m_new);  // 0 on the first visible tile
            // Each key counted once: by its first lane.
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
        const size_t row = (size_t)t * n_heads + h;
        if (n_splits == 1) {
            const float inv = 1.0f / l[r];
#pragma unroll
            for (int i = 0; i < DPL; i++) out[row * HD + lane + WARP * i] = acc[r][i] * inv;
        } else {
            // part: [n_splits][n_tokens * n_heads][HD + 2] = (m, l, acc...)
            float* p = part + ((size_t)split * n_tokens * n_heads + row) * (HD + 2);
            if (lane == 0) { p[0] = m[r]; p[1] = l[r]; }
#pragma unroll
            for (int i = 0; i < DPL; i++) p[2 + lane + WARP * i] = acc[r][i];
        }
    }
}

#define ATTN(HD)                                                                               \
    extern "C" __global__ void attn_fwd_hd##HD(const float* q, const float* k, const float* v, \
                                               float* out, float* part, int n_tokens,          \
                                               const u32* pos0p, int n_heads, int n_kv_heads,  \
                                               float scale, int split_len, int n_splits,       \
                                               int capacity, int window) {                     \
        attn_fwd_impl<HD>(q, k, v, out, part, n_tokens, pos0p, n_heads, n_kv_heads, scale,     \
                          split_len, n_splits, capacity, window);                              \
    }
ATTN(64)
ATTN(128)
ATTN(256)

// Splits with no visible key left (m = -inf, l = 0) weigh exp(-inf) = 0; the split holding
// the row's own position always has a visible key, so the maximum is finite.
extern "C" __global__ void attn_combine(const float* part, float* out, int n_rows, int hd,
                                        int n_splits) {
    const size_t row = blockIdx.x;
    const int d = threadIdx.x;
    float mx = NEG_INF;
    for (int s = 0; s < n_splits; s++)
        mx = fmaxf(mx, part[((size_t)s * n_rows + row) * (hd + 2)]);
    float den = 0.0f, num = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        const float* p = part + ((size_t)s * n_rows + row) * (hd + 2);
        const float w = p[0] == NEG_INF ? 0.0f : expf(p[0] - mx);
        den += p[1] * w;
        num += p[2 + d] * w;
    }
    out[row * hd + d] = num / den;
}
