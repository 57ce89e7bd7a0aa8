//! Q4_1: blocks of 32 elements in 20 bytes: `d` (f16), `m` (f16), then `qs[16]` nibbles.
//!
//! Element `j` is `q_j * d + m`, with the nibble order of Q4_0 (low nibbles are elements
//! 0..16, high nibbles 16..32).

use super::{f16_le, inv_or_zero, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + QK / 2;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    let m = f16_le(b[2], b[3]);
    for j in 0..QK / 2 {
        let q = b[4 + j];
        out[j] = (q & 0x0f) as f32 * d + m;
        out[j + QK / 2] = (q >> 4) as f32 * d + m;
    }
}

/// ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`,
/// `q = min(15, trunc((x - min) / d + 0.5))`.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let mut min = f32::MAX;
    let mut max = f32::MIN;
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    let d = (max - min) / 15.0;
    let id = inv_or_zero(d);
    out[..2].copy_from_slice(&to_f16(d).0);
    out[2..4].copy_from_slice(&to_f16(min).0);
    let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
    for j in 0..QK / 2 {
        out[4 + j] = q(x[j]) | (q(x[j + QK / 2]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x3400u16.to_le_bytes()); // d = 0.25
        b[2..4].copy_from_slice(&0xBC00u16.to_le_bytes()); // m = -1.0
        b[4 + 3] = 0x5C; // element 3: 12, element 19: 5
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[3], 2.0); // 12 * 0.25 - 1
        assert_eq!(out[19], 0.25); // 5 * 0.25 - 1
        assert_eq!(out[0], -1.0);
        assert_eq!(out[31], -1.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [1.0f32; QK];
        x[0] = 1.0; // min
        x[1] = 16.0; // max: d = 1, m = 1
        x[16] = 4.4; // q = trunc(3.4 + 0.5) = 3
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3C00);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x3C00);
        assert_eq!(b[4], 0x30);
        assert_eq!(b[5], 0x0F);
    }
}
