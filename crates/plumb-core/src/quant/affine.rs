//! MLX's affine group quantization (`mlx.core.quantize`, mode `"affine"`), as plumb stores it.
//!
//! A row is cut into groups of `group` (32, 64 or 128) consecutive elements. Each group has a
//! scale `s`, a bias `b` and one unsigned `bits`-bit code `q` per element (bits 2, 3, 4, 5, 6
//! or 8); element `i` is
//!
//! ```text
//! w_i = s · q_i + b        (f32: the product is rounded, then the sum; no fused multiply-add)
//! ```
//!
//! which is what `mx.dequantize` computes, bit for bit, when the scales and biases are f32.
//! (With f16 or bf16 scales MLX rounds the product and the sum to that type; plumb decodes the
//! 16-bit scale and bias exactly and keeps the arithmetic in f32.)
//!
//! How mlx-lm stores a quantized matrix `[rows, cols]` (three safetensors tensors):
//! - `weight`: uint32 `[rows, cols · bits / 32]`. The codes of a row form one little-endian bit
//!   stream: code `i` occupies stream bits `i·bits .. (i+1)·bits`, least significant bit first,
//!   and stream bit `k` is bit `k % 32` of word `k / 32` (words little-endian). With 3, 5 or 6
//!   bits a code may straddle two words (3 bits: code 10 is bits 30, 31 of word 0 and bit 0 of
//!   word 1).
//! - `scales`, `biases`: `[rows, cols / group]` in the model's float type.
//!
//! plumb's block is one group: `s` (f32 LE), `b` (f32 LE), then the group's `group · bits / 8`
//! bytes of the row's bit stream (a group of 32 codes is `bits` whole words, so a group's codes
//! are a contiguous byte range of the stream). A 4-bit group of 64 is 8 + 32 = 40 bytes.
//! [`pack_mlx_row`] builds a row of blocks from the three tensors' rows.
//!
//! The quantizer is MLX's (`mx.quantize`, affine mode, as its CPU backend computes it, in f32):
//! with `n = 2^bits - 1`, a group's `min` and `max`, the scale starts at
//! `max((max - min) / n, 1e-7)`, negated unless `|min| > |max|`; the edge is `min` when
//! `|min| > |max|`, else `max`. If `q0 = rint(edge / s)` is not zero, `s = edge / q0` and
//! `b = edge` (so the edge value is exact), else `b = 0`. Codes are
//! `clamp(rint((x - b) / s), 0, n)` (`rint`: ties to even). [`quantize_group`] returns `s` and
//! `b` in f32; MLX then stores them in the input's type (bf16 for a bf16 model) while the
//! codes were computed with the f32 values — the directory writer does the same rounding.
//! `fixtures/mlx/affine.safetensors` (made by `scripts/make_mlx_fixture.py`) holds MLX's
//! output on test matrices; the tests match it bit for bit.

use crate::error::{CoreError, Result};

/// Whether `bits` and `group` name an MLX affine format.
pub fn supported(bits: u32, group: usize) -> bool {
    matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) && matches!(group, 32 | 64 | 128)
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Code `i` of a little-endian bit stream of `bits`-bit codes.
pub fn code(stream: &[u8], bits: u32, i: usize) -> u32 {
    let bit = i * bits as usize;
    let (byte, shift) = (bit / 8, bit % 8);
    // A code of at most 8 bits spans at most two bytes.
    let lo = stream[byte] as u32;
    let hi = stream.get(byte + 1).copied().unwrap_or(0) as u32;
    ((lo | (hi << 8)) >> shift) & ((1 << bits) - 1)
}

/// Dequantizes one block (`8 + group · bits / 8` bytes) into `out` (`group` values).
pub fn dequantize_block(bits: u32, block: &[u8], out: &mut [f32]) {
    let (s, b) = (f32_at(block, 0), f32_at(block, 4));
    let codes = &block[8..];
    for (i, o) in out.iter_mut().enumerate() {
        *o = s * code(codes, bits, i) as f32 + b;
    }
}

/// Quantizes `x` (one group) as MLX does (module docs): writes the codes into `codes` (the
/// group's `x.len() · bits / 8` bytes of the bit stream) and returns `(scale, bias)` in f32.
pub fn quantize_group(bits: u32, x: &[f32], codes: &mut [u8]) -> (f32, f32) {
    let n = ((1u32 << bits) - 1) as f32;
    let (min, max) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let from_min = min.abs() > max.abs();
    let mut s = ((max - min) / n).max(1e-7);
    if !from_min {
        s = -s;
    }
    let edge = if from_min { min } else { max };
    let q0 = (edge / s).round_ties_even();
    let mut b = 0.0;
    if q0 != 0.0 {
        s = edge / q0;
        b = edge;
    }
    codes.fill(0);
    for (i, &v) in x.iter().enumerate() {
        let q = ((v - b) / s).round_ties_even().clamp(0.0, n);
        put_code(codes, bits, i, q as u32);
    }
    (s, b)
}

/// Quantizes `x` (one group) into `out` (one block, f32 scale and bias) with
/// [`quantize_group`].
pub fn quantize_block(bits: u32, x: &[f32], out: &mut [u8]) {
    let (s, b) = quantize_group(bits, x, &mut out[8..]);
    out[..4].copy_from_slice(&s.to_le_bytes());
    out[4..8].copy_from_slice(&b.to_le_bytes());
}

/// Writes code `i` (< 2^bits) into a zeroed little-endian bit stream.
fn put_code(stream: &mut [u8], bits: u32, i: usize, q: u32) {
    let bit = i * bits as usize;
    let (byte, shift) = (bit / 8, bit % 8);
    let v = q << shift;
    stream[byte] |= v as u8;
    if let Some(next) = stream.get_mut(byte + 1) {
        *next |= (v >> 8) as u8;
    }
}

/// One row of blocks from one row of MLX's tensors: `codes` (`cols · bits / 8` bytes of the
/// `weight` row), `scales` and `biases` (`cols / group` values, already decoded to f32), into
/// `out` (`cols / group` blocks).
pub fn pack_mlx_row(
    bits: u32,
    group: usize,
    codes: &[u8],
    scales: &[f32],
    biases: &[f32],
    out: &mut [u8],
) -> Result<()> {
    let n_groups = scales.len();
    let code_bytes = group * bits as usize / 8;
    let block = 8 + code_bytes;
    if !supported(bits, group)
        || biases.len() != n_groups
        || codes.len() != n_groups * code_bytes
        || out.len() != n_groups * block
    {
        return Err(CoreError::Shape(format!(
            "MLX {bits}-bit group {group}: {} code bytes, {n_groups} scales, {} biases and {} \
             output bytes do not describe one row",
            codes.len(),
            biases.len(),
            out.len()
        )));
    }
    for (g, o) in out.chunks_exact_mut(block).enumerate() {
        o[..4].copy_from_slice(&scales[g].to_le_bytes());
        o[4..8].copy_from_slice(&biases[g].to_le_bytes());
        o[8..].copy_from_slice(&codes[g * code_bytes..(g + 1) * code_bytes]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bit_codes_straddle_words() {
        // Codes 0..8 repeated, 3 bits each: code 10 (value 2) is stream bits 30..33.
        let mut stream = vec![0u8; 12];
        for i in 0..32 {
            put_code(&mut stream, 3, i, (i % 8) as u32);
        }
        assert_eq!(code(&stream, 3, 10), 2);
        let word0 = u32::from_le_bytes([stream[0], stream[1], stream[2], stream[3]]);
        let word1 = u32::from_le_bytes([stream[4], stream[5], stream[6], stream[7]]);
        // Value 2 = 0b010: bit 30 is 0, bit 31 is 1, bit 32 (word 1, bit 0) is 0.
        assert_eq!(word0 >> 30, 0b10);
        assert_eq!(word1 & 1, 0);
        // Code 0..7 in order: word 0 starts 000 001 010 011 (LSB first).
        assert_eq!(word0 & 0xfff, 0b011_010_001_000);
        for i in 0..32 {
            assert_eq!(code(&stream, 3, i), (i % 8) as u32);
        }
    }

    #[test]
    fn hand_computed_block() {
        // 4 bits, group 32: s = 0.5, b = -1, code 3 at element 1 and 15 at element 31.
        let mut block = vec![0u8; 8 + 16];
        block[..4].copy_from_slice(&0.5f32.to_le_bytes());
        block[4..8].copy_from_slice(&(-1.0f32).to_le_bytes());
        block[8] = 0x30; // element 0: 0, element 1: 3
        block[8 + 15] = 0xf0; // element 31: 15
        let mut out = vec![f32::NAN; 32];
        dequantize_block(4, &block, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[1], 0.5);
        assert_eq!(out[31], 6.5);
    }

    #[test]
    fn quantizer_round_trips_within_a_step() {
        // The edge value is exact; the scale is stretched to make it so, by at most a
        // factor of at most n / (n - 1/2); on this row every element lands within half a step.
        for bits in [2, 3, 4, 5, 6, 8] {
            let x: Vec<f32> = (0..64)
                .map(|i| ((i * 37 % 64) as f32 - 20.0) / 7.0)
                .collect();
            let mut block = vec![0u8; 8 + 64 * bits as usize / 8];
            quantize_block(bits, &x, &mut block);
            let mut y = vec![0f32; 64];
            dequantize_block(bits, &block, &mut y);
            let s = f32_at(&block, 0).abs();
            assert_eq!(
                y[x.iter().position(|&v| v == 43.0 / 7.0).unwrap()],
                43.0 / 7.0
            );
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= 0.5 * s * 1.0001, "{bits} bits: {a} -> {b}");
            }
        }
    }

    #[test]
    fn pack_rejects_mismatched_rows() {
        let mut out = vec![0u8; 40];
        assert!(pack_mlx_row(4, 64, &[0; 32], &[1.0], &[0.0], &mut out).is_ok());
        assert!(pack_mlx_row(4, 64, &[0; 31], &[1.0], &[0.0], &mut out).is_err());
        assert!(pack_mlx_row(7, 64, &[0; 56], &[1.0], &[0.0], &mut out).is_err());
        assert!(pack_mlx_row(4, 64, &[0; 32], &[1.0], &[], &mut out).is_err());
    }
}
