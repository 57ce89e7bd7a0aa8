//! Parsing the GGUF header, metadata and tensor infos out of a byte buffer.
//!
//! Every length and count read from the file is checked against the bytes that remain before
//! anything is allocated for it, so a malformed file fails fast with an error naming the byte
//! offset, never with a panic or a huge allocation.

use std::collections::HashMap;

use plumb_core::{Bytes, GgmlType};

use super::error::GgufError;
use super::value::{Value, ValueType};
use super::{tensor_size, GgufFile, TensorInfo, DEFAULT_ALIGNMENT, KEY_ALIGNMENT};

/// "GGUF" as stored at the start of the file.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
/// GGML_MAX_DIMS.
pub(crate) const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted (an array of scalars is depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Fewest bytes one tensor info can take: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 8 + 4 + 8;
/// Fewest bytes one key/value pair can take: key length, value type, a 1-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// Fewest bytes a value of type `ty` takes in the file.
fn min_size(ty: ValueType) -> u64 {
    match ty {
        ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
        ValueType::U16 | ValueType::I16 => 2,
        ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
        ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
        ValueType::String => 8,
        ValueType::Array => 4 + 8,
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(GgufError::truncated(what, self.pos, n, available)),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `each` bytes can fit in what remains.
    fn check_count(&self, count: u64, each: u64, what: &str, at: usize) -> Result<(), GgufError> {
        let fits = count
            .checked_mul(each)
            .is_some_and(|n| n <= self.remaining() as u64);
        if fits {
            Ok(())
        } else {
            Err(GgufError::CountTooLarge {
                what: what.to_string(),
                offset: at,
                count,
                remaining: self.remaining(),
            })
        }
    }

    /// A length-prefixed string's raw bytes.
    fn string_bytes(&mut self, what: &str) -> Result<(&'a [u8], usize), GgufError> {
        let at = self.pos;
        let len = self.u64(what)?;
        self.check_count(len, 1, what, at)?;
        Ok((self.take(len, what)?, at))
    }

    /// A string that must be valid UTF-8 (keys, tensor names).
    fn strict_string(&mut self, what: &str) -> Result<String, GgufError> {
        let (raw, at) = self.string_bytes(what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what.to_string(),
                offset: at,
            }),
        }
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType { id, offset: at })
    }

    /// A value of type `ty`; `depth` is the number of arrays it is nested in.
    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("a u8 value")?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("an i8 value")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("a u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("an i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("a u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("an i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("an f32 value")?)),
            ValueType::Bool => Value::Bool(self.array::<1>("a bool value")?[0] != 0),
            ValueType::U64 => Value::U64(self.u64("a u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("an i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("an f64 value")?)),
            ValueType::String => {
                // Metadata strings are decoded lossily: invalid UTF-8 becomes U+FFFD.
                let (raw, _) = self.string_bytes("a string value")?;
                Value::String(String::from_utf8_lossy(raw).into_owned())
            }
            ValueType::Array => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        max: MAX_ARRAY_DEPTH,
                        offset: at,
                    });
                }
                let elem = self.value_type("an array's element type")?;
                let count_at = self.pos;
                let count = self.u64("an array's length")?;
                self.check_count(count, min_size(elem), "array length", count_at)?;
                // Bounded by the bytes left in the file (checked just above).
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

/// Parses a whole GGUF file held in `bytes`.
pub(crate) fn parse(bytes: Bytes) -> Result<GgufFile, GgufError> {
    let buf = bytes.as_slice();
    let mut c = Cursor { buf, pos: 0 };

    let magic = c.array::<4>("the magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(GgufError::BigEndian(v.swap_bytes())),
        v => return Err(GgufError::UnsupportedVersion(v)),
    }
    let tensor_count_at = c.pos;
    let tensor_count = c.u64("the tensor count")?;
    let kv_count_at = c.pos;
    let kv_count = c.u64("the metadata key/value count")?;
    c.check_count(kv_count, MIN_KV, "metadata key/value count", kv_count_at)?;
    c.check_count(
        tensor_count,
        MIN_TENSOR_INFO,
        "tensor count",
        tensor_count_at,
    )?;

    // Both counts are bounded by the file size now.
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut key_index = HashMap::with_capacity(kv_count as usize);
    for _ in 0..kv_count {
        let at = c.pos;
        let key = c.strict_string("a metadata key")?;
        let ty = c.value_type(&format!("the value type of {key:?}"))?;
        let value = c.value(ty, 0)?;
        if key_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey { key, offset: at });
        }
        metadata.push((key, value));
    }

    let alignment = match key_index.get(KEY_ALIGNMENT) {
        Some(&i) => alignment_from(&metadata[i].1)?,
        None => DEFAULT_ALIGNMENT,
    };

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let at = c.pos;
        let info = tensor_info(&mut c, alignment, at)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(GgufError::DuplicateTensor(info.name));
        }
        tensors.push(info);
    }

    let header_end = c.pos;
    let file_size = buf.len();
    // With no tensors the file may end before the padding; data_offset may then exceed it.
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::truncated("the tensor data", header_end, alignment as u64, 0))?;
    for t in &tensors {
        let end = usize::try_from(t.offset)
            .ok()
            .and_then(|o| o.checked_add(data_offset))
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > file_size) {
            return Err(GgufError::TensorOutOfBounds {
                name: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_offset,
                file_size,
            });
        }
    }

    Ok(GgufFile {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
        bytes,
        key_index,
        tensor_index,
    })
}

/// The alignment given by a `general.alignment` value.
pub(crate) fn alignment_from(v: &Value) -> Result<usize, GgufError> {
    match v.as_u64() {
        Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => {
            usize::try_from(a).map_err(|_| GgufError::BadAlignment(v.summary()))
        }
        _ => Err(GgufError::BadAlignment(v.summary())),
    }
}

fn tensor_info(c: &mut Cursor<'_>, alignment: usize, at: usize) -> Result<TensorInfo, GgufError> {
    let name = c.strict_string("a tensor name")?;
    let n_dims = c.u32(&format!("the dimension count of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name,
            n_dims,
            offset: Some(at),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&format!("the dimensions of tensor {name:?}"))?);
    }
    let ty_at = c.pos;
    let id = c.u32(&format!("the type of tensor {name:?}"))?;
    let ty = GgmlType::from_id(id).map_err(|_| GgufError::UnknownTensorType {
        name: name.clone(),
        id,
        offset: ty_at,
    })?;
    let offset = c.u64(&format!("the data offset of tensor {name:?}"))?;
    if offset.checked_rem(alignment as u64) != Some(0) {
        return Err(GgufError::MisalignedTensor {
            name,
            offset,
            alignment,
        });
    }
    let (n_elements, n_bytes) = tensor_size(&name, ty, &dims)?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_bytes,
        n_elements,
    })
}
