//! Q6_K: super-blocks of 256 elements in 210 bytes:
//! `ql[128]`, `qh[64]`, `scales[16]` (i8), `d` (f16).
//!
//! Sixteen sub-blocks of 16 elements with signed 8-bit scales; element `e` is
//! `d * scales[e / 16] * (q_e - 32)` with the 6-bit `q_e` in 0..64.
//! Each half of 128 elements `e = 128 * h + 32 * k + l` (`k < 4`, `l < 32`) uses 64 bytes of
//! `ql` and 32 of `qh`: the low 4 bits of `q_e` are the low (`k < 2`) or high (`k >= 2`)
//! nibble of `ql[64 * h + 32 * (k % 2) + l]`, and its high 2 bits are bits `2k..2k+2` of
//! `qh[32 * h + l]`.

use super::QK_K;
use crate::quant::{f16_le, inv_or_zero, nearest_int, signed_absmax, to_f16};

/// Elements per block.
pub const QK: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

const QH: usize = QK_K / 2;
const SCALES: usize = QH + QK_K / 4;
const D: usize = SCALES + QK_K / 16;

/// For element `e`: (byte of `ql`, shift in it, byte of `qh`, shift in it).
fn q_pos(e: usize) -> (usize, usize, usize, usize) {
    let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
    (64 * h + 32 * (k % 2) + l, 4 * (k / 2), 32 * h + l, 2 * k)
}

pub fn dequantize_block(b: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_le(b[D], b[D + 1]);
    for e in 0..QK {
        let (lb, ls, hb, hs) = q_pos(e);
        let low = (b[lb] >> ls) & 0x0f;
        let high = (b[QH + hb] >> hs) & 3;
        let q = (low | (high << 4)) as i32 - 32;
        let sc = b[SCALES + e / 16] as i8;
        out[e] = d * sc as f32 * q as f32;
    }
}

/// A simple fit, not llama.cpp's search (`make_qx_quants`): each sub-block's element of
/// largest magnitude maps to -32 (`scale = max / -32`); the scales are quantized to signed
/// 8 bits (`d = max scale / -128`), and the elements are rounded against the quantized scales
/// and clamped to -32..32.
pub fn quantize_block(x: &[f32; QK], out: &mut [u8; BLOCK_BYTES]) {
    let mut scales = [0f32; 16];
    for i in 0..16 {
        scales[i] = signed_absmax(&x[16 * i..16 * i + 16]).0 / -32.0;
    }
    let (ms, _) = signed_absmax(&scales);
    let (db, d) = to_f16(ms / -128.0);
    let id = inv_or_zero(d);
    out.fill(0);
    let mut sq = [0i8; 16];
    for i in 0..16 {
        sq[i] = nearest_int(scales[i] * id).clamp(-128, 127) as i8;
        out[SCALES + i] = sq[i] as u8;
    }
    out[D..D + 2].copy_from_slice(&db);
    for e in 0..QK {
        let dl = d * sq[e / 16] as f32;
        let q = if dl != 0.0 {
            nearest_int(x[e] / dl).clamp(-32, 31)
        } else {
            0
        };
        let stored = (q + 32) as u8; // 0..64
        let (lb, ls, hb, hs) = q_pos(e);
        out[lb] |= (stored & 0x0f) << ls;
        out[QH + hb] |= (stored >> 4) << hs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[208..210].copy_from_slice(&0x3400u16.to_le_bytes()); // d = 0.25
        let (qh, sc) = (128, 192);
        b[sc] = 4;
        b[sc + 2] = 1;
        b[sc + 4] = 0xFE; // -2
        b[sc + 9] = 3;
        b[sc + 15] = 0x80; // -128
                           // element 0: low nibble of ql[0] = 5, qh[0] bits 0..2 = 2 -> 37 - 32 = 5
                           // element 64 (k = 2): high nibble of ql[0] = 10, qh[0] bits 4..6 = 0 -> -22
        b[0] = 0xA5;
        b[qh] = 0x02;
        // element 45 (k = 1, l = 13): low nibble of ql[45] = 15, qh[13] bits 2..4 = 3 -> 31
        b[45] = 0x0F;
        b[qh + 13] = 0x0C;
        // element 150 (h = 1, k = 0, l = 22): low nibble of ql[86] = 1, qh[54] bits 0..2 = 1
        b[86] = 0x01;
        b[qh + 54] = 0x01;
        // element 255 (h = 1, k = 3, l = 31): high nibble of ql[127] = 3, qh[63] bits 6..8 = 1
        b[127] = 0x30;
        b[qh + 63] = 0x40;
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 5.0); // 0.25 * 4 * 5
        assert_eq!(out[64], 11.0); // 0.25 * -2 * -22
        assert_eq!(out[45], 7.75); // 0.25 * 1 * 31
        assert_eq!(out[150], -11.25); // 0.25 * 3 * (17 - 32)
        assert_eq!(out[255], 416.0); // 0.25 * -128 * (19 - 32)
        assert_eq!(out[1], -32.0); // 0.25 * 4 * (0 - 32)
        assert_eq!(out[32], -8.0); // sub-block 2, all bits 0: 0.25 * 1 * (0 - 32)
    }
}
