//! Decoder model configuration (llama, qwen2, qwen3, gemma3), read from GGUF metadata.

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
    /// Gemma 3: NeoX RoPE, per-head QK norms, norms after attention and after the FFN too,
    /// a GELU-gated FFN, embeddings scaled by √d_model, sliding-window (local) layers with
    /// their own RoPE base between global ones.
    Gemma3,
}

/// The activation of the gated FFN: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnAct {
    /// silu (swiglu): llama, qwen.
    Silu,
    /// gelu, tanh form (geglu): gemma.
    GeluTanh,
}

impl Arch {
    pub fn parse(name: &str) -> Result<Arch> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(ModelError::Unsupported(format!(
                "architecture {other:?} (plumb runs llama, qwen2, qwen3 and gemma3)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// The RoPE style of this architecture's GGUF files.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => RopeStyle::Neox,
        }
    }

    pub fn ffn_act(self) -> FfnAct {
        match self {
            Arch::Gemma3 => FfnAct::GeluTanh,
            _ => FfnAct::Silu,
        }
    }

    /// Whether each query and key head is RMS-normed before RoPE.
    pub fn qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3)
    }

    /// Whether the attention and FFN outputs are RMS-normed before their residual add.
    pub fn post_norms(self) -> bool {
        self == Arch::Gemma3
    }
}

/// Gemma 3's layout when the file does not say: every 6th layer global, the others local,
/// and the local layers' RoPE base (llama.cpp's values for gemma3).
pub(crate) const GEMMA3_SWA_PATTERN: usize = 6;
pub(crate) const GEMMA3_LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Which of `n_layers` layers are local under a sliding-window pattern `n`: every `n`-th
/// layer (1-based) is global, the others local; `n = 0`: all local.
pub(crate) fn swa_pattern(n: usize, n_layers: usize) -> Vec<bool> {
    (0..n_layers).map(|i| n == 0 || (i + 1) % n != 0).collect()
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
    /// `scale` of every attention: `1 / √key_length` (gemma3 27B: `1 / √(d_model / n_heads)`).
    pub attn_scale: f32,
    /// The embeddings are multiplied by this before the first layer (gemma: √d_model).
    pub embed_scale: Option<f32>,
    /// Sliding-window attention: the window, which layers use it, and their RoPE base.
    pub swa: Option<Swa>,
    /// Final logits become `c · tanh(logits / c)`.
    pub final_softcap: Option<f32>,
}

/// Sliding-window (local) layers: each attends to its last `window` positions and rotates
/// with `rope_theta`; the other layers are global.
#[derive(Debug, Clone, PartialEq)]
pub struct Swa {
    pub window: usize,
    /// Per layer: local (true) or global.
    pub local: Vec<bool>,
    pub rope_theta: f32,
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
        let n_layers = get("block_count")?;
        let gemma = arch == Arch::Gemma3;
        // llama.cpp's rule (gemma3's query_pre_attn_scalar): key_length, except for the 27B
        // (62 layers), which scales by d_model / n_heads.
        let scale_dim = if gemma && n_layers == 62 {
            d_model / n_heads
        } else {
            head_dim
        };
        let softcap = match f.get(&key("final_logit_softcapping")) {
            Some(_) => Some(f.get_f32(&key("final_logit_softcapping"))?),
            None => None,
        };
        let cfg = ModelConfig {
            arch,
            n_layers,
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
            attn_scale: 1.0 / (scale_dim as f32).sqrt(),
            embed_scale: gemma.then(|| (d_model as f32).sqrt()),
            swa: swa_from_gguf(f, arch_name, gemma, n_layers)?,
            final_softcap: softcap.filter(|&c| c > 0.0),
            rope_style: arch.rope_style(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The window of layer `li`'s attention (`None`: global).
    pub fn layer_window(&self, li: usize) -> Option<usize> {
        let swa = self.swa.as_ref()?;
        swa.local
            .get(li)
            .copied()
            .unwrap_or(false)
            .then_some(swa.window)
    }

    /// The RoPE base of layer `li`.
    pub fn layer_rope_theta(&self, li: usize) -> f32 {
        match (&self.swa, self.layer_window(li)) {
            (Some(swa), Some(_)) => swa.rope_theta,
            _ => self.rope_theta,
        }
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
        if let Some(swa) = &self.swa {
            if swa.window == 0 || swa.local.len() != self.n_layers {
                return bad(format!(
                    "sliding window {} over {} layer flags for {} layers",
                    swa.window,
                    swa.local.len(),
                    self.n_layers
                ));
            }
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

/// The sliding-window layout: `{arch}.attention.sliding_window` (the window), and which
/// layers use it from `{arch}.attention.sliding_window_pattern` (`n`: every `n`-th layer is
/// global; or one flag per layer, true or nonzero for local), else gemma3's every-6th; the
/// local RoPE base from `{arch}.rope.freq_base_swa`, else gemma3's 10,000. `None` without a
/// window.
fn swa_from_gguf(f: &GgufFile, arch: &str, gemma: bool, n_layers: usize) -> Result<Option<Swa>> {
    let key = |k: &str| format!("{arch}.attention.{k}");
    let window = match f.get(&key("sliding_window")) {
        Some(_) => f.get_u64(&key("sliding_window"))? as usize,
        None => return Ok(None),
    };
    let local: Vec<bool> = match f.get(&key("sliding_window_pattern")) {
        Some(v) => match (v.as_u64(), v.as_array()) {
            (Some(n), _) => swa_pattern(n as usize, n_layers),
            (None, Some(flags)) => flags
                .iter()
                .map(|x| x.as_bool().or(x.as_u64().map(|v| v != 0)))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ModelError::Config(format!(
                        "{} is not a list of flags",
                        key("sliding_window_pattern")
                    ))
                })?,
            _ => {
                return Err(ModelError::Config(format!(
                    "{} is neither a number nor flags",
                    key("sliding_window_pattern")
                )))
            }
        },
        None if gemma => swa_pattern(GEMMA3_SWA_PATTERN, n_layers),
        None => vec![true; n_layers],
    };
    let rope_theta = match f.get(&format!("{arch}.rope.freq_base_swa")) {
        Some(_) => f.get_f32(&format!("{arch}.rope.freq_base_swa"))?,
        None if gemma => GEMMA3_LOCAL_ROPE_BASE,
        None => match f.get(&format!("{arch}.rope.freq_base")) {
            Some(_) => f.get_f32(&format!("{arch}.rope.freq_base"))?,
            None => 10_000.0,
        },
    };
    Ok(Some(Swa {
        window,
        local,
        rope_theta,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma_like(extra: &[(&str, plumb_gguf::Value)]) -> ModelConfig {
        use plumb_gguf::{GgufWriter, Value};
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("gemma3".into()));
        for (k, v) in [
            ("block_count", 13u32),
            ("embedding_length", 64),
            ("feed_forward_length", 128),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 1),
            ("attention.key_length", 32),
            ("context_length", 1024),
        ] {
            w.add_metadata(format!("gemma3.{k}"), Value::U32(v));
        }
        w.add_metadata("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
        w.add_metadata("gemma3.rope.freq_base", Value::F32(1e6));
        w.add_metadata("gemma3.attention.sliding_window", Value::U32(512));
        for (k, v) in extra {
            w.add_metadata(*k, v.clone());
        }
        let path = std::env::temp_dir().join(format!(
            "plumb-gemma-config-{}-{}.gguf",
            std::process::id(),
            extra.len()
        ));
        w.write_file(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let cfg = ModelConfig::from_gguf(&f).unwrap();
        std::fs::remove_file(&path).unwrap();
        cfg
    }

    #[test]
    fn gemma3_layers_alternate_five_local_to_one_global() {
        let cfg = gemma_like(&[]);
        let global: Vec<usize> = (0..13).filter(|&i| cfg.layer_window(i).is_none()).collect();
        assert_eq!(global, [5, 11]);
        assert_eq!(cfg.layer_window(0), Some(512));
        assert_eq!(
            (cfg.layer_rope_theta(0), cfg.layer_rope_theta(5)),
            (1e4, 1e6)
        );
        assert_eq!(cfg.embed_scale, Some(8.0));
        assert_eq!(cfg.attn_scale, 1.0 / 32f32.sqrt());
        assert_eq!(
            (cfg.arch.rope_style(), cfg.final_softcap),
            (RopeStyle::Neox, None)
        );
    }

    #[test]
    fn the_pattern_and_softcap_come_from_metadata_when_present() {
        use plumb_gguf::Value;
        let cfg = gemma_like(&[
            ("gemma3.attention.sliding_window_pattern", Value::U32(2)),
            ("gemma3.final_logit_softcapping", Value::F32(30.0)),
        ]);
        let local: Vec<bool> = (0..4).map(|i| cfg.layer_window(i).is_some()).collect();
        assert_eq!(local, [true, false, true, false]);
        assert_eq!(cfg.final_softcap, Some(30.0));
    }
}
