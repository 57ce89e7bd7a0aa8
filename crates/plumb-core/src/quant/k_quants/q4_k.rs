//! Q4_K: super-blocks of 256 elements in 144 bytes:
//! `d` (f16), `dmin` (f16), `scales[12]`, `qs[128]`.
//!
//! Eight sub-blocks of 32 elements; sub-block `i` has 6-bit scale `sc` and min `m`
//! ([`get_scale_min_k4`]) and element `e` is `d * sc * q_e - dmin * m` with `q_e` in 0..16.
//! Nibbles come in 32-byte groups, one per 64 elements: element `e = 64 * c + w` is the low
//! nibble of `qs[32 * c + w]` for `w < 32` and the high nibble of `qs[32 * c + w - 32]` for
//! `w >= 32`.

use super::{get_scale_min_k4, quantize_affine, write_scale_min_header, QK_K};
use crate::quant::f16_le;

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 2;

const SCALES: usize = 4;
const QS: usize = SCALES + 12;

/// Byte of `qs` (relative to the start of `qs`) and bit shift of element `e`.
fn q_pos(e: usize) -> (usize, usize) {
    (32 * (e / 64) + e % 32, 4 * ((e % 64) / 32))
}

fn scale_bytes(b: &[u8; BLOCK_BYTES]) -> [u8; 12] {
    let mut s = [0u8; 12];
    s.copy_from_slice(&b[SCALES..SCALES + 12]);
    s
}

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    let dmin = f16_le(b[2], b[3]);
    let s = scale_bytes(b);
    for e in 0..QK {
        let (sc, m) = get_scale_min_k4(e / 32, &s);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let (byte, shift) = q_pos(e);
        let q = (b[QS + byte] >> shift) & 0x0f;
        out[e] = d1 * q as f32 - m1;
    }
}

/// A simple fit, not llama.cpp's search (`make_qkx2_quants`): each sub-block takes the
/// min/max range (widened to include 0) split into 15 steps; the eight scales and mins are
/// quantized to 6 bits against `d = max scale / 63` and `dmin = max min / 63`, and the
/// elements are rounded against the quantized values.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    out.fill(0);
    let sub = write_scale_min_header(x, 15, out);
    for e in 0..QK {
        let (dl, ml) = sub[e / 32];
        let q = quantize_affine(x[e], dl, ml, 15);
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
        b[0..2].copy_from_slice(&0x3C00u16.to_le_bytes()); // d = 1.0
        b[2..4].copy_from_slice(&0x3800u16.to_le_bytes()); // dmin = 0.5
        let s = 4;
        b[s] = 10; // sub-block 0: scale 10
        b[s + 4] = 3; // sub-block 0: min 3
        b[s + 1] = 1; // sub-block 1: scale 1, min 0
                      // sub-block 6: scale 45 = 0b10_1101, min 20 = 0b01_0100
        b[s + 10] = 0x4D; // low nibbles: scale 13, min 4
        b[s + 2] = 0x80; // scale top bits 2 (byte j - 4 = 2)
        b[s + 6] = 0x40; // min top bits 1 (byte j = 6)
                         // sub-block 7: scale 63, min 63
        b[s + 11] = 0xFF;
        b[s + 3] = 0xC0;
        b[s + 7] = 0xC0;
        let qs = 16;
        b[qs] = 0x27; // element 0: 7 (sub-block 0), element 32: 2 (sub-block 1)
        b[qs + 104] = 0xF5; // element 192 + 8 = 200: 5 (sub-block 6); element 232: 15 (#7)
        b[qs + 36] = 0xFF; // elements 68 and 100: sub-blocks 2 and 3 have scale 0, min 0
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 68.5); // 10 * 7 - 0.5 * 3
        assert_eq!(out[32], 2.0); // 1 * 2 - 0
        assert_eq!(out[200], 215.0); // 45 * 5 - 0.5 * 20
        assert_eq!(out[232], 913.5); // 63 * 15 - 0.5 * 63
        assert_eq!(out[68], 0.0); // scale 2 = byte 2 & 63 = 0 (top bits belong to #6)
        assert_eq!(out[100], 0.0); // scale 3 = byte 3 & 63 = 0 (top bits belong to #7)
        assert_eq!(out[1], -1.5); // q = 0: -0.5 * 3
    }
}
