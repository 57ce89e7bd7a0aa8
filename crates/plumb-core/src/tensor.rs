//! Host-side weights: a 2-D matrix in its stored format, viewing a shared byte source
//! (a memory-mapped file or an owned buffer) without copying it.

use std::sync::Arc;

use crate::dtype::GgmlType;
use crate::error::{CoreError, Result};

/// A cheaply clonable view into shared, immutable bytes.
#[derive(Clone)]
pub struct Bytes {
    source: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

impl Bytes {
    /// Wraps a whole owner (a `Vec<u8>`, a memory map, ...).
    pub fn new(source: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        let len = (*source).as_ref().len();
        Bytes {
            source,
            start: 0,
            len,
        }
    }

    pub fn from_vec(v: Vec<u8>) -> Self {
        Self::new(Arc::new(v))
    }

    /// A sub-view; an error if it would reach past the end.
    pub fn slice(&self, start: usize, len: usize) -> Result<Bytes> {
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| {
                CoreError::Shape(format!(
                    "byte range {start}+{len} is outside a buffer of {} bytes",
                    self.len
                ))
            })?;
        let _ = end;
        Ok(Bytes {
            source: self.source.clone(),
            start: self.start + start,
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.source).as_ref()[self.start..self.start + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len)
    }
}

/// A weight matrix of `rows × cols` elements stored row-major in `ty`
/// (GGUF's `ne[0]` is `cols`, the contiguous dimension; `ne[1]` is `rows`).
/// 1-D weights (norms, biases) have `rows == 1`.
#[derive(Clone, Debug)]
pub struct HostWeight {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl HostWeight {
    /// Checks that `data` holds exactly `rows` rows of `cols` elements of `ty`.
    pub fn new(
        name: impl Into<String>,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Bytes,
    ) -> Result<Self> {
        let name = name.into();
        let row = ty.row_bytes(cols)?;
        let expected = row
            .checked_mul(rows)
            .ok_or_else(|| CoreError::Shape(format!("{name}: {rows} rows of {cols} overflow")))?;
        if data.len() != expected {
            return Err(CoreError::ByteLength {
                ty: ty.name(),
                n: rows * cols,
                expected,
                got: data.len(),
            });
        }
        Ok(HostWeight {
            name,
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Builds an F32 weight from values (used by tests and synthetic models).
    pub fn from_f32(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<Self> {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Self::new(name, GgmlType::F32, rows, cols, Bytes::from_vec(bytes))
    }

    pub fn row_bytes(&self) -> usize {
        // cols was validated in `new`.
        self.ty.row_bytes(self.cols).unwrap_or(0)
    }

    /// The stored bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data.as_slice()[r * rb..(r + 1) * rb]
    }

    /// Dequantizes row `r` into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        crate::quant::dequantize_row(self.ty, self.row(r), out)
    }

    /// The whole matrix as f32 (for small weights and tests).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.rows * self.cols];
        for r in 0..self.rows {
            self.dequantize_row(r, &mut out[r * self.cols..(r + 1) * self.cols])?;
        }
        Ok(out)
    }
}
