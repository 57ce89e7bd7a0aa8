// matvec_q8.cu: decode matvec (n ≤ 8 tokens) with q8_1 activations and dp4a integer dots.
// out[t, r] = Σ_k W[r, k] · x̂[t, k], where x̂ is x quantized to q8_1 (common.cuh: int8 per
// element, (d, d·Σq) per 32) once per op by quantize_q8 (or by the op that produced x).
//
// Shapes: W [rows, cols] (row_bytes per row, the repacked layouts of quant.cuh), xq [n, cols]
// int8, xd [n, cols / 32] float2, out [n, rows]; up to 3 (W, out) sets share x̂ in one launch
// (MvSets). cols is a multiple of 32 (every quantized format's block), so a row has cols / 32
// "units" whatever the format:
//   Q4_0 / Q4_1 / Q8_0: unit u = block u (16 or 32 bytes of quants, one scale);
//   Q4_K: unit u = 16 bytes of super-block u / 8's qs: its low nibbles are 16 elements of
//         sub-block 2j, its high nibbles 16 of sub-block 2j+1 (j = (u % 8) / 2);
//   Q6_K: unit u = 16 bytes of ql (two 16-element runs, k and k+2) + 16 bytes of qh.
// Every unit is one 16-byte load per row (two for Q8_0 and Q6_K), aligned by the layouts.
//
// v2 "q8_dp4a" (this file; v1 = matvec_q.cu's warp_per_row and tiled, f32 activations, 8-18%
// of bandwidth on Llama-3-8B shapes).
// Launch: block (TPR, 128 / TPR): TPR threads share a group of MV_R = 2 rows and walk its
// units two at a time with stride TPR (TPR = 32, 64 or 128, the smallest power of two ≥ units,
// so that a 576-wide row does not idle 110 of 128 threads); grid Σ_sets ceil(rows / (MV_R ·
// 128 / TPR)). 4096 × 4096 Q4_0: 128 units, TPR 128, 2048 blocks; a round issues 2 units × 2
// rows of 16-byte weight loads (+ their scales) before any math — checked in the SASS: without
// __launch_bounds__ ptxas held the kernel to 32 registers and serialized the second row's
// load behind the first row's dots — and ≥ 8 resident blocks per SM keep ~64 KB per SM in
// flight. x̂ is re-read by every row group from L1 (40 B per unit, shared by the MV_R rows;
// the weights are loaded once for all N tokens). Partial sums: warp shuffles, then shared
// memory across the TPR / 32 warps of a group.
// Measured (H100, bench-ops, each call synchronized, so launch and sync are inside; run 2 of
// NOTES.md): 4096×4096 7.2 µs (44% of the 2976 GB/s copy bandwidth; v1 41.2 µs), 14336×4096
// 15.1 µs (74%; v1 75.8), 4096×14336 14.1 µs (79%), 128256×4096 111 µs (90%; v1 575).
// MV_B8 (variant batch=q8_dp4a, 9-64 tokens in chunks of 8): 8B `bench --parallel` 32 / 64
// 498 / 499 t/s against 593 / 694 through the prefill path (NOTES.md run 5a).
//
// Launched from src/matvec_q8.rs (routed there by src/matmul.rs).
// Check: `plumb check --device cuda --op matmul` (variant matvec=q8_dp4a, the default; add
// `--variant batch=q8_dp4a` for MV_B8).
// Time: `plumb bench-ops --device cuda` (its n = 1 matmul rows).

#define MAX_N 8
#define MV_R 2  // rows per group

// Weight loads: read once, so not kept in L1 (x̂, re-read by every row group, stays there).
// Volatile asm keeps them in program order ahead of the math: NVVM otherwise sinks each load
// to its first use and the second row's unit waits for the first's.
static __device__ __forceinline__ uint4 ldw16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
static __device__ __forceinline__ u32 ldw4(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
static __device__ __forceinline__ u16 ldw2(const void* p) {
    u16 v;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}

static __device__ __forceinline__ int lo4(u32 w) { return (int)(w & 0x0f0f0f0fu); }
static __device__ __forceinline__ int hi4(u32 w) { return (int)((w >> 4) & 0x0f0f0f0fu); }

// The x̂ of one unit for one token: 32 int8 as 8 words (a = first 16, b = second 16 bytes the
// format pairs with its quants) and the (d, d·Σq) of the one or two q8 blocks they come from.
struct XU {
    int4 a, b;
    float2 d0, d1;
};

template <int T> struct WU;  // one unit of one weight row

// Q4_0: w = d (q - 8); Σ w x̂ = d (dx Σ q·qx − 8 · dx Σ qx).
template <> struct WU<T_Q4_0> {
    uint4 q;
    float d;
    __device__ void load(const u8* row, int u, int nb) {
        q = ldw16(row + 16 * u);
        d = f16_to_f32(ldw2(row + 16 * nb + 2 * u));
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        const int4* p = reinterpret_cast<const int4*>(xq + 32 * u);
        x.a = p[0]; x.b = p[1]; x.d0 = xd[u];
    }
    __device__ float dot(const XU& x) const {
        int s = dp4a(lo4(q.x), x.a.x, 0);
        s = dp4a(lo4(q.y), x.a.y, s); s = dp4a(lo4(q.z), x.a.z, s); s = dp4a(lo4(q.w), x.a.w, s);
        s = dp4a(hi4(q.x), x.b.x, s); s = dp4a(hi4(q.y), x.b.y, s);
        s = dp4a(hi4(q.z), x.b.z, s); s = dp4a(hi4(q.w), x.b.w, s);
        return d * (x.d0.x * (float)s - 8.0f * x.d0.y);
    }
};

// Q4_1: w = d q + m; Σ w x̂ = d dx Σ q·qx + m dx Σ qx.
template <> struct WU<T_Q4_1> {
    uint4 q;
    float d, m;
    __device__ void load(const u8* row, int u, int nb) {
        q = ldw16(row + 16 * u);
        const u32 dm = ldw4(row + 16 * nb + 4 * u);
        d = f16_to_f32((u16)(dm & 0xffff)); m = f16_to_f32((u16)(dm >> 16));
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        WU<T_Q4_0>::loadx(xq, xd, u, x);
    }
    __device__ float dot(const XU& x) const {
        int s = dp4a(lo4(q.x), x.a.x, 0);
        s = dp4a(lo4(q.y), x.a.y, s); s = dp4a(lo4(q.z), x.a.z, s); s = dp4a(lo4(q.w), x.a.w, s);
        s = dp4a(hi4(q.x), x.b.x, s); s = dp4a(hi4(q.y), x.b.y, s);
        s = dp4a(hi4(q.z), x.b.z, s); s = dp4a(hi4(q.w), x.b.w, s);
        return d * x.d0.x * (float)s + m * x.d0.y;
    }
};

// Q8_0: w = d q; Σ w x̂ = d dx Σ q·qx (signed bytes, 32 per unit: two 16-byte loads).
template <> struct WU<T_Q8_0> {
    uint4 q0, q1;
    float d;
    __device__ void load(const u8* row, int u, int nb) {
        q0 = ldw16(row + 32 * u);
        q1 = ldw16(row + 32 * u + 16);
        d = f16_to_f32(ldw2(row + 32 * nb + 2 * u));
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        WU<T_Q4_0>::loadx(xq, xd, u, x);
    }
    __device__ float dot(const XU& x) const {
        int s = dp4a((int)q0.x, x.a.x, 0);
        s = dp4a((int)q0.y, x.a.y, s); s = dp4a((int)q0.z, x.a.z, s); s = dp4a((int)q0.w, x.a.w, s);
        s = dp4a((int)q1.x, x.b.x, s); s = dp4a((int)q1.y, x.b.y, s);
        s = dp4a((int)q1.z, x.b.z, s); s = dp4a((int)q1.w, x.b.w, s);
        return d * x.d0.x * (float)s;
    }
};

// Byte k (0..11) of a Q4_K super-block's scales, i.e. byte 4 + k of its 16-byte header h.
static __device__ __forceinline__ u32 k4_byte(const uint4& h, int k) {
    const int i = 4 + k;
    const u32 w = i < 8 ? h.y : (i < 12 ? h.z : h.w);
    return (w >> (8 * (i & 3))) & 0xffu;
}

// Q4_K (GGUF layout, 16-byte aligned super-blocks of 144 bytes: d, dmin, scales[12], qs[128]).
// Unit u: super-block sb = u / 8, j = (u % 8) / 2, half h = u % 2 -> qs bytes 32j + 16h ..+16:
// low nibbles = elements 64j + 16h + (0..15) (sub-block 2j), high = 64j + 32 + 16h + (0..15)
// (sub-block 2j + 1). w = d·sc·q − dmin·m per sub-block; the min term of a sub-block is added
// once, by its h = 0 unit, with the q8 block's whole Σ.
template <> struct WU<T_Q4_K> {
    uint4 q, hd;
    int u8i;  // u % 8
    __device__ void load(const u8* row, int u, int) {
        const u8* b = row + 144 * (u / 8);
        u8i = u % 8;
        hd = *reinterpret_cast<const uint4*>(b);  // shared by 8 units: through L1
        q = ldw16(b + 16 + 16 * u8i);
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        const int sb = u / 8, j = (u % 8) / 2, h = u % 2;
        const int e = 256 * sb + 64 * j + 16 * h;
        x.a = *reinterpret_cast<const int4*>(xq + e);
        x.b = *reinterpret_cast<const int4*>(xq + e + 32);
        x.d0 = xd[8 * sb + 2 * j];
        x.d1 = xd[8 * sb + 2 * j + 1];
    }
    __device__ float dot(const XU& x) const {
        const int j = u8i / 2;
        // get_scale_min_k4 for sub-blocks 2j and 2j + 1.
        u32 sc[2], mn[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int sub = 2 * j + i;
            if (sub < 4) {
                sc[i] = k4_byte(hd, sub) & 63; mn[i] = k4_byte(hd, sub + 4) & 63;
            } else {
                sc[i] = (k4_byte(hd, sub + 4) & 0x0f) | ((k4_byte(hd, sub - 4) >> 6) << 4);
                mn[i] = (k4_byte(hd, sub + 4) >> 4) | ((k4_byte(hd, sub) >> 6) << 4);
            }
        }
        int s0 = dp4a(lo4(q.x), x.a.x, 0);
        s0 = dp4a(lo4(q.y), x.a.y, s0); s0 = dp4a(lo4(q.z), x.a.z, s0); s0 = dp4a(lo4(q.w), x.a.w, s0);
        int s1 = dp4a(hi4(q.x), x.b.x, 0);
        s1 = dp4a(hi4(q.y), x.b.y, s1); s1 = dp4a(hi4(q.z), x.b.z, s1); s1 = dp4a(hi4(q.w), x.b.w, s1);
        const float d = f16_to_f32((u16)(hd.x & 0xffff)), dmin = f16_to_f32((u16)(hd.x >> 16));
        float r = d * ((float)sc[0] * x.d0.x * (float)s0 + (float)sc[1] * x.d1.x * (float)s1);
        if ((u8i & 1) == 0) r -= dmin * ((float)mn[0] * x.d0.y + (float)mn[1] * x.d1.y);
        return r;
    }
};

// (b - 32) per byte for bytes b in 0..63, as signed bytes (no borrow crosses a byte: each
// byte is raised by 0x80 first).
static __device__ __forceinline__ int minus32(u32 b) {
    return (int)(((b | 0x80808080u) - 0x20202020u) ^ 0x80808080u);
}

// Q6_K (repacked, quant.cuh). Unit u: super-block sb = u / 8, half h = (u % 8) / 4, v = u % 4:
// ql bytes 64h + 16v ..+16 hold, for jj in 0..16 and j = 16(v % 2) + jj, element
// 128h + 32k0 + j in their low nibbles (k0 = v / 2) and element 128h + 32(k0 + 2) + j in their
// high nibbles; qh bytes 128 + 32h + 16(v % 2) ..+16 give bits 2k..2k+1 of the same j's.
// q = (lo | hi << 4) − 32, w = d · scale[2(4h + k) + v % 2] · q.
template <> struct WU<T_Q6_K> {
    uint4 ql, qh;
    float d, sc0, sc1;
    int k0;
    __device__ void load(const u8* row, int u, int nb) {
        const int sb = u / 8, h = (u % 8) / 4, v = u % 4;
        const u8* b = row + 192 * sb;
        ql = ldw16(b + 64 * h + 16 * v);
        qh = *reinterpret_cast<const uint4*>(b + 128 + 32 * h + 16 * (v % 2));  // read twice
        const i8* s = reinterpret_cast<const i8*>(row + 192 * nb + 16 * sb);
        k0 = v / 2;
        sc0 = (float)s[2 * (4 * h + k0) + v % 2];
        sc1 = (float)s[2 * (4 * h + k0 + 2) + v % 2];
        d = f16_to_f32(*reinterpret_cast<const u16*>(row + 208 * nb + 2 * sb));
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        const int sb = u / 8, h = (u % 8) / 4, v = u % 4, k0 = v / 2;
        const int e = 256 * sb + 128 * h + 32 * k0 + 16 * (v % 2);
        x.a = *reinterpret_cast<const int4*>(xq + e);
        x.b = *reinterpret_cast<const int4*>(xq + e + 64);
        x.d0 = xd[e / 32];
        x.d1 = xd[e / 32 + 2];
    }
    __device__ float dot(const XU& x) const {
        const int s0h = 2 * k0, s1h = 2 * k0 + 4;
        const u32 l[4] = {ql.x, ql.y, ql.z, ql.w}, hh[4] = {qh.x, qh.y, qh.z, qh.w};
        const int xa[4] = {x.a.x, x.a.y, x.a.z, x.a.w}, xb[4] = {x.b.x, x.b.y, x.b.z, x.b.w};
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u32 q0 = (l[i] & 0x0f0f0f0fu) | (((hh[i] >> s0h) & 0x03030303u) << 4);
            const u32 q1 = ((l[i] >> 4) & 0x0f0f0f0fu) | (((hh[i] >> s1h) & 0x03030303u) << 4);
            s0 = dp4a(minus32(q0), xa[i], s0);
            s1 = dp4a(minus32(q1), xb[i], s1);
        }
        return d * (sc0 * x.d0.x * (float)s0 + sc1 * x.d1.x * (float)s1);
    }
};

// Up to 3 matrices sharing one x̂ (Wq, Wk, Wv of a step; Wgate, Wup): one launch, the blocks
// of set s after those of sets < s (end = running block counts). Passed by value.
struct MvSets {  // src/launch.rs: MvSets
    const u8* W[3];
    float* out[3];
    int rows[3];
    int row_bytes[3];
    int end[3];
};

template <int T, int N>
static __device__ void matvec_q8_impl(const MvSets& sets, const i8* xq, const float2* xd,
                                      int cols, int bx, int tok0, int nv) {
    __shared__ float red[4][MV_R * MAX_N];  // [warp][row * N + token]
    const int set = bx < sets.end[0] ? 0 : (bx < sets.end[1] ? 1 : 2);
    const int blk = bx - (set == 0 ? 0 : (set == 1 ? sets.end[0] : sets.end[1]));
    const u8* W = set == 0 ? sets.W[0] : (set == 1 ? sets.W[1] : sets.W[2]);
    float* out = set == 0 ? sets.out[0] : (set == 1 ? sets.out[1] : sets.out[2]);
    const int rows = set == 0 ? sets.rows[0] : (set == 1 ? sets.rows[1] : sets.rows[2]);
    const int row_bytes =
        set == 0 ? sets.row_bytes[0] : (set == 1 ? sets.row_bytes[1] : sets.row_bytes[2]);
    const int tpr = blockDim.x, tx = threadIdx.x;
    const int r0 = (blk * blockDim.y + threadIdx.y) * MV_R;
    const int units = cols / 32;
    const int nb = T == T_Q4_K || T == T_Q6_K ? cols / 256 : cols / 32;
    const u8* row[MV_R];
#pragma unroll
    for (int r = 0; r < MV_R; r++) row[r] = W + (size_t)min(r0 + r, rows - 1) * row_bytes;
    float acc[MV_R][N];
#pragma unroll
    for (int r = 0; r < MV_R; r++)
#pragma unroll
        for (int t = 0; t < N; t++) acc[r][t] = 0.0f;

    // Two units per round, every load of the round issued before the first use: 2 · MV_R
    // weight loads in flight per thread (ptxas otherwise reuses the registers of the first
    // row's unit for the second's and serializes the loads).
    for (int u = tx; u < units; u += 2 * tpr) {
        const bool two = u + tpr < units;  // the second unit exists
        const int u2 = two ? u + tpr : u;
        WU<T> w[2][MV_R];
#pragma unroll
        for (int r = 0; r < MV_R; r++) {
            w[0][r].load(row[r], u, nb);
            w[1][r].load(row[r], u2, nb);
        }
#pragma unroll
        for (int t = 0; t < N; t++) {
            // Tokens past nv (the last chunk of a batched launch) recompute token nv - 1.
            const int tt = tok0 + min(t, nv - 1);
            XU x[2];
            WU<T>::loadx(xq + (size_t)tt * cols, xd + (size_t)tt * units, u, x[0]);
            WU<T>::loadx(xq + (size_t)tt * cols, xd + (size_t)tt * units, u2, x[1]);
#pragma unroll
            for (int r = 0; r < MV_R; r++) {
                const float a = w[0][r].dot(x[0]), b = w[1][r].dot(x[1]);
                acc[r][t] += two ? a + b : a;
            }
        }
    }

    // Reduce over the group's TPR threads: shuffles within each warp, then shared memory.
    const int warp = (threadIdx.y * tpr + tx) / WARP, lane = tx % WARP;
#pragma unroll
    for (int r = 0; r < MV_R; r++)
#pragma unroll
        for (int t = 0; t < N; t++) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0) red[warp][r * N + t] = v;
        }
    __syncthreads();
    const int wpg = tpr / WARP;  // warps per group
    if (tx < MV_R * N) {
        const int r = tx / N, t = tx % N, row_i = r0 + r;
        float v = 0.0f;
        for (int i = 0; i < wpg; i++) v += red[threadIdx.y * wpg + i][tx];
        if (row_i < rows && t < nv) out[(size_t)(tok0 + t) * rows + row_i] = v;
    }
}

// Register budget: ≥ 8 blocks of 128 per SM (64 registers) lets ptxas keep all the loads of a
// round in flight without spilling for one or two tokens; more tokens (and Q4_K's scale
// unpacking) need more accumulators, so fewer resident blocks (cuobjdump -res-usage: no
// stack frame with these bounds).
#define MV_MIN_BLOCKS(T, N)                                                   \
    ((T) == T_Q4_K ? ((N) == 1 ? 6 : (N) == 2 ? 4 : 3) : ((N) <= 2 ? 8 : (N) <= 4 ? 4 : 3))
#define MV_N(T, name, N)                                                                     \
    extern "C" __global__ void __launch_bounds__(128, MV_MIN_BLOCKS(T, N))                  \
        matvec_q8_n##N##_##name(MvSets sets, const i8* xq, const float2* xd, int cols) {      \
        matvec_q8_impl<T, N>(sets, xq, xd, cols, blockIdx.x, 0, N);                          \
    }
// Batched (9 to 64 tokens): chunks of 8 tokens, the chunk index fastest in blockIdx.x, so the
// ceil(n / 8) blocks that read the same weight rows run together and all but the first read
// them from L2: DRAM sees the weights about once per call.
#define MV_B8(T, name)                                                                       \
    extern "C" __global__ void __launch_bounds__(128, MV_MIN_BLOCKS(T, 8))                  \
        matvec_q8_b8_##name(MvSets sets, const i8* xq, const float2* xd, int cols, int n_tok) { \
        const int chunks = (n_tok + 7) / 8, c = blockIdx.x % chunks;                         \
        matvec_q8_impl<T, 8>(sets, xq, xd, cols, blockIdx.x / chunks, 8 * c,                 \
                             min(8, n_tok - 8 * c));                                         \
    }
#define MATVEC_Q8(T, name)                                                                   \
    MV_N(T, name, 1) MV_N(T, name, 2) MV_N(T, name, 3) MV_N(T, name, 4)                      \
    MV_N(T, name, 5) MV_N(T, name, 6) MV_N(T, name, 7) MV_N(T, name, 8) MV_B8(T, name)

#ifdef PLUMB_ONE_FORMAT
#define PLUMB_Q8_FORMATS(M) PLUMB_ONE_FORMAT(M)
#else
#define PLUMB_Q8_FORMATS(M) \
    M(T_Q4_0, q4_0) M(T_Q4_1, q4_1) M(T_Q8_0, q8_0) M(T_Q4_K, q4_k) M(T_Q6_K, q6_k)
#endif
PLUMB_Q8_FORMATS(MATVEC_Q8)
