// matvec_h.cu: decode matvec (n ≤ 8 tokens) of F16 and BF16 weights with f32 activations.
// out[t, r] = Σ_k W[r, k] · x[t, k], W converted to f32 in registers (exact: every f16 and
// bf16 is an f32), products and sums in f32 (no q8 rounding of x: the float formats keep the
// matmul check's f32 tolerance).
//
// Shapes: W [rows, cols] (2 bytes per element, row_bytes = 2 cols), x [n, cols] f32, out
// [n, rows]; up to 3 (W, out) sets share x in one launch (MhSets = src/launch.rs MvSets).
// cols is a multiple of 8, so a row is cols / 8 "units" of 16 bytes (8 elements), each one
// aligned 16-byte load, and x's units are two aligned float4 loads (src/matvec_h.rs checks
// cols and x's address, else the v1 matvec).
//
// Launch (matvec_q8.cu's structure): block (TPR, 128 / TPR): TPR threads share a group of
// MH_R = 4 rows and walk its units with stride TPR (TPR = 32, 64 or 128, the smallest power of
// two ≥ units); grid Σ_sets ceil(rows / (MH_R · 128 / TPR)). 4096 × 4096 F16: 512 units, TPR
// 128, 1024 blocks; a round issues one 16-byte load per row of the group (4 per thread, 64 B
// in flight, as many as the q8 kernels' 2 units × 2 rows) before any math. x is re-read from
// L1 by every row group: 32 B per unit per token against the 64 B of weights the group's 4 rows
// read, hence 4 rows per group, not the q8 kernels' 2 (whose x̂ is 1 byte per element).
// Partial sums: warp shuffles, then shared memory across the TPR / 32 warps of a group.
//
// v2 of the F16 / BF16 matvec (v1 = matvec_q.cu's warp_per_row / tiled, 32-element chunks
// dequantized by dq32 with 2-byte loads). Launched from src/matvec_h.rs (routed there by
// src/matmul.rs: variant matvec=q8_dp4a, the default, and matvec=mma).
// Check: `plumb check --device cuda --op matmul` (the F16 / BF16 cases with n ≤ 8).
// Time: `plumb bench-ops --device cuda` on an F16 model (its n = 1 matmul rows). Not yet
// measured.

#define MH_MAX_N 8
#define MH_R 4  // rows per group

struct MhSets {  // src/launch.rs: MvSets
    const u8* W[3];
    float* out[3];
    int rows[3];
    int row_bytes[3];
    int end[3];
};

// Weight loads: read once, so not kept in L1 (x, re-read by every row group, stays there).
static __device__ __forceinline__ uint4 mh_ld16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Elements 2i and 2i + 1 of a unit (word i: low half first).
template <bool BF>
static __device__ __forceinline__ float2 mh_pair(u32 w) {
    if constexpr (BF) {
        return make_float2(__int_as_float(w << 16), __int_as_float(w & 0xffff0000u));
    } else {
        return make_float2(f16_to_f32((u16)(w & 0xffff)), f16_to_f32((u16)(w >> 16)));
    }
}

// Σ_i w_i x_i over a unit: 8 weights (f32) and 8 values of x.
static __device__ __forceinline__ float mh_dot(const float (&w)[8], float4 a, float4 b) {
    float s = w[0] * a.x;
    s = fmaf(w[1], a.y, s);
    s = fmaf(w[2], a.z, s);
    s = fmaf(w[3], a.w, s);
    s = fmaf(w[4], b.x, s);
    s = fmaf(w[5], b.y, s);
    s = fmaf(w[6], b.z, s);
    return fmaf(w[7], b.w, s);
}

template <bool BF, int N>
static __device__ void matvec_h_impl(const MhSets& sets, const float* x, int cols) {
    __shared__ float red[4][MH_R * MH_MAX_N];  // [warp][row * N + token]
    const int bx = blockIdx.x;
    const int set = bx < sets.end[0] ? 0 : (bx < sets.end[1] ? 1 : 2);
    const int blk = bx - (set == 0 ? 0 : (set == 1 ? sets.end[0] : sets.end[1]));
    const u8* W = set == 0 ? sets.W[0] : (set == 1 ? sets.W[1] : sets.W[2]);
    float* out = set == 0 ? sets.out[0] : (set == 1 ? sets.out[1] : sets.out[2]);
    const int rows = set == 0 ? sets.rows[0] : (set == 1 ? sets.rows[1] : sets.rows[2]);
    const int row_bytes =
        set == 0 ? sets.row_bytes[0] : (set == 1 ? sets.row_bytes[1] : sets.row_bytes[2]);
    const int tpr = blockDim.x, tx = threadIdx.x;
    const int r0 = (blk * blockDim.y + threadIdx.y) * MH_R;
    const int units = cols / 8;
    const u8* row[MH_R];
#pragma unroll
    for (int r = 0; r < MH_R; r++) row[r] = W + (size_t)min(r0 + r, rows - 1) * row_bytes;
    float acc[MH_R][N];
#pragma unroll
    for (int r = 0; r < MH_R; r++)
#pragma unroll
        for (int t = 0; t < N; t++) acc[r][t] = 0.0f;

    for (int u = tx; u < units; u += tpr) {
        uint4 q[MH_R];
#pragma unroll
        for (int r = 0; r < MH_R; r++) q[r] = mh_ld16(row[r] + 16 * u);
        float w[MH_R][8];
#pragma unroll
        for (int r = 0; r < MH_R; r++) {
            const u32 v[4] = {q[r].x, q[r].y, q[r].z, q[r].w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 p = mh_pair<BF>(v[i]);
                w[r][2 * i] = p.x;
                w[r][2 * i + 1] = p.y;
            }
        }
#pragma unroll
        for (int t = 0; t < N; t++) {
            const float4* xp = reinterpret_cast<const float4*>(x + (size_t)t * cols + 8 * u);
            const float4 a = xp[0], b = xp[1];
#pragma unroll
            for (int r = 0; r < MH_R; r++) acc[r][t] += mh_dot(w[r], a, b);
        }
    }

    // Reduce over the group's TPR threads: shuffles within each warp, then shared memory.
    const int warp = (threadIdx.y * tpr + tx) / WARP, lane = tx % WARP;
#pragma unroll
    for (int r = 0; r < MH_R; r++)
#pragma unroll
        for (int t = 0; t < N; t++) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0) red[warp][r * N + t] = v;
        }
    __syncthreads();
    const int wpg = tpr / WARP;  // warps per group
    if (tx < MH_R * N) {
        const int r = tx / N, t = tx % N, row_i = r0 + r;
        float v = 0.0f;
        for (int i = 0; i < wpg; i++) v += red[threadIdx.y * wpg + i][tx];
        if (row_i < rows) out[(size_t)t * rows + row_i] = v;
    }
}

// Register budget as matvec_q8.cu's: ≥ 8 blocks of 128 per SM for one or two tokens, fewer
// with more accumulators.
#define MH_MIN_BLOCKS(N) ((N) <= 2 ? 8 : (N) <= 4 ? 4 : 3)
#define MH_N(BF, name, N)                                                                    \
    extern "C" __global__ void __launch_bounds__(128, MH_MIN_BLOCKS(N))                      \
        matvec_h_n##N##_##name(MhSets sets, const float* x, int cols) {                      \
        matvec_h_impl<BF, N>(sets, x, cols);                                                 \
    }
#define MATVEC_H(BF, name)                                                                   \
    MH_N(BF, name, 1) MH_N(BF, name, 2) MH_N(BF, name, 3) MH_N(BF, name, 4)                  \
    MH_N(BF, name, 5) MH_N(BF, name, 6) MH_N(BF, name, 7) MH_N(BF, name, 8)
MATVEC_H(false, f16)
MATVEC_H(true, bf16)
