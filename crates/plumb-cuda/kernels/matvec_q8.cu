// matvec_q8.cu: decode matvec (n ≤ 8 tokens) with q8_1 activations and dp4a integer dots.
// out[t, r] = Σ_k W[r, k] · x̂[t, k], where x̂ is x quantized to q8_1 (common.cuh: int8 per
// element, (d, d·Σq) per 32) once per op by quantize_q8 (or by the op that produced x).
//
// Shapes: W [rows, cols] (row_bytes per row, the repacked layouts of quant.cuh), xq [n, cols]
// int8, xd [n, cols / 32] float2, out [n, rows]; up to 3 (W, out) sets share x̂ in one launch
// (MvSets). cols is a multiple of 32 (every quantized format's block), so a row has cols / 32
// "units" whatever the format (layouts: quant.cuh):
//   Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0: unit u = block u (16 or 32 bytes of quants, Q5's 4
//         bytes of high bits, one scale);
//   Q2_K / Q3_K: unit u = 8 bytes of reordered 2-bit quants (+ Q3_K's 4 bytes of high bits),
//         the 32 elements of one q8 block, two 16-element sub-blocks' scales in 2 bytes;
//   Q4_K / Q5_K: unit u = 16 bytes of super-block u / 8's qs: its low nibbles are 16 elements
//         of sub-block 2j, its high nibbles 16 of sub-block 2j+1 (j = (u % 8) / 2); Q5_K adds
//         16 bytes of qh (the same 16 for the 4 units of a half: one coalesced load); the
//         unit's scales and mins are one 4-byte load;
//   Q6_K: unit u = 16 bytes of ql (two 16-element runs, k and k+2) + 16 bytes of qh.
// Every unit is one aligned 16-byte load per row (two for Q8_0, Q5_K and Q6_K; 8 bytes for the
// 2- and 3-bit formats, whose 32 elements take 8 and 12 bytes), plus its scales.
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
static __device__ __forceinline__ uint2 ldw8(const void* p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
                 : "=r"(v.x), "=r"(v.y) : "l"(p));
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

// Bits 0..3 of v, one per byte, at bit 4 of bytes 0..3 (v · 0x00204081 puts bit i at bit 8i,
// with no other bit of v landing on 0, 8, 16 or 24 and no carries).
static __device__ __forceinline__ u32 bits_to_b4(u32 v) {
    return ((v & 15u) * 0x00204081u & 0x01010101u) << 4;
}

// Q5_0 / Q5_1 (repacked: qs, qh and the scales in their own regions). Unit u = block u:
// element j (0..15) = low nibble of qs byte j | bit j of qh << 4, element j + 16 = high nibble
// | bit j + 16 << 4; q in 0..31. Q5_0: w = d (q − 16); Q5_1: w = d q + m.
template <int T> struct WU5 {
    uint4 q;
    u32 qh;
    float d, m;
    __device__ void load(const u8* row, int u, int nb) {
        q = ldw16(row + 16 * u);
        qh = ldw4(row + 16 * nb + 4 * u);
        if constexpr (T == T_Q5_0) {
            d = f16_to_f32(ldw2(row + 20 * nb + 2 * u));
            m = 0.0f;
        } else {
            const u32 dm = ldw4(row + 20 * nb + 4 * u);
            d = f16_to_f32((u16)(dm & 0xffff)); m = f16_to_f32((u16)(dm >> 16));
        }
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        const int4* p = reinterpret_cast<const int4*>(xq + 32 * u);
        x.a = p[0]; x.b = p[1]; x.d0 = xd[u];
    }
    __device__ float dot(const XU& x) const {
        const u32 l[4] = {q.x, q.y, q.z, q.w};
        const int xa[4] = {x.a.x, x.a.y, x.a.z, x.a.w}, xb[4] = {x.b.x, x.b.y, x.b.z, x.b.w};
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            s = dp4a(lo4(l[i]) | (int)bits_to_b4(qh >> (4 * i)), xa[i], s);
            s = dp4a(hi4(l[i]) | (int)bits_to_b4(qh >> (16 + 4 * i)), xb[i], s);
        }
        if constexpr (T == T_Q5_0) return d * (x.d0.x * (float)s - 16.0f * x.d0.y);
        else return d * x.d0.x * (float)s + m * x.d0.y;
    }
};
template <> struct WU<T_Q5_0> : WU5<T_Q5_0> {};
template <> struct WU<T_Q5_1> : WU5<T_Q5_1> {};

// Q2_K / Q3_K (repacked, quant.cuh). Unit u = elements 32v..32v+32 of super-block sb = u / 8
// (v = u % 8), one q8 block: 8 bytes of qs' (words q.x, q.y), (q.x >> 2k) & 0x03030303 = the
// 2-bit quants of elements 4k..4k+4 of sub-block 2v (q.y: of sub-block 2v + 1), paired with
// x̂ word k of a (b). Q3_K adds hm' word v: bit 4a + k of byte i is the high bit of element
// 16a + 4k + i, q = low + 4·hbit − 4 (−4..3), w = d · scale · q (scale: i8 byte 2v + a).
// Q2_K: w = d·(sc & 15)·q − dmin·(sc >> 4) per 16-element sub-block (scale byte 2v + a), so
// the min term needs each half's Σ qx̂ (dp4a with 0x01010101: a function of x̂ alone, shared
// by the group's rows).
template <int T> struct WU2 {
    uint2 q;
    u32 hm, sc;  // hm: Q3_K only; sc: scale bytes 2v, 2v + 1
    float d, dmin;
    __device__ void load(const u8* row, int u, int nb) {
        constexpr int QB = T == T_Q2_K ? 64 : 96;
        const int sb = u / 8, v = u % 8;
        q = ldw8(row + QB * sb + 8 * v);
        sc = ldw2(row + QB * nb + 16 * sb + 2 * v);
        if constexpr (T == T_Q2_K) {
            const u32 dm = ldw4(row + 80 * nb + 4 * sb);
            d = f16_to_f32((u16)(dm & 0xffff)); dmin = f16_to_f32((u16)(dm >> 16));
            hm = 0;
        } else {
            hm = ldw4(row + QB * sb + 64 + 4 * v);
            d = f16_to_f32(ldw2(row + 112 * nb + 2 * sb));
            dmin = 0.0f;
        }
    }
    static __device__ void loadx(const i8* xq, const float2* xd, int u, XU& x) {
        WU5<T_Q5_0>::loadx(xq, xd, u, x);
    }
    __device__ float dot(const XU& x) const {
        const int xa[4] = {x.a.x, x.a.y, x.a.z, x.a.w}, xb[4] = {x.b.x, x.b.y, x.b.z, x.b.w};
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 q0 = (q.x >> (2 * k)) & 0x03030303u, q1 = (q.y >> (2 * k)) & 0x03030303u;
            if constexpr (T == T_Q3_K) {
                q0 |= ((hm >> k) & 0x01010101u) << 2;
                q1 |= ((hm >> (4 + k)) & 0x01010101u) << 2;
                // q − 4 per byte for q in 0..7 (no borrow crosses a byte: raised by 0x80 first).
                q0 = ((q0 | 0x80808080u) - 0x04040404u) ^ 0x80808080u;
                q1 = ((q1 | 0x80808080u) - 0x04040404u) ^ 0x80808080u;
            }
            s0 = dp4a((int)q0, xa[k], s0);
            s1 = dp4a((int)q1, xb[k], s1);
        }
        if constexpr (T == T_Q2_K) {
            int n0 = 0, n1 = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                n0 = dp4a(0x01010101, xa[k], n0);
                n1 = dp4a(0x01010101, xb[k], n1);
            }
            const int isc = (int)(sc & 15) * s0 + (int)((sc >> 8) & 15) * s1;
            const int imn = (int)((sc >> 4) & 15) * n0 + (int)((sc >> 12) & 15) * n1;
            return x.d0.x * (d * (float)isc - dmin * (float)imn);
        } else {
            const int isc = (int)(i8)(sc & 0xff) * s0 + (int)(i8)((sc >> 8) & 0xff) * s1;
            return d * x.d0.x * (float)isc;
        }
    }
};
template <> struct WU<T_Q2_K> : WU2<T_Q2_K> {};
template <> struct WU<T_Q3_K> : WU2<T_Q3_K> {};

// Q4_K / Q5_K (repacked, quant.cuh: quants 16-byte aligned, the (scale, min) pairs unpacked to
// bytes, (d, dmin) in their own region). Unit u: super-block sb = u / 8, v = u % 8, j = v / 2,
// h = v % 2 -> qs bytes 16v ..+16: low nibbles = elements 64j + 16h + (0..15) (sub-block 2j),
// high = 64j + 32 + 16h + (0..15) (sub-block 2j + 1); Q5_K: qh bytes 16h ..+16, bits 2j and
// 2j + 1, are their fifth bits. scm word j = (sc[2j], sc[2j+1], m[2j], m[2j+1]): one 4-byte
// load, no 6-bit unpacking. w = d·sc·q − dmin·m per sub-block; the min term of a sub-block is
// added once, by its h = 0 unit, with the q8 block's whole Σ.
template <int T> struct WUK {
    uint4 q, qh;  // qh: Q5_K only
    u32 scm, dm;
    int v;
    __device__ void load(const u8* row, int u, int nb) {
        constexpr int QB = T == T_Q4_K ? 128 : 160;
        const int sb = u / 8;
        v = u % 8;
        q = ldw16(row + QB * sb + 16 * v);
        if constexpr (T == T_Q5_K) qh = ldw16(row + QB * sb + 128 + 16 * (v % 2));  // × 4 units
        else qh = make_uint4(0, 0, 0, 0);
        scm = ldw4(row + QB * nb + 16 * sb + 4 * (v / 2));                       // × 2 units
        dm = ldw4(row + (QB + 16) * nb + 4 * sb);                                 // × 8 units
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
        const u32 l[4] = {q.x, q.y, q.z, q.w}, hh[4] = {qh.x, qh.y, qh.z, qh.w};
        const int xa[4] = {x.a.x, x.a.y, x.a.z, x.a.w}, xb[4] = {x.b.x, x.b.y, x.b.z, x.b.w};
        const int j2 = 2 * (v / 2);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int q0 = lo4(l[i]), q1 = hi4(l[i]);
            if constexpr (T == T_Q5_K) {
                q0 |= (int)(((hh[i] >> j2) & 0x01010101u) << 4);
                q1 |= (int)(((hh[i] >> (j2 + 1)) & 0x01010101u) << 4);
            }
            s0 = dp4a(q0, xa[i], s0);
            s1 = dp4a(q1, xb[i], s1);
        }
        const float d = f16_to_f32((u16)(dm & 0xffff)), dmin = f16_to_f32((u16)(dm >> 16));
        float r = d * ((float)(scm & 0xff) * x.d0.x * (float)s0 +
                       (float)((scm >> 8) & 0xff) * x.d1.x * (float)s1);
        if ((v & 1) == 0)
            r -= dmin * ((float)((scm >> 16) & 0xff) * x.d0.y + (float)(scm >> 24) * x.d1.y);
        return r;
    }
};
template <> struct WU<T_Q4_K> : WUK<T_Q4_K> {};
template <> struct WU<T_Q5_K> : WUK<T_Q5_K> {};

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
    const int nb = cols / Fmt<T>::qk;  // blocks per row
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
// round in flight without spilling for one or two tokens; more tokens need more accumulators,
// so fewer resident blocks. Exceptions where these bounds spilled (ptxas -v through NVRTC,
// sm_90): Q5_0 at 2 tokens (7 blocks: 72 registers), Q5_K's batched kernel (2 blocks). With
// these bounds no kernel of the file has a stack frame but Q8_0's batched one (36 bytes of
// spill stores, as before the other formats came). Q4_K needed 6 / 4 blocks at 1 / 2 tokens
// while its units unpacked 6-bit scales; the repacked layout fits the common bounds.
#define MV_MIN_BLOCKS(T, N) \
    ((T) == T_Q5_0 && (N) == 2 ? 7 : (N) <= 2 ? 8 : (N) <= 4 ? 4 : 3)
#define MV_MIN_BLOCKS_B8(T) ((T) == T_Q5_K ? 2 : MV_MIN_BLOCKS(T, 8))
#define MV_N(T, name, N)                                                                     \
    extern "C" __global__ void __launch_bounds__(128, MV_MIN_BLOCKS(T, N))                  \
        matvec_q8_n##N##_##name(MvSets sets, const i8* xq, const float2* xd, int cols) {      \
        matvec_q8_impl<T, N>(sets, xq, xd, cols, blockIdx.x, 0, N);                          \
    }
// Batched (9 to 64 tokens): chunks of 8 tokens, the chunk index fastest in blockIdx.x, so the
// ceil(n / 8) blocks that read the same weight rows run together and all but the first read
// them from L2: DRAM sees the weights about once per call.
#define MV_B8(T, name)                                                                       \
    extern "C" __global__ void __launch_bounds__(128, MV_MIN_BLOCKS_B8(T))                  \
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
    M(T_Q4_0, q4_0) M(T_Q4_1, q4_1) M(T_Q5_0, q5_0) M(T_Q5_1, q5_1) M(T_Q8_0, q8_0) \
    M(T_Q2_K, q2_k) M(T_Q3_K, q3_k) M(T_Q4_K, q4_k) M(T_Q5_K, q5_k) M(T_Q6_K, q6_k)
#endif
PLUMB_Q8_FORMATS(MATVEC_Q8)
