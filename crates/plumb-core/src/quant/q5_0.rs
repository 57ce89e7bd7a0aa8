//! Q5_0: blocks of 32 elements in 22 bytes: `d` (f16), `qh` (u32, little-endian), `qs[16]`.
//!
//! Element `j` is `d * (q_j - 16)` where the low 4 bits of `q_j` are nibbles as in Q4_0 and
//! bit 4 is bit `j` of `qh`.

use super::{f16_le, inv_or_zero, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + 4 + QK / 2;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..QK / 2 {
        let q = b[6 + j];
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + QK / 2)) & 1) << 4;
        out[j] = (((q & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
        out[j + QK / 2] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max / -16`, `q = min(31, trunc(x / d + 16.5))`.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let (max, _) = signed_absmax(x);
    let d = max / -16.0;
    let id = inv_or_zero(d);
    out[..2].copy_from_slice(&to_f16(d).0);
    let q = |v: f32| ((v * id + 16.5) as i32).clamp(0, 31) as u32;
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let q0 = q(x[j]);
        let q1 = q(x[j + QK / 2]);
        out[6 + j] = ((q0 & 0x0f) | ((q1 & 0x0f) << 4)) as u8;
        qh |= ((q0 >> 4) & 1) << j;
        qh |= ((q1 >> 4) & 1) << (j + QK / 2);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&0x3C00u16.to_le_bytes()); // d = 1.0
                                                           // qh bits 0, 17 and 31 set: bytes 0x01, 0x00, 0x02, 0x80.
        b[2..6].copy_from_slice(&[0x01, 0x00, 0x02, 0x80]);
        b[6] = 0x13; // element 0: 3 | 16, element 16: 1
        b[7] = 0x42; // element 1: 2, element 17: 4 | 16
        b[6 + 15] = 0xF0; // element 15: 0, element 31: 15 | 16
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 3.0); // 19 - 16
        assert_eq!(out[16], -15.0); // 1 - 16
        assert_eq!(out[1], -14.0); // 2 - 16
        assert_eq!(out[17], 4.0); // 20 - 16
        assert_eq!(out[15], -16.0);
        assert_eq!(out[31], 15.0); // 31 - 16
        assert_eq!(out[5], -16.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[0] = -16.0; // d = 1, q = 0
        x[17] = 15.0; // q = 31: nibble 15, qh bit 17
        x[2] = 1.0; // q = 17: nibble 1, qh bit 2
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3C00);
        // Zeros quantize to 16 (nibble 0, qh bit set): every bit but 0 is set.
        assert_eq!(u32::from_le_bytes([b[2], b[3], b[4], b[5]]), !1u32);
        assert_eq!(b[6], 0x00); // x0 -> 0, x16 -> 16
        assert_eq!(b[7], 0xF0); // x1 -> 16, x17 -> 31
        assert_eq!(b[8], 0x01); // x2 -> 17, x18 -> 16
    }
}
