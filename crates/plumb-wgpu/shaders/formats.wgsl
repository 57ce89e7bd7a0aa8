// formats.wgsl: reading weights in their stored formats, included by the shaders that read
// weights (embedding, matvec, matmul). The including shader binds the weight as
// `wq: array<u32>`; src/weight.rs uploads it so that every block starts on a word:
//
//   F32    one word per element
//   F16    two per word, each row padded to an even count
//   BF16   as F16
//   Q4_0   [d f16, 2 pad bytes, qs 16 B]                   5 words (stored: 18 bytes)
//   Q4_1   [d f16, m f16, qs 16 B]                         5 words (as stored)
//   Q8_0   [d f16, 2 pad bytes, qs 32 B]                   9 words (stored: 34 bytes)
//   Q4_K   [d, dmin f16, scales 12 B, qs 128 B]            36 words (as stored)
//   Q6_K   [ql 128 B, qh 64 B, scales 16 B, d f16, 2 pad]  53 words (stored: 210 bytes)
//
// The other formats are dequantized to F32 at upload. FMT, BLOCK (elements per block) and
// BLOCK_WORDS are set per pipeline; `row` is the word where a weight row starts.

const FMT_F32: u32 = 0u;
const FMT_F16: u32 = 1u;
const FMT_BF16: u32 = 2u;
const FMT_Q4_0: u32 = 3u;
const FMT_Q4_1: u32 = 4u;
const FMT_Q8_0: u32 = 5u;
const FMT_Q4_K: u32 = 6u;
const FMT_Q6_K: u32 = 7u;

override FMT: u32 = 0u;
override BLOCK: u32 = 1u;
override BLOCK_WORDS: u32 = 1u;

// Elements k .. k+3 of a row (k a multiple of 4). Past the end of a row of a float format
// the values are whatever follows: callers mask them.
fn deq4(row: u32, k: u32) -> vec4<f32> {
    switch FMT {
        case FMT_F32: {
            return vec4<f32>(bitcast<f32>(wq[row + k]), bitcast<f32>(wq[row + k + 1u]),
                             bitcast<f32>(wq[row + k + 2u]), bitcast<f32>(wq[row + k + 3u]));
        }
        case FMT_F16: {
            return vec4<f32>(unpack2x16float(wq[row + k / 2u]),
                             unpack2x16float(wq[row + k / 2u + 1u]));
        }
        case FMT_BF16: {
            let a = wq[row + k / 2u];
            let b = wq[row + k / 2u + 1u];
            return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u),
                             bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
        }
        default: {
            return deq4_block(row + (k / BLOCK) * BLOCK_WORDS, k % BLOCK);
        }
    }
}

// Elements e .. e+3 of the block at word `b`.
fn deq4_block(b: u32, e: u32) -> vec4<f32> {
    switch FMT {
        case FMT_Q4_0: {
            // e < 16: low nibbles of qs[e..]; e >= 16: high nibbles of qs[e-16..].
            let q = (wq[b + 1u + (e % 16u) / 4u] >> (4u * (e / 16u))) & 0x0f0f0f0fu;
            return (vec4<f32>(u8x4(q)) - 8.0) * f16_lo(wq[b]);
        }
        case FMT_Q4_1: {
            let dm = unpack2x16float(wq[b]);
            let q = (wq[b + 1u + (e % 16u) / 4u] >> (4u * (e / 16u))) & 0x0f0f0f0fu;
            return vec4<f32>(u8x4(q)) * dm.x + dm.y;
        }
        case FMT_Q8_0: {
            return vec4<f32>(s8x4(wq[b + 1u + e / 4u])) * f16_lo(wq[b]);
        }
        case FMT_Q4_K: {
            // Element e = 64c + w: low nibble of qs[32c + w] (w < 32), else the high nibble of
            // qs[32c + w - 32]; sub-block e / 32 has its own scale and min.
            let dm = unpack2x16float(wq[b]);
            let sm = scale_min_k4(b, e / 32u);
            let q = (wq[b + 4u + 8u * (e / 64u) + (e % 32u) / 4u] >> (4u * ((e % 64u) / 32u)))
                & 0x0f0f0f0fu;
            return vec4<f32>(u8x4(q)) * (dm.x * sm.x) - dm.y * sm.y;
        }
        case FMT_Q6_K: {
            // e = 128h + 32k + l: low 4 bits in ql[64h + 32(k%2) + l] (shifted 4(k/2)), high 2
            // bits in qh[32h + l] (shifted 2k); scale e/16 (signed byte).
            let h = e / 128u;
            let k = (e % 128u) / 32u;
            let l = e % 32u;
            let q = q6_word(b, h, k, l / 4u);
            let s = e / 16u;
            let sc = extractBits(bitcast<i32>(wq[b + 48u + s / 4u]), 8u * (s % 4u), 8u);
            return vec4<f32>(s8x4(q)) * (f16_lo(wq[b + 52u]) * f32(sc));
        }
        default: {
            return vec4<f32>(0.0);
        }
    }
}

// Byte i of the bytes starting at word `w`.
fn byte_at(w: u32, i: u32) -> u32 {
    return (wq[w + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// Scale and min of sub-block j (0..8) of the Q4_K block at word `b` (its 12 scale bytes start
// at word b + 1): bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; for
// j >= 4 the low 4 bits come from byte j + 4 and the high 2 from the top bits of bytes j - 4
// (scale) and j (min).
fn scale_min_k4(b: u32, j: u32) -> vec2<f32> {
    let s = b + 1u;
    if j < 4u {
        return vec2<f32>(f32(byte_at(s, j) & 63u), f32(byte_at(s, j + 4u) & 63u));
    }
    let sc = (byte_at(s, j + 4u) & 0x0fu) | ((byte_at(s, j - 4u) >> 6u) << 4u);
    let m = (byte_at(s, j + 4u) >> 4u) | ((byte_at(s, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Word i (elements 32k + 4i .. +3 of half h) of a Q6_K block's values minus 32, as signed
// bytes. A 6-bit q with bit 5 set is q - 32 = q ^ 0x20; without it, q - 32 = q ^ 0xe0 in two's
// complement: per byte, q ^ 0x20 ^ (0xc0 where bit 5 is clear), which never carries.
fn q6_word(b: u32, h: u32, k: u32, i: u32) -> u32 {
    let lo = (wq[b + 16u * h + 8u * (k % 2u) + i] >> (4u * (k / 2u))) & 0x0f0f0f0fu;
    let hi = (wq[b + 32u + 8u * h + i] >> (2u * k)) & 0x03030303u;
    let q = lo | (hi << 4u);
    return q ^ 0x20202020u ^ (((~q >> 5u) & 0x01010101u) * 0xc0u);
}

// One 32-element unit of a quantized row against 8-bit activations (matvec.wgsl): the
// weight's bytes in element order (w), and how its integer dot products combine with the
// activation block's scale d_x and sum s_x:
//   Σ w·x ≈ d_x · (c_lo · dot(w[0..4], q_x[0..4]) + c_hi · dot(w[4..8], q_x[4..8])) + c_s · s_x.
// Unit u is block u (Q4_0, Q4_1, Q8_0) or sub-block u % 8 of super-block u / 8 (K-quants).
struct Unit {
    w: array<u32, 8>,
    c_lo: f32,
    c_hi: f32,
    c_s: f32,
}

fn unit_q(row: u32, u: u32) -> Unit {
    var r: Unit;
    switch FMT {
        case FMT_Q4_0, FMT_Q4_1: {
            let b = row + u * BLOCK_WORDS;
            let dm = unpack2x16float(wq[b]);
            for (var i = 0u; i < 4u; i++) {
                let q = wq[b + 1u + i];
                r.w[i] = q & 0x0f0f0f0fu;
                r.w[i + 4u] = (q >> 4u) & 0x0f0f0f0fu;
            }
            r.c_lo = dm.x;
            r.c_hi = dm.x;
            // Q4_0: d(q - 8) gives -8d per activation; Q4_1: dq + m gives m.
            r.c_s = select(dm.y, -8.0 * dm.x, FMT == FMT_Q4_0);
        }
        case FMT_Q8_0: {
            let b = row + u * BLOCK_WORDS;
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = wq[b + 1u + i];
            }
            r.c_lo = f16_lo(wq[b]);
            r.c_hi = r.c_lo;
            r.c_s = 0.0;
        }
        case FMT_Q4_K: {
            let b = row + (u / 8u) * BLOCK_WORDS;
            let j = u % 8u;
            let dm = unpack2x16float(wq[b]);
            let sm = scale_min_k4(b, j);
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = (wq[b + 4u + 8u * (j / 2u) + i] >> (4u * (j % 2u))) & 0x0f0f0f0fu;
            }
            r.c_lo = dm.x * sm.x;
            r.c_hi = r.c_lo;
            r.c_s = -dm.y * sm.y;
        }
        case FMT_Q6_K: {
            let b = row + (u / 8u) * BLOCK_WORDS;
            let a = u % 8u;
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = q6_word(b, a / 4u, a % 4u, i);
            }
            let d = f16_lo(wq[b + 52u]);
            let sw = wq[b + 48u + a / 2u];
            let sh = 16u * (a % 2u);
            r.c_lo = d * f32(extractBits(bitcast<i32>(sw), sh, 8u));
            r.c_hi = d * f32(extractBits(bitcast<i32>(sw), sh + 8u, 8u));
            r.c_s = 0.0;
        }
        default: {}
    }
    return r;
}
