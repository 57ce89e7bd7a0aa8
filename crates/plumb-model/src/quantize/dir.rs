//! `plumb quantize` to a model directory: Hugging Face (f32 / f16 / bf16 safetensors) or
//! MLX (mlx-lm's layout: each quantized module as `weight` uint32 codes, `scales`, `biases`,
//! and a `"quantization"` entry in `config.json`, per-module entries for mixed recipes).
//!
//! The quantizer is MLX's own ([`plumb_core::quant::affine::quantize_group`]), applied to the
//! values rounded to the directory's float type first, as mlx-lm's `convert` does; with
//! the same input, plumb writes the tensors mlx-lm writes, bit for bit (the tests check a
//! digest of them against `fixtures/mlx/record.json`).
//!
//! The safetensors file is written through the `safetensors` crate with lazy tensors: each
//! is computed when the writer reaches it, so memory stays near one tensor.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use plumb_core::quant::affine;
use plumb_core::{GgmlType, HostWeight};
use plumb_gguf::GgufFile;
use plumb_ops::RopeStyle;
use safetensors::Dtype;
use serde_json::{json, Map, Value as Json};

use super::gguf::Progress;
use super::{for_each_band, is_matrix, model_tensor_names, RowOrder};
use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::formats::hf;
use crate::formats::{Checkpoint, HfDir};

/// How an MLX directory is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlxRecipe {
    /// Every quantizable module in `bits`-bit groups of `group`.
    Uniform { bits: u32, group: usize },
    /// mlx-lm's `mixed_L_H` recipes (modelled on llama.cpp's Q4_K_M): `v_proj` and
    /// `down_proj` in the layers that [`super::use_more_bits`] picks, and `lm_head`, in
    /// `high` bits, the rest in `low`; groups of `group`.
    Mixed { low: u32, high: u32, group: usize },
}

impl MlxRecipe {
    /// `mixed_2_6`, `mixed_3_4`, `mixed_3_6`, `mixed_4_6` (groups of 64).
    pub fn mixed(name: &str) -> Option<MlxRecipe> {
        let (low, high) = match name {
            "mixed_2_6" => (2, 6),
            "mixed_3_4" => (3, 4),
            "mixed_3_6" => (3, 6),
            "mixed_4_6" => (4, 6),
            _ => return None,
        };
        Some(MlxRecipe::Mixed {
            low,
            high,
            group: 64,
        })
    }

    fn group(&self) -> usize {
        match *self {
            MlxRecipe::Uniform { group, .. } | MlxRecipe::Mixed { group, .. } => group,
        }
    }

    /// `(bits, group)` of the Hugging Face module `module` in a model of `n_layers`.
    fn params(&self, module: &str, n_layers: usize) -> (u32, usize) {
        match *self {
            MlxRecipe::Uniform { bits, group } => (bits, group),
            MlxRecipe::Mixed { low, high, group } => {
                // mlx-lm reads the layer from the third path component, 0 when absent.
                let layer = module
                    .split('.')
                    .nth(2)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let more = super::use_more_bits(layer, n_layers);
                let high_here = (module.contains("v_proj") || module.contains("down_proj")) && more
                    || module.contains("lm_head");
                (if high_here { high } else { low }, group)
            }
        }
    }
}

/// The format of a directory `plumb quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirFormat {
    /// Hugging Face safetensors in F32, F16 or BF16.
    Hf(GgmlType),
    /// MLX affine quantization; unquantized tensors in `dtype` (F16 or BF16).
    Mlx { recipe: MlxRecipe, dtype: GgmlType },
}

fn st_dtype(t: GgmlType) -> Result<Dtype> {
    match t {
        GgmlType::F32 => Ok(Dtype::F32),
        GgmlType::F16 => Ok(Dtype::F16),
        GgmlType::BF16 => Ok(Dtype::BF16),
        other => Err(ModelError::Unsupported(format!(
            "{other} as a directory's float type (F32, F16 or BF16)"
        ))),
    }
}

fn torch_dtype(t: Dtype) -> &'static str {
    match t {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        _ => "bfloat16",
    }
}

/// Values rounded to `dtype` and encoded little-endian.
fn encode(dtype: Dtype, x: &[f32], out: &mut Vec<u8>) {
    for &v in x {
        match dtype {
            Dtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            _ => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        }
    }
}

fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        _ => half::bf16::from_f32(v).to_f32(),
    }
}

/// Which of a quantized module's three tensors a lazy tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Plain,
    Codes,
    Scales,
    Biases,
}

/// One output tensor, computed when the writer asks for its bytes.
struct Lazy<'a> {
    weight: HostWeight,
    order: RowOrder,
    part: Part,
    dtype: Dtype,
    /// The float type of the values before quantization (and of scales and biases).
    float: Dtype,
    params: (u32, usize),
    /// Added to every value of a plain tensor before it is rounded (gemma3's norms: −1).
    offset: f32,
    shape: Vec<usize>,
    len: usize,
    failed: &'a Mutex<Option<ModelError>>,
    progress: &'a (dyn Fn() + Sync),
}

impl Lazy<'_> {
    fn compute(&self) -> Result<Vec<u8>> {
        let w = &self.weight;
        let mut out = Vec::with_capacity(self.len);
        let (bits, group) = self.params;
        let code_bytes = group * bits as usize / 8;
        let mut codes = vec![0u8; code_bytes];
        let mut rounded = vec![0f32; group.max(1)];
        for_each_band(w, self.order, |_, band| {
            if self.part == Part::Plain {
                if self.offset == 0.0 {
                    encode(self.dtype, band, &mut out);
                } else {
                    let shifted: Vec<f32> = band.iter().map(|v| v + self.offset).collect();
                    encode(self.dtype, &shifted, &mut out);
                }
                return Ok(());
            }
            for x in band.chunks_exact(group) {
                for (r, &v) in rounded.iter_mut().zip(x) {
                    *r = round_to(self.float, v);
                }
                let (s, b) = affine::quantize_group(bits, &rounded, &mut codes);
                match self.part {
                    Part::Codes => out.extend_from_slice(&codes),
                    Part::Scales => encode(self.float, &[s], &mut out),
                    _ => encode(self.float, &[b], &mut out),
                }
            }
            Ok(())
        })?;
        if out.len() != self.len {
            return Err(ModelError::Tensor {
                name: w.name.clone(),
                msg: format!("{} bytes computed, {} expected", out.len(), self.len),
            });
        }
        Ok(out)
    }
}

impl safetensors::View for Lazy<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // The writer cannot take an error: record it, write zeros, and fail afterwards.
        let bytes = self.compute().unwrap_or_else(|e| {
            let mut slot = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
            vec![0; self.len]
        });
        (self.progress)();
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

/// A vector tensor (norms, biases) is 1-D in a directory.
fn is_vector(name: &str) -> bool {
    name.ends_with(".bias") || name.ends_with("norm.weight")
}

/// `config.json` of the output: the source directory's own, or one made from a GGUF's
/// configuration.
fn base_config(ck: &Checkpoint, cfg: &ModelConfig, tied: bool) -> Result<Map<String, Json>> {
    match ck {
        Checkpoint::Dir(d) => {
            let mut m = d.config_json.as_object().cloned().unwrap_or_default();
            m.remove("quantization");
            m.remove("quantization_config");
            Ok(m)
        }
        Checkpoint::Gguf(f) => {
            if f.tensor("rope_freqs.weight").is_some() {
                return Err(ModelError::Unsupported(
                    "a GGUF with rope_freqs (Llama 3.1 RoPE scaling) as a directory".into(),
                ));
            }
            if cfg.arch == Arch::Gemma3 {
                return gemma3_config(f, cfg, tied);
            }
            let arch = cfg.arch.name();
            let class = match arch {
                "qwen2" => "Qwen2ForCausalLM",
                "qwen3" => "Qwen3ForCausalLM",
                _ => "LlamaForCausalLM",
            };
            let id = |k: &str| f.get_u64(k).ok();
            let mut j = json!({
                "architectures": [class], "model_type": arch,
                "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
                "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
                "num_hidden_layers": cfg.n_layers, "head_dim": cfg.head_dim,
                "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.n_ctx_train,
                "rms_norm_eps": cfg.rms_eps as f64, "rope_theta": cfg.rope_theta as f64,
                "rope_scaling": null, "tie_word_embeddings": tied, "hidden_act": "silu",
                "attention_bias": arch == "qwen2", "mlp_bias": false,
            });
            if let Some(b) = id("tokenizer.ggml.bos_token_id") {
                j["bos_token_id"] = json!(b);
            }
            if let Some(e) = id("tokenizer.ggml.eos_token_id") {
                j["eos_token_id"] = json!(e);
            }
            Ok(j.as_object().cloned().unwrap_or_default())
        }
    }
}

/// The `config.json` of a gemma3_text directory from a GGUF's configuration: Hugging
/// Face's keys (those mlx-lm's gemma3_text reads among them).
fn gemma3_config(f: &GgufFile, cfg: &ModelConfig, tied: bool) -> Result<Map<String, Json>> {
    let unsupported = |what: &str| {
        Err(ModelError::Unsupported(format!(
            "a gemma3 GGUF {what} as a gemma3_text directory"
        )))
    };
    let Some(swa) = &cfg.swa else {
        return unsupported("without a sliding window");
    };
    if cfg.embed_scale != Some((cfg.d_model as f32).sqrt()) || cfg.n_rot != cfg.head_dim {
        return unsupported("with a partial rotation or another embedding scale");
    }
    // attn_scale = query_pre_attn_scalar^-½; an integer, as Hugging Face's config class
    // requires (it refuses 256.0).
    let scalar = (1.0 / (cfg.attn_scale as f64).powi(2)).round() as u64;
    let layer_types: Vec<&str> = swa
        .local
        .iter()
        .map(|&l| {
            if l {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    let id = |k: &str| f.get_u64(k).ok();
    let mut j = json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "num_hidden_layers": cfg.n_layers, "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.n_ctx_train,
        "rms_norm_eps": cfg.rms_eps as f64, "rope_theta": cfg.rope_theta as f64,
        "rope_local_base_freq": swa.rope_theta as f64, "rope_scaling": null,
        "query_pre_attn_scalar": scalar, "sliding_window": swa.window,
        "layer_types": layer_types,
        "final_logit_softcapping": cfg.final_softcap.map(|c| c as f64),
        "attn_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": tied, "attention_bias": false,
    });
    // mlx-lm reads the layout only as a period: write one where the layers have it.
    if let Some(n) =
        (1..=cfg.n_layers).find(|&n| crate::config::swa_pattern(n, cfg.n_layers) == swa.local)
    {
        j["sliding_window_pattern"] = json!(n);
    }
    if let Some(b) = id("tokenizer.ggml.bos_token_id") {
        j["bos_token_id"] = json!(b);
    }
    if let Some(e) = id("tokenizer.ggml.eos_token_id") {
        j["eos_token_id"] = json!(e);
    }
    Ok(j.as_object().cloned().unwrap_or_default())
}

/// Writes the model of `ck` as a directory `out` in `format` and returns how many tensors
/// it wrote. Tokenizer files of a source directory are copied; a GGUF's tokenizer is left to
/// the caller (plumb-tokenizer's `GgufVocab` writes it into `out` afterwards).
pub fn write_dir(
    ck: &Checkpoint,
    format: DirFormat,
    out: &Path,
    progress: Progress,
) -> Result<usize> {
    let cfg = ck.config()?;
    let src = ck.tensors();
    let tied = src.weight("output.weight")?.is_none();
    // A directory's tensors are copied as stored; a GGUF gemma3's norms lose the converter's
    // `1 +`; a nested (multimodal) directory keeps its layout.
    let (stored, prefixes) = match ck {
        Checkpoint::Dir(d) => (Some(d.as_ref()), d.prefixes.clone()),
        Checkpoint::Gguf(_) => (None, hf::Prefixes::TEXT),
    };
    let order_from = cfg.rope_style;
    let (float, recipe) = match format {
        DirFormat::Hf(t) => (st_dtype(t)?, None),
        DirFormat::Mlx { recipe, dtype } => (st_dtype(dtype)?, Some(recipe)),
    };
    if let Some(r) = recipe {
        let (bits, group) = r.params("", cfg.n_layers);
        if !affine::supported(bits, group) {
            return Err(ModelError::Unsupported(format!(
                "MLX {bits}-bit groups of {group} (bits 2, 3, 4, 5, 6 or 8, groups of 32, 64 \
                 or 128)"
            )));
        }
    }
    let failed = Mutex::new(None);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut config = base_config(ck, &cfg, tied)?;
    config.insert("torch_dtype".into(), json!(torch_dtype(float)));
    let mut quant = Map::new();
    let mut specs: Vec<(String, Lazy<'_>)> = Vec::new();
    let names: Vec<String> = model_tensor_names(&cfg)
        .into_iter()
        .filter(|n| !(tied && n == "output.weight"))
        .collect();
    let mut found = Vec::new();
    for name in names {
        let Some((module, suffix)) = hf::hf_module(cfg.arch, &name) else {
            continue;
        };
        let (module, suffix) = (prefixes.apply(&module), suffix.to_string());
        let (w, offset) = match stored {
            Some(d) => (d.stored_weight(&name)?, 0.0),
            None => (src.weight(&name)?, -hf::norm_offset(cfg.arch, &name)),
        };
        let Some(w) = w else {
            continue;
        };
        found.push((name, module, suffix, w, offset));
    }
    let total_tensors = found
        .iter()
        .map(|(n, _, _, w, _)| match recipe {
            Some(r) if is_matrix(n) && w.cols.is_multiple_of(r.group()) => 3,
            _ => 1,
        })
        .sum::<usize>();
    let tick = || {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress(n, total_tensors, "");
    };
    for (name, module, suffix, w, offset) in found {
        let order = RowOrder::for_tensor(&name, cfg.head_dim, order_from, RopeStyle::Neox);
        let (rows, cols) = (w.rows, w.cols);
        let mk = |part, dtype, params, shape: Vec<usize>, len| Lazy {
            weight: w.clone(),
            order,
            part,
            dtype,
            float,
            params,
            offset,
            shape,
            len,
            failed: &failed,
            progress: &tick,
        };
        match recipe {
            Some(r) if is_matrix(&name) && cols.is_multiple_of(r.group()) => {
                let (bits, group) = r.params(&module, cfg.n_layers);
                if let MlxRecipe::Mixed { .. } = r {
                    quant.insert(
                        module.clone(),
                        json!({"group_size": group, "bits": bits, "mode": "affine"}),
                    );
                }
                let words = cols * bits as usize / 32;
                let groups = cols / group;
                let fb = float.bitsize() / 8;
                specs.push((
                    format!("{module}.weight"),
                    mk(
                        Part::Codes,
                        Dtype::U32,
                        (bits, group),
                        vec![rows, words],
                        rows * words * 4,
                    ),
                ));
                for (part, sfx) in [(Part::Scales, "scales"), (Part::Biases, "biases")] {
                    specs.push((
                        format!("{module}.{sfx}"),
                        mk(
                            part,
                            float,
                            (bits, group),
                            vec![rows, groups],
                            rows * groups * fb,
                        ),
                    ));
                }
            }
            _ => {
                let shape = if is_vector(&name) {
                    vec![cols]
                } else {
                    vec![rows, cols]
                };
                let len = rows * cols * float.bitsize() / 8;
                specs.push((
                    format!("{module}.{suffix}"),
                    mk(Part::Plain, float, (8, 32), shape, len),
                ));
            }
        }
    }
    if let Some(r) = recipe {
        let (bits, group) = match r {
            MlxRecipe::Uniform { bits, group } => (bits, group),
            MlxRecipe::Mixed { low, group, .. } => (low, group),
        };
        let mut q = Map::new();
        q.insert("group_size".into(), json!(group));
        q.insert("bits".into(), json!(bits));
        q.insert("mode".into(), json!("affine"));
        q.extend(quant);
        config.insert("quantization".into(), Json::Object(q.clone()));
        config.insert("quantization_config".into(), Json::Object(q));
    }
    let tmp = out.with_extension("partial");
    let fail = |msg: String| ModelError::Checkpoint {
        path: out.to_path_buf(),
        msg,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| fail(format!("cannot create: {e}")))?;
    let n = specs.len();
    let meta = [("format".to_string(), "mlx".to_string())]
        .into_iter()
        .collect();
    safetensors::tensor::serialize_to_file(specs, Some(meta), &tmp.join("model.safetensors"))
        .map_err(|e| fail(format!("writing model.safetensors: {e}")))?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let text = serde_json::to_string_pretty(&Json::Object(config))
        .map_err(|e| fail(format!("config.json: {e}")))?;
    std::fs::write(tmp.join("config.json"), text).map_err(|e| fail(format!("config.json: {e}")))?;
    if let Checkpoint::Dir(d) = ck {
        copy_tokenizer(d, &tmp).map_err(|e| fail(format!("copying tokenizer files: {e}")))?;
    }
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&tmp, out).map_err(|e| fail(format!("cannot move into place: {e}")))?;
    Ok(n)
}

/// The tokenizer and generation files a model directory may have.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

fn copy_tokenizer(d: &HfDir, out: &Path) -> std::io::Result<()> {
    for f in TOKENIZER_FILES {
        let p = d.dir.join(f);
        if p.is_file() {
            std::fs::copy(&p, out.join(f))?;
        }
    }
    Ok(())
}
