//! MLX checkpoints (mlx-lm's safetensors): the `"quantization"` entry of `config.json` and the
//! affine-quantized matrices, each stored as `weight` (uint32 codes), `scales` and `biases`
//! (see `plumb_core::quant::affine` for the layout). A quantized matrix is interleaved into
//! plumb's blocks at load (one pass over its bytes); unquantized tensors stay views of the map.

use std::collections::HashMap;

use plumb_core::quant::affine;
use plumb_core::{Bytes, GgmlType, HostWeight};
use rayon::prelude::*;
use safetensors::Dtype;
use serde_json::Value as Json;

use super::safetensors::StTensor;
use crate::error::{ModelError, Result};

/// `(bits, group size)` of an affine-quantized module.
pub type Params = (u32, usize);

/// How a checkpoint is quantized: the default parameters and mlx-lm's per-module entries
/// (`"model.layers.0.mlp.down_proj": {"bits": 6, "group_size": 64}`, or `false` for a
/// module left unquantized).
#[derive(Debug, Clone)]
pub struct MlxQuant {
    pub default: Params,
    pub overrides: HashMap<String, Option<Params>>,
}

fn quant_err(msg: String) -> ModelError {
    ModelError::Config(format!("config.json quantization: {msg}"))
}

fn params(j: &Json, what: &str) -> Result<Params> {
    let get = |k: &str| {
        j.get(k)
            .and_then(Json::as_u64)
            .ok_or_else(|| quant_err(format!("{what}: {k:?} is missing or not an integer")))
    };
    let (bits, group) = (get("bits")? as u32, get("group_size")? as usize);
    if let Some(mode) = j.get("mode").and_then(Json::as_str) {
        if mode != "affine" {
            return Err(ModelError::Unsupported(format!(
                "{what}: quantization mode {mode:?} (plumb reads MLX's affine mode)"
            )));
        }
    }
    if !affine::supported(bits, group) {
        return Err(ModelError::Unsupported(format!(
            "{what}: {bits}-bit groups of {group} (MLX affine: bits 2, 3, 4, 5, 6 or 8, groups \
             of 32, 64 or 128)"
        )));
    }
    Ok((bits, group))
}

impl MlxQuant {
    /// The quantization of a parsed `config.json` (its `"quantization"` entry), or `None` for
    /// an unquantized checkpoint. Other quantizations (a `"quantization_config"` alone: GPTQ,
    /// AWQ, ...) are refused by name.
    pub fn from_config(j: &Json) -> Result<Option<MlxQuant>> {
        let Some(q) = j.get("quantization") else {
            return match j.get("quantization_config") {
                Some(other) => Err(ModelError::Unsupported(format!(
                    "config.json: quantization_config {other} (plumb reads MLX's affine \
                     quantization)"
                ))),
                None => Ok(None),
            };
        };
        let obj = q
            .as_object()
            .ok_or_else(|| quant_err(format!("{q} is not an object")))?;
        let default = params(q, "default")?;
        let mut overrides = HashMap::new();
        for (k, v) in obj {
            match v {
                Json::Object(_) => {
                    overrides.insert(k.clone(), Some(params(v, k)?));
                }
                Json::Bool(false) => {
                    overrides.insert(k.clone(), None);
                }
                _ => {}
            }
        }
        Ok(Some(MlxQuant { default, overrides }))
    }

    /// The parameters of `module`, or `None` if it is left unquantized.
    pub fn params(&self, module: &str) -> Option<Params> {
        match self.overrides.get(module) {
            Some(p) => *p,
            None => Some(self.default),
        }
    }
}

/// The scales or biases of one row, decoded to f32.
fn row_f32(t: &StTensor, r: usize, out: &mut [f32]) -> plumb_core::Result<()> {
    let ty = match t.dtype {
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        _ => GgmlType::F32,
    };
    let rb = ty.row_bytes(out.len())?;
    plumb_core::quant::dequantize_row(ty, &t.data.as_slice()[r * rb..(r + 1) * rb], out)
}

/// The matrix `name` from MLX's three tensors of its module, as plumb's affine blocks.
pub fn affine_weight(
    name: &str,
    (bits, group): Params,
    w: &StTensor,
    scales: &StTensor,
    biases: &StTensor,
) -> Result<HostWeight> {
    let bad = |msg: String| ModelError::Tensor {
        name: name.to_string(),
        msg,
    };
    let float = |d: Dtype| matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32);
    if w.dtype != Dtype::U32 || !float(scales.dtype) || biases.dtype != scales.dtype {
        return Err(bad(format!(
            "MLX quantized weight must be U32 with float scales and biases of one dtype, got \
             {:?}, {:?}, {:?}",
            w.dtype, scales.dtype, biases.dtype
        )));
    }
    let &[rows, words] = &w.shape[..] else {
        return Err(bad(format!(
            "quantized weight shape {:?} is not 2-D",
            w.shape
        )));
    };
    let cols = words * 32 / bits as usize;
    let n_groups = cols / group;
    if !cols.is_multiple_of(group)
        || scales.shape != [rows, n_groups]
        || biases.shape != scales.shape
    {
        return Err(bad(format!(
            "{bits}-bit groups of {group}: weight {:?} ({cols} columns) needs scales and biases \
             [{rows}, {n_groups}], got {:?} and {:?}",
            w.shape, scales.shape, biases.shape
        )));
    }
    let ty = GgmlType::mlx(bits, group).ok_or_else(|| bad(format!("no {bits}-bit format")))?;
    let (src_row, dst_row) = (words * 4, ty.row_bytes(cols)?);
    let codes = w.data.as_slice();
    let mut data = vec![0u8; rows * dst_row];
    data.par_chunks_mut(dst_row.max(1))
        .enumerate()
        .try_for_each(|(r, out)| -> plumb_core::Result<()> {
            let (mut s, mut b) = (vec![0f32; n_groups], vec![0f32; n_groups]);
            row_f32(scales, r, &mut s)?;
            row_f32(biases, r, &mut b)?;
            let src = &codes[r * src_row..(r + 1) * src_row];
            affine::pack_mlx_row(bits, group, src, &s, &b, out)
        })?;
    Ok(HostWeight::new(
        name,
        ty,
        rows,
        cols,
        Bytes::from_vec(data),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_entries_and_overrides() {
        let j = serde_json::json!({"quantization": {
            "group_size": 64, "bits": 3,
            "model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 6},
            "model.embed_tokens": false
        }});
        let q = MlxQuant::from_config(&j).unwrap().unwrap();
        assert_eq!(q.params("model.layers.1.mlp.down_proj"), Some((3, 64)));
        assert_eq!(q.params("model.layers.0.mlp.down_proj"), Some((6, 64)));
        assert_eq!(q.params("model.embed_tokens"), None);
        assert!(MlxQuant::from_config(&serde_json::json!({}))
            .unwrap()
            .is_none());
    }

    #[test]
    fn unsupported_quantizations_are_named() {
        for (q, want) in [
            (serde_json::json!({"bits": 7, "group_size": 64}), "7-bit"),
            (
                serde_json::json!({"bits": 4, "group_size": 16}),
                "groups of 16",
            ),
            (serde_json::json!({"bits": 4}), "group_size"),
            (
                serde_json::json!({"bits": 4, "group_size": 32, "mode": "mxfp4"}),
                "mxfp4",
            ),
        ] {
            let e = MlxQuant::from_config(&serde_json::json!({ "quantization": q }))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let gptq = serde_json::json!({"quantization_config": {"quant_method": "gptq"}});
        let e = MlxQuant::from_config(&gptq).unwrap_err().to_string();
        assert!(e.contains("gptq"), "{e}");
    }
}
