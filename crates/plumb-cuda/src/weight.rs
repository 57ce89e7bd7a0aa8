//! Weights on the device: the stored bytes of a GGUF tensor, unchanged, plus their shape.

use cudarc::driver::CudaSlice;
use plumb_core::{GgmlType, HostWeight};
use plumb_ops::{OpError, Result};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::DriverContext;

/// A `rows × cols` weight in its stored format `ty` (row-major, `row_bytes` per row), as the
/// kernels in quant.cuh read it. Invariant: `data.len() == rows * row_bytes`.
pub struct CudaWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
}

impl std::fmt::Debug for CudaWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaWeight({} {}×{})", self.ty, self.rows, self.cols)
    }
}

impl CudaBackend {
    pub(crate) fn upload_weight_impl(&self, w: &HostWeight) -> Result<CudaWeight> {
        if format_suffix(w.ty).is_none() {
            return Err(OpError::Unsupported {
                op: "upload_weight",
                what: format!("{} weights", w.ty),
            });
        }
        let row_bytes = w.ty.row_bytes(w.cols)?;
        let bytes = w.data.as_slice();
        if bytes.len() != row_bytes * w.rows {
            return Err(OpError::Shape {
                op: "upload_weight",
                msg: format!(
                    "{}: {} bytes for {} rows of {row_bytes}",
                    w.name,
                    bytes.len(),
                    w.rows
                ),
            });
        }
        let data = if bytes.is_empty() {
            self.stream.alloc_zeros::<u8>(1)
        } else {
            self.stream.clone_htod(bytes)
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
