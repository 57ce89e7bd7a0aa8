//! Checkpoint formats: a GGUF file, or a Hugging Face / MLX model directory.
//!
//! - [`Checkpoint::open`]: a file is GGUF; a directory holds `config.json` and
//!   `model.safetensors` (or a sharded `model.safetensors.index.json`), quantized by MLX when
//!   `config.json` has a `"quantization"` entry.
//! - [`Checkpoint::config`] and [`Checkpoint::tensors`] (a [`TensorSource`] with GGUF names)
//!   are what [`crate::Model::load_checkpoint`] reads.
//! - [`GenerationConfig`]: a directory's `generation_config.json` (stop ids, default
//!   sampling).

pub mod hf;
pub mod mlx;
pub mod safetensors;

use std::path::{Path, PathBuf};

use plumb_core::{GgmlType, HostWeight};
use plumb_gguf::GgufFile;
use serde_json::Value as Json;

use self::mlx::MlxQuant;
use self::safetensors::{read_json, Safetensors, StTensor};
use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::store::ModelKind;
use crate::weights::TensorSource;

/// A model directory: its `config.json`, the memory-mapped safetensors and, for MLX, the
/// quantization.
#[derive(Debug)]
pub struct HfDir {
    pub dir: PathBuf,
    pub config_json: Json,
    pub config: ModelConfig,
    pub tensors: Safetensors,
    pub quant: Option<MlxQuant>,
    /// The head is the embedding table (`lm_head` is not read).
    pub tied: bool,
    /// Where the language model's tensors are (nested in a multimodal gemma3 checkpoint).
    pub prefixes: hf::Prefixes,
}

impl HfDir {
    pub fn open(dir: &Path) -> Result<HfDir> {
        let config_json = read_json(&dir.join("config.json"))?;
        let config = hf::config_from_json(&config_json)?;
        let quant = MlxQuant::from_config(&config_json)?;
        let tensors = Safetensors::open_dir(dir)?;
        let prefixes = hf::Prefixes::detect(|n| tensors.get(n).is_some());
        // mlx-lm ties a gemma3 head whenever the file has no lm_head.
        let head = format!("{}.weight", prefixes.head);
        let tied = hf::tied_embeddings(&config_json)
            || (config.arch == Arch::Gemma3 && tensors.get(&head).is_none());
        Ok(HfDir {
            dir: dir.to_path_buf(),
            tied,
            prefixes,
            config_json,
            config,
            tensors,
            quant,
        })
    }

    /// The generation defaults of `generation_config.json`, if the directory has one.
    pub fn generation_config(&self) -> Result<Option<GenerationConfig>> {
        let path = self.dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(GenerationConfig::from_json(&read_json(&path)?)))
    }
}

/// A float tensor as a 2-D weight in its stored type (a view of the map).
fn plain(name: &str, t: &StTensor) -> Result<HostWeight> {
    let bad = |msg: String| ModelError::Tensor {
        name: name.to_string(),
        msg,
    };
    let ty = match t.dtype {
        ::safetensors::Dtype::F32 => GgmlType::F32,
        ::safetensors::Dtype::F16 => GgmlType::F16,
        ::safetensors::Dtype::BF16 => GgmlType::BF16,
        d => return Err(bad(format!("dtype {d:?} (plumb reads F32, F16 and BF16)"))),
    };
    let (rows, cols) = match t.shape[..] {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => return Err(bad(format!("shape {:?} is not 1-D or 2-D", t.shape))),
    };
    Ok(HostWeight::new(name, ty, rows, cols, t.data.clone())?)
}

impl HfDir {
    /// The directory's module and tensor name of the GGUF name `name`.
    fn module(&self, name: &str) -> Option<(String, String)> {
        let (module, suffix) = hf::hf_module(self.config.arch, name)?;
        let module = self.prefixes.apply(&module);
        let key = format!("{module}.{suffix}");
        Some((module, key))
    }

    /// The tensor `name` (a GGUF name) as the directory stores it: gemma3's norm vectors
    /// without the `1 +` that [`TensorSource::weight`] adds. `None` when the directory has
    /// no such tensor (or the head is tied).
    pub fn stored_weight(&self, name: &str) -> Result<Option<HostWeight>> {
        if name == "output.weight" && self.tied {
            return Ok(None);
        }
        let Some((module, key)) = self.module(name) else {
            return Ok(None);
        };
        let suffix = &key[module.len() + 1..];
        let Some(t) = self.tensors.get(&key) else {
            return Ok(None);
        };
        let scales = self.tensors.get(&format!("{module}.scales"));
        match (suffix, scales, &self.quant) {
            ("weight", Some(scales), Some(q)) => {
                let params = q.params(&module).ok_or_else(|| ModelError::Tensor {
                    name: key.clone(),
                    msg: "has scales, but config.json marks the module unquantized".into(),
                })?;
                let biases = self
                    .tensors
                    .get(&format!("{module}.biases"))
                    .ok_or_else(|| ModelError::Tensor {
                        name: format!("{module}.biases"),
                        msg: "missing (the module has scales)".into(),
                    })?;
                Ok(Some(mlx::affine_weight(&key, params, t, scales, biases)?))
            }
            ("weight", Some(_), None) => Err(ModelError::Tensor {
                name: key,
                msg: "has scales, but config.json has no \"quantization\" entry".into(),
            }),
            _ => Ok(Some(plain(&key, t)?)),
        }
    }
}

/// `w` with `offset` added to every value, in F32.
fn offset_vector(w: &HostWeight, offset: f32) -> Result<HostWeight> {
    let mut v = w.to_f32()?;
    for x in &mut v {
        *x += offset;
    }
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(HostWeight::new(
        &w.name,
        GgmlType::F32,
        w.rows,
        w.cols,
        plumb_core::Bytes::from_vec(bytes),
    )?)
}

impl TensorSource for HfDir {
    /// The stored tensor, with gemma3's `1 +` added to its norm vectors (the weight a GGUF
    /// file stores and the forward multiplies by).
    fn weight(&self, name: &str) -> Result<Option<HostWeight>> {
        let Some(w) = self.stored_weight(name)? else {
            return Ok(None);
        };
        let offset = hf::norm_offset(self.config.arch, name);
        if offset == 0.0 {
            return Ok(Some(w));
        }
        Ok(Some(offset_vector(&w, offset)?))
    }

    fn source_name(&self, name: &str) -> String {
        self.module(name)
            .map_or_else(|| name.to_string(), |(_, k)| k)
    }
}

/// Defaults from `generation_config.json`: stop ids and sampling (each `None` when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    pub eos_token_ids: Vec<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    /// `do_sample: false` means greedy.
    pub do_sample: Option<bool>,
}

impl GenerationConfig {
    pub fn from_json(j: &Json) -> GenerationConfig {
        let f = |k: &str| j.get(k).and_then(Json::as_f64).map(|v| v as f32);
        let eos_token_ids = match j.get("eos_token_id") {
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(Json::as_u64)
                .map(|v| v as u32)
                .collect(),
            Some(v) => v.as_u64().map(|v| v as u32).into_iter().collect(),
            None => Vec::new(),
        };
        GenerationConfig {
            eos_token_ids,
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: j.get("top_k").and_then(Json::as_u64).map(|v| v as usize),
            repetition_penalty: f("repetition_penalty"),
            do_sample: j.get("do_sample").and_then(Json::as_bool),
        }
    }
}

/// The configuration of a GGUF model; one without a vocabulary size takes it from its
/// embedding table.
pub(crate) fn gguf_config(f: &GgufFile) -> Result<ModelConfig> {
    let mut config = ModelConfig::from_gguf(f)?;
    if config.vocab_size == 0 {
        let t = f
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::Tensor {
                name: "token_embd.weight".into(),
                msg: "missing".into(),
            })?;
        config.vocab_size = t.dims.get(1).copied().unwrap_or(0) as usize;
    }
    Ok(config)
}

/// A model checkpoint of any format plumb reads.
pub enum Checkpoint {
    Gguf(Box<GgufFile>),
    Dir(Box<HfDir>),
}

impl Checkpoint {
    /// Opens `path`: a GGUF file or a Hugging Face / MLX directory.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_dir() {
            Ok(Checkpoint::Dir(Box::new(HfDir::open(path)?)))
        } else {
            Ok(Checkpoint::Gguf(Box::new(GgufFile::open(path)?)))
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Checkpoint::Gguf(_) => ModelKind::Gguf,
            Checkpoint::Dir(d) if d.quant.is_some() => ModelKind::Mlx,
            Checkpoint::Dir(_) => ModelKind::HuggingFace,
        }
    }

    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            Checkpoint::Gguf(f) => gguf_config(f),
            Checkpoint::Dir(d) => Ok(d.config.clone()),
        }
    }

    pub fn tensors(&self) -> &dyn TensorSource {
        match self {
            Checkpoint::Gguf(f) => f.as_ref(),
            Checkpoint::Dir(d) => d.as_ref(),
        }
    }
}
