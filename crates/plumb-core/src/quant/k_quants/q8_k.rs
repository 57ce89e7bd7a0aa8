//! Q8_K: super-blocks of 256 elements in 292 bytes: `d` (f32), `qs[256]` (i8),
//! `bsums[16]` (i16, the sum of each 16 `qs`). Element `e` is `d * qs[e]`; `bsums` only
//! serves dot products with the other K-quants.

use super::QK_K;
use crate::quant::{nearest_int, signed_absmax};

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

const QS: usize = 4;
const BSUMS: usize = QS + QK_K;

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for e in 0..QK {
        out[e] = d * (b[QS + e] as i8) as f32;
    }
}

/// ggml's `quantize_row_q8_K_ref`: the element of largest magnitude maps to -127
/// (`iscale = -127 / max`, `q = min(127, nearest_int(iscale * x))`, `d = 1 / iscale`); an
/// all-zero block gets `d = 0`.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    out.fill(0);
    let (max, amax) = signed_absmax(x);
    if amax == 0.0 {
        return;
    }
    let iscale = -127.0 / max;
    for e in 0..QK {
        out[QS + e] = nearest_int(iscale * x[e]).clamp(-128, 127) as i8 as u8;
    }
    for i in 0..QK / 16 {
        let sum: i32 = (0..16).map(|l| out[QS + 16 * i + l] as i8 as i32).sum();
        out[BSUMS + 2 * i..BSUMS + 2 * i + 2].copy_from_slice(&(sum as i16).to_le_bytes());
    }
    out[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..4].copy_from_slice(&0.5f32.to_le_bytes());
        b[4] = 0xFF; // -1
        b[4 + 255] = 100;
        b[260..262].copy_from_slice(&1234i16.to_le_bytes()); // bsums: not used here
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], -0.5);
        assert_eq!(out[255], 50.0);
        assert_eq!(out[1], 0.0);
    }

    #[test]
    fn hand_computed_quantize() {
        let mut x = [0.0f32; QK];
        x[..16].fill(1.0);
        x[16] = -127.0; // largest magnitude: iscale = 1, d = 1
        x[17] = 2.5; // ties to even: 2
        x[255] = 3.5; // ties to even: 4
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        assert_eq!(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), 1.0);
        assert_eq!(b[4] as i8, 1);
        assert_eq!(b[4 + 16] as i8, -127);
        assert_eq!(b[4 + 17] as i8, 2);
        assert_eq!(b[4 + 255] as i8, 4);
        let bsum = |i: usize| i16::from_le_bytes([b[260 + 2 * i], b[261 + 2 * i]]);
        assert_eq!(bsum(0), 16);
        assert_eq!(bsum(1), -125); // -127 + 2
        assert_eq!(bsum(15), 4);
        assert_eq!(bsum(2), 0);
    }
}
