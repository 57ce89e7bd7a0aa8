//! `plumb quantize` to GGUF: the source's metadata and tensors, every matrix re-encoded by a
//! [`Recipe`] while the file is written (one band of rows in memory at a time).

use std::path::Path;
use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_gguf::{GgufFile, GgufWriter, Value};

use super::{is_matrix, requantize, Recipe, RowOrder};
use crate::error::{ModelError, Result};
use crate::formats::gguf_config;

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
    let tmp = out.with_extension("partial");
    w.write_file(&tmp).map_err(|e| ModelError::Checkpoint {
        path: out.to_path_buf(),
        msg: format!("writing failed: {e}"),
    })?;
    std::fs::rename(&tmp, out).map_err(|e| ModelError::Checkpoint {
        path: out.to_path_buf(),
        msg: format!("cannot move the finished file into place: {e}"),
    })?;
    Ok(plan)
}
