//! Errors of the GGUF reader and writer. Each one names what was wrong and, for malformed
//! files, the byte offset where the reader found it.

use std::path::PathBuf;

use plumb_core::CoreError;
use thiserror::Error;

use super::value::ValueType;

#[derive(Debug, Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A parse error of the file at `path` (from [`super::GgufFile::open`]).
    /// [`GgufError::inner`] gives the underlying error.
    #[error("{}: {inner}", path.display())]
    InFile {
        path: PathBuf,
        inner: Box<GgufError>,
    },

    #[error(
        "not a GGUF file: magic is {found:02x?} ({}), expected \"GGUF\"",
        String::from_utf8_lossy(found)
    )]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {0} (this reader supports versions 2 and 3)")]
    UnsupportedVersion(u32),

    #[error("big-endian GGUF files (version {0} byte-swapped) are not supported")]
    BigEndian(u32),

    #[error("truncated GGUF: reading {what} at byte {offset} needs {needed} bytes, but only {available} remain")]
    Truncated {
        what: String,
        offset: usize,
        needed: u64,
        available: usize,
    },

    #[error("{what} at byte {offset} declares {count} items or bytes, more than the {remaining} bytes left in the file can hold")]
    CountTooLarge {
        what: String,
        offset: usize,
        count: u64,
        remaining: usize,
    },

    #[error("unknown GGUF metadata value type {id} at byte {offset}")]
    UnknownValueType { id: u32, offset: usize },

    #[error("GGUF metadata arrays nested more than {max} deep at byte {offset}")]
    NestingTooDeep { max: usize, offset: usize },

    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: usize },

    #[error("duplicate metadata key {key:?} at byte {offset}")]
    DuplicateKey { key: String, offset: usize },

    #[error("general.alignment must be a nonzero power of two that fits in a u32, got {0}")]
    BadAlignment(String),

    /// `offset` is where the tensor info starts (None for the writer).
    #[error(
        "tensor {name:?}{} has {n_dims} dimensions; GGUF allows 1 to 4",
        at_byte(offset)
    )]
    BadDimCount {
        name: String,
        n_dims: u32,
        offset: Option<usize>,
    },

    #[error("tensor {name:?}: the element count of dimensions {dims:?} overflows")]
    DimOverflow { name: String, dims: Vec<u64> },

    #[error("tensor {name:?} (info at byte {offset}) has unknown type id {id}")]
    UnknownTensorType {
        name: String,
        id: u32,
        offset: usize,
    },

    #[error(
        "tensor {name:?}: a row of {cols} elements is not a whole number of {ty} blocks of {block}"
    )]
    NotBlockAligned {
        name: String,
        ty: &'static str,
        cols: u64,
        block: usize,
    },

    #[error(
        "tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: usize,
    },

    #[error("tensor {name:?}: its {n_bytes} bytes at data offset {offset} (file byte {data_offset} + {offset}) lie past the end of the {file_size}-byte file")]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        n_bytes: usize,
        data_offset: usize,
        file_size: usize,
    },

    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),

    #[error("tensor {name:?}: {ty} is not a GGUF type")]
    NotGgufType { name: String, ty: &'static str },

    #[error("metadata key {0:?} is missing")]
    MissingKey(String),

    #[error("metadata key {key:?}: expected {expected}, found {found:?} ({summary})")]
    WrongType {
        key: String,
        expected: &'static str,
        found: ValueType,
        summary: String,
    },

    #[error("tensor {0:?} is missing")]
    MissingTensor(String),

    #[error("tensor {name:?}: {source}")]
    Weight {
        name: String,
        #[source]
        source: CoreError,
    },

    #[error("tensor {name:?}: expected {expected} bytes of data, got {got}")]
    DataLength {
        name: String,
        expected: usize,
        got: usize,
    },

    #[error("tensor {name:?}: the fill function failed: {source}")]
    Fill {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("metadata key {key:?}: {reason}")]
    InvalidValue { key: String, reason: String },

    #[error("writing GGUF: {0}")]
    Write(#[source] std::io::Error),
}

impl GgufError {
    /// The error without the [`GgufError::InFile`] wrapper that names the path.
    pub fn inner(&self) -> &GgufError {
        match self {
            GgufError::InFile { inner, .. } => inner.inner(),
            other => other,
        }
    }

    pub(crate) fn truncated(
        what: impl Into<String>,
        offset: usize,
        needed: u64,
        available: usize,
    ) -> Self {
        GgufError::Truncated {
            what: what.into(),
            offset,
            needed,
            available,
        }
    }
}

fn at_byte(offset: &Option<usize>) -> String {
    offset.map_or_else(String::new, |o| format!(" (info at byte {o})"))
}
