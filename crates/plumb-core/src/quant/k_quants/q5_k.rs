//! Q5_K: super-blocks of 256 elements in 176 bytes:
//! `d` (f16), `dmin` (f16), `scales[12]`, `qh[32]`, `qs[128]`.
//!
//! As Q4_K (same scales, same nibble order) with a fifth bit: bit `e / 32` of `qh[e % 32]`
//! adds 16 to `q_e`, so element `e` is `d * sc * q_e - dmin * m` with `q_e` in 0..32.

use super::{get_scale_min_k4, quantize_affine, write_scale_min_header, QK_K};
use crate::quant::f16_le;

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;

const SCALES: usize = 4;
const QH: usize = SCALES + 12;
const QS: usize = QH + QK_K / 8;

/// Byte of `qs` (relative to the start of `qs`) and bit shift of element `e`'s low nibble.
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
        let low = (b[QS + byte] >> shift) & 0x0f;
        let high = (b[QH + e % 32] >> (e / 32)) & 1;
        let q = low | (high << 4);
        out[e] = d1 * q as f32 - m1;
    }
}

/// A simple fit, not llama.cpp's search (`make_qkx2_quants`): as Q4_K's quantizer with 31
/// steps per sub-block.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    out.fill(0);
    let sub = write_scale_min_header(x, 31, out);
    for e in 0..QK {
        let (dl, ml) = sub[e / 32];
        let q = quantize_affine(x[e], dl, ml, 31);
        let (byte, shift) = q_pos(e);
        out[QS + byte] |= (q & 0x0f) << shift;
        out[QH + e % 32] |= (q >> 4) << (e / 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        b[2..4].copy_from_slice(&0x3C00u16.to_le_bytes()); // dmin = 1.0
        let s = 4;
        b[s] = 2; // sub-block 0: scale 2
        b[s + 4] = 1; // sub-block 0: min 1
                      // sub-block 5: scale 33 = 0b10_0001, min 7
        b[s + 9] = 0x71; // low nibbles: scale 1, min 7
        b[s + 1] = 0x80; // scale top bits 2 (byte j - 4 = 1)
        let (qh, qs) = (16, 48);
        b[qs] = 0x0A; // element 0: low 10
        b[qh] = 0x01; // element 0: qh[0] bit 0 -> +16
                      // element 170 = 128 + 42: high nibble of qs[64 + 10], qh[10] bit 5 (sub-block 5)
        b[qs + 74] = 0x30;
        b[qh + 10] = 0x20;
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 25.0); // 0.5 * 2 * 26 - 1
        assert_eq!(out[1], -1.0); // q = 0
        assert_eq!(out[170], 306.5); // 0.5 * 33 * 19 - 7
        assert_eq!(out[138], 0.0); // low nibble of qs[74] is 0, qh[10] bit 4 clear, #4 zero
        assert_eq!(out[32], 0.0); // sub-block 1: scale = byte 1 & 63 = 0 (its top bits belong to #5)
    }
}
