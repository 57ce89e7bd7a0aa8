//! Q2_K: super-blocks of 256 elements in 84 bytes:
//! `scales[16]`, `qs[64]`, `d` (f16), `dmin` (f16).
//!
//! Sixteen sub-blocks of 16 elements; sub-block `i` has scale `d * (scales[i] & 15)` and min
//! `dmin * (scales[i] >> 4)`, and element `e` is `scale * q_e - min` with `q_e` in 0..4.
//! The 2-bit `q_e` sit in two 32-byte halves of `qs`, one per 128 elements: element
//! `e = 128 * h + 32 * k + l` (`l < 32`) is bits `2k..2k+2` of `qs[32 * h + l]`.

use super::{fit_min_max, quantize_affine, quantize_super_scale, QK_K};
use crate::quant::f16_le;

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;

const QS: usize = QK_K / 16;
const D: usize = QS + QK_K / 4;

/// Byte of `qs` (relative to the start of `qs`) and bit shift of element `e`.
fn q_pos(e: usize) -> (usize, usize) {
    (32 * (e / 128) + e % 32, 2 * ((e % 128) / 32))
}

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[D], b[D + 1]);
    let dmin = f16_le(b[D + 2], b[D + 3]);
    for e in 0..QK {
        let sc = b[e / 16];
        let dl = d * (sc & 0x0f) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let (byte, shift) = q_pos(e);
        let q = (b[QS + byte] >> shift) & 3;
        out[e] = dl * q as f32 - ml;
    }
}

/// A simple fit, not llama.cpp's search (`make_qkx2_quants`): each sub-block takes the
/// min/max range (widened to include 0) split into 3 steps; the sixteen scales and mins are
/// then quantized to 4 bits against `d = max scale / 15` and `dmin = max min / 15`, and the
/// elements are rounded against the quantized values.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    for i in 0..16 {
        (scales[i], mins[i]) = fit_min_max(&x[16 * i..16 * i + 16], 3);
    }
    let (db, d, sq) = quantize_super_scale(&scales, 15);
    let (mb, dmin, mq) = quantize_super_scale(&mins, 15);
    out.fill(0);
    for i in 0..16 {
        out[i] = sq[i] | (mq[i] << 4);
    }
    out[D..D + 2].copy_from_slice(&db);
    out[D + 2..D + 4].copy_from_slice(&mb);
    for e in 0..QK {
        let dl = d * sq[e / 16] as f32;
        let ml = dmin * mq[e / 16] as f32;
        let q = quantize_affine(x[e], dl, ml, 3);
        let (byte, shift) = q_pos(e);
        out[QS + byte] |= q << shift;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[80..82].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        b[82..84].copy_from_slice(&0x3400u16.to_le_bytes()); // dmin = 0.25
        b[0] = 0x13; // sub-block 0: scale 3 * 0.5 = 1.5, min 1 * 0.25
        b[2] = 0x21; // sub-block 2: scale 0.5, min 0.5
        b[4] = 0x0F; // sub-block 4: scale 7.5, min 0
        b[6] = 0x32; // sub-block 6: scale 1.0, min 0.75
        b[9] = 0x14; // sub-block 9: scale 2.0, min 0.25
        b[16] = 0xE4; // qs[0]: elements 0, 32, 64, 96 get 0, 1, 2, 3
        b[16 + 49] = 0x03; // qs[49], bits 0..2: element 128 + 17 = 145 gets 3
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], -0.25); // 1.5 * 0 - 0.25
        assert_eq!(out[32], 0.0); // 0.5 * 1 - 0.5
        assert_eq!(out[64], 15.0); // 7.5 * 2 - 0
        assert_eq!(out[96], 2.25); // 1.0 * 3 - 0.75
        assert_eq!(out[145], 5.75); // 2.0 * 3 - 0.25
        assert_eq!(out[1], -0.25); // sub-block 0, q = 0
        assert_eq!(out[16], 0.0); // sub-block 1 is all zero
        assert_eq!(out[177], 0.0); // qs[49] bits 2..4 are 0, sub-block 11 is zero
    }
}
