// mmq.cu: batched Q4_0 matmul for 9 to 64 tokens (2 to 8 with variant matvec=mma) on int8 tensor cores
// (mma.sync.m16n8k32.s8), q8_1 activations in fragment order (quantize_q8_frag below: the
// numbers of quantize_q8, laid out so that a lane's B fragment is one 8-byte load and its
// two tokens' (d, d·Σq) one 16-byte load). out[t, r] = Σ_u dw[r,u] (dx[t,u] · S[r,t,u] − 8 · sx[t,u]),
// S the integer dot of unit u (one Q4_0 block = one k32 mma step, so each step's int32
// result is scaled on its own).
//
// Fragments (PTX ISA, m16n8k32 .s8, g = lane / 4, c = lane % 4): A a0 = row g, k 4c..4c+3;
// a1 = row g+8, same k; a2 = row g, k 16+4c..; a3 = row g+8, k 16+4c... The repacked Q4_0
// unit is 16 bytes whose byte j holds element j (low nibble) and j + 16 (high nibble), so
// word c of a row's unit gives a0 (low nibbles) and a2 (high nibbles) directly. B b0 = token
// column g, k 4c..; b1 = k 16+4c..: words of x̂. C c0,c1 = row g, tokens 2c, 2c+1; c2,c3 =
// row g+8.
//
// Launch: grid = Σ ceil(rows_s / 32) over up to 3 matrices sharing x̂ (MqSets, the layout of
// src/launch.rs's MvSets: Wq/Wk/Wv or Wgate/Wup in one launch), block 256 = 8 warps. A block
// owns 32 rows (2 m-tiles) and all tokens (NT n-tiles of 8); the 8 warps split K: warp w
// takes the runs of MQ_U = 4 units starting at 4 (w + 8 i). Why: the weights are read once
// per call and must stream at full bandwidth, which needs bytes in flight, not arithmetic.
// A 4096-row matrix gives 128 blocks × 8 warps = 1024 warps; each warp has the next run's
// 16 words and 16 scales per lane in flight while it multiplies the current one (~2.5 KB
// per warp, ~2.5 MB over the GPU: Little's law at ~3 TB/s and ~0.8 µs). Two m-tiles per
// warp halve the x̂ fragment loads (L1 hits) per weight byte against one. The 8 partial
// sums meet in shared memory in two rounds (33 KB at NT = 8, under the static limit).
//
// Launched from src/mmq.rs (routed there by src/matmul.rs: variant batch=auto|mma|mma_lb for
// 9-64 tokens, matvec=mma for 2-8).
// Check: `plumb check --device cuda --op matmul --variant batch=mma` (the Q4_0 cases; also
// `batch=mma_lb`, `matvec=mma`).
// Time: `plumb bench-ops --device cuda` has no 9-64-token rows yet; the kernel runs in
// `plumb bench -m M --device cuda --parallel 8,32,64`. Measured (H100, 8B Q4_0, NOTES.md runs
// 6-7): ncu Wgate+Wup at 64 rows 123 µs (205 registers, DRAM 17% of peak, L2 hit 83%);
// `bench --parallel 32 / 64` 3,620 / 5,393 t/s; with matvec=mma at 8 sequences 1,240 t/s
// against dp4a's 877 (2 sequences: 308 against 421).

#define MQ_ROWS 32
#define MQ_U 4
#define MQ_KS 8

struct MqSets {  // src/launch.rs: MvSets
    const u8* W[3];
    float* out[3];
    int rows[3];
    int row_bytes[3];
    int end[3];
};

static __device__ __forceinline__ u32 mq_ld4(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
static __device__ __forceinline__ u16 mq_ld2(const void* p) {
    u16 v;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}

static __device__ __forceinline__ void mma_s8(int (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3,
                                              int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%10,%10,%10,%10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}

static __device__ __forceinline__ uint2 mq_ld8(const void* p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
                 : "=r"(v.x), "=r"(v.y)
                 : "l"(p));
    return v;
}

// One run of MQ_U units from u0 (clamped to the last unit; the caller skips the extras):
// word c of rows g, g+8 of both m-tiles, and the 4 units' f16 scales of each of those rows
// (one 8-byte load when units % 4 == 0: the run starts at a multiple of 4 and the row's
// scales at 16·units, so it is aligned).
static __device__ __forceinline__ void mq_load(u32 (&wq)[MQ_U][2][2], uint2 (&sc)[2][2],
                                               const u8* const (&row)[2][2], int u0,
                                               int units, int c) {
#pragma unroll
    for (int k = 0; k < MQ_U; k++) {
        const int u = min(u0 + k, units - 1);
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) wq[k][mt][h] = mq_ld4(row[mt][h] + 16 * u + 4 * c);
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const u8* s = row[mt][h] + 16 * units;
            if ((units & 3) == 0) {
                sc[mt][h] = mq_ld8(s + 2 * u0);
            } else {
                u32 v[MQ_U];
#pragma unroll
                for (int k = 0; k < MQ_U; k++) v[k] = mq_ld2(s + 2 * min(u0 + k, units - 1));
                sc[mt][h] = make_uint2(v[0] | (v[1] << 16), v[2] | (v[3] << 16));
            }
        }
}

// The f16 scale of unit k of a run from its packed pair of words.
static __device__ __forceinline__ float mq_scale(uint2 sc, int k) {
    const u32 w = k < 2 ? sc.x : sc.y;
    return f16_to_f32((u16)(w >> (16 * (k & 1))));
}

// x̂ in fragment order, for nt tiles of 8 tokens (tokens n .. 8 nt are zeros):
//   xf  [units][nt][32 lanes] × 8 bytes: lane 4g + c of tile j holds x̂[8j + g][32u + 4c ..
//       + 4] then x̂[8j + g][32u + 16 + 4c .. + 4] (its b0, b1);
//   xdt [units][8 nt] float2: (d, d·Σq) of each token's group u, so tokens 2c, 2c + 1 are
//       adjacent (one float4).
// Launch: one warp per (token, unit) group, 8 per block: grid ceil(8 nt · units / 8), 256.
// The numbers are quantize_q8's (common.cuh q8_group): d = max|x| / 127, q = rn(x / d).
extern "C" __global__ void quantize_q8_frag(const float* x, i8* xf, float2* xdt, int n,
                                            int cols, int nt) {
    const int units = cols / 32;
    const int grp = blockIdx.x * 8 + threadIdx.x / WARP;
    if (grp >= nt * 8 * units) return;  // whole warps leave
    const int t = grp / units, u = grp % units, i = threadIdx.x % WARP;
    const float v = t < n ? x[(size_t)t * cols + 32 * u + i] : 0.0f;
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
    const float sum = warp_sum((float)q);
    const int j = t / 8, g = t % 8, c = (i % 16) / 4;
    xf[(((size_t)u * nt + j) * 32 + 4 * g + c) * 8 + (i < 16 ? 0 : 4) + i % 4] = (i8)q;
    if (i == 0) xdt[(size_t)u * nt * 8 + t] = make_float2(d, d * sum);
}

// DB: the next run's loads go out before this run's products (double buffer, more registers);
// without it, more warps per SM hide the loads instead (__launch_bounds__(256, 2)).
template <int NT, bool DB>
static __device__ void mmq_q4_0_impl(const MqSets& sets, const int2* xf, const float2* xdt,
                                     int cols, int n) {
    __shared__ float red[MQ_KS / 2][MQ_ROWS][NT * 8 + 1];
    const int bx = blockIdx.x;
    const int set = bx < sets.end[0] ? 0 : (bx < sets.end[1] ? 1 : 2);
    const int blk = bx - (set == 0 ? 0 : (set == 1 ? sets.end[0] : sets.end[1]));
    const u8* W = set == 0 ? sets.W[0] : (set == 1 ? sets.W[1] : sets.W[2]);
    float* out = set == 0 ? sets.out[0] : (set == 1 ? sets.out[1] : sets.out[2]);
    const int rows = set == 0 ? sets.rows[0] : (set == 1 ? sets.rows[1] : sets.rows[2]);
    const int row_bytes =
        set == 0 ? sets.row_bytes[0] : (set == 1 ? sets.row_bytes[1] : sets.row_bytes[2]);

    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, c = lane % 4;
    const int r0 = blk * MQ_ROWS;
    const int units = cols / 32;
    // Rows of this thread: m-tile mt, half h -> r0 + 16 mt + 8 h + g (clamped for loads).
    const u8* row[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            row[mt][h] = W + (size_t)min(r0 + 16 * mt + 8 * h + g, rows - 1) * row_bytes;
    float acc[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.0f;

    const int stride = MQ_U * MQ_KS;
    u32 wq[MQ_U][2][2], wn[MQ_U][2][2];
    uint2 sc[2][2], scn[2][2];
    int u0 = MQ_U * warp;
    if (DB && u0 < units) mq_load(wq, sc, row, u0, units, c);
    for (; u0 < units; u0 += stride) {
        if (DB) {
            if (u0 + stride < units) mq_load(wn, scn, row, u0 + stride, units, c);
        } else {
            mq_load(wq, sc, row, u0, units, c);
        }
#pragma unroll
        for (int k = 0; k < MQ_U; k++) {
            const int u = u0 + k;
            if (u >= units) break;
            float dw[2][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++) dw[mt][h] = mq_scale(sc[mt][h], k);
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int2 b = xf[((size_t)u * NT + j) * 32 + lane];
                const int b0 = b.x, b1 = b.y;
                const float4 xs =
                    *reinterpret_cast<const float4*>(xdt + (size_t)u * NT * 8 + 8 * j + 2 * c);
                // x̂ · s − 8 Σx̂ per token: the Q4_0 offset folded into the scale pair.
                const float o0 = 8.0f * xs.y, o1 = 8.0f * xs.w;
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    int s[4];
                    mma_s8(s, wq[k][mt][0] & 0x0f0f0f0fu, wq[k][mt][1] & 0x0f0f0f0fu,
                           (wq[k][mt][0] >> 4) & 0x0f0f0f0fu, (wq[k][mt][1] >> 4) & 0x0f0f0f0fu,
                           b0, b1);
                    const float d0 = dw[mt][0], d1 = dw[mt][1];
                    acc[mt][j][0] += d0 * (xs.x * (float)s[0] - o0);
                    acc[mt][j][1] += d0 * (xs.z * (float)s[1] - o1);
                    acc[mt][j][2] += d1 * (xs.x * (float)s[2] - o0);
                    acc[mt][j][3] += d1 * (xs.z * (float)s[3] - o1);
                }
            }
        }
        if (DB) {
#pragma unroll
            for (int k = 0; k < MQ_U; k++)
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) wq[k][mt][h] = wn[k][mt][h];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++) sc[mt][h] = scn[mt][h];
        }
    }

    // Warps 4..7 park their sums, warps 0..3 add theirs on top, then every thread sums the
    // four slots of its outputs: a fixed order, so the result does not depend on timing.
    const int half = warp % (MQ_KS / 2);
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
        if ((warp >= MQ_KS / 2) == (pass == 0)) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int lr = 16 * mt + 8 * (e / 2) + g, t = 8 * j + 2 * c + (e % 2);
                        if (pass == 0)
                            red[half][lr][t] = acc[mt][j][e];
                        else
                            red[half][lr][t] += acc[mt][j][e];
                    }
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < MQ_ROWS * NT * 8; i += blockDim.x) {
        const int lr = i % MQ_ROWS, t = i / MQ_ROWS, r = r0 + lr;
        if (r < rows && t < n)
            out[(size_t)t * rows + r] = (red[0][lr][t] + red[1][lr][t]) + (red[2][lr][t] + red[3][lr][t]);
    }
}

#define MMQ(NT)                                                                              \
    extern "C" __global__ void __launch_bounds__(256) mmq_q4_0_nt##NT(                       \
        MqSets sets, const int2* xf, const float2* xdt, int cols, int n) {                   \
        mmq_q4_0_impl<NT, true>(sets, xf, xdt, cols, n);                                     \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(256, 2) mmq_q4_0_lb_nt##NT(                 \
        MqSets sets, const int2* xf, const float2* xdt, int cols, int n) {                   \
        mmq_q4_0_impl<NT, false>(sets, xf, xdt, cols, n);                                    \
    }
MMQ(1) MMQ(2) MMQ(3) MMQ(4) MMQ(5) MMQ(6) MMQ(7) MMQ(8)
