//! Q8_1: blocks of 32 elements in 36 bytes: `d` (f16), `s` (f16, `d * sum(qs)`), then
//! `qs[32]` (i8). Element `j` is `qs[j] * d`; `s` only serves dot products.

use super::{f16_le, inv_or_zero, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + QK;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    for j in 0..QK {
        out[j] = (b[4 + j] as i8) as f32 * d;
    }
}

/// ggml's `quantize_row_q8_1_ref`: as Q8_0, plus `s = d * sum(q)` (with the f32 `d`).
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let (_, amax) = signed_absmax(x);
    let d = amax / 127.0;
    let id = inv_or_zero(d);
    let mut sum = 0i32;
    for j in 0..QK {
        let q = ((x[j] * id).round() as i32).clamp(-127, 127);
        sum += q;
        out[4 + j] = q as i8 as u8;
    }
    out[..2].copy_from_slice(&to_f16(d).0);
    out[2..4].copy_from_slice(&to_f16(sum as f32 * d).0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x4000u16.to_le_bytes()); // d = 2.0
        b[2..4].copy_from_slice(&0x7BFFu16.to_le_bytes()); // s: not used by dequantization
        b[4 + 2] = 0x80; // -128
        b[4 + 5] = 7;
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[2], -256.0);
        assert_eq!(out[5], 14.0);
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[0] = 254.0; // d = 2
        x[1] = -10.0; // -5
        x[2] = 3.0; // 1.5 -> 2
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x4000); // 2.0
                                                              // s = 2 * (127 - 5 + 2) = 248 = 0x5BC0 in f16
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x5BC0);
        assert_eq!(b[4] as i8, 127);
        assert_eq!(b[5] as i8, -5);
        assert_eq!(b[6] as i8, 2);
    }
}
