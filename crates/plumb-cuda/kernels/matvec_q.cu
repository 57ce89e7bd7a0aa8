// matvec_q.cu: out[t, r] = Σ_k W[r, k] · x[t, k] for a few tokens (n ≤ 8, decode), with W in
// any stored format dequantized in registers and x kept in f32.
//
// Shapes: W [rows, cols] (row_bytes per row), x [n, cols], out [n, rows].
// Each lane owns whole chunks (32 elements, quant.cuh): lane l of a row's warp dequantizes
// chunks l, l+32, ... once and dots each against all n token rows of x, so the weight is read
// exactly once per op whatever n is. Row 5 of a Q4_0 W with cols 4096: 128 chunks = 128
// blocks of 18 bytes at W + 5*2304; lane 3 reads blocks 3, 35, 67, 99.
//
// v1 variants (named in src/registry.rs, selected with CudaBackend::set_variant):
// - warp_per_row: grid ceil(rows/4), block 128 = 4 warps, one row per warp. Rows are
//   independent, so the grid scales with rows (4096 rows -> 1024 blocks, ~8 per SM on an
//   H100); x is re-read by every warp through L1/L2 (n·cols·4 bytes, small next to W).
// - tiled: grid ceil(rows/8), block 256 = 8 warps, one row per warp, x staged per 1024-column
//   tile in shared memory ([n][1024 + 32 pad] floats, ≤ 33 KB) and shared by the 8 rows. Lane
//   l reads its chunk at l*33 floats, so the 32 lanes hit 32 different banks.
// Neither quantizes x to q8_1 yet (the dp4a path): both keep f32 activations, which costs
// ALU but no accuracy.
//
// Launched from src/matvec_q.rs (routed there by src/matmul.rs; the formats without a dp4a
// kernel come here under every matvec variant).
// Check: `plumb check --device cuda --op matmul --variant matvec=warp_per_row` (or
// `matvec=tiled`).
// Time: `plumb bench-ops --device cuda --variant matvec=warp_per_row` (its n = 1 matmul rows).
// Measured (H100, synchronized calls, NOTES.md): warp_per_row on Q4_0 4096×4096 41.2 µs (8% of
// the copy bandwidth), 14336×4096 75.8 µs (15%), 128256×4096 575 µs (18%).

#define MAX_N 8
#define TILE_K 1024
#define TILE_KP (TILE_K + TILE_K / 32)  // one float of padding per 32

// Σ_i w[i] · xr[e0 + i] over the chunk starting at element e0 (guarded at the row's end).
static __device__ __forceinline__ float dot32(const float* w, const float* xr, int e0, int cols) {
    float s = 0.0f;
    if ((cols & 3) == 0 && e0 + 32 <= cols) {
        const float4* p = reinterpret_cast<const float4*>(xr + e0);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 v = p[i];
            s += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 32; i++)
            if (e0 + i < cols) s += w[i] * xr[e0 + i];
    }
    return s;
}

template <int T>
static __device__ void matvec_warp_impl(const u8* W, const float* x, float* out, int rows,
                                        int cols, int row_bytes, int n) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int r = blockIdx.x * (blockDim.x / WARP) + warp;
    if (r >= rows) return;  // the whole warp leaves together: no shuffle is left half-empty
    const u8* row = W + (size_t)r * row_bytes;
    float acc[MAX_N];
#pragma unroll
    for (int t = 0; t < MAX_N; t++) acc[t] = 0.0f;
    for (int c = lane; c < n_chunks(cols); c += WARP) {
        float w[32];
        dq32<T>(row, c, cols, w);
#pragma unroll
        for (int t = 0; t < MAX_N; t++)
            if (t < n) acc[t] += dot32(w, x + (size_t)t * cols, c * 32, cols);
    }
#pragma unroll
    for (int t = 0; t < MAX_N; t++) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < n) out[(size_t)t * rows + r] = v;
    }
}

template <int T>
static __device__ void matvec_tiled_impl(const u8* W, const float* x, float* out, int rows,
                                         int cols, int row_bytes, int n) {
    extern __shared__ float xs[];  // [n][TILE_KP]
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int r = blockIdx.x * (blockDim.x / WARP) + warp;
    const bool active = r < rows;  // inactive warps still help load and reach the barriers
    const u8* row = W + (size_t)(active ? r : 0) * row_bytes;
    float acc[MAX_N];
#pragma unroll
    for (int t = 0; t < MAX_N; t++) acc[t] = 0.0f;
    for (int k0 = 0; k0 < cols; k0 += TILE_K) {
        __syncthreads();  // the previous tile is no longer read
        for (int i = threadIdx.x; i < n * TILE_K; i += blockDim.x) {
            const int t = i / TILE_K, k = i % TILE_K;
            xs[t * TILE_KP + k + k / 32] = k0 + k < cols ? x[(size_t)t * cols + k0 + k] : 0.0f;
        }
        __syncthreads();
        const int c = k0 / 32 + lane;
        if (active && c < n_chunks(cols)) {
            float w[32];
            dq32<T>(row, c, cols, w);
#pragma unroll
            for (int t = 0; t < MAX_N; t++) {
                if (t < n) {
                    const float* xt = xs + t * TILE_KP + lane * 33;
                    float s = 0.0f;
#pragma unroll
                    for (int i = 0; i < 32; i++) s += w[i] * xt[i];
                    acc[t] += s;
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < MAX_N; t++) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < n) out[(size_t)t * rows + r] = v;
    }
}

#define MATVEC(T, name)                                                                      \
    extern "C" __global__ void matvec_warp_##name(const u8* W, const float* x, float* out,   \
                                                  int rows, int cols, int row_bytes, int n) { \
        matvec_warp_impl<T>(W, x, out, rows, cols, row_bytes, n);                            \
    }                                                                                        \
    extern "C" __global__ void matvec_tiled_##name(const u8* W, const float* x, float* out,  \
                                                   int rows, int cols, int row_bytes, int n) { \
        matvec_tiled_impl<T>(W, x, out, rows, cols, row_bytes, n);                           \
    }
FOR_EACH_FORMAT(MATVEC)
