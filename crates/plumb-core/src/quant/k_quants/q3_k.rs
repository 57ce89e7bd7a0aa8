//! Q3_K: super-blocks of 256 elements in 110 bytes:
//! `hmask[32]`, `qs[64]`, `scales[12]`, `d` (f16).
//!
//! Sixteen sub-blocks of 16 elements with signed 6-bit scales (stored + 32, see
//! [`unpack_scales`]); element `e` is `d * scale[e / 16] * q_e` with `q_e` in -4..4 and
//! `q_e = low - (hbit ? 0 : 4)` (a *set* high bit subtracts nothing). The 2-bit `low` is
//! stored as in Q2_K: element `e = 128 * h + 32 * k + l` is bits `2k..2k+2` of
//! `qs[32 * h + l]`. `hbit` is bit `e / 32` of `hmask[e % 32]`.

use super::QK_K;
use crate::quant::{f16_le, inv_or_zero, nearest_int, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;

const QS: usize = QK_K / 8;
const SCALES: usize = QS + QK_K / 4;
const D: usize = SCALES + 12;

/// Byte of `qs` (relative to the start of `qs`) and bit shift of element `e`.
fn q_pos(e: usize) -> (usize, usize) {
    (32 * (e / 128) + e % 32, 2 * ((e % 128) / 32))
}

/// The sixteen sub-block scales, already minus 32 (so in -32..32).
///
/// Scale `i` is 6 bits: its low 4 bits are the low nibble of byte `i` for `i < 8` and the
/// high nibble of byte `i - 8` for `i >= 8`; its high 2 bits are bits `2 * (i / 4)..+2` of
/// byte `8 + i % 4`.
pub fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for i in 0..16 {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// The inverse of [`unpack_scales`]; scales are clamped to -32..32.
pub fn pack_scales(scales: &[i8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for i in 0..16 {
        let v = (scales[i].clamp(-32, 31) + 32) as u8;
        if i < 8 {
            s[i] |= v & 0x0f;
        } else {
            s[i - 8] |= (v & 0x0f) << 4;
        }
        s[8 + i % 4] |= (v >> 4) << (2 * (i / 4));
    }
    s
}

fn scale_bytes(b: &[u8; BLOCK_BYTES]) -> [u8; 12] {
    let mut s = [0u8; 12];
    s.copy_from_slice(&b[SCALES..SCALES + 12]);
    s
}

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d_all = f16_le(b[D], b[D + 1]);
    let scales = unpack_scales(&scale_bytes(b));
    for e in 0..QK {
        let dl = d_all * scales[e / 16] as f32;
        let (byte, shift) = q_pos(e);
        let low = ((b[QS + byte] >> shift) & 3) as i32;
        let hbit = (b[e % 32] >> (e / 32)) & 1;
        let q = low - if hbit != 0 { 0 } else { 4 };
        out[e] = dl * q as f32;
    }
}

/// A simple fit, not llama.cpp's search (`make_q3_quants`): each sub-block's element of
/// largest magnitude maps to -4 (`scale = max / -4`); the scales are quantized to signed
/// 6 bits the same way (`d = max scale / -32`), and the elements are rounded against the
/// quantized scales and clamped to -4..4.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let mut scales = [0f32; 16];
    for i in 0..16 {
        scales[i] = signed_absmax(&x[16 * i..16 * i + 16]).0 / -4.0;
    }
    let (ms, _) = signed_absmax(&scales);
    let (db, d) = to_f16(ms / -32.0);
    let id = inv_or_zero(d);
    let mut sq = [0i8; 16];
    for i in 0..16 {
        sq[i] = nearest_int(scales[i] * id).clamp(-32, 31) as i8;
    }
    out.fill(0);
    out[SCALES..SCALES + 12].copy_from_slice(&pack_scales(&sq));
    out[D..D + 2].copy_from_slice(&db);
    for e in 0..QK {
        let dl = d * sq[e / 16] as f32;
        let q = if dl != 0.0 {
            nearest_int(x[e] / dl).clamp(-4, 3)
        } else {
            0
        };
        let stored = (q + 4) as u8; // 0..8
        let (byte, shift) = q_pos(e);
        out[QS + byte] |= (stored & 3) << shift;
        out[e % 32] |= (stored >> 2) << (e / 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[108..110].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
                                                               // scales (+32): #0 = 34 = 0b10_0010, #5 = 29 = 0b01_1101, #10 = 37 = 0b10_0101,
                                                               // #15 = 63; all others 0 (-> -32).
        let s = 96;
        b[s] = 0x02; // #0 low nibble 2
        b[s + 5] = 0x0D; // #5 low nibble 13
        b[s + 2] = 0x50; // #10 low nibble 5 (high nibble of byte 2)
        b[s + 7] = 0xF0; // #15 low nibble 15 (high nibble of byte 7)
        b[s + 8] = 0x02; // #0 high bits 2 (bits 0..2)
        b[s + 9] = 0x04; // #5 high bits 1 (bits 2..4)
        b[s + 10] = 0x20; // #10 high bits 2 (bits 4..6)
        b[s + 11] = 0xC0; // #15 high bits 3 (bits 6..8)
        let qs = 32;
        // element 0: qs[0] bits 0..2 = 3, hmask[0] bit 0 set -> q = 3
        b[qs] = 0x03;
        b[0] = 0x01;
        // element 80 (k = 2, l = 16): qs[16] bits 4..6 = 1, hmask[16] bit 2 clear -> q = -3
        b[qs + 16] = 0x10;
        // element 170 (h = 1, k = 1, l = 10): qs[42] bits 2..4 = 2, hmask[10] bit 5 set -> 2
        b[qs + 42] = 0x08;
        b[10] = 0x20;
        // element 255 (h = 1, k = 3, l = 31): qs[63] bits 6..8 = 1, hmask[31] bit 7 clear -> -3
        b[qs + 63] = 0x40;
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 3.0); // 0.5 * 2 * 3
        assert_eq!(out[80], 4.5); // 0.5 * -3 * -3
        assert_eq!(out[170], 5.0); // 0.5 * 5 * 2
        assert_eq!(out[255], -46.5); // 0.5 * 31 * -3
        assert_eq!(out[1], -4.0); // 0.5 * 2 * (0 - 4)
        assert_eq!(out[16], 64.0); // scale #1 = -32: 0.5 * -32 * -4
    }

    #[test]
    fn scales_pack_and_unpack_every_value() {
        for v in -32i8..32 {
            let mut sc = [0i8; 16];
            for i in 0..16 {
                sc[i] = ((v as i32 + 7 * i as i32 + 32).rem_euclid(64) - 32) as i8;
            }
            assert_eq!(unpack_scales(&pack_scales(&sc)), sc, "v {v}");
        }
    }
}
