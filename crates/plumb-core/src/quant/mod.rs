//! Reference (de)quantization of every block format. Naive and frozen: the plumb line that
//! every fast kernel is checked against.
//!
//! Entry points:
//! - [`dequantize_row`]: `src` holds `dst.len() / block_size` whole blocks of `ty`.
//! - [`quantize_row`]: the reverse, for the formats that have a reference quantizer.

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
        _ => return Err(CoreError::QuantizeUnsupported(ty.name())),
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
        _ => return Err(CoreError::QuantizeUnsupported(ty.name())),
    }
    Ok(())
}
