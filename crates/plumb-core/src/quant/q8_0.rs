//! Q8_0: blocks of 32 elements in 34 bytes: `d` (f16), then `qs[32]` (i8). Element `j` is
//! `qs[j] * d`.

use super::{f16_le, inv_or_zero, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + QK;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    for j in 0..QK {
        out[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = round(x / d)` (half away from 0).
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let (_, amax) = signed_absmax(x);
    let d = amax / 127.0;
    let id = inv_or_zero(d);
    out[..2].copy_from_slice(&to_f16(d).0);
    for j in 0..QK {
        out[2 + j] = ((x[j] * id).round() as i32).clamp(-127, 127) as i8 as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        b[2] = 0xFD; // -3
        b[2 + 31] = 127;
        b[2 + 7] = 0x80; // -128
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], -1.5);
        assert_eq!(out[31], 63.5);
        assert_eq!(out[7], -64.0);
        assert_eq!(out[1], 0.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[0] = -127.0; // amax 127: d = 1
        x[1] = 2.5; // rounds away from zero: 3
        x[2] = -0.5; // -1
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3C00);
        assert_eq!(b[2] as i8, -127);
        assert_eq!(b[3] as i8, 3);
        assert_eq!(b[4] as i8, -1);
        assert_eq!(b[5], 0);
    }
}
