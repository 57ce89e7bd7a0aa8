//! Weights on the device: a GGUF tensor's bytes, in their stored layout or repacked so that the
//! matvec can read the quants with aligned 16-byte loads (layouts in kernels/quant.cuh).

use cudarc::driver::CudaSlice;
use plumb_core::{GgmlType, HostWeight};
use plumb_ops::{OpError, Result};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::MATVEC_MAX_N;

/// A `rows × cols` weight in format `ty`, `row_bytes` per row on the device (row-major), as
/// the kernels in quant.cuh read it. Invariant: `data.len() == rows * row_bytes` (at least 1).
pub struct CudaWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes per row on the device: the stored row size, or the repacked one (a multiple of
    /// 16) for the formats `repacked` names.
    pub row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
}

impl std::fmt::Debug for CudaWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaWeight({} {}×{})", self.ty, self.rows, self.cols)
    }
}

/// How a repacked format splits its block: (block bytes, [(offset, len) of each field in the
/// block, in the order the fields are laid out along the row]). Each field of every block of a
/// row goes into its own region (all blocks' first fields, then all blocks' second fields, ...).
fn repacked(ty: GgmlType) -> Option<(usize, &'static [(usize, usize)])> {
    match ty {
        // d(2) qs(16) -> [qs][d]
        GgmlType::Q4_0 => Some((18, &[(2, 16), (0, 2)])),
        // d(2) m(2) qs(16) -> [qs][d m]
        GgmlType::Q4_1 => Some((20, &[(4, 16), (0, 4)])),
        // d(2) qs(32) -> [qs][d]
        GgmlType::Q8_0 => Some((34, &[(2, 32), (0, 2)])),
        // ql(128) qh(64) scales(16) d(2) -> [ql qh][scales][d]
        GgmlType::Q6K => Some((210, &[(0, 192), (192, 16), (208, 2)])),
        _ => None,
    }
}

/// The device row size of `ty` for a stored row of `stored` bytes.
fn device_row_bytes(ty: GgmlType, stored: usize) -> usize {
    if repacked(ty).is_some() {
        stored.div_ceil(16) * 16
    } else {
        stored
    }
}

/// Repacks `rows` stored rows of `ty` into the device layout (see quant.cuh). Q4_0 with 4096
/// columns: 128 blocks of 18 bytes -> 2048 bytes of quants, then 256 bytes of scales; block
/// 5's quants (stored bytes 5·18 + 2 ..+16) land at 80 ..96, its d (5·18 ..+2) at 2048 + 10.
fn repack(ty: GgmlType, src: &[u8], rows: usize, stored: usize, out_row: usize) -> Vec<u8> {
    let Some((bb, fields)) = repacked(ty) else {
        return src.to_vec();
    };
    let nb = stored / bb;
    let mut out = vec![0u8; rows * out_row];
    for (s, o) in src.chunks_exact(stored).zip(out.chunks_exact_mut(out_row)) {
        let mut region = 0;
        for &(off, len) in fields {
            for b in 0..nb {
                let from = &s[b * bb + off..b * bb + off + len];
                o[region + b * len..region + (b + 1) * len].copy_from_slice(from);
            }
            region += nb * len;
        }
    }
    out
}

impl CudaBackend {
    pub(crate) fn upload_weight_impl(&self, w: &HostWeight) -> Result<CudaWeight> {
        if format_suffix(w.ty).is_none() {
            return Err(OpError::Unsupported {
                op: "upload_weight",
                what: format!("{} weights", w.ty),
            });
        }
        let stored = w.ty.row_bytes(w.cols)?;
        let bytes = w.data.as_slice();
        if bytes.len() != stored * w.rows {
            return Err(OpError::Shape {
                op: "upload_weight",
                msg: format!(
                    "{}: {} bytes for {} rows of {stored}",
                    w.name,
                    bytes.len(),
                    w.rows
                ),
            });
        }
        // The matvec's q8 activations must hold MATVEC_MAX_N rows of this weight's columns;
        // growing them here keeps allocations out of recorded steps.
        self.q8_reserve(MATVEC_MAX_N * w.cols)?;
        let row_bytes = device_row_bytes(w.ty, stored);
        let data = if bytes.is_empty() {
            self.stream.alloc_zeros::<u8>(1)
        } else if row_bytes == stored && repacked(w.ty).is_none() {
            self.stream.clone_htod(bytes)
        } else {
            self.stream
                .clone_htod(&repack(w.ty, bytes, w.rows, stored, row_bytes))
        }
        .ctx(|| format!("uploading weight {} ({} bytes)", w.name, bytes.len()))?;
        Ok(CudaWeight {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            row_bytes,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_rows_split_quants_from_scales() {
        // Two rows of 64 columns: 2 blocks each, block b of row r filled with 10·r + b.
        let mut src = Vec::new();
        for r in 0..2u8 {
            for b in 0..2u8 {
                src.extend(std::iter::repeat_n(10 * r + b, 18));
            }
        }
        let out = repack(
            GgmlType::Q4_0,
            &src,
            2,
            36,
            device_row_bytes(GgmlType::Q4_0, 36),
        );
        assert_eq!(out.len(), 2 * 48);
        let row1 = &out[48..];
        assert!(row1[..16].iter().all(|&v| v == 10));
        assert!(row1[16..32].iter().all(|&v| v == 11));
        assert_eq!(&row1[32..36], &[10, 10, 11, 11]);
        assert!(row1[36..].iter().all(|&v| v == 0));
    }

    #[test]
    fn q6_k_keeps_every_byte() {
        let src: Vec<u8> = (0..420u32).map(|i| (i * 7 + 3) as u8).collect();
        let out = repack(
            GgmlType::Q6K,
            &src,
            1,
            420,
            device_row_bytes(GgmlType::Q6K, 420),
        );
        assert_eq!(out.len(), 432);
        // Block 1's ql/qh, scales and d.
        assert_eq!(&out[192..384], &src[210..402]);
        assert_eq!(&out[384 + 16..384 + 32], &src[402..418]);
        assert_eq!(&out[416 + 2..416 + 4], &src[418..420]);
        let mut a = out[..432].to_vec();
        a.sort_unstable();
        let mut b = src.clone();
        b.extend([0u8; 12]);
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
