//! Safetensors files, memory-mapped: one `model.safetensors`, or the shards a
//! `model.safetensors.index.json` names. Tensor data is never copied: a tensor is a [`Bytes`]
//! view of its file's map. The header is read (and checked: offsets contiguous, sizes that
//! match dtype × shape, a file exactly as long as its header says) by the `safetensors` crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plumb_core::Bytes;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
pub struct StTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

/// The tensors of one or more safetensors files, by name.
#[derive(Debug, Default)]
pub struct Safetensors {
    tensors: HashMap<String, StTensor>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// A memory map as the owner of [`Bytes`] views.
struct Map(memmap2::Mmap);

impl AsRef<[u8]> for Map {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads a JSON file, naming the file in every error.
pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("invalid JSON: {e}")))
}

impl Safetensors {
    /// The weights of a model directory: `model.safetensors.index.json` (sharded) when
    /// present, else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Safetensors> {
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            return Self::open_index(dir, &index);
        }
        let single = dir.join("model.safetensors");
        if !single.is_file() {
            return Err(bad(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        }
        let mut st = Safetensors::default();
        st.add_file(&single, None)?;
        Ok(st)
    }

    /// One safetensors file, all of its tensors.
    pub fn open_file(path: &Path) -> Result<Safetensors> {
        let mut st = Safetensors::default();
        st.add_file(path, None)?;
        Ok(st)
    }

    /// The shards of an index: every tensor its `weight_map` names must be in its shard.
    fn open_index(dir: &Path, index: &Path) -> Result<Safetensors> {
        let json = read_json(index)?;
        let map = json
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| bad(index, "no \"weight_map\" object"))?;
        let mut by_file: Vec<(String, Vec<String>)> = Vec::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(index, format!("{name:?} maps to a non-string")))?;
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(bad(
                    index,
                    format!("shard name {file:?} leaves the directory"),
                ));
            }
            match by_file.iter_mut().find(|(f, _)| f == file) {
                Some((_, names)) => names.push(name.clone()),
                None => by_file.push((file.to_string(), vec![name.clone()])),
            }
        }
        let mut st = Safetensors::default();
        for (file, names) in by_file {
            st.add_file(&dir.join(&file), Some(&names))?;
        }
        Ok(st)
    }

    /// Maps `path` and records its tensors (all of them, or `only` those, which must exist).
    fn add_file(&mut self, path: &Path, only: Option<&[String]>) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only and private to this process; like every memory-mapped
        // model file it assumes the file is not truncated while plumb runs (the GGUF reader
        // makes the same assumption).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| bad(path, format!("cannot map: {e}")))?;
        let (header, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
        let bytes = Bytes::new(Arc::new(Map(map)));
        let base = 8 + header;
        for (name, info) in meta.tensors() {
            if only.is_some_and(|o| !o.contains(&name)) {
                continue;
            }
            let (start, end) = info.data_offsets;
            let data = bytes
                .slice(base + start, end - start)
                .map_err(|e| bad(path, format!("tensor {name}: {e}")))?;
            let t = StTensor {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data,
            };
            if self.tensors.insert(name.clone(), t).is_some() {
                return Err(bad(path, format!("tensor {name} is stored twice")));
            }
        }
        for name in only.unwrap_or_default() {
            if !self.tensors.contains_key(name) {
                return Err(bad(
                    path,
                    format!("the index puts tensor {name} in this file, which lacks it"),
                ));
            }
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.tensors.get(name)
    }

    /// Every tensor, sorted by name.
    pub fn iter(&self) -> Vec<(&str, &StTensor)> {
        let mut v: Vec<_> = self.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }
}
