//! Q5_1: blocks of 32 elements in 24 bytes: `d` (f16), `m` (f16), `qh` (u32, little-endian),
//! `qs[16]`.
//!
//! Element `j` is `q_j * d + m`, with `q_j` built from nibbles and `qh` as in Q5_0.

use super::{f16_le, inv_or_zero, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + 2 + 4 + QK / 2;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    let m = f16_le(b[2], b[3]);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..QK / 2 {
        let q = b[8 + j];
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + QK / 2)) & 1) << 4;
        out[j] = ((q & 0x0f) as u32 | h0) as f32 * d + m;
        out[j + QK / 2] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`,
/// `q = trunc((x - min) / d + 0.5)`.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let mut min = f32::MAX;
    let mut max = f32::MIN;
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    let d = (max - min) / 31.0;
    let id = inv_or_zero(d);
    out[..2].copy_from_slice(&to_f16(d).0);
    out[2..4].copy_from_slice(&to_f16(min).0);
    let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 31) as u32;
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let q0 = q(x[j]);
        let q1 = q(x[j + QK / 2]);
        out[8 + j] = ((q0 & 0x0f) | ((q1 & 0x0f) << 4)) as u8;
        qh |= ((q0 >> 4) & 1) << j;
        qh |= ((q1 >> 4) & 1) << (j + QK / 2);
    }
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        b[2..4].copy_from_slice(&0x3C00u16.to_le_bytes()); // m = 1.0
        b[4..8].copy_from_slice(&[0x20, 0x00, 0x10, 0x00]); // qh bits 5 and 20
        b[8 + 5] = 0x21; // element 5: 1 | 16, element 21: 2
        b[8 + 4] = 0x70; // element 4: 0, element 20: 7 | 16
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[5], 9.5); // 17 * 0.5 + 1
        assert_eq!(out[21], 2.0); // 2 * 0.5 + 1
        assert_eq!(out[20], 12.5); // 23 * 0.5 + 1
        assert_eq!(out[4], 1.0);
        assert_eq!(out[0], 1.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[0] = 31.0; // min 0, max 31: d = 1, m = 0
        x[16] = 17.0; // nibble 1, qh bit 16
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3C00);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x0000);
        assert_eq!(
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            (1 << 0) | (1 << 16)
        );
        assert_eq!(b[8], 0x1F);
        assert_eq!(b[9], 0x00);
    }
}
