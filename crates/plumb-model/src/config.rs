//! Llama-family model configuration, read from GGUF metadata.

use plumb_gguf::GgufFile;
use plumb_ops::RopeStyle;

use crate::error::{ModelError, Result};

/// Architectures the forward knows, and what each changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, Mistral-style GQA, SmolLM: normal RoPE, no biases.
    Llama,
    /// Qwen2 / Qwen2.5: NeoX RoPE, biases on q, k and v.
    Qwen2,
    /// Qwen3: NeoX RoPE, RMSNorm on each query and key head before RoPE.
    Qwen3,
}

impl Arch {
    pub fn parse(name: &str) -> Result<Arch> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            other => Err(ModelError::Unsupported(format!(
                "architecture {other:?} (plumb runs llama, qwen2 and qwen3)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// The RoPE style of this architecture's GGUF files.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Qwen3 => RopeStyle::Neox,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Trained context length.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// How RoPE pairs a head's elements. A GGUF llama is `Normal` (its converter permutes the
    /// rows of Wq and Wk); a Hugging Face llama keeps the halves (`Neox`), as Qwen always does.
    pub rope_style: RopeStyle,
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f.architecture()?;
        let arch = Arch::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let get = |k: &str| -> Result<usize> { Ok(f.get_u64(&key(k))? as usize) };
        let n_heads = get("attention.head_count")?;
        let d_model = get("embedding_length")?;
        let n_kv_heads = match f.get(&key("attention.head_count_kv")) {
            Some(_) => get("attention.head_count_kv")?,
            None => n_heads,
        };
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(ModelError::Config(format!(
                "{n_heads} query heads and {n_kv_heads} KV heads: query heads must be a nonzero multiple"
            )));
        }
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => get("attention.key_length")?,
            None => d_model / n_heads,
        };
        let n_rot = match f.get(&key("rope.dimension_count")) {
            Some(_) => get("rope.dimension_count")?,
            None => head_dim,
        };
        let vocab_size = match f.get(&key("vocab_size")) {
            Some(_) => get("vocab_size")?,
            None => f
                .get_array("tokenizer.ggml.tokens")
                .map(|a| a.len())
                .unwrap_or(0),
        };
        let rope_theta = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f32(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let cfg = ModelConfig {
            arch,
            n_layers: get("block_count")?,
            d_model,
            d_ff: get("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            n_ctx_train: get("context_length")?,
            rms_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta,
            n_rot,
            rope_style: arch.rope_style(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.n_layers == 0 || self.d_model == 0 || self.d_ff == 0 || self.head_dim == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if self.n_rot > self.head_dim || !self.n_rot.is_multiple_of(2) {
            return bad(format!(
                "rope dimension {} must be even and ≤ head_dim {}",
                self.n_rot, self.head_dim
            ));
        }
        if self.n_layers > 1024 || self.d_model > 1 << 20 || self.n_heads > 4096 {
            return bad(format!("implausible dimensions in {self:?}"));
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
