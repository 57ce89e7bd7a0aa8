//! Weight mapping: tensors named as GGUF names them, from any [`TensorSource`] (a GGUF file,
//! a Hugging Face or MLX directory), to the blocks of a decoder model, shape-checked against
//! the config and uploaded to a backend in their stored format. Norm weights are used as
//! stored: for gemma3 the GGUF converter has already added Gemma's `1 +` to them.

use plumb_core::HostWeight;
use plumb_gguf::GgufFile;
use plumb_ops::Backend;

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};

pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Buf,
    pub wq: B::Weight,
    pub wk: B::Weight,
    pub wv: B::Weight,
    pub wo: B::Weight,
    /// Qwen2 biases on the projections.
    pub bq: Option<B::Buf>,
    pub bk: Option<B::Buf>,
    pub bv: Option<B::Buf>,
    /// Qwen3 and Gemma 3 per-head norms: `[head_dim]`.
    pub q_norm: Option<B::Buf>,
    pub k_norm: Option<B::Buf>,
    /// Gemma 3's norm of the attention output, before its residual add.
    pub post_attn_norm: Option<B::Buf>,
    pub ffn_norm: B::Buf,
    /// Gemma 3's norm of the FFN output, before its residual add.
    pub post_ffn_norm: Option<B::Buf>,
    pub w_gate: B::Weight,
    pub w_up: B::Weight,
    pub w_down: B::Weight,
}

pub struct Weights<B: Backend> {
    pub tok_embd: B::Weight,
    pub output_norm: B::Buf,
    /// `None` when the head is tied to the embedding table.
    pub output: Option<B::Weight>,
    /// Llama 3.1-style RoPE frequency factors `[n_rot / 2]`.
    pub rope_freqs: Option<B::Buf>,
    pub layers: Vec<LayerWeights<B>>,
}

/// Where a model's tensors come from. Names are GGUF's (`blk.3.attn_q.weight`); a source
/// that stores them under other names maps them.
pub trait TensorSource {
    /// The tensor `name` as a 2-D weight (1-D tensors have one row), or `None` when the
    /// source has no such tensor.
    fn weight(&self, name: &str) -> Result<Option<HostWeight>>;

    /// What the source itself calls the tensor `name` (for error messages).
    fn source_name(&self, name: &str) -> String {
        name.to_string()
    }
}

impl TensorSource for GgufFile {
    fn weight(&self, name: &str) -> Result<Option<HostWeight>> {
        match self.tensor(name) {
            Some(_) => Ok(Some(GgufFile::weight(self, name)?)),
            None => Ok(None),
        }
    }
}

/// Reads and checks tensors from a source.
struct Loader<'a, B: Backend> {
    source: &'a dyn TensorSource,
    backend: &'a B,
}

impl<B: Backend> Loader<'_, B> {
    /// The tensor `name` checked to be `rows × cols`, or `None` when the source lacks it.
    fn host(&self, name: &str, rows: usize, cols: usize) -> Result<Option<HostWeight>> {
        let Some(w) = self.source.weight(name)? else {
            return Ok(None);
        };
        if w.rows != rows || w.cols != cols {
            return Err(ModelError::Tensor {
                name: self.source.source_name(name),
                msg: format!(
                    "shape is {}×{}, the config needs {rows}×{cols}",
                    w.rows, w.cols
                ),
            });
        }
        Ok(Some(w))
    }

    fn opt_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<B::Weight>> {
        match self.host(name, rows, cols)? {
            Some(w) => Ok(Some(self.backend.upload_weight(&w)?)),
            None => Ok(None),
        }
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<B::Buf>> {
        match self.host(name, 1, len)? {
            Some(w) => Ok(Some(self.backend.upload(&w.to_f32()?)?)),
            None => Ok(None),
        }
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<B::Weight> {
        self.opt_matrix(name, rows, cols)?
            .ok_or_else(|| self.missing(name, "missing"))
    }

    fn vector(&self, name: &str, len: usize) -> Result<B::Buf> {
        self.opt_vector(name, len)?
            .ok_or_else(|| self.missing(name, "missing"))
    }

    fn missing(&self, name: &str, msg: &str) -> ModelError {
        ModelError::Tensor {
            name: self.source.source_name(name),
            msg: msg.into(),
        }
    }
}

impl<B: Backend> Weights<B> {
    pub fn load(source: &dyn TensorSource, cfg: &ModelConfig, backend: &B) -> Result<Weights<B>> {
        let l = Loader { source, backend };
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let output = l.opt_matrix("output.weight", cfg.vocab_size, d)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let need = |name: String, len: usize, required: bool| -> Result<Option<B::Buf>> {
                let v = l.opt_vector(&name, len)?;
                if required && v.is_none() {
                    let msg = format!("missing (required by {})", cfg.arch.name());
                    return Err(l.missing(&name, &msg));
                }
                Ok(v)
            };
            let qwen2 = cfg.arch == Arch::Qwen2;
            let (qk_norm, post) = (cfg.arch.qk_norm(), cfg.arch.post_norms());
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), d)?,
                wq: l.matrix(&n("attn_q.weight"), q, d)?,
                wk: l.matrix(&n("attn_k.weight"), kv, d)?,
                wv: l.matrix(&n("attn_v.weight"), kv, d)?,
                wo: l.matrix(&n("attn_output.weight"), d, q)?,
                bq: need(n("attn_q.bias"), q, qwen2)?,
                bk: need(n("attn_k.bias"), kv, qwen2)?,
                bv: need(n("attn_v.bias"), kv, qwen2)?,
                q_norm: need(n("attn_q_norm.weight"), cfg.head_dim, qk_norm)?,
                k_norm: need(n("attn_k_norm.weight"), cfg.head_dim, qk_norm)?,
                post_attn_norm: need(n("post_attention_norm.weight"), d, post)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), d)?,
                post_ffn_norm: need(n("post_ffw_norm.weight"), d, post)?,
                w_gate: l.matrix(&n("ffn_gate.weight"), ff, d)?,
                w_up: l.matrix(&n("ffn_up.weight"), ff, d)?,
                w_down: l.matrix(&n("ffn_down.weight"), d, ff)?,
            });
        }
        Ok(Weights {
            tok_embd: l.matrix("token_embd.weight", cfg.vocab_size, d)?,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
            rope_freqs: l.opt_vector("rope_freqs.weight", cfg.n_rot / 2)?,
            layers,
        })
    }
}
