// quant.cuh: device dequantization of every stored weight format, 32 elements at a time.
// Prepended (after common.cuh) to embedding.cu, matvec_q.cu, matvec_q8.cu and matmul.cu.
//
// The unit of work is a "chunk": 32 consecutive elements of one row. A legacy block (Q4_0 ..
// Q8_1) is one chunk; a K-quant super-block of 256 is eight; the float formats have no
// blocks and their last chunk may be partial (`cols` need not be a multiple of 32).
//   row r, chunk c of a Q4_K weight with cols = 4096 (row_bytes = 16 * 144):
//   block = c*32 / 256, sub = (c*32 % 256) / 32; c = 13 -> block 1 (bytes 144..288 of the
//   row), sub-block 5.
//
// Every formula follows plumb-core's reference dequantizer operation for operation, with
// __fmul_rn / __fadd_rn / __fsub_rn so that the compiler cannot contract `d*q - m` into an
// FMA: the embedding check demands bit-exact values.
//
// Type codes are GGUF's ggml_type ids, and for the MLX affine formats plumb's own
// (0x1000 | bits << 8 | group, as plumb-core's GgmlType).
//
// Repacked layouts. Every quantized GGUF format but Q8_1 and Q8_K is stored on the device in a
// layout of its own (written by src/weight.rs at upload), because GGUF's blocks (18, 22, 34,
// 84, 110, 210 bytes) leave the quants only 2- or 4-byte aligned and interleave them with the
// scales, and the matvec wants aligned 16-byte loads of quants and no bit unpacking of scales.
// Each row is cut into regions, every block of the row contributing one piece to each region
// in block order; the row is padded with zeros to a multiple of 16 bytes (nb = blocks per row):
//   Q4_0: [nb × qs[16]] [nb × d(f16)]                                  nb = cols / 32
//   Q4_1: [nb × qs[16]] [nb × (d, m)(f16 × 2)]
//   Q5_0: [nb × qs[16]] [nb × qh(u32)] [nb × d]
//   Q5_1: [nb × qs[16]] [nb × qh(u32)] [nb × (d, m)]
//   Q8_0: [nb × qs[32]] [nb × d(f16)]
//   Q2_K: [nb × qs'[64]] [nb × scales[16]] [nb × (d, dmin)]            nb = cols / 256
//   Q3_K: [nb × (qs'[64] hm'[32])] [nb × scales[16] (i8, −32..31)] [nb × d]
//   Q4_K: [nb × qs[128]] [nb × scm[16]] [nb × (d, dmin)]
//   Q5_K: [nb × (qs[128] qh[32])] [nb × scm[16]] [nb × (d, dmin)]
//   Q6_K: [nb × (ql[128] qh[64])] [nb × scales[16]] [nb × d(f16)]
// Quants, qh and scales keep GGUF's bytes except: scm word j of Q4_K / Q5_K = (sc[2j],
// sc[2j+1], m[2j], m[2j+1]), the 6-bit (scale, min) pairs of get_scale_min_k4 unpacked to
// bytes (16 bytes for GGUF's 12: 148 / 180 bytes per 256 against 144 / 176); Q3_K's scales are
// unpacked the same way (16 bytes for 12, 114 per 256 against 110) and already minus 32.
// Q2_K / Q3_K reorder their 2-bit quants per 32 elements (unit v = elements 32v..32v+32 of a
// super-block, bytes 8v..8v+8 of qs'): element 32v + 16a + 4k + i is byte 8v + 4a + i, bits
// 2k..2k+2, so that (word a >> 2k) & 0x03030303 holds 4 consecutive elements in x̂'s byte
// order; Q3_K's high bits likewise (hm' word v, element 32v + 16a + 4k + i at bit 4a + k of
// byte i). Q4_0 row of 4096 columns: 128 × 16 = 2048 bytes of quants, then 256 bytes of
// scales: block 5's quants at bytes 80..96 and its d at 2048 + 10. Q4_K row of 4096: 16 × 128
// bytes of quants, scm at 2048 + 16·blk, (d, dmin) at 2304 + 4·blk (2368 bytes, 16 × 148).
// Q8_1 and Q8_K (not weight formats in practice) and the float formats keep GGUF's layout.
//
// MLX affine (plumb-core quant::affine): a block is one group of G = 32, 64 or 128 elements,
// scale (f32) @0, bias (f32) @4, then the group's G·bits/8 bytes of the row's little-endian
// code stream (code i at stream bits i·bits ..). Blocks are 8 + 4·bits·(G/32) bytes, so every
// block and every chunk's codes start 4-byte aligned. Chunk c of a 4-bit, group-64 row: block
// c/2 (40 bytes each), its codes at 8 + 16·(c%2): 16 bytes = 4 words, code j at bits 4j.

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q8_1 9
#define T_Q2_K 10
#define T_Q3_K 11
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_Q8_K 15
#define T_BF16 30
#define MLX_T(bits, group) (0x1000 | ((bits) << 8) | (group))
#define T_MLX2_G32 MLX_T(2, 32)
#define T_MLX2_G64 MLX_T(2, 64)
#define T_MLX2_G128 MLX_T(2, 128)
#define T_MLX3_G32 MLX_T(3, 32)
#define T_MLX3_G64 MLX_T(3, 64)
#define T_MLX3_G128 MLX_T(3, 128)
#define T_MLX4_G32 MLX_T(4, 32)
#define T_MLX4_G64 MLX_T(4, 64)
#define T_MLX4_G128 MLX_T(4, 128)
#define T_MLX5_G32 MLX_T(5, 32)
#define T_MLX5_G64 MLX_T(5, 64)
#define T_MLX5_G128 MLX_T(5, 128)
#define T_MLX6_G32 MLX_T(6, 32)
#define T_MLX6_G64 MLX_T(6, 64)
#define T_MLX6_G128 MLX_T(6, 128)
#define T_MLX8_G32 MLX_T(8, 32)
#define T_MLX8_G64 MLX_T(8, 64)
#define T_MLX8_G128 MLX_T(8, 128)

template <int T> struct Fmt;
#define FMT(T, QK, BYTES, ALIGN) \
    template <> struct Fmt<T> { static constexpr int qk = QK, bytes = BYTES, align = ALIGN; };
// ALIGN: the largest power of two dividing the block size: rows and blocks start at
// multiples of it (device allocations are 256-byte aligned).
FMT(T_F32, 1, 4, 4)
FMT(T_F16, 1, 2, 2)
FMT(T_BF16, 1, 2, 2)
FMT(T_Q4_0, 32, 18, 2)
FMT(T_Q4_1, 32, 20, 4)
FMT(T_Q5_0, 32, 22, 2)
FMT(T_Q5_1, 32, 24, 8)
FMT(T_Q8_0, 32, 34, 2)
FMT(T_Q8_1, 32, 36, 4)
FMT(T_Q2_K, 256, 84, 4)
FMT(T_Q3_K, 256, 110, 2)
FMT(T_Q4_K, 256, 144, 16)
FMT(T_Q5_K, 256, 176, 16)
FMT(T_Q6_K, 256, 210, 2)
FMT(T_Q8_K, 256, 292, 4)

// Loads N bytes (N = 16 or 32) at `p` into N/4 little-endian words with the widest loads the
// alignment A allows: 16-byte vector loads for the repacked layouts, 4- or 2-byte ones otherwise.
template <int N, int A>
static __device__ __forceinline__ void load_words(const u8* p, u32* w) {
    if constexpr (A >= 16) {
#pragma unroll
        for (int i = 0; i < N / 16; i++) {
            uint4 v = reinterpret_cast<const uint4*>(p)[i];
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    } else if constexpr (A >= 4) {
#pragma unroll
        for (int i = 0; i < N / 4; i++) w[i] = reinterpret_cast<const u32*>(p)[i];
    } else {
        const u16* h = reinterpret_cast<const u16*>(p);
#pragma unroll
        for (int i = 0; i < N / 4; i++) w[i] = (u32)h[2 * i] | ((u32)h[2 * i + 1] << 16);
    }
}

static __device__ __forceinline__ u32 byte_of(const u32* w, int i) {
    return (w[i >> 2] >> ((i & 3) * 8)) & 0xffu;
}

static __device__ __forceinline__ float fmul(float a, float b) { return __fmul_rn(a, b); }
static __device__ __forceinline__ float fadd(float a, float b) { return __fadd_rn(a, b); }
static __device__ __forceinline__ float fsub(float a, float b) { return __fsub_rn(a, b); }

// Chunk c of an MLX affine row (layout above): w = s·q + b, the product rounded first.
template <int T>
static __device__ __forceinline__ void dq32_affine(const u8* row, int c, float* out) {
    constexpr int BITS = (T >> 8) & 15, G = T & 255, BB = 8 + G * BITS / 8;
    const u8* b = row + (size_t)(c * 32 / G) * BB;
    const float s = reinterpret_cast<const float*>(b)[0];
    const float bias = reinterpret_cast<const float*>(b)[1];
    const u32* q = reinterpret_cast<const u32*>(b + 8 + 4 * BITS * ((c * 32 % G) / 32));
    u32 w[BITS];
#pragma unroll
    for (int i = 0; i < BITS; i++) w[i] = q[i];
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int bit = j * BITS, word = bit / 32, sh = bit % 32;
        u32 v = w[word] >> sh;
        if (sh + BITS > 32) v |= w[word + 1] << (32 - sh);  // a code across two words
        out[j] = fadd(fmul(s, (float)(v & ((1u << BITS) - 1))), bias);
    }
}

// Chunk c of a row in GGUF format T (see dq32).
template <int T>
static __device__ __forceinline__ void dq32_ggml(const u8* row, int c, int cols, float* out) {
    constexpr int QK = Fmt<T>::qk, BB = Fmt<T>::bytes, A = Fmt<T>::align;
    if constexpr (T == T_F32 || T == T_F16 || T == T_BF16) {
        const int e0 = c * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int e = e0 + i;
            float v = 0.0f;
            if (e < cols) {
                if constexpr (T == T_F32) v = reinterpret_cast<const float*>(row)[e];
                else if constexpr (T == T_F16) v = f16_to_f32(reinterpret_cast<const u16*>(row)[e]);
                else v = bf16_to_f32(reinterpret_cast<const u16*>(row)[e]);
            }
            out[i] = v;
        }
    } else {
        const u8* b = row + (size_t)(c * 32 / QK) * BB;  // the block holding the chunk
        const int sub = (c * 32 % QK) / 32;              // which 32 of the block
        u32 w[8], h[8];
        if constexpr (T == T_Q4_0) {  // repacked
            const float d = f16_to_f32(reinterpret_cast<const u16*>(row + 16 * (cols / 32))[c]);
            load_words<16, 16>(row + 16 * c, w);
#pragma unroll
            for (int j = 0; j < 16; j++) {
                const u32 q = byte_of(w, j);
                out[j] = fmul((float)((int)(q & 15) - 8), d);
                out[j + 16] = fmul((float)((int)(q >> 4) - 8), d);
            }
        } else if constexpr (T == T_Q4_1) {  // repacked
            const u16* dm = reinterpret_cast<const u16*>(row + 16 * (cols / 32)) + 2 * c;
            const float d = f16_to_f32(dm[0]), m = f16_to_f32(dm[1]);
            load_words<16, 16>(row + 16 * c, w);
#pragma unroll
            for (int j = 0; j < 16; j++) {
                const u32 q = byte_of(w, j);
                out[j] = fadd(fmul((float)(q & 15), d), m);
                out[j + 16] = fadd(fmul((float)(q >> 4), d), m);
            }
        } else if constexpr (T == T_Q5_0 || T == T_Q5_1) {  // repacked
            // [nb × qs[16]] [nb × qh(u32)] [nb × d(f16) (Q5_1: d, m)] from byte 0, 16nb, 20nb.
            const int nb = cols / 32;
            const u32 qh = reinterpret_cast<const u32*>(row + 16 * nb)[c];
            const u16* dm = reinterpret_cast<const u16*>(row + 20 * nb) + (T == T_Q5_1 ? 2 : 1) * c;
            const float d = f16_to_f32(dm[0]);
            load_words<16, 16>(row + 16 * c, w);
#pragma unroll
            for (int j = 0; j < 16; j++) {
                const u32 q = byte_of(w, j);
                const u32 q0 = (q & 15) | (((qh >> j) & 1) << 4);
                const u32 q1 = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
                if constexpr (T == T_Q5_0) {
                    out[j] = fmul((float)((int)q0 - 16), d);
                    out[j + 16] = fmul((float)((int)q1 - 16), d);
                } else {
                    const float m = f16_to_f32(dm[1]);
                    out[j] = fadd(fmul((float)q0, d), m);
                    out[j + 16] = fadd(fmul((float)q1, d), m);
                }
            }
        } else if constexpr (T == T_Q8_0) {  // repacked
            const float d = f16_to_f32(reinterpret_cast<const u16*>(row + 32 * (cols / 32))[c]);
            load_words<32, 16>(row + 32 * c, w);
#pragma unroll
            for (int j = 0; j < 32; j++) out[j] = fmul((float)(i8)byte_of(w, j), d);
        } else if constexpr (T == T_Q8_1) {
            const float d = f16_to_f32(ld_u16(b));
            load_words<32, A>(b + 4, w);
#pragma unroll
            for (int j = 0; j < 32; j++) out[j] = fmul((float)(i8)byte_of(w, j), d);
        } else if constexpr (T == T_Q8_K) {
            const float d = *reinterpret_cast<const float*>(b);
            load_words<32, A>(b + 4 + 32 * sub, w);
#pragma unroll
            for (int j = 0; j < 32; j++) out[j] = fmul(d, (float)(i8)byte_of(w, j));
        } else if constexpr (T == T_Q2_K || T == T_Q3_K) {  // repacked
            // Q2_K: [nb × qs'[64]] [nb × scales[16]] [nb × (d, dmin)]      from 0, 64nb, 80nb;
            // Q3_K: [nb × (qs'[64] hm'[32])] [nb × scales[16] (i8)] [nb × d] from 0, 96nb, 112nb.
            // Chunk c = unit v = c % 8 of super-block blk = c / 8: its 2-bit quants are bytes
            // 8v..8v+8 of qs' (element j = 16a + 4k + i: byte 4a + i, bits 2k), its high bits
            // (Q3_K) word v of hm' (element j: bit 4a + k of byte i), its two sub-blocks'
            // scales bytes 2v, 2v + 1.
            constexpr int QB = T == T_Q2_K ? 64 : 96;
            const int nb = cols / 256, blk = c / 8, v = c % 8;
            const u8* q = row + QB * blk + 8 * v;
            w[0] = reinterpret_cast<const u32*>(q)[0];
            w[1] = reinterpret_cast<const u32*>(q)[1];
            const u8* sc = row + QB * nb + 16 * blk + 2 * v;
            if constexpr (T == T_Q2_K) {
                const u16* dd = reinterpret_cast<const u16*>(row + 80 * nb) + 2 * blk;
                const float d = f16_to_f32(dd[0]), dmin = f16_to_f32(dd[1]);
#pragma unroll
                for (int j = 0; j < 32; j++) {
                    const int a = j / 16, k = (j % 16) / 4, i = j % 4;
                    const u32 s = sc[a];
                    const float dl = fmul(d, (float)(s & 15)), ml = fmul(dmin, (float)(s >> 4));
                    const u32 qv = (byte_of(w, 4 * a + i) >> (2 * k)) & 3;
                    out[j] = fsub(fmul(dl, (float)qv), ml);
                }
            } else {
                const float d = f16_to_f32(reinterpret_cast<const u16*>(row + 112 * nb)[blk]);
                const u32 hm = reinterpret_cast<const u32*>(row + QB * blk + 64)[v];
#pragma unroll
                for (int j = 0; j < 32; j++) {
                    const int a = j / 16, k = (j % 16) / 4, i = j % 4;
                    const float dl = fmul(d, (float)(int)(i8)sc[a]);
                    const int low = (int)((byte_of(w, 4 * a + i) >> (2 * k)) & 3);
                    const int hbit = (int)((hm >> (8 * i + 4 * a + k)) & 1);
                    out[j] = fmul(dl, (float)(low - (hbit ? 0 : 4)));
                }
            }
        } else if constexpr (T == T_Q4_K || T == T_Q5_K) {  // repacked
            // Q4_K: [nb × qs[128]] [nb × scm[16]] [nb × (d, dmin)] from 0, 128nb, 144nb;
            // Q5_K: [nb × (qs[128] qh[32])] [nb × scm[16]] [nb × (d, dmin)] from 0, 160nb, 176nb.
            // scm word j = (sc[2j], sc[2j+1], m[2j], m[2j+1]), the 6-bit pairs unpacked.
            // Sub-block sub = c % 8: qs bytes 32(sub / 2) ..+32, nibble sub % 2; qh bit sub.
            constexpr int QB = T == T_Q4_K ? 128 : 160;
            const int nb = cols / 256, blk = c / 8, sub = c % 8;
            const u8* scm = row + QB * nb + 16 * blk + 4 * (sub / 2) + sub % 2;
            const u16* dd = reinterpret_cast<const u16*>(row + (QB + 16) * nb) + 2 * blk;
            const float d = f16_to_f32(dd[0]), dmin = f16_to_f32(dd[1]);
            const float d1 = fmul(d, (float)scm[0]), m1 = fmul(dmin, (float)scm[2]);
            load_words<32, 16>(row + QB * blk + 32 * (sub / 2), w);
            if constexpr (T == T_Q5_K) load_words<32, 16>(row + QB * blk + 128, h);
            const int shift = 4 * (sub % 2);
#pragma unroll
            for (int j = 0; j < 32; j++) {
                u32 q = (byte_of(w, j) >> shift) & 15;
                if constexpr (T == T_Q5_K) q |= ((byte_of(h, j) >> sub) & 1) << 4;
                out[j] = fsub(fmul(d1, (float)q), m1);
            }
        } else if constexpr (T == T_Q6_K) {  // repacked
            // Per super-block: ql[128] qh[64] @192·blk, scales[16] (i8) @192·nb + 16·blk,
            // d @208·nb + 2·blk; sub = 4*half + k.
            const int nb = cols / 256, blk = c / 8;
            const u8* q = row + 192 * blk;
            const i8* scales = reinterpret_cast<const i8*>(row + 192 * nb + 16 * blk);
            const float d = f16_to_f32(reinterpret_cast<const u16*>(row + 208 * nb)[blk]);
            const int half = sub / 4, k = sub % 4;
            load_words<32, 16>(q + 64 * half + 32 * (k % 2), w);
            load_words<32, 16>(q + 128 + 32 * half, h);
#pragma unroll
            for (int j = 0; j < 32; j++) {
                const u32 lo = (byte_of(w, j) >> (4 * (k / 2))) & 15;
                const u32 hi = (byte_of(h, j) >> (2 * k)) & 3;
                const int q = (int)(lo | (hi << 4)) - 32;
                const float sc = (float)scales[2 * sub + j / 16];
                out[j] = fmul(fmul(d, sc), (float)q);
            }
        }
    }
}

// Dequantizes chunk c of `row` (a row of `cols` elements in format T) into out[0..32].
// Elements past `cols` (float formats only) read as 0.
template <int T>
static __device__ __forceinline__ void dq32(const u8* row, int c, int cols, float* out) {
    if constexpr ((T & 0x1000) != 0) {
        dq32_affine<T>(row, c, out);
    } else {
        dq32_ggml<T>(row, c, cols, out);
    }
}

// Chunks in a row of `cols` elements.
static __device__ __forceinline__ int n_chunks(int cols) { return (cols + 31) / 32; }

// Instantiates MACRO(T, name) for every supported format; the name is the suffix of the
// kernel entry points (matvec_warp_q4_k, embedding_bf16, ...). Keep in sync with
// `FORMATS` in src/compile.rs.
#ifdef PLUMB_ONE_FORMAT  // defined by src/compile.rs to compile one format at a time
#define FOR_EACH_FORMAT(MACRO) PLUMB_ONE_FORMAT(MACRO)
#else
#define FOR_EACH_FORMAT(MACRO) \
    MACRO(T_F32, f32) MACRO(T_F16, f16) MACRO(T_BF16, bf16) \
    MACRO(T_Q4_0, q4_0) MACRO(T_Q4_1, q4_1) MACRO(T_Q5_0, q5_0) MACRO(T_Q5_1, q5_1) \
    MACRO(T_Q8_0, q8_0) MACRO(T_Q8_1, q8_1) MACRO(T_Q2_K, q2_k) MACRO(T_Q3_K, q3_k) \
    MACRO(T_Q4_K, q4_k) MACRO(T_Q5_K, q5_k) MACRO(T_Q6_K, q6_k) MACRO(T_Q8_K, q8_k) \
    MACRO(T_MLX2_G32, mlx2_g32) MACRO(T_MLX2_G64, mlx2_g64) MACRO(T_MLX2_G128, mlx2_g128) \
    MACRO(T_MLX3_G32, mlx3_g32) MACRO(T_MLX3_G64, mlx3_g64) MACRO(T_MLX3_G128, mlx3_g128) \
    MACRO(T_MLX4_G32, mlx4_g32) MACRO(T_MLX4_G64, mlx4_g64) MACRO(T_MLX4_G128, mlx4_g128) \
    MACRO(T_MLX5_G32, mlx5_g32) MACRO(T_MLX5_G64, mlx5_g64) MACRO(T_MLX5_G128, mlx5_g128) \
    MACRO(T_MLX6_G32, mlx6_g32) MACRO(T_MLX6_G64, mlx6_g64) MACRO(T_MLX6_G128, mlx6_g128) \
    MACRO(T_MLX8_G32, mlx8_g32) MACRO(T_MLX8_G64, mlx8_g64) MACRO(T_MLX8_G128, mlx8_g128)
#endif
