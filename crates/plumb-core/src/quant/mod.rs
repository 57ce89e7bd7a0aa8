//! Reference (de)quantization of every block format. Naive and frozen: the plumb line that
//! every fast kernel is checked against.
//!
//! Entry points:
//! - [`dequantize_row`]: `src` holds `dst.len() / block_size` whole blocks of `ty`.
//! - [`quantize_row`]: the reverse; every format has a reference quantizer.
//!
//! Each format also has its own module with `dequantize_block` / `quantize_block` working on
//! one block as fixed-size arrays (so they cannot be handed a wrong length), and the block
//! constants `QK` (elements) and `BLOCK_BYTES`. All layouts are little-endian and follow
//! ggml's `block_*` structs byte for byte.
//!
//! The legacy formats (Q4_0 .. Q8_1) and Q8_K quantize with ggml's "_ref" math. The other
//! K-quant quantizers are simple min/max (or max-magnitude) fits, documented in their modules.
//! The MLX affine group formats (`affine`) follow MLX's bit packing; their blocks have
//! run-time sizes (one group) and no fixed-size array functions.
//!
//! Everything here is scalar, safe and single-threaded on purpose.

// The reference code indexes blocks the way the format definitions are written.
#![allow(clippy::needless_range_loop)]

pub mod affine;
pub mod k_quants;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q8_0;
pub mod q8_1;

pub use k_quants::{q2_k, q3_k, q4_k, q5_k, q6_k, q8_k};

use crate::dtype::GgmlType;
use crate::error::{CoreError, Result};

/// Dequantizes one row. `dst.len()` must be a multiple of the block size and `src` must hold
/// exactly the bytes of that many elements.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let expected = ty.row_bytes(dst.len())?;
    if src.len() != expected {
        return Err(CoreError::ByteLength {
            ty: ty.name(),
            n: dst.len(),
            expected,
            got: src.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => dequant_blocks(ty, src, dst, q4_0::dequantize_block)?,
        GgmlType::Q4_1 => dequant_blocks(ty, src, dst, q4_1::dequantize_block)?,
        GgmlType::Q5_0 => dequant_blocks(ty, src, dst, q5_0::dequantize_block)?,
        GgmlType::Q5_1 => dequant_blocks(ty, src, dst, q5_1::dequantize_block)?,
        GgmlType::Q8_0 => dequant_blocks(ty, src, dst, q8_0::dequantize_block)?,
        GgmlType::Q8_1 => dequant_blocks(ty, src, dst, q8_1::dequantize_block)?,
        GgmlType::Q2K => dequant_blocks(ty, src, dst, q2_k::dequantize_block)?,
        GgmlType::Q3K => dequant_blocks(ty, src, dst, q3_k::dequantize_block)?,
        GgmlType::Q4K => dequant_blocks(ty, src, dst, q4_k::dequantize_block)?,
        GgmlType::Q5K => dequant_blocks(ty, src, dst, q5_k::dequantize_block)?,
        GgmlType::Q6K => dequant_blocks(ty, src, dst, q6_k::dequantize_block)?,
        GgmlType::Q8K => dequant_blocks(ty, src, dst, q8_k::dequantize_block)?,
        mlx => {
            let (bits, group) = mlx.affine().ok_or_else(|| chunk_error(mlx))?;
            for (b, o) in src
                .chunks_exact(ty.type_size())
                .zip(dst.chunks_exact_mut(group))
            {
                affine::dequantize_block(bits, b, o);
            }
        }
    }
    Ok(())
}

/// Quantizes one row of `src` into `dst` (exactly `ty.row_bytes(src.len())` bytes).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let expected = ty.row_bytes(src.len())?;
    if dst.len() != expected {
        return Err(CoreError::ByteLength {
            ty: ty.name(),
            n: src.len(),
            expected,
            got: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (c, v) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => quant_blocks(ty, src, dst, q4_0::quantize_block)?,
        GgmlType::Q4_1 => quant_blocks(ty, src, dst, q4_1::quantize_block)?,
        GgmlType::Q5_0 => quant_blocks(ty, src, dst, q5_0::quantize_block)?,
        GgmlType::Q5_1 => quant_blocks(ty, src, dst, q5_1::quantize_block)?,
        GgmlType::Q8_0 => quant_blocks(ty, src, dst, q8_0::quantize_block)?,
        GgmlType::Q8_1 => quant_blocks(ty, src, dst, q8_1::quantize_block)?,
        GgmlType::Q2K => quant_blocks(ty, src, dst, q2_k::quantize_block)?,
        GgmlType::Q3K => quant_blocks(ty, src, dst, q3_k::quantize_block)?,
        GgmlType::Q4K => quant_blocks(ty, src, dst, q4_k::quantize_block)?,
        GgmlType::Q5K => quant_blocks(ty, src, dst, q5_k::quantize_block)?,
        GgmlType::Q6K => quant_blocks(ty, src, dst, q6_k::quantize_block)?,
        GgmlType::Q8K => quant_blocks(ty, src, dst, q8_k::quantize_block)?,
        mlx => {
            let (bits, group) = mlx.affine().ok_or_else(|| chunk_error(mlx))?;
            for (x, o) in src
                .chunks_exact(group)
                .zip(dst.chunks_exact_mut(ty.type_size()))
            {
                affine::quantize_block(bits, x, o);
            }
        }
    }
    Ok(())
}

/// Checks that a block function's array sizes are the ones `dtype` declares for `ty`.
fn check_block<const B: usize, const N: usize>(ty: GgmlType) -> Result<()> {
    if B != ty.type_size() || N != ty.block_size() {
        return Err(CoreError::Shape(format!(
            "{ty}: block function takes {N} elements in {B} bytes, the type declares {} in {}",
            ty.block_size(),
            ty.type_size()
        )));
    }
    Ok(())
}

fn chunk_error(ty: GgmlType) -> CoreError {
    CoreError::Shape(format!("{ty}: a row did not split into whole blocks"))
}

/// Runs a block dequantizer over a row whose lengths were already checked.
fn dequant_blocks<const B: usize, const N: usize>(
    ty: GgmlType,
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; B], &mut [f32; N]),
) -> Result<()> {
    check_block::<B, N>(ty)?;
    for (b, o) in src.chunks_exact(B).zip(dst.chunks_exact_mut(N)) {
        let b: &[u8; B] = b.try_into().map_err(|_| chunk_error(ty))?;
        let o: &mut [f32; N] = o.try_into().map_err(|_| chunk_error(ty))?;
        f(b, o);
    }
    Ok(())
}

/// Runs a block quantizer over a row whose lengths were already checked.
fn quant_blocks<const B: usize, const N: usize>(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    f: fn(&[f32; N], &mut [u8; B]),
) -> Result<()> {
    check_block::<B, N>(ty)?;
    for (x, o) in src.chunks_exact(N).zip(dst.chunks_exact_mut(B)) {
        let x: &[f32; N] = x.try_into().map_err(|_| chunk_error(ty))?;
        let o: &mut [u8; B] = o.try_into().map_err(|_| chunk_error(ty))?;
        f(x, o);
    }
    Ok(())
}

// ---- helpers shared by the format modules ----

/// An f16 stored little-endian, as f32.
pub(crate) fn f16_le(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

/// `v` rounded to f16, as little-endian bytes and as the f32 it decodes to.
pub(crate) fn to_f16(v: f32) -> ([u8; 2], f32) {
    let h = half::f16::from_f32(v);
    (h.to_le_bytes(), h.to_f32())
}

/// The element of largest magnitude, with its sign (the first one on ties), and that magnitude.
pub(crate) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Round to nearest, ties to even (ggml's `nearest_int`).
pub(crate) fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// `1 / d`, or 0 when `d` is 0 (the ggml convention for all-zero blocks).
pub(crate) fn inv_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}
