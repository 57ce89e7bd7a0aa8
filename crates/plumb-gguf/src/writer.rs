//! Building GGUF files: metadata, then tensors given as bytes or streamed by a closure.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use plumb_core::{Bytes, GgmlType};

use super::error::GgufError;
use super::reader::{alignment_from, MAGIC, MAX_ARRAY_DEPTH};
use super::value::Value;
use super::{tensor_size, DEFAULT_ALIGNMENT, KEY_ALIGNMENT};

/// Streams a tensor's data; it must write exactly the tensor's byte size.
pub type FillFn = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

enum Data {
    Bytes(Bytes),
    Fill(FillFn),
}

struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    n_bytes: usize,
    data: Data,
}

/// Builds a GGUF v3 file. Tensor data is laid out in the order tensors were added, each at a
/// multiple of the alignment (32, or `general.alignment` if that key was added).
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a key, or replaces its value in place if it was already added.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key, value)),
        }
    }

    fn check_new(&self, name: &str, ty: GgmlType, dims: &[u64]) -> Result<usize, GgufError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor(name.to_string()));
        }
        if ty.affine().is_some() {
            return Err(GgufError::NotGgufType {
                name: name.to_string(),
                ty: ty.name(),
            });
        }
        Ok(tensor_size(name, ty, dims)?.1)
    }

    /// Adds a tensor whose data is `data` (exactly its byte size, checked).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: Bytes,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let n_bytes = self.check_new(&name, ty, dims)?;
        if data.len() != n_bytes {
            return Err(GgufError::DataLength {
                name,
                expected: n_bytes,
                got: data.len(),
            });
        }
        self.tensors.push(PendingTensor {
            name,
            ty,
            dims: dims.to_vec(),
            n_bytes,
            data: Data::Bytes(data),
        });
        Ok(())
    }

    /// Adds a tensor whose data `fill` streams when the file is written; writing fails if it
    /// writes other than exactly the tensor's byte size.
    pub fn add_tensor_fn(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        fill: FillFn,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let n_bytes = self.check_new(&name, ty, dims)?;
        self.tensors.push(PendingTensor {
            name,
            ty,
            dims: dims.to_vec(),
            n_bytes,
            data: Data::Fill(fill),
        });
        Ok(())
    }

    fn alignment(&self) -> Result<usize, GgufError> {
        match self.metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
            Some((_, v)) => alignment_from(v),
            None => Ok(DEFAULT_ALIGNMENT),
        }
    }

    /// Writes the whole file to `w` (sequentially; no seeking). Wrap `w` in a `BufWriter`.
    pub fn write_to<W: Write>(self, mut w: W) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        for (key, value) in &self.metadata {
            check_value(key, value, 0)?;
        }
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&self.version.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut header, key);
            put_u32(&mut header, value.value_type() as u32);
            put_value(&mut header, value);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            offset = offset
                .checked_next_multiple_of(alignment)
                .ok_or_else(|| too_big(&t.name))?;
            offsets.push(offset);
            put_str(&mut header, &t.name);
            put_u32(&mut header, t.dims.len() as u32);
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            put_u32(&mut header, t.ty.id());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = offset
                .checked_add(t.n_bytes)
                .ok_or_else(|| too_big(&t.name))?;
        }
        pad(&mut header, alignment);
        w.write_all(&header).map_err(GgufError::Write)?;

        let mut pos = 0usize;
        for (t, start) in self.tensors.into_iter().zip(offsets) {
            write_zeros(&mut w, start - pos)?;
            match t.data {
                Data::Bytes(b) => w.write_all(b.as_slice()).map_err(GgufError::Write)?,
                Data::Fill(fill) => {
                    let mut lw = LimitedWriter {
                        inner: &mut w,
                        limit: t.n_bytes,
                        written: 0,
                        attempted: 0,
                    };
                    let res = fill(&mut lw);
                    let (written, attempted) = (lw.written, lw.attempted);
                    if attempted <= t.n_bytes {
                        res.map_err(|source| GgufError::Fill {
                            name: t.name.clone(),
                            source,
                        })?;
                    }
                    if attempted != t.n_bytes || written != t.n_bytes {
                        return Err(GgufError::DataLength {
                            name: t.name,
                            expected: t.n_bytes,
                            got: attempted,
                        });
                    }
                }
            }
            pos = start + t.n_bytes;
        }
        w.flush().map_err(GgufError::Write)
    }

    /// Writes the file to a temporary name next to `path`, then renames it into place.
    pub fn write_file(self, path: &Path) -> Result<(), GgufError> {
        let tmp = temp_path(path);
        let io = |p: &Path, source| GgufError::Io {
            path: p.to_path_buf(),
            source,
        };
        let result = (|| {
            let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            let mut w = io::BufWriter::with_capacity(1 << 20, file);
            self.write_to(&mut w).map_err(|e| match e {
                GgufError::Write(source) => io(&tmp, source),
                other => other,
            })?;
            let file = w.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
            drop(file);
            std::fs::rename(&tmp, path).map_err(|e| io(path, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn too_big(name: &str) -> GgufError {
    GgufError::Write(io::Error::other(format!(
        "tensor {name:?}: the data section would exceed the address space"
    )))
}

fn pad(buf: &mut Vec<u8>, alignment: usize) {
    let target = buf.len().next_multiple_of(alignment);
    buf.resize(target, 0);
}

fn write_zeros<W: Write>(w: &mut W, mut n: usize) -> Result<(), GgufError> {
    let zeros = [0u8; 256];
    while n > 0 {
        let k = n.min(zeros.len());
        w.write_all(&zeros[..k]).map_err(GgufError::Write)?;
        n -= k;
    }
    Ok(())
}

/// Arrays must hold only their declared element type and nest at most `MAX_ARRAY_DEPTH` deep,
/// as the reader requires.
fn check_value(key: &str, v: &Value, depth: usize) -> Result<(), GgufError> {
    if let Value::Array(ty, items) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::InvalidValue {
                key: key.to_string(),
                reason: format!("arrays nest more than {MAX_ARRAY_DEPTH} deep"),
            });
        }
        for item in items {
            if item.value_type() != *ty {
                return Err(GgufError::InvalidValue {
                    key: key.to_string(),
                    reason: format!("an array of {ty:?} holds a {:?} element", item.value_type()),
                });
            }
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => put_str(buf, s),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Array(ty, items) => {
            put_u32(buf, *ty as u32);
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(buf, item);
            }
        }
    }
}

/// Passes writes through up to `limit` bytes; past it, fails and records the attempt.
struct LimitedWriter<'a, W: Write> {
    inner: &'a mut W,
    limit: usize,
    written: usize,
    attempted: usize,
}

impl<W: Write> Write for LimitedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.limit - self.written {
            self.attempted = self.written.saturating_add(buf.len());
            return Err(io::Error::other(format!(
                "wrote more than the tensor's {} bytes",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.written += n;
        self.attempted = self.written;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
