// matmul.cu: prefill matmul (n > 8 tokens): out[t, r] = Σ_k W[r, k] · x[t, k].
// Shapes: W [rows, cols] in a stored format (row_bytes per row), x [n, cols], out [n, rows].
//
// Two paths (variant `prefill`):
// - cublas: dequant_f16_* writes W as f16 into a scratch [rows, cols], to_f16 rounds x, and a
//   cuBLAS GEMM with f32 accumulation and f32 output does the product; BF16 weights go
//   through dequant_f32_* and an f32 GEMM instead (bf16 -> f16 would lose range), and F32/F16
//   weights are used as they are stored.
// - tiled: matmul_tiled_* dequantizes 64-row × 32-column weight tiles into shared memory and
//   multiplies them with 64-token x tiles in f32. No library, no scratch: the fallback where
//   cuBLAS is absent, and a second opinion on it.
//
// Launched from src/matmul.rs (which also routes up to 64 tokens to the matvec and mma kernels).
// Check: `plumb check --device cuda --op matmul --variant prefill=cublas` (or `prefill=tiled`;
// add `--variant batch=prefill` to send the 9-64-token cases here too).
// Time: `plumb bench-ops --device cuda --prefill 512` (its matmul rows at n = 512). Measured
// (H100, NOTES.md, cublas with dequant v2 included): 4096×4096 52.9 µs (325 TFLOP/s),
// 14336×4096 162.6 µs (370 TFLOP/s).

// Launch: grid ceil(rows * n_chunks / 256), block 256: one thread per 32-element chunk; the
// op is a streaming conversion. Thread g = r * n_chunks + c: g = 300 with cols 4096
// (128 chunks) is row 2, chunk 44 -> out[2*4096 + 1408 .. + 1440].
// dequant_f32 (BF16 weights; v1 of dequant_f16 too).
template <int T, bool HALF>
static __device__ void dequant_impl(const u8* W, void* out, int rows, int cols, int row_bytes) {
    const long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const int nc = n_chunks(cols);
    if (g >= (long long)rows * nc) return;
    const int r = (int)(g / nc), c = (int)(g % nc);
    float v[32];
    dq32<T>(W + (size_t)r * row_bytes, c, cols, v);
    const size_t o = (size_t)r * cols + c * 32;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        if (c * 32 + i < cols) {
            if constexpr (HALF) reinterpret_cast<u16*>(out)[o + i] = f32_to_f16(v[i]);
            else reinterpret_cast<float*>(out)[o + i] = v[i];
        }
    }
}

// dequant_f16 v2: one warp per run of 32 chunks (1024 elements) of a row; each lane
// dequantizes one chunk into shared memory as f16 pairs (row stride 17 words: the 32 lanes'
// stores land in 32 banks), then the warp writes the run with 16-byte stores, 512 contiguous
// bytes per instruction. v1 (dequant_impl<T, true>) wrote 2-byte values 64 bytes apart
// across the lanes: 32 partial sectors per store.
// Launch: grid ceil(rows · runs / 8), block 256 = 8 warps; runs = ceil(cols / 1024). Only for
// the quantized formats (cols % 32 == 0). Warp 9 of a 4096-column W (4 runs) is row 2, run 1:
// out[2·4096 + 1024 .. + 2048].
template <int T>
static __device__ void dequant16_impl(const u8* W, u16* out, int rows, int cols, int row_bytes) {
    __shared__ u32 sm[8][32 * 17];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int nc = cols / 32, runs = (nc + 31) / 32;
    const long long gw = (long long)blockIdx.x * 8 + warp;
    if (gw >= (long long)rows * runs) return;  // whole warps leave
    const int r = (int)(gw / runs), run = (int)(gw % runs);
    const int c = run * 32 + lane;
    u32* s = sm[warp];
    if (c < nc) {
        float v[32];
        dq32<T>(W + (size_t)r * row_bytes, c, cols, v);
#pragma unroll
        for (int i = 0; i < 16; i++)
            s[lane * 17 + i] = (u32)f32_to_f16(v[2 * i]) | ((u32)f32_to_f16(v[2 * i + 1]) << 16);
    }
    __syncwarp();
    const int here = min(32, nc - run * 32);  // chunks in this run
    uint4* o = reinterpret_cast<uint4*>(out + (size_t)r * cols + (size_t)run * 1024);
    // 16-byte piece p: chunk p / 4, its words 4 (p % 4) .. + 4.
    for (int p = lane; p < here * 4; p += WARP) {
        const int w0 = (p / 4) * 17 + 4 * (p % 4);
        o[p] = make_uint4(s[w0], s[w0 + 1], s[w0 + 2], s[w0 + 3]);
    }
}

// Launch: grid min(ceil(len / 256), 4096), block 256, grid-stride: a streaming conversion.
extern "C" __global__ void to_f16_f32(const float* x, u16* out, u64 len) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        out[i] = f32_to_f16(x[i]);
}

// Launch: grid (ceil(rows / 64), ceil(n / 64)), block 256 = 16 × 16 threads, each owning a
// 4 × 4 patch of the 64 × 64 output tile: rows R0 + tx + 16i, tokens T0 + ty + 16j, so a
// warp's stores cover 2 runs of 16 consecutive rows (coalesced on out's row-major [n, rows]).
// Per 32-wide K step: threads 0..63 each dequantize one weight row's chunk into Ws, all 256
// load the 64 × 32 x tile (8 floats each, consecutive threads on consecutive columns).
// Both tiles are padded to 33 columns so the column-wise reads do not collide on banks.
// Block (1, 0) with 64-row tiles covers W rows 64..127 for tokens 0..63.
template <int T>
static __device__ void matmul_tiled_impl(const u8* W, const float* x, float* out, int rows,
                                         int cols, int row_bytes, int n) {
    __shared__ float Ws[64][33];
    __shared__ float Xs[64][33];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int R0 = blockIdx.x * 64, T0 = blockIdx.y * 64;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int c = 0; c < n_chunks(cols); c++) {
        __syncthreads();  // the previous step's tiles are no longer read
        if (tid < 64) {
            float v[32];
            if (R0 + tid < rows) {
                dq32<T>(W + (size_t)(R0 + tid) * row_bytes, c, cols, v);
            } else {
#pragma unroll
                for (int i = 0; i < 32; i++) v[i] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 32; i++) Ws[tid][i] = v[i];
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int idx = tid + 256 * j, t = idx / 32, k = idx % 32;
            const int e = c * 32 + k;
            Xs[t][k] = (T0 + t < n && e < cols) ? x[(size_t)(T0 + t) * cols + e] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < 32; k++) {
            float wv[4], xv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) wv[i] = Ws[tx + 16 * i][k];
#pragma unroll
            for (int j = 0; j < 4; j++) xv[j] = Xs[ty + 16 * j][k];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += wv[i] * xv[j];
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = R0 + tx + 16 * i, t = T0 + ty + 16 * j;
            if (r < rows && t < n) out[(size_t)t * rows + r] = acc[i][j];
        }
    }
}

#define MATMUL(T, name)                                                                       \
    extern "C" __global__ void dequant_f16_##name(const u8* W, u16* out, int rows, int cols,  \
                                                  int row_bytes) {                            \
        dequant16_impl<T>(W, out, rows, cols, row_bytes);                                     \
    }                                                                                         \
    extern "C" __global__ void dequant_f32_##name(const u8* W, float* out, int rows, int cols, \
                                                  int row_bytes) {                            \
        dequant_impl<T, false>(W, out, rows, cols, row_bytes);                                \
    }                                                                                         \
    extern "C" __global__ void matmul_tiled_##name(const u8* W, const float* x, float* out,   \
                                                   int rows, int cols, int row_bytes, int n) { \
        matmul_tiled_impl<T>(W, x, out, rows, cols, row_bytes, n);                            \
    }
FOR_EACH_FORMAT(MATMUL)
