//! Q4_0: blocks of 32 elements in 18 bytes: `d` (f16), then `qs[16]` nibbles.
//!
//! Element `j` is `d * (q_j - 8)`, where `q_j` is the low nibble of `qs[j]` for `j < 16` and the
//! high nibble of `qs[j - 16]` for `j >= 16`.

use super::{f16_le, inv_or_zero, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + QK / 2;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    for j in 0..QK / 2 {
        let q = b[2 + j];
        out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        out[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// ggml's `quantize_row_q4_0_ref`: the element of largest magnitude maps to -8,
/// `d = max / -8`, `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = inv_or_zero(d);
    let (db, _) = to_f16(d);
    out[..2].copy_from_slice(&db);
    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    for j in 0..QK / 2 {
        out[2 + j] = q(x[j]) | (q(x[j + QK / 2]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0x88u8; BLOCK_BYTES]; // every nibble 8 -> 0.0
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        b[2] = 0x9A; // element 0: 10, element 16: 9
        b[2 + 15] = 0x0F; // element 15: 15, element 31: 0
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 1.0); // (10 - 8) * 0.5
        assert_eq!(out[16], 0.5); // (9 - 8) * 0.5
        assert_eq!(out[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(out[31], -4.0); // (0 - 8) * 0.5
        assert_eq!(out[1], 0.0);
        assert_eq!(out[20], 0.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[0] = -8.0; // largest magnitude: d = 1, q = 0
        x[1] = 4.0; // q = trunc(12.5) = 12
        x[16] = 7.0; // q = 15
        x[17] = 100.0 / 128.0; // 0.78: q = trunc(9.28) = 9
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3C00); // d = 1.0
        assert_eq!(b[2], 0xF0); // low 0 (x0), high 15 (x16)
        assert_eq!(b[3], 0x9C); // low 12 (x1), high 9 (x17)
        assert_eq!(b[4], 0x88); // zeros -> 8
    }
}
