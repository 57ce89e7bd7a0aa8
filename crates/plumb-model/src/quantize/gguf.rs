//! `plumb quantize` to GGUF: the source's metadata and tensors, every matrix re-encoded by a
//! [`Recipe`] while the file is written (one band of rows in memory at a time). The source is
//! a GGUF file ([`quantize_gguf`]) or a Hugging Face / MLX directory ([`quantize_dir`]: the
//! architecture's metadata made from `config.json`, the tokenizer's given by the caller,
//! tensors renamed to GGUF's names and Wq / Wk rows put in the order GGUF's RoPE expects).

use std::path::Path;
use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_gguf::{GgufFile, GgufWriter, Value};

use super::{is_matrix, model_tensor_names, requantize, Recipe, RowOrder};
use crate::config::Arch;
use crate::error::{ModelError, Result};
use crate::formats::{gguf_config, HfDir};
use crate::weights::TensorSource;

/// Called after each tensor is written: (tensors done, total, the tensor's name).
pub type Progress = Arc<dyn Fn(usize, usize, &str) + Send + Sync>;

/// What a quantization wrote: each tensor's name, its format before and after.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tensors: Vec<(String, GgmlType, GgmlType)>,
}

impl Plan {
    /// How many tensors end up in each format, most first.
    pub fn counts(&self) -> Vec<(GgmlType, usize)> {
        let mut c: Vec<(GgmlType, usize)> = Vec::new();
        for (_, _, t) in &self.tensors {
            match c.iter_mut().find(|(u, _)| u == t) {
                Some((_, n)) => *n += 1,
                None => c.push((*t, 1)),
            }
        }
        c.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        c
    }
}

/// The format each tensor of `src` gets under `recipe`.
pub fn plan(src: &GgufFile, recipe: Recipe) -> Result<Plan> {
    let cfg = gguf_config(src)?;
    let tied = src.tensor("output.weight").is_none();
    let tensors = src
        .tensors
        .iter()
        .map(|t| {
            let to = if is_matrix(&t.name) && t.dims.len() == 2 {
                recipe.type_for(&t.name, t.dims[0] as usize, cfg.n_layers, tied)
            } else {
                t.ty
            };
            (t.name.clone(), t.ty, to)
        })
        .collect();
    Ok(Plan { tensors })
}

/// Writes `src` to `out` with its matrices in `recipe`'s formats; returns the plan followed.
pub fn quantize_gguf(
    src: &GgufFile,
    recipe: Recipe,
    out: &Path,
    progress: Progress,
) -> Result<Plan> {
    let plan = plan(src, recipe)?;
    let mut w = GgufWriter::new();
    for (k, v) in &src.metadata {
        if k != "general.file_type" {
            w.add_metadata(k.clone(), v.clone());
        }
    }
    if let Some(ft) = recipe.file_type() {
        w.add_metadata("general.file_type", Value::U32(ft));
    }
    w.add_metadata(
        "general.quantized_by",
        Value::String(format!("plumb quantize {}", recipe.name())),
    );
    let total = plan.tensors.len();
    for (i, ((name, _, to), info)) in plan.tensors.iter().zip(&src.tensors).enumerate() {
        let weight = src.weight(name)?;
        let (to, progress, name2) = (*to, progress.clone(), name.clone());
        w.add_tensor_fn(
            name.clone(),
            to,
            &info.dims,
            Box::new(move |out| {
                requantize(&weight, to, RowOrder::Same, out).map_err(std::io::Error::other)?;
                progress(i + 1, total, &name2);
                Ok(())
            }),
        )?;
    }
    finish(w, out)?;
    Ok(plan)
}

/// Writes `w` to a temporary file beside `out` and moves it into place.
fn finish(w: GgufWriter, out: &Path) -> Result<()> {
    let tmp = out.with_extension("partial");
    w.write_file(&tmp).map_err(|e| ModelError::Checkpoint {
        path: out.to_path_buf(),
        msg: format!("writing failed: {e}"),
    })?;
    std::fs::rename(&tmp, out).map_err(|e| ModelError::Checkpoint {
        path: out.to_path_buf(),
        msg: format!("cannot move the finished file into place: {e}"),
    })
}

/// The architecture metadata llama.cpp's converter writes for a directory's `config.json`
/// (the keys plumb's GGUF loader reads): counts as UINT32, RoPE base and norm epsilon as
/// FLOAT32, `key_length` / `value_length` when `config.json` gives `head_dim`, and for a
/// llama the vocabulary size and the rotated dimensions.
fn dir_metadata(d: &HfDir) -> Vec<(String, Value)> {
    let c = &d.config;
    let arch = c.arch.name();
    let u = |n: usize| Value::U32(n as u32);
    let mut m = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (format!("{arch}.block_count"), u(c.n_layers)),
        (format!("{arch}.context_length"), u(c.n_ctx_train)),
        (format!("{arch}.embedding_length"), u(c.d_model)),
        (format!("{arch}.feed_forward_length"), u(c.d_ff)),
        (format!("{arch}.attention.head_count"), u(c.n_heads)),
        (format!("{arch}.attention.head_count_kv"), u(c.n_kv_heads)),
        (format!("{arch}.rope.freq_base"), Value::F32(c.rope_theta)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_eps),
        ),
    ];
    if d.config_json.get("head_dim").is_some_and(|v| !v.is_null()) {
        m.push((format!("{arch}.attention.key_length"), u(c.head_dim)));
        m.push((format!("{arch}.attention.value_length"), u(c.head_dim)));
    }
    if c.arch == Arch::Llama {
        m.push((format!("{arch}.vocab_size"), u(c.vocab_size)));
        m.push((format!("{arch}.rope.dimension_count"), u(c.n_rot)));
    }
    m
}

/// Writes the model of directory `d` to the GGUF file `out`, its matrices in `recipe`'s
/// formats, norms and biases in F32, Wq / Wk rows moved from Hugging Face's order to the
/// GGUF converter's where the architecture's GGUF RoPE differs (llama); `tokenizer` is the
/// `tokenizer.*` metadata (plumb-tokenizer's `GgufVocab::to_metadata`). Returns the plan.
pub fn quantize_dir(
    d: &HfDir,
    recipe: Recipe,
    tokenizer: Vec<(String, Value)>,
    out: &Path,
    progress: Progress,
) -> Result<Plan> {
    let cfg = &d.config;
    if cfg.arch == Arch::Gemma3 {
        // dir_metadata writes the keys of the llama, qwen2 and qwen3 families only, and
        // Gemma's SentencePiece tokenizer is not converted to GGUF metadata.
        return Err(ModelError::Unsupported(
            "a gemma3 directory to GGUF (its sliding-window keys and SentencePiece \
             tokenizer are not converted; quantize the GGUF, or load the directory with \
             --quantize)"
                .into(),
        ));
    }
    let to_style = cfg.arch.rope_style();
    if !tokenizer.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
        return Err(ModelError::Unsupported(
            "a GGUF without tokenizer metadata (tokenizer.ggml.tokens)".into(),
        ));
    }
    let src: &dyn TensorSource = d;
    let tied = d.tied || src.weight("output.weight")?.is_none();
    let mut items = Vec::new();
    for name in model_tensor_names(cfg) {
        if tied && name == "output.weight" {
            continue;
        }
        let Some(w) = src.weight(&name)? else {
            continue;
        };
        let qk_bias = name.ends_with(".attn_q.bias") || name.ends_with(".attn_k.bias");
        if qk_bias && cfg.rope_style != to_style {
            return Err(ModelError::Unsupported(format!(
                "{}: a {} with query / key biases (their rows would need the RoPE \
                 permutation too)",
                src.source_name(&name),
                cfg.arch.name()
            )));
        }
        items.push((name, w));
    }
    let mut w = GgufWriter::new();
    for (k, v) in dir_metadata(d) {
        w.add_metadata(k, v);
    }
    if let Some(ft) = recipe.file_type() {
        w.add_metadata("general.file_type", Value::U32(ft));
    }
    for (k, v) in tokenizer {
        w.add_metadata(k, v);
    }
    w.add_metadata("general.quantization_version", Value::U32(2));
    w.add_metadata(
        "general.quantized_by",
        Value::String(format!("plumb quantize {}", recipe.name())),
    );
    let mut plan = Plan::default();
    let total = items.len();
    for (i, (name, weight)) in items.into_iter().enumerate() {
        let (to, dims) = if is_matrix(&name) {
            let to = recipe.type_for(&name, weight.cols, cfg.n_layers, tied);
            (to, vec![weight.cols as u64, weight.rows as u64])
        } else {
            (GgmlType::F32, vec![(weight.rows * weight.cols) as u64])
        };
        let order = RowOrder::for_tensor(&name, cfg.head_dim, cfg.rope_style, to_style);
        plan.tensors.push((name.clone(), weight.ty, to));
        let (progress, name2) = (progress.clone(), name.clone());
        w.add_tensor_fn(
            name,
            to,
            &dims,
            Box::new(move |out| {
                requantize(&weight, to, order, out).map_err(std::io::Error::other)?;
                progress(i + 1, total, &name2);
                Ok(())
            }),
        )?;
    }
    finish(w, out)?;
    Ok(plan)
}
