//! GGUF v2/v3 reading and writing.
//!
//! [`GgufFile`] memory-maps (or wraps) a whole file and parses its header; tensor data is
//! never copied, [`GgufFile::tensor_bytes`] and [`GgufFile::weight`] are views into it.
//! [`GgufWriter`] builds a file, with tensor data either given as bytes or streamed.
//!
//! Strings: keys and tensor names must be valid UTF-8 (an error otherwise); metadata string
//! values are decoded lossily (invalid sequences become U+FFFD) so that one odd token does not
//! make a whole model unreadable.
//!
//! The reader also rejects duplicate metadata keys and tensor names, arrays nested more than
//! [`MAX_ARRAY_DEPTH`] deep, and tensors with 0 or more than 4 dimensions. A bool is true when
//! its byte is nonzero.

mod error;
mod reader;
pub mod value;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use plumb_core::{Bytes, GgmlType, HostWeight};

pub use error::GgufError;
pub use reader::MAX_ARRAY_DEPTH;
pub use value::{Value, ValueType};
pub use writer::{FillFn, GgufWriter};

/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// The metadata key that sets the alignment (a u32, a nonzero power of two).
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// A parsed GGUF file and the bytes it views.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: usize,
    /// In file order.
    pub metadata: Vec<(String, Value)>,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    /// File offset of the tensor data section. With no tensors it may exceed the file size.
    pub data_offset: usize,
    bytes: Bytes,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

/// Where and what one tensor is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF's `ne`: `dims[0]` is the contiguous dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Relative to the data section.
    pub offset: u64,
    pub n_bytes: usize,
    pub n_elements: u64,
}

/// Element count and byte size of a tensor, validating its shape.
pub(crate) fn tensor_size(
    name: &str,
    ty: GgmlType,
    dims: &[u64],
) -> Result<(u64, usize), GgufError> {
    if dims.is_empty() || dims.len() > reader::MAX_DIMS as usize {
        return Err(GgufError::BadDimCount {
            name: name.to_string(),
            n_dims: dims.len().try_into().unwrap_or(u32::MAX),
            offset: None,
        });
    }
    let overflow = || GgufError::DimOverflow {
        name: name.to_string(),
        dims: dims.to_vec(),
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let rows = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let cols = usize::try_from(dims[0]).map_err(|_| overflow())?;
    let rows = usize::try_from(rows).map_err(|_| overflow())?;
    // Computed here with checked arithmetic (GgmlType::row_bytes does not check overflow).
    if cols.checked_rem(ty.block_size()) != Some(0) {
        return Err(GgufError::NotBlockAligned {
            name: name.to_string(),
            ty: ty.name(),
            cols: dims[0],
            block: ty.block_size(),
        });
    }
    let row_bytes = (cols / ty.block_size())
        .checked_mul(ty.type_size())
        .ok_or_else(overflow)?;
    let n_bytes = row_bytes.checked_mul(rows).ok_or_else(overflow)?;
    Ok((n_elements, n_bytes))
}

impl GgufFile {
    /// Memory-maps the file at `path` and parses it. Tensor data is not read until used.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as any `Bytes` view of it. Like every
        // mmap-based model loader we rely on the file not being truncated or modified while
        // mapped (doing so is outside what this library can guard against).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_bytes(Bytes::new(Arc::new(map))).map_err(|e| GgufError::InFile {
            path: path.to_path_buf(),
            inner: Box::new(e),
        })
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Bytes) -> Result<GgufFile, GgufError> {
        reader::parse(bytes)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: v.value_type(),
            summary: v.summary(),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// Any integer type holding a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
    }

    /// Floats and integers.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| Self::wrong(key, "a number", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "an array", v))
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .filter(|t| t.name == name)
    }

    /// A zero-copy view of a tensor's data. `info` must come from this file (every tensor of
    /// the file was bounds-checked when parsed); one that does not fit gives an empty view.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Bytes {
        usize::try_from(info.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_offset))
            .and_then(|start| self.bytes.slice(start, info.n_bytes).ok())
            .unwrap_or_else(|| Bytes::from_vec(Vec::new()))
    }

    /// The tensor `name` as a matrix: `cols = dims[0]`, `rows` = the product of the other
    /// dimensions (1 for a 1-D tensor).
    pub fn weight(&self, name: &str) -> Result<HostWeight, GgufError> {
        let info = self
            .tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let overflow = || GgufError::DimOverflow {
            name: name.to_string(),
            dims: info.dims.clone(),
        };
        let (&cols, rest) = info.dims.split_first().ok_or_else(overflow)?;
        let cols = usize::try_from(cols).map_err(|_| overflow())?;
        let rows = rest
            .iter()
            .try_fold(1usize, |acc, &d| {
                usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
            })
            .ok_or_else(overflow)?;
        HostWeight::new(name, info.ty, rows, cols, self.tensor_bytes(info)).map_err(|source| {
            GgufError::Weight {
                name: name.to_string(),
                source,
            }
        })
    }

    pub fn file_size(&self) -> usize {
        self.bytes.len()
    }
}
