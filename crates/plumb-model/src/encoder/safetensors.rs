//! A minimal reader of `.safetensors` files, enough for an encoder's weights: an 8-byte
//! little-endian header length, a JSON header `{name: {dtype, shape, data_offsets}}`, then the
//! data. The file is read once into shared bytes; tensors are views of it. F32, F16 and BF16
//! tensors of one or two dimensions become [`HostWeight`]s; other entries are listed but not
//! loadable. Kept to this module's needs: a general tensor source can replace it.

use std::collections::HashMap;
use std::path::Path;

use plumb_core::{Bytes, GgmlType, HostWeight};
use serde_json::Value;

use crate::error::{ModelError, Result};

struct Entry {
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

pub struct SafeTensors {
    data: Bytes,
    /// Where the data section starts in `data`.
    base: usize,
    entries: HashMap<String, Entry>,
    path: String,
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let name = path.display().to_string();
        let bad = |msg: String| ModelError::Config(format!("{name}: {msg}"));
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let head_len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
            .ok_or_else(|| bad("shorter than its 8-byte header length".into()))?;
        let base = head_len
            .checked_add(8)
            .filter(|&b| b <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "a header of {head_len} bytes does not fit the file"
                ))
            })?;
        let header: Value = serde_json::from_slice(&bytes[8..base])
            .map_err(|e| bad(format!("the header is not JSON ({e})")))?;
        let map = header
            .as_object()
            .ok_or_else(|| bad("the header is not a JSON object".into()))?;
        let data_len = bytes.len() - base;
        let mut entries = HashMap::new();
        for (k, v) in map.iter().filter(|(k, _)| *k != "__metadata__") {
            let e = parse_entry(v).ok_or_else(|| bad(format!("tensor {k} has a bad entry")))?;
            if e.start > e.end || e.end > data_len {
                return Err(bad(format!("tensor {k} lies outside the data")));
            }
            entries.insert(k.clone(), e);
        }
        Ok(SafeTensors {
            data: Bytes::from_vec(bytes),
            base,
            entries,
            path: name,
        })
    }

    /// `name` as a weight of `rows × cols` (a vector is one row): the shape must match.
    pub fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<HostWeight> {
        let err = |msg: String| ModelError::Tensor {
            name: format!("{name} in {}", self.path),
            msg,
        };
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| err("missing".into()))?;
        let (r, c) = match e.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => {
                return Err(err(format!(
                    "has shape {:?}, not 1 or 2 dimensions",
                    e.shape
                )))
            }
        };
        if (r, c) != (rows, cols) {
            return Err(err(format!("is {r}×{c}, the config needs {rows}×{cols}")));
        }
        let ty = match e.dtype.as_str() {
            "F32" => GgmlType::F32,
            "F16" => GgmlType::F16,
            "BF16" => GgmlType::BF16,
            other => return Err(err(format!("has dtype {other}, not F32, F16 or BF16"))),
        };
        let bytes = self.data.slice(self.base + e.start, e.end - e.start)?;
        Ok(HostWeight::new(name, ty, rows, cols, bytes)?)
    }
}

fn parse_entry(v: &Value) -> Option<Entry> {
    let shape = v["shape"]
        .as_array()?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<_>>>()?;
    let offs = v["data_offsets"].as_array()?;
    Some(Entry {
        dtype: v["dtype"].as_str()?.to_string(),
        shape,
        start: offs.first()?.as_u64()? as usize,
        end: offs.get(1)?.as_u64()? as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file by hand: one 2×3 F32 tensor and an I64 one.
    fn write(path: &Path, header: &str, data: &[u8]) {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(data);
        std::fs::write(path, f).unwrap();
    }

    #[test]
    fn reads_f32_tensors_and_refuses_what_does_not_fit() {
        let dir = std::env::temp_dir().join(format!("plumb-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let vals: Vec<u8> = (1..=6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let header = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"ids":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}}"#;
        write(&p, header, &[vals, vec![0; 8]].concat());
        let st = SafeTensors::open(&p).unwrap();
        let w = st.weight("w", 2, 3).unwrap();
        assert_eq!(w.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(st
            .weight("w", 3, 2)
            .unwrap_err()
            .to_string()
            .contains("is 2×3"));
        assert!(st
            .weight("ids", 1, 1)
            .unwrap_err()
            .to_string()
            .contains("I64"));
        assert!(st
            .weight("nope", 1, 1)
            .unwrap_err()
            .to_string()
            .contains("missing"));
        let bad = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,99]}}"#;
        write(&p, bad, &[0; 24]);
        assert!(SafeTensors::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("outside"));
        std::fs::write(&p, [1, 0]).unwrap();
        assert!(SafeTensors::open(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
