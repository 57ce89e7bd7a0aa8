//! Quantization of whole models: the per-tensor choice of format ([`Recipe`], including
//! llama.cpp's Q4_K_M and Q5_K_M mixes), one matrix re-encoded a band of rows at a time
//! ([`requantize`]), in-situ quantization at load ([`Requantized`], a [`TensorSource`] over
//! another), and the writers: a GGUF file ([`gguf`]) or a Hugging Face / MLX directory
//! ([`dir`]). Every writer streams: it holds one tensor's output at a time.

pub mod dir;
pub mod gguf;

use std::io::Write;

use plumb_core::quant::{dequantize_row, quantize_row};
use plumb_core::{Bytes, GgmlType, HostWeight};
use plumb_ops::RopeStyle;
use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::weights::TensorSource;

/// How the matrices of a model are stored: one format for all, or llama.cpp's K-quant mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    Uniform(GgmlType),
    /// llama.cpp's `Q4_K_M` (`base` Q4_K) or `Q5_K_M` (`base` Q5_K): the head and, in the
    /// layers [`use_more_bits`] picks, `attn_v` and `ffn_down` in Q6_K; the rest in `base`.
    KMix {
        base: GgmlType,
    },
}

/// The GGUF formats `plumb quantize` writes.
const GGUF_TARGETS: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

impl Recipe {
    /// `q4_k_m`, `q5_k_m`, or one format (`q4_0`, `q8_0`, `q4_k`, `f16`, ...).
    pub fn parse(s: &str) -> Result<Recipe> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Ok(Recipe::KMix {
                base: GgmlType::Q4K,
            }),
            "q5_k_m" => Ok(Recipe::KMix {
                base: GgmlType::Q5K,
            }),
            other => GgmlType::parse(other)
                .filter(|t| GGUF_TARGETS.contains(t))
                .map(Recipe::Uniform)
                .ok_or_else(|| {
                    let names: Vec<&str> = GGUF_TARGETS.iter().map(|t| t.name()).collect();
                    ModelError::Unsupported(format!(
                        "quantization {s:?} (plumb writes {}, Q4_K_M and Q5_K_M)",
                        names.join(", ")
                    ))
                }),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Recipe::Uniform(t) => t.name().to_string(),
            Recipe::KMix { base } => format!("{}_M", base.name()),
        }
    }

    /// llama.cpp's `general.file_type` of a file in this recipe, where one names it exactly.
    pub fn file_type(&self) -> Option<u32> {
        Some(match self {
            Recipe::KMix {
                base: GgmlType::Q4K,
            } => 15,
            Recipe::KMix {
                base: GgmlType::Q5K,
            } => 17,
            Recipe::Uniform(t) => match t {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q6K => 18,
                GgmlType::BF16 => 32,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The format of matrix `name` (GGUF name, `cols` per row) in a model of `n_layers`
    /// layers; `tied`: the embedding table is also the head. A format whose block does not
    /// divide `cols` falls back as llama.cpp's does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0,
    /// Q2_K/Q3_K → Q4_0), and to F16 when no block fits.
    pub fn type_for(&self, name: &str, cols: usize, n_layers: usize, tied: bool) -> GgmlType {
        let want = match *self {
            Recipe::Uniform(t) => t,
            Recipe::KMix { base } => {
                let head = name == "output.weight" || (tied && name == "token_embd.weight");
                let bumped = (name.ends_with(".attn_v.weight")
                    || name.ends_with(".ffn_down.weight"))
                    && layer_of(name).is_some_and(|l| use_more_bits(l, n_layers));
                if head || bumped {
                    GgmlType::Q6K
                } else {
                    base
                }
            }
        };
        fit(want, cols)
    }
}

fn fit(ty: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let fallback = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        _ => GgmlType::F16,
    };
    if cols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlType::F16
    }
}

/// llama.cpp's choice of the layers that get more bits in its `_M` mixes: the first and
/// last eighth of the layers and every third one in between.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

/// The layer of a `blk.N.` tensor name.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Whether the GGUF name is a weight matrix (the tensors a quantizer re-encodes); norms,
/// biases and RoPE factors stay as they are.
pub fn is_matrix(name: &str) -> bool {
    const PARTS: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    if name == "token_embd.weight" || name == "output.weight" {
        return true;
    }
    let Some(stem) = name.strip_suffix(".weight") else {
        return false;
    };
    layer_of(name).is_some() && PARTS.iter().any(|p| stem.ends_with(&format!(".{p}")))
}

/// Every tensor name a model of `cfg` may have, in GGUF order (the loader's names).
pub fn model_tensor_names(cfg: &ModelConfig) -> Vec<String> {
    let mut v = vec![
        "token_embd.weight".to_string(),
        "rope_freqs.weight".to_string(),
    ];
    for l in 0..cfg.n_layers {
        for p in [
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q.bias",
            "attn_k.weight",
            "attn_k.bias",
            "attn_v.weight",
            "attn_v.bias",
            "attn_q_norm.weight",
            "attn_k_norm.weight",
            "attn_output.weight",
            "post_attention_norm.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "post_ffw_norm.weight",
        ] {
            v.push(format!("blk.{l}.{p}"));
        }
    }
    v.push("output_norm.weight".into());
    v.push("output.weight".into());
    v
}

/// Rows of Wq / Wk move between the GGUF converter's order for llama (each head's rotation
/// pairs adjacent: "normal" RoPE) and Hugging Face's (each head in two halves: NeoX RoPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    Same,
    /// Output row `h·hd + 2i + j` is input row `h·hd + j·hd/2 + i` (halves → pairs).
    ToPairs {
        head_dim: usize,
    },
    /// Output row `h·hd + j·hd/2 + i` is input row `h·hd + 2i + j` (pairs → halves).
    ToHalves {
        head_dim: usize,
    },
}

impl RowOrder {
    /// The order change a matrix `name` needs from a model whose RoPE is `from` to one whose
    /// RoPE is `to` (only Wq and Wk of a model that changes style move).
    pub fn for_tensor(name: &str, head_dim: usize, from: RopeStyle, to: RopeStyle) -> RowOrder {
        let qk = name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight");
        match (qk, from, to) {
            (true, RopeStyle::Neox, RopeStyle::Normal) => RowOrder::ToPairs { head_dim },
            (true, RopeStyle::Normal, RopeStyle::Neox) => RowOrder::ToHalves { head_dim },
            _ => RowOrder::Same,
        }
    }

    /// The input row of output row `r`.
    /// Example, head_dim 4: ToPairs maps output rows 0,1,2,3 to input rows 0,2,1,3.
    pub fn source(self, r: usize) -> usize {
        match self {
            RowOrder::Same => r,
            RowOrder::ToPairs { head_dim: hd } => {
                let (h, k) = (r / hd, r % hd);
                h * hd + (k % 2) * (hd / 2) + k / 2
            }
            RowOrder::ToHalves { head_dim: hd } => {
                let (h, k) = (r / hd, r % hd);
                let (j, i) = (k / (hd / 2), k % (hd / 2));
                h * hd + 2 * i + j
            }
        }
    }
}

/// Rows per band: the unit of work of [`for_each_band`].
const BAND_ROWS: usize = 64;

/// Decodes `w` to f32 a band of rows at a time (rows reordered by `order`) and hands each
/// band (`rows × cols` values, row-major) with its first row to `f`.
pub fn for_each_band(
    w: &HostWeight,
    order: RowOrder,
    mut f: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let rb = w.ty.row_bytes(w.cols)?;
    let src = w.data.as_slice();
    let mut band = vec![0f32; BAND_ROWS.min(w.rows.max(1)) * w.cols];
    for start in (0..w.rows).step_by(BAND_ROWS) {
        let n = BAND_ROWS.min(w.rows - start);
        band[..n * w.cols]
            .par_chunks_mut(w.cols.max(1))
            .enumerate()
            .try_for_each(|(i, out)| {
                let r = order.source(start + i);
                dequantize_row(w.ty, &src[r * rb..(r + 1) * rb], out)
            })?;
        f(start, &band[..n * w.cols])?;
    }
    Ok(())
}

/// Writes `w` in format `ty`, rows reordered by `order`, a band at a time. A weight already
/// in `ty` and order is copied byte for byte.
pub fn requantize(
    w: &HostWeight,
    ty: GgmlType,
    order: RowOrder,
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| ModelError::Tensor {
        name: w.name.clone(),
        msg: format!("write failed: {e}"),
    };
    if ty == w.ty && order == RowOrder::Same {
        return out.write_all(w.data.as_slice()).map_err(io);
    }
    let rb = ty.row_bytes(w.cols)?;
    let mut bytes = Vec::new();
    for_each_band(w, order, |_, band| {
        bytes.resize(band.len() / w.cols.max(1) * rb, 0);
        bytes
            .par_chunks_mut(rb.max(1))
            .zip(band.par_chunks(w.cols.max(1)))
            .try_for_each(|(o, x)| quantize_row(ty, x, o))?;
        out.write_all(&bytes).map_err(io)
    })
}

/// `w` re-encoded in `ty` (in memory).
pub fn requantized(w: &HostWeight, ty: GgmlType) -> Result<HostWeight> {
    let mut data = Vec::with_capacity(w.rows * ty.row_bytes(w.cols)?);
    requantize(w, ty, RowOrder::Same, &mut data)?;
    Ok(HostWeight::new(
        &w.name,
        ty,
        w.rows,
        w.cols,
        Bytes::from_vec(data),
    )?)
}

/// In-situ quantization: the matrices of `inner` re-encoded by `recipe` as they are read, so
/// that an f16 or bf16 checkpoint runs quantized without writing a file. Other tensors pass
/// through.
pub struct Requantized<'a> {
    pub inner: &'a dyn TensorSource,
    pub recipe: Recipe,
    pub n_layers: usize,
    pub tied: bool,
}

impl<'a> Requantized<'a> {
    pub fn new(inner: &'a dyn TensorSource, recipe: Recipe, cfg: &ModelConfig) -> Result<Self> {
        let tied = inner.weight("output.weight")?.is_none();
        Ok(Requantized {
            inner,
            recipe,
            n_layers: cfg.n_layers,
            tied,
        })
    }
}

impl TensorSource for Requantized<'_> {
    fn weight(&self, name: &str) -> Result<Option<HostWeight>> {
        let Some(w) = self.inner.weight(name)? else {
            return Ok(None);
        };
        if !is_matrix(name) {
            return Ok(Some(w));
        }
        let ty = self.recipe.type_for(name, w.cols, self.n_layers, self.tied);
        if ty == w.ty {
            return Ok(Some(w));
        }
        Ok(Some(requantized(&w, ty)?))
    }

    fn source_name(&self, name: &str) -> String {
        self.inner.source_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_layers_follow_llama_cpp() {
        // 32 layers: the first 4, the last 4 and layers 6, 9, ..., 27 get Q6_K.
        let more: Vec<usize> = (0..32).filter(|&l| use_more_bits(l, 32)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        let r = Recipe::parse("q4_k_m").unwrap();
        assert_eq!(
            r.type_for("blk.6.attn_v.weight", 4096, 32, false),
            GgmlType::Q6K
        );
        assert_eq!(
            r.type_for("blk.7.attn_v.weight", 4096, 32, false),
            GgmlType::Q4K
        );
        assert_eq!(
            r.type_for("blk.7.attn_q.weight", 4096, 32, false),
            GgmlType::Q4K
        );
        assert_eq!(r.type_for("output.weight", 4096, 32, false), GgmlType::Q6K);
        assert_eq!(
            r.type_for("token_embd.weight", 4096, 32, false),
            GgmlType::Q4K
        );
        assert_eq!(
            r.type_for("token_embd.weight", 4096, 32, true),
            GgmlType::Q6K
        );
        // 576 columns (SmolLM2) are not whole 256-blocks: llama.cpp's fallbacks.
        assert_eq!(
            r.type_for("blk.7.attn_q.weight", 576, 30, false),
            GgmlType::Q5_0
        );
        assert_eq!(
            r.type_for("blk.0.attn_v.weight", 576, 30, false),
            GgmlType::Q8_0
        );
        assert_eq!(r.name(), "Q4_K_M");
        assert!(Recipe::parse("q8_k").is_err());
    }

    #[test]
    fn row_orders_are_inverse() {
        let (a, b) = (
            RowOrder::ToPairs { head_dim: 8 },
            RowOrder::ToHalves { head_dim: 8 },
        );
        assert_eq!(
            (0..4)
                .map(|r| RowOrder::ToPairs { head_dim: 4 }.source(r))
                .collect::<Vec<_>>(),
            [0, 2, 1, 3]
        );
        for r in 0..24 {
            assert_eq!(a.source(b.source(r)), r);
        }
    }
}
