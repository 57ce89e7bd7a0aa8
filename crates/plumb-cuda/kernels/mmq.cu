// mmq.cu: batched matmul for 9 to 64 tokens (2 to 8 with variant matvec=mma) on int8 tensor
// cores (mma.sync m16n8k32 / m16n8k16 .s8), for every GGUF format with a dp4a decode unit
// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; layouts: quant.cuh), q8_1
// activations in fragment order (quantize_q8_frag below: the numbers of quantize_q8, laid out
// so that a lane's B fragment is one 8-byte load and its two tokens' (d, d·Σq) one 16-byte
// load). A "unit" is 32 consecutive elements of a row, one q8 block of x̂, one k32 step.
// Q4_0: out[t, r] = Σ_u dw[r,u] (dx[t,u] · S[r,t,u] − 8 · sx[t,u]), S the integer dot of unit u
// (one Q4_0 block = one k32 mma step, so each step's int32 result is scaled on its own). The
// other formats' fragments and scaling: "the other formats" below (one k32 step per unit where
// the scale is per 32 elements; two m16n8k16 steps where it changes at element 16 and sc · q
// does not fit an int8 — Q3_K, Q6_K; Q2_K folds its 4-bit scales into the int8 quants and
// takes its mins from a second k32 step).
//
// Fragments (PTX ISA, m16n8k32 .s8, g = lane / 4, c = lane % 4): A a0 = row g, k 4c..4c+3;
// a1 = row g+8, same k; a2 = row g, k 16+4c..; a3 = row g+8, k 16+4c... The repacked Q4_0
// unit is 16 bytes whose byte j holds element j (low nibble) and j + 16 (high nibble), so
// word c of a row's unit gives a0 (low nibbles) and a2 (high nibbles) directly. B b0 = token
// column g, k 4c..; b1 = k 16+4c..: words of x̂. C c0,c1 = row g, tokens 2c, 2c+1; c2,c3 =
// row g+8. m16n8k16 .s8: a0, a1 and b0 as k32's first half, the same C.
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
// A run is 4 units of one row per lane: Q4_0 / Q4_1 / Q5_x 16 bytes of quants, Q8_0 and
// Q4_K / Q5_K / Q6_K 32 bytes (the K-quants' runs are half a super-block: its scales in one
// 8-byte load), Q2_K / Q3_K 8 (+ 4) bytes: each lane loads one unit and the quad shares them
// by shuffle. Registers (ptxas -v through NVRTC, sm_90, double-buffered kernels): Q4_0 106 at
// NT = 1 to 205 at NT = 8, the others 112-138 to 170-254, no spills but Q3_K at NT = 3 (8
// bytes); the mma_lb kernels are held to 128 and spill from NT = 3-6 on (Q4_0 from 6).
//
// Launched from src/mmq.rs (routed there by src/matmul.rs: variant batch=auto|mma|mma_lb for
// 9-64 tokens, matvec=mma for 2-8). Entry points mmq_nt{NT}_{fmt}, mmq_lb_nt{NT}_{fmt};
// compiled one format at a time (PLUMB_ONE_FORMAT).
// Check: `plumb check --device cuda --op matmul --variant batch=mma` (every format's cases;
// also `batch=mma_lb`, `matvec=mma`).
// Time: `plumb bench-ops --device cuda` has no 9-64-token rows yet; the kernel runs in
// `plumb bench -m M --device cuda --parallel 8,32,64`. Measured (H100, 8B Q4_0, NOTES.md runs
// 6-7): ncu Wgate+Wup at 64 rows 123 µs (205 registers, DRAM 17% of peak, L2 hit 83%);
// `bench --parallel 32 / 64` 3,620 / 5,393 t/s; with matvec=mma at 8 sequences 1,240 t/s
// against dp4a's 877 (2 sequences: 308 against 421). The other formats: not yet measured.

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

static __device__ __forceinline__ uint4 mq_ld16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// m16n8k16 .s8: a0 = row g, k 4c..4c+3; a1 = row g+8, same k; b0 = token column g, k 4c..;
// the C fragment as m16n8k32's. (a0, a1, b0) of a k32 step are its k 0..15 half, (a2, a3, b1)
// its k 16..31 half: two k16 steps on the same registers give the two halves' sums apart.
static __device__ __forceinline__ void mma_s8_k16(int (&d)[4], u32 a0, u32 a1, int b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%7,%7,%7,%7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(0));
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


// ---------------------------------------------------------------- the other formats
//
// A run holds, per lane, what it loaded for its 4 rows (m-tile mt, half h: row 16 mt + 8 h +
// g) and MQ_U consecutive units from u0 (a multiple of 4; the K-quants' units come 8 to a
// super-block, so a run never straddles one). `unit(f, k, ...)` builds unit k's A fragments
// (element 4c + i of the unit in byte i of a0 / a1, element 16 + 4c + i in byte i of a2 / a3,
// the order of x̂'s b0 / b1) and the row's scales; mq_unit multiplies them by x̂ in one of
// three ways (MqKind):
//   MQ_AFFINE: one k32 step, out += p · (dx · S) + q · (dx · Σq̂): Q4_1 (p = d, q = m), Q5_0
//       (d, −16 d), Q5_1 (d, m), Q8_0 (d, 0), Q4_K / Q5_K (d · sc, −dmin · m: their scales
//       change every 32 elements, once per unit);
//   MQ_SPLIT: the scale changes at element 16 (Q3_K: i8 scales −32..31 times q −4..3; Q6_K:
//       i8 scales times q −32..31) and sc · q does not fit an int8 (Q3_K: −4 · −32 = 128), so
//       the unit is two m16n8k16 steps on the k32 step's registers, S0 over elements 0..15
//       and S1 over 16..31, combined in integers: out += d · (dx · (sc0 S0 + sc1 S1))
//       (|sc0 S0 + sc1 S1| ≤ 128 · 32 · 127 · 32 < 2^24: exact in the float);
//   MQ_MINS: Q2_K's 4-bit scale times its 2-bit quant is at most 45, so sc · q is the int8
//       fragment of one k32 step (S = Σ sc q x̂, the dp4a unit's isc), and the mins' term
//       Σ m x̂ is a second k32 step with the min bytes as A: out += dx · (d S − dmin M).
// Every integer is the dp4a unit's (matvec_q8.cu WU<T>); only the float scaling is grouped
// per unit. src/mmq.rs's tests model each format's fragments and scaling on the host.

#define MQ_AFFINE 0
#define MQ_SPLIT 1
#define MQ_MINS 2
template <int T> struct MqKind {
    static constexpr int kind =
        (T == T_Q3_K || T == T_Q6_K) ? MQ_SPLIT : (T == T_Q2_K ? MQ_MINS : MQ_AFFINE);
    static constexpr bool has_q = T != T_Q8_0;  // MQ_AFFINE: a Σq̂ term
};

// One unit's fragments and scales for a lane's 4 rows ([mt][h] as the run's rows).
struct MqU {
    u32 a[2][4];      // per m-tile: a0 (row g, elements 4c..), a1 (g + 8), a2 (g, 16 + 4c..), a3
    u32 m[2][4];      // MQ_MINS: the min bytes, as a
    float p[2][2], q[2][2];
    int s0[2][2], s1[2][2];  // MQ_SPLIT: the two halves' integer scales
};

// 4 f16 (2-byte region s) or 4 words (4-byte region s) of the units u0 .. u0 + 3, one vector
// load when units % 4 == 0 (then aligned: regions start at multiples of 16 · (units / 4)),
// else clamped loads (as Q4_0's scales in mq_load).
static __device__ __forceinline__ uint2 mq_ld_h4(const u8* s, int u0, int units) {
    if ((units & 3) == 0) return mq_ld8(s + 2 * u0);
    u32 v[MQ_U];
#pragma unroll
    for (int k = 0; k < MQ_U; k++) v[k] = mq_ld2(s + 2 * min(u0 + k, units - 1));
    return make_uint2(v[0] | (v[1] << 16), v[2] | (v[3] << 16));
}
static __device__ __forceinline__ uint4 mq_ld_w4(const u8* s, int u0, int units) {
    if ((units & 3) == 0) return mq_ld16(s + 4 * u0);
    u32 v[MQ_U];
#pragma unroll
    for (int k = 0; k < MQ_U; k++) v[k] = mq_ld4(s + 4 * min(u0 + k, units - 1));
    return make_uint4(v[0], v[1], v[2], v[3]);
}
static __device__ __forceinline__ u32 mq_w(uint4 v, int k) {
    return k == 0 ? v.x : (k == 1 ? v.y : (k == 2 ? v.z : v.w));
}
static __device__ __forceinline__ float mq_lo16(u32 w) { return f16_to_f32((u16)(w & 0xffff)); }
static __device__ __forceinline__ float mq_hi16(u32 w) { return f16_to_f32((u16)(w >> 16)); }
// Bits 0..3 of v at bit 4 of bytes 0..3 (matvec_q8.cu bits_to_b4).
static __device__ __forceinline__ u32 mq_b4(u32 v) {
    return ((v & 15u) * 0x00204081u & 0x01010101u) << 4;
}
// b − o per byte for bytes b in 0..2o − 1, as signed bytes (no borrow crosses a byte).
static __device__ __forceinline__ u32 mq_minus(u32 b, u32 o) {
    return ((b | 0x80808080u) - o * 0x01010101u) ^ 0x80808080u;
}

template <int T> struct MqRun;

// Q4_1 / Q5_0 / Q5_1 (regions: qs[16] × nb, Q5's qh(u32) × nb, the scales): word c of each
// unit's 16 quant bytes, as Q4_0; Q5's high bits: bit j of unit word qh is element j's, so
// elements 4c.. take bits 4c.., elements 16 + 4c.. bits 16 + 4c...
template <int T> struct MqRunL {
    u32 q[MQ_U][2][2];
    uint4 qh[2][2];  // Q5_0, Q5_1
    uint4 dm[2][2];  // Q4_1, Q5_1: (d, m) of each unit
    uint2 d[2][2];   // Q5_0
    __device__ __forceinline__ void load(const u8* const (&row)[2][2], int u0, int units, int c) {
#pragma unroll
        for (int k = 0; k < MQ_U; k++) {
            const int u = min(u0 + k, units - 1);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++) q[k][mt][h] = mq_ld4(row[mt][h] + 16 * u + 4 * c);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u8* r = row[mt][h];
                if constexpr (T == T_Q4_1) {
                    dm[mt][h] = mq_ld_w4(r + 16 * units, u0, units);
                } else {
                    qh[mt][h] = mq_ld_w4(r + 16 * units, u0, units);
                    if constexpr (T == T_Q5_0) d[mt][h] = mq_ld_h4(r + 20 * units, u0, units);
                    else dm[mt][h] = mq_ld_w4(r + 20 * units, u0, units);
                }
            }
    }
    __device__ __forceinline__ void unit(MqU& f, int k, int lane, int c) const {
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u32 w = q[k][mt][h];
                u32 lo = w & 0x0f0f0f0fu, hi = (w >> 4) & 0x0f0f0f0fu;
                if constexpr (T != T_Q4_1) {
                    const u32 b = mq_w(qh[mt][h], k);
                    lo |= mq_b4(b >> (4 * c));
                    hi |= mq_b4(b >> (16 + 4 * c));
                }
                f.a[mt][h] = lo;
                f.a[mt][2 + h] = hi;
                if constexpr (T == T_Q5_0) {
                    const float dd = mq_scale(d[mt][h], k);
                    f.p[mt][h] = dd;
                    f.q[mt][h] = -16.0f * dd;
                } else {
                    const u32 v = mq_w(dm[mt][h], k);
                    f.p[mt][h] = mq_lo16(v);
                    f.q[mt][h] = mq_hi16(v);
                }
            }
    }
};
template <> struct MqRun<T_Q4_1> : MqRunL<T_Q4_1> {};
template <> struct MqRun<T_Q5_0> : MqRunL<T_Q5_0> {};
template <> struct MqRun<T_Q5_1> : MqRunL<T_Q5_1> {};

// Q8_0 (qs[32] × nb, d × nb): words c and 4 + c of each unit, the bytes themselves.
template <> struct MqRun<T_Q8_0> {
    u32 q[MQ_U][2][2][2];
    uint2 d[2][2];
    __device__ __forceinline__ void load(const u8* const (&row)[2][2], int u0, int units, int c) {
#pragma unroll
        for (int k = 0; k < MQ_U; k++) {
            const int u = min(u0 + k, units - 1);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        q[k][mt][h][e] = mq_ld4(row[mt][h] + 32 * u + 16 * e + 4 * c);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) d[mt][h] = mq_ld_h4(row[mt][h] + 32 * units, u0, units);
    }
    __device__ __forceinline__ void unit(MqU& f, int k, int lane, int c) const {
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                f.a[mt][h] = q[k][mt][h][0];
                f.a[mt][2 + h] = q[k][mt][h][1];
                f.p[mt][h] = mq_scale(d[mt][h], k);
                f.q[mt][h] = 0.0f;
            }
    }
};

// Q4_K / Q5_K (qs[128] (+ qh[32]) × nb, scm[16] × nb, (d, dmin) × nb): unit k of the run is
// sub-block s = s0 + k (s0 = u0 % 8 = 0 or 4) of super-block sb = u0 / 8; its element l is
// nibble s % 2 of qs byte 32 (s / 2) + l, so the run's 4 sub-blocks are qs bytes 16 s0 ..
// + 64: lane c loads words at 16 s0 + 32 p + 16 e + 4c (pair p = k / 2, half e). Q5_K's high
// bit of element l is bit s of qh byte l: words c and 4 + c serve all 8 sub-blocks. scm: the
// run's two pairs (sc[2j], sc[2j + 1], m[2j], m[2j + 1]) in one 8-byte load.
template <int T> struct MqRunK {
    static constexpr int QB = T == T_Q4_K ? 128 : 160;
    u32 q[2][2][2][2];  // [mt][h][p][e]
    u32 qh[2][2][2];    // Q5_K: [mt][h][e]
    uint2 scm[2][2];
    u32 dm[2][2];
    int s0;
    __device__ __forceinline__ void load(const u8* const (&row)[2][2], int u0, int units, int c) {
        const int sb = u0 / 8, nb = units / 8;
        s0 = u0 % 8;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u8* b = row[mt][h] + QB * sb;
#pragma unroll
                for (int p = 0; p < 2; p++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        q[mt][h][p][e] = mq_ld4(b + 16 * s0 + 32 * p + 16 * e + 4 * c);
                if constexpr (T == T_Q5_K) {
#pragma unroll
                    for (int e = 0; e < 2; e++) qh[mt][h][e] = mq_ld4(b + 128 + 16 * e + 4 * c);
                }
                scm[mt][h] = mq_ld8(row[mt][h] + QB * nb + 16 * sb + 2 * s0);
                dm[mt][h] = mq_ld4(row[mt][h] + (QB + 16) * nb + 4 * sb);
            }
    }
    __device__ __forceinline__ void unit(MqU& f, int k, int lane, int c) const {
        const int p = k / 2, sh = 4 * (k % 2), s = s0 + k;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                u32 lo = (q[mt][h][p][0] >> sh) & 0x0f0f0f0fu;
                u32 hi = (q[mt][h][p][1] >> sh) & 0x0f0f0f0fu;
                if constexpr (T == T_Q5_K) {
                    lo |= ((qh[mt][h][0] >> s) & 0x01010101u) << 4;
                    hi |= ((qh[mt][h][1] >> s) & 0x01010101u) << 4;
                }
                f.a[mt][h] = lo;
                f.a[mt][2 + h] = hi;
                const u32 w = p == 0 ? scm[mt][h].x : scm[mt][h].y;
                const float sc = (float)((w >> (8 * (k % 2))) & 0xff);
                const float m = (float)((w >> (16 + 8 * (k % 2))) & 0xff);
                f.p[mt][h] = mq_lo16(dm[mt][h]) * sc;
                f.q[mt][h] = -(mq_hi16(dm[mt][h]) * m);
            }
    }
};
template <> struct MqRun<T_Q4_K> : MqRunK<T_Q4_K> {};
template <> struct MqRun<T_Q5_K> : MqRunK<T_Q5_K> {};

// Q6_K ((ql[128] qh[64]) × nb, scales[16] × nb, d × nb): unit k of the run is sub-block
// 4 hf + k (hf = (u0 % 8) / 4) of super-block u0 / 8; its element l is nibble k / 2 of ql
// byte 64 hf + 32 (k % 2) + l with bits 2k, 2k + 1 of qh byte 128 + 32 hf + l above it, so
// lane c loads ql words 64 hf + 32 kk + 16 e + 4c (kk = k % 2) and qh words 128 + 32 hf +
// 16 e + 4c once per run; the run's 8 i8 scales (2 per unit) are one 8-byte load.
template <> struct MqRun<T_Q6_K> {
    u32 ql[2][2][2][2];  // [mt][h][kk][e]
    u32 qh[2][2][2];     // [mt][h][e]
    uint2 sc[2][2];
    u32 d[2][2];
    __device__ __forceinline__ void load(const u8* const (&row)[2][2], int u0, int units, int c) {
        const int sb = u0 / 8, hf = (u0 % 8) / 4, nb = units / 8;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u8* b = row[mt][h] + 192 * sb;
#pragma unroll
                for (int e = 0; e < 2; e++) {
#pragma unroll
                    for (int kk = 0; kk < 2; kk++)
                        ql[mt][h][kk][e] = mq_ld4(b + 64 * hf + 32 * kk + 16 * e + 4 * c);
                    qh[mt][h][e] = mq_ld4(b + 128 + 32 * hf + 16 * e + 4 * c);
                }
                sc[mt][h] = mq_ld8(row[mt][h] + 192 * nb + 16 * sb + 8 * hf);
                d[mt][h] = mq_ld2(row[mt][h] + 208 * nb + 2 * sb);
            }
    }
    __device__ __forceinline__ void unit(MqU& f, int k, int lane, int c) const {
        const int kk = k % 2, sh = 4 * (k / 2);
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const u32 lo = (ql[mt][h][kk][e] >> sh) & 0x0f0f0f0fu;
                    const u32 hb = ((qh[mt][h][e] >> (2 * k)) & 0x03030303u) << 4;
                    f.a[mt][2 * e + h] = mq_minus(lo | hb, 32);
                }
                const u32 w = k < 2 ? sc[mt][h].x : sc[mt][h].y;
                f.s0[mt][h] = (int)(i8)((w >> (16 * (k % 2))) & 0xff);
                f.s1[mt][h] = (int)(i8)((w >> (16 * (k % 2) + 8)) & 0xff);
                f.p[mt][h] = f16_to_f32((u16)d[mt][h]);
            }
    }
};

// Q2_K / Q3_K (qs'[64] (+ hm'[32]) × nb, scales[16] × nb, (d, dmin) / d × nb; quant.cuh): a
// unit's 8 bytes of qs' hold element 16a + 4k + i at byte 4a + i, bits 2k, so every lane of a
// quad needs all 8 bytes of every unit (lane c: bits 2c of both words). Lane c loads unit
// u0 + c's 8 bytes (and Q3_K's hm' word: element 16a + 4k + i's high bit at bit 4a + k of
// byte i) and unit k reads them from lane 4g + k by shuffle: a quarter of the registers of
// every lane loading every unit. Scales: 2 bytes per unit (halves a = 0, 1), 8 per run.
template <int T> struct MqRun2 {
    static constexpr int QB = T == T_Q2_K ? 64 : 96;
    uint2 q[2][2];
    u32 hm[2][2];  // Q3_K
    uint2 sc[2][2];
    u32 d[2][2];   // Q2_K: (d, dmin); Q3_K: d
    __device__ __forceinline__ void load(const u8* const (&row)[2][2], int u0, int units, int c) {
        const int sb = u0 / 8, v0 = u0 % 8, nb = units / 8;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u8* b = row[mt][h] + QB * sb;
                q[mt][h] = mq_ld8(b + 8 * (v0 + c));
                if constexpr (T == T_Q3_K) hm[mt][h] = mq_ld4(b + 64 + 4 * (v0 + c));
                sc[mt][h] = mq_ld8(row[mt][h] + QB * nb + 16 * sb + 2 * v0);
                if constexpr (T == T_Q2_K) d[mt][h] = mq_ld4(row[mt][h] + 80 * nb + 4 * sb);
                else d[mt][h] = mq_ld2(row[mt][h] + 112 * nb + 2 * sb);
            }
    }
    __device__ __forceinline__ void unit(MqU& f, int k, int lane, int c) const {
        const int src = (lane & ~3) | k;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const u32 w0 = __shfl_sync(FULL_MASK, q[mt][h].x, src);
                const u32 w1 = __shfl_sync(FULL_MASK, q[mt][h].y, src);
                u32 lo = (w0 >> (2 * c)) & 0x03030303u, hi = (w1 >> (2 * c)) & 0x03030303u;
                const u32 w = k < 2 ? sc[mt][h].x : sc[mt][h].y;
                const u32 b0 = (w >> (16 * (k % 2))) & 0xff, b1 = (w >> (16 * (k % 2) + 8)) & 0xff;
                if constexpr (T == T_Q3_K) {
                    const u32 hw = __shfl_sync(FULL_MASK, hm[mt][h], src);
                    lo = mq_minus(lo | (((hw >> c) & 0x01010101u) << 2), 4);
                    hi = mq_minus(hi | (((hw >> (4 + c)) & 0x01010101u) << 2), 4);
                    f.s0[mt][h] = (int)(i8)b0;
                    f.s1[mt][h] = (int)(i8)b1;
                    f.p[mt][h] = f16_to_f32((u16)d[mt][h]);
                } else {
                    lo *= b0 & 15;  // ≤ 3 · 15 per byte: no carries
                    hi *= b1 & 15;
                    f.m[mt][h] = (b0 >> 4) * 0x01010101u;
                    f.m[mt][2 + h] = (b1 >> 4) * 0x01010101u;
                    f.p[mt][h] = mq_lo16(d[mt][h]);
                    f.q[mt][h] = mq_hi16(d[mt][h]);
                }
                f.a[mt][h] = lo;
                f.a[mt][2 + h] = hi;
            }
    }
};
template <> struct MqRun<T_Q2_K> : MqRun2<T_Q2_K> {};
template <> struct MqRun<T_Q3_K> : MqRun2<T_Q3_K> {};

// Unit k (= u) of the run `w`: its products with every token tile, into acc.
template <int T, int NT>
static __device__ __forceinline__ void mq_unit(const MqRun<T>& w, float (&acc)[2][NT][4], int k,
                                               int u, const int2* xf, const float2* xdt,
                                               int lane, int c) {
    constexpr int KIND = MqKind<T>::kind;
    MqU f;
    w.unit(f, k, lane, c);
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const int2 b = xf[((size_t)u * NT + j) * 32 + lane];
        const float4 xs =
            *reinterpret_cast<const float4*>(xdt + (size_t)u * NT * 8 + 8 * j + 2 * c);
        // C fragment e: row half e / 2, token 2c + e % 2 (dx, dx·Σq̂ = xs.x, xs.y or .z, .w).
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            const u32* a = f.a[mt];
            int s[4];
            if constexpr (KIND == MQ_AFFINE) {
                mma_s8(s, a[0], a[1], a[2], a[3], b.x, b.y);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float dx = e % 2 ? xs.z : xs.x, sx = e % 2 ? xs.w : xs.y;
                    float v = f.p[mt][e / 2] * (dx * (float)s[e]);
                    if constexpr (MqKind<T>::has_q) v += f.q[mt][e / 2] * sx;
                    acc[mt][j][e] += v;
                }
            } else if constexpr (KIND == MQ_SPLIT) {
                int t[4];
                mma_s8_k16(s, a[0], a[1], b.x);
                mma_s8_k16(t, a[2], a[3], b.y);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float dx = e % 2 ? xs.z : xs.x;
                    const int i = f.s0[mt][e / 2] * s[e] + f.s1[mt][e / 2] * t[e];
                    acc[mt][j][e] += f.p[mt][e / 2] * (dx * (float)i);
                }
            } else {
                int t[4];
                const u32* m = f.m[mt];
                mma_s8(s, a[0], a[1], a[2], a[3], b.x, b.y);
                mma_s8(t, m[0], m[1], m[2], m[3], b.x, b.y);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float dx = e % 2 ? xs.z : xs.x;
                    acc[mt][j][e] +=
                        dx * (f.p[mt][e / 2] * (float)s[e] - f.q[mt][e / 2] * (float)t[e]);
                }
            }
        }
    }
}

// DB: the next run's loads go out before this run's products (double buffer, more registers);
// without it, more warps per SM hide the loads instead (__launch_bounds__(256, 2)).
template <int T, int NT, bool DB>
static __device__ void mmq_impl(const MqSets& sets, const int2* xf, const float2* xdt, int cols,
                                int n) {
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

    if constexpr (T == T_Q4_0) {  // the Q4_0 kernel as it was measured (NOTES.md runs 6-7)
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
    } else {
        const int stride = MQ_U * MQ_KS;
        MqRun<T> w, wn;
        int u0 = MQ_U * warp;
        if (DB && u0 < units) w.load(row, u0, units, c);
        for (; u0 < units; u0 += stride) {
            if (DB) {
                if (u0 + stride < units) wn.load(row, u0 + stride, units, c);
            } else {
                w.load(row, u0, units, c);
            }
#pragma unroll
            for (int k = 0; k < MQ_U; k++) {
                const int u = u0 + k;
                if (u >= units) break;
                mq_unit<T, NT>(w, acc, k, u, xf, xdt, lane, c);
            }
            if (DB) w = wn;
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

// Entry points mmq_nt{NT}_{fmt} and mmq_lb_nt{NT}_{fmt} (NT = 1..8 tiles of 8 tokens).
#define MMQ(T, name, NT)                                                                     \
    extern "C" __global__ void __launch_bounds__(256) mmq_nt##NT##_##name(                   \
        MqSets sets, const int2* xf, const float2* xdt, int cols, int n) {                   \
        mmq_impl<T, NT, true>(sets, xf, xdt, cols, n);                                       \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(256, 2) mmq_lb_nt##NT##_##name(             \
        MqSets sets, const int2* xf, const float2* xdt, int cols, int n) {                   \
        mmq_impl<T, NT, false>(sets, xf, xdt, cols, n);                                      \
    }
#define MMQ_FORMAT(T, name)                                                                  \
    MMQ(T, name, 1) MMQ(T, name, 2) MMQ(T, name, 3) MMQ(T, name, 4)                          \
    MMQ(T, name, 5) MMQ(T, name, 6) MMQ(T, name, 7) MMQ(T, name, 8)

// Keep in sync with MMQ_FORMATS in src/compile.rs.
#ifdef PLUMB_ONE_FORMAT
#define PLUMB_MMQ_FORMATS(M) PLUMB_ONE_FORMAT(M)
#else
#define PLUMB_MMQ_FORMATS(M) \
    M(T_Q4_0, q4_0) M(T_Q4_1, q4_1) M(T_Q5_0, q5_0) M(T_Q5_1, q5_1) M(T_Q8_0, q8_0) \
    M(T_Q2_K, q2_k) M(T_Q3_K, q3_k) M(T_Q4_K, q4_k) M(T_Q5_K, q5_k) M(T_Q6_K, q6_k)
#endif
PLUMB_MMQ_FORMATS(MMQ_FORMAT)
