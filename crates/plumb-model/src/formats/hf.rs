//! Hugging Face checkpoints: `config.json` to a [`ModelConfig`], and GGUF tensor names to the
//! Hugging Face names of the llama, qwen2, qwen3 and gemma3 families.
//!
//! RoPE: the GGUF converter permutes the rows of a llama's Wq and Wk so that adjacent pairs
//! rotate together ("normal" RoPE); a Hugging Face checkpoint keeps the original rows, which
//! rotate in halves (`rotate_half`). Rather than permuting at load (a copy), a Hugging Face
//! model runs with [`RopeStyle::Neox`], which is the same rotation of the original rows.
//! Gemma 3 rotates in halves in both formats (the converter leaves its rows alone).
//!
//! Gemma 3: `model_type` `gemma3_text`, or `gemma3` (the multimodal checkpoint) whose
//! `text_config` holds the language model, with the Gemma 3 defaults of the keys it omits.
//! Its RMSNorms compute `x · (1 + w)` and store `w`; the GGUF converter stores `1 + w`
//! ([`norm_offset`]). Its norms are named differently from llama's: the FFN's input norm is
//! `pre_feedforward_layernorm`, and `post_attention_layernorm` is the norm of the attention
//! output ([`hf_module`]).

use plumb_ops::RopeStyle;
use serde_json::Value as Json;

use crate::config::{Arch, ModelConfig, Swa};
use crate::error::{ModelError, Result};

fn config_err(msg: String) -> ModelError {
    ModelError::Config(format!("config.json: {msg}"))
}

/// A non-negative integer field; `default` when absent or null.
fn int(j: &Json, key: &str, default: Option<usize>) -> Result<usize> {
    match j.get(key) {
        None | Some(Json::Null) => default.ok_or_else(|| config_err(format!("{key:?} is missing"))),
        Some(v) => v
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| config_err(format!("{key:?} is {v}, not a non-negative integer"))),
    }
}

fn float(j: &Json, key: &str, default: f64) -> Result<f32> {
    match j.get(key) {
        None | Some(Json::Null) => Ok(default as f32),
        Some(v) => v
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| config_err(format!("{key:?} is {v}, not a number"))),
    }
}

/// A number field that may be absent or null (`None`).
fn opt_float(j: &Json, key: &str) -> Result<Option<f32>> {
    match j.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(_) => float(j, key, 0.0).map(Some),
    }
}

/// The architecture of a `model_type`, and the object holding the language model's keys
/// (`text_config` for a multimodal gemma3 checkpoint, else the whole file).
fn arch(j: &Json) -> Result<(Arch, &Json)> {
    let t = j
        .get("model_type")
        .and_then(Json::as_str)
        .ok_or_else(|| config_err("\"model_type\" is missing".into()))?;
    match t {
        "llama" | "qwen2" | "qwen3" => Ok((Arch::parse(t)?, j)),
        "gemma3_text" => Ok((Arch::Gemma3, j)),
        "gemma3" => match j.get("text_config") {
            Some(tc) if tc.is_object() => Ok((Arch::Gemma3, tc)),
            Some(other) => Err(config_err(format!(
                "model_type \"gemma3\": \"text_config\" is {other}, not an object"
            ))),
            None => Err(config_err(
                "model_type \"gemma3\" needs a \"text_config\" (the language model's keys)".into(),
            )),
        },
        other => Err(ModelError::Unsupported(format!(
            "model_type {other:?} in config.json (plumb loads llama, qwen2, qwen3, gemma3 and \
             gemma3_text directories)"
        ))),
    }
}

/// The model configuration of a parsed `config.json`.
pub fn config_from_json(j: &Json) -> Result<ModelConfig> {
    let (arch, t) = arch(j)?;
    if arch == Arch::Gemma3 {
        return gemma3_config(j, t);
    }
    no_rope_scaling(t)?;
    let d_model = int(t, "hidden_size", None)?;
    let n_heads = int(t, "num_attention_heads", None)?;
    let n_kv_heads = int(t, "num_key_value_heads", Some(n_heads))?;
    check_heads(n_heads, n_kv_heads)?;
    let head_dim = int(t, "head_dim", Some(d_model / n_heads))?;
    let rotary = float(t, "partial_rotary_factor", 1.0)?;
    let cfg = ModelConfig {
        arch,
        n_layers: int(t, "num_hidden_layers", None)?,
        d_model,
        d_ff: int(t, "intermediate_size", None)?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size: int(t, "vocab_size", None)?,
        n_ctx_train: int(t, "max_position_embeddings", Some(2048))?,
        rms_eps: float(t, "rms_norm_eps", 1e-6)?,
        rope_theta: float(t, "rope_theta", 10_000.0)?,
        n_rot: (head_dim as f32 * rotary) as usize,
        rope_style: RopeStyle::Neox,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        embed_scale: None,
        swa: None,
        final_softcap: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn no_rope_scaling(t: &Json) -> Result<()> {
    match t.get("rope_scaling") {
        None | Some(Json::Null) => Ok(()),
        Some(v) => Err(ModelError::Unsupported(format!(
            "config.json: rope_scaling {v} is not supported"
        ))),
    }
}

fn check_heads(n_heads: usize, n_kv_heads: usize) -> Result<()> {
    if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(config_err(format!(
            "{n_heads} query heads and {n_kv_heads} KV heads: query heads must be a nonzero \
             multiple"
        )));
    }
    Ok(())
}

/// Gemma 3's configuration defaults (those of Hugging Face's `Gemma3TextConfig`) for the keys
/// a checkpoint may omit. The model's size (hidden_size, intermediate_size,
/// num_hidden_layers) has no default: it must be given.
mod gemma3_default {
    pub const VOCAB: usize = 262_208;
    pub const HEADS: usize = 8;
    pub const KV_HEADS: usize = 4;
    pub const HEAD_DIM: usize = 256;
    pub const QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
    pub const SLIDING_WINDOW: usize = 4096;
    pub const ROPE_THETA: f64 = 1_000_000.0;
    pub const CTX: usize = 131_072;
}

/// `j`: the whole file; `t`: the language model's keys (the same object for `gemma3_text`).
fn gemma3_config(j: &Json, t: &Json) -> Result<ModelConfig> {
    use gemma3_default as def;
    no_rope_scaling(t)?;
    for key in ["hidden_activation", "hidden_act"] {
        match t.get(key) {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) if s == "gelu_pytorch_tanh" => {}
            Some(v) => {
                return Err(ModelError::Unsupported(format!(
                    "config.json: {key} {v} (plumb runs gemma3 with gelu_pytorch_tanh)"
                )))
            }
        }
    }
    if let Some(c) = opt_float(t, "attn_logit_softcapping")? {
        return Err(ModelError::Unsupported(format!(
            "config.json: attn_logit_softcapping {c} (plumb runs gemma3 without it)"
        )));
    }
    if t.get("use_bidirectional_attention").and_then(Json::as_bool) == Some(true) {
        return Err(ModelError::Unsupported(
            "config.json: use_bidirectional_attention true (plumb runs causal gemma3)".into(),
        ));
    }
    let d_model = int(t, "hidden_size", None)?;
    let n_heads = int(t, "num_attention_heads", Some(def::HEADS))?;
    let n_kv_heads = int(t, "num_key_value_heads", Some(def::KV_HEADS))?;
    check_heads(n_heads, n_kv_heads)?;
    let head_dim = int(t, "head_dim", Some(def::HEAD_DIM))?;
    let n_layers = int(t, "num_hidden_layers", None)?;
    // A multimodal checkpoint's vocabulary is the outer file's (mlx-lm does the same).
    let vocab_size = match j.get("vocab_size") {
        Some(v) if !std::ptr::eq(j, t) && !v.is_null() => int(j, "vocab_size", None)?,
        _ => int(t, "vocab_size", Some(def::VOCAB))?,
    };
    let scalar = float(t, "query_pre_attn_scalar", def::QUERY_PRE_ATTN_SCALAR)?;
    if !(scalar > 0.0 && scalar.is_finite()) {
        return Err(config_err(format!(
            "\"query_pre_attn_scalar\" is {scalar}, not a positive number"
        )));
    }
    let cfg = ModelConfig {
        arch: Arch::Gemma3,
        n_layers,
        d_model,
        d_ff: int(t, "intermediate_size", None)?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        n_ctx_train: int(t, "max_position_embeddings", Some(def::CTX))?,
        rms_eps: float(t, "rms_norm_eps", 1e-6)?,
        rope_theta: float(t, "rope_theta", def::ROPE_THETA)?,
        n_rot: head_dim,
        rope_style: RopeStyle::Neox,
        attn_scale: 1.0 / scalar.sqrt(),
        embed_scale: Some((d_model as f32).sqrt()),
        swa: Some(Swa {
            window: int(t, "sliding_window", Some(def::SLIDING_WINDOW))?,
            local: gemma3_layer_types(t, n_layers)?,
            rope_theta: float(
                t,
                "rope_local_base_freq",
                crate::config::GEMMA3_LOCAL_ROPE_BASE as f64,
            )?,
        }),
        final_softcap: opt_float(t, "final_logit_softcapping")?.filter(|&c| c > 0.0),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Which layers are local (sliding-window): `layer_types` (`"sliding_attention"` or
/// `"full_attention"` per layer) when present, else `sliding_window_pattern` (every `n`-th
/// layer global), else every 6th.
fn gemma3_layer_types(t: &Json, n_layers: usize) -> Result<Vec<bool>> {
    if let Some(v) = t.get("layer_types").filter(|v| !v.is_null()) {
        let list = v
            .as_array()
            .ok_or_else(|| config_err(format!("\"layer_types\" is {v}, not a list")))?;
        if list.len() != n_layers {
            return Err(config_err(format!(
                "\"layer_types\" has {} entries for {n_layers} layers",
                list.len()
            )));
        }
        return list
            .iter()
            .map(|x| match x.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(config_err(format!(
                    "\"layer_types\" entry {x} (sliding_attention or full_attention)"
                ))),
            })
            .collect();
    }
    let n = int(
        t,
        "sliding_window_pattern",
        Some(crate::config::GEMMA3_SWA_PATTERN),
    )?;
    if n == 0 {
        return Err(config_err("\"sliding_window_pattern\" is 0".into()));
    }
    Ok(crate::config::swa_pattern(n, n_layers))
}

/// Whether the output head is the embedding table: `tie_word_embeddings`, false if absent
/// (true for gemma3, whose default it is).
pub fn tied_embeddings(j: &Json) -> bool {
    let (gemma, t) = match arch(j) {
        Ok((a, t)) => (a == Arch::Gemma3, t),
        Err(_) => (false, j),
    };
    t.get("tie_word_embeddings")
        .or_else(|| j.get("tie_word_embeddings"))
        .and_then(Json::as_bool)
        .unwrap_or(gemma)
}

/// What a directory adds to a stored norm vector to get the weight plumb (and a GGUF file)
/// multiplies by: 1 for gemma3's RMSNorms (`x · (1 + w)`), else 0.
pub fn norm_offset(arch: Arch, gguf: &str) -> f32 {
    if arch == Arch::Gemma3 && gguf.ends_with("norm.weight") {
        1.0
    } else {
        0.0
    }
}

/// The Hugging Face module (name without `.weight` / `.bias`) and suffix of a GGUF tensor
/// name in a model of `arch`: `blk.3.attn_q.weight` → (`model.layers.3.self_attn.q_proj`,
/// `weight`). `None` for names Hugging Face checkpoints do not have (`rope_freqs.weight`).
pub fn hf_module(arch: Arch, gguf: &str) -> Option<(String, &str)> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let gemma = arch == Arch::Gemma3;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" if gemma => "post_attention_layernorm",
                "post_ffw_norm" if gemma => "post_feedforward_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}")
        }
    };
    Some((module, suffix))
}

/// Where a directory keeps the language model: `model.` and `lm_head` in a text-only
/// checkpoint; a multimodal gemma3 one nests them (`language_model.model.` and
/// `language_model.lm_head` as mlx-lm and older Hugging Face files write them, or
/// `model.language_model.` and `lm_head` in newer ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    pub body: &'static str,
    pub head: &'static str,
}

impl Prefixes {
    pub const TEXT: Prefixes = Prefixes {
        body: "model.",
        head: "lm_head",
    };
    const NESTED: [Prefixes; 2] = [
        Prefixes {
            body: "language_model.model.",
            head: "language_model.lm_head",
        },
        Prefixes {
            body: "model.language_model.",
            head: "lm_head",
        },
    ];

    /// The layout whose embedding table `has` finds (text-only when none does).
    pub fn detect(has: impl Fn(&str) -> bool) -> Prefixes {
        Self::NESTED
            .into_iter()
            .find(|p| has(&format!("{}embed_tokens.weight", p.body)))
            .unwrap_or(Self::TEXT)
    }

    /// A text-only module name (as [`hf_module`] gives it) in this layout.
    pub fn apply(&self, module: &str) -> String {
        if let Some(rest) = module.strip_prefix("model.") {
            format!("{}{rest}", self.body)
        } else if let Some(rest) = module.strip_prefix("lm_head") {
            format!("{}{rest}", self.head)
        } else {
            module.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> Json {
        serde_json::json!({
            "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_attention_heads": 9, "num_key_value_heads": 3, "num_hidden_layers": 30,
            "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0, "tie_word_embeddings": true, "rope_scaling": null
        })
    }

    #[test]
    fn smollm2_config() {
        let c = config_from_json(&smollm()).unwrap();
        assert_eq!((c.n_layers, c.d_model, c.d_ff), (30, 576, 1536));
        assert_eq!(
            (c.n_heads, c.n_kv_heads, c.head_dim, c.n_rot),
            (9, 3, 64, 64)
        );
        assert_eq!(c.rope_style, RopeStyle::Neox);
        assert_eq!(c.rope_theta, 100000.0);
        assert!(tied_embeddings(&smollm()));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let mut j = smollm();
        j["model_type"] = "gpt_neox".into();
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("gpt_neox"), "{e}");
        let mut j = smollm();
        j.as_object_mut().unwrap().remove("hidden_size");
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("hidden_size") && e.contains("missing"), "{e}");
        let mut j = smollm();
        j["num_key_value_heads"] = 4.into();
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("multiple"), "{e}");
        let mut j = smollm();
        j["vocab_size"] = "big".into();
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("vocab_size"), "{e}");
        let mut j = smollm();
        j["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("rope_scaling"), "{e}");
    }

    #[test]
    fn names_map_to_hugging_face_modules() {
        let m = |n: &str| hf_module(Arch::Llama, n).map(|(a, b)| format!("{a}.{b}"));
        assert_eq!(m("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(
            m("blk.12.attn_k.bias").unwrap(),
            "model.layers.12.self_attn.k_proj.bias"
        );
        assert_eq!(
            m("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(m("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(m("rope_freqs.weight"), None);
        assert_eq!(m("blk.x.attn_q.weight"), None);
    }

    /// Gemma 3 270M's config.json as Hugging Face ships it (trimmed to the keys read).
    fn gemma270m() -> Json {
        let mut layer_types = vec!["sliding_attention"; 18];
        for i in [5, 11, 17] {
            layer_types[i] = "full_attention";
        }
        serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "vocab_size": 262144, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
            "query_pre_attn_scalar": 256, "sliding_window": 512, "sliding_window_pattern": 6,
            "layer_types": layer_types, "final_logit_softcapping": null,
            "attn_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh",
            "use_bidirectional_attention": false
        })
    }

    #[test]
    fn gemma3_text_config() {
        let c = config_from_json(&gemma270m()).unwrap();
        assert_eq!(c.arch, Arch::Gemma3);
        assert_eq!((c.n_layers, c.d_model, c.d_ff), (18, 640, 2048));
        assert_eq!(
            (c.n_heads, c.n_kv_heads, c.head_dim, c.n_rot),
            (4, 1, 256, 256)
        );
        assert_eq!((c.vocab_size, c.n_ctx_train), (262144, 32768));
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert_eq!(c.embed_scale, Some(640f32.sqrt()));
        assert_eq!(c.final_softcap, None);
        let global: Vec<usize> = (0..18).filter(|&i| c.layer_window(i).is_none()).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!(c.layer_window(0), Some(512));
        assert_eq!((c.layer_rope_theta(0), c.layer_rope_theta(5)), (1e4, 1e6));
        // Gemma's default is a tied head.
        assert!(tied_embeddings(&gemma270m()));
        // layer_types wins over the pattern; without it the pattern decides.
        let mut j = gemma270m();
        j["layer_types"][0] = "full_attention".into();
        assert_eq!(config_from_json(&j).unwrap().layer_window(0), None);
        j.as_object_mut().unwrap().remove("layer_types");
        j["sliding_window_pattern"] = 2.into();
        let c = config_from_json(&j).unwrap();
        let local: Vec<bool> = (0..4).map(|i| c.layer_window(i).is_some()).collect();
        assert_eq!(local, [true, false, true, false]);
        j["final_logit_softcapping"] = 30.0.into();
        assert_eq!(config_from_json(&j).unwrap().final_softcap, Some(30.0));
    }

    #[test]
    fn gemma3_multimodal_config_reads_text_config_with_defaults() {
        // As Gemma 3 4B's config.json: the text model's keys that differ from the defaults.
        let j = serde_json::json!({
            "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560,
                            "intermediate_size": 10240, "num_hidden_layers": 34,
                            "sliding_window": 1024},
            "vision_config": {"model_type": "siglip_vision_model"}
        });
        let c = config_from_json(&j).unwrap();
        assert_eq!((c.d_model, c.n_layers, c.d_ff), (2560, 34, 10240));
        assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (8, 4, 256));
        assert_eq!((c.vocab_size, c.n_ctx_train), (262208, 131072));
        assert_eq!(c.layer_window(0), Some(1024));
        assert_eq!(c.layer_window(5), None);
        assert_eq!((c.layer_rope_theta(0), c.rope_theta), (1e4, 1e6));
        assert!(tied_embeddings(&j));
        let mut j = j;
        j["vocab_size"] = 262144.into();
        assert_eq!(config_from_json(&j).unwrap().vocab_size, 262144);
    }

    #[test]
    fn bad_gemma3_configs_name_the_key() {
        let cases: Vec<(&str, Json, &str)> = vec![
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "linear", "factor": 8.0}),
                "rope_scaling",
            ),
            (
                "attn_logit_softcapping",
                50.0.into(),
                "attn_logit_softcapping",
            ),
            ("hidden_activation", "gelu".into(), "hidden_activation"),
            ("query_pre_attn_scalar", 0.into(), "query_pre_attn_scalar"),
            ("query_pre_attn_scalar", "x".into(), "query_pre_attn_scalar"),
            (
                "layer_types",
                serde_json::json!(["full_attention"]),
                "layer_types",
            ),
            ("sliding_window", (-1).into(), "sliding_window"),
            (
                "use_bidirectional_attention",
                true.into(),
                "use_bidirectional_attention",
            ),
        ];
        for (key, value, want) in cases {
            let mut j = gemma270m();
            j[key] = value;
            let e = config_from_json(&j).unwrap_err().to_string();
            assert!(e.contains(want), "{key}: {e}");
        }
        let mut j = gemma270m();
        j["layer_types"][3] = "chunked_attention".into();
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(
            e.contains("layer_types") && e.contains("chunked_attention"),
            "{e}"
        );
        let mut j = gemma270m();
        j.as_object_mut().unwrap().remove("layer_types");
        j["sliding_window_pattern"] = 0.into();
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("sliding_window_pattern"), "{e}");
        let mut j = gemma270m();
        j.as_object_mut().unwrap().remove("hidden_size");
        let e = config_from_json(&j).unwrap_err().to_string();
        assert!(e.contains("hidden_size") && e.contains("missing"), "{e}");
        let e = config_from_json(&serde_json::json!({"model_type": "gemma3"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("text_config"), "{e}");
        let e = config_from_json(&serde_json::json!({"model_type": "gemma2"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemma2"), "{e}");
    }

    #[test]
    fn gemma3_names_and_norm_offsets() {
        let m = |n: &str| hf_module(Arch::Gemma3, n).map(|(a, b)| format!("{a}.{b}"));
        for (gguf, hf) in [
            (
                "blk.2.attn_norm.weight",
                "model.layers.2.input_layernorm.weight",
            ),
            (
                "blk.2.post_attention_norm.weight",
                "model.layers.2.post_attention_layernorm.weight",
            ),
            (
                "blk.2.ffn_norm.weight",
                "model.layers.2.pre_feedforward_layernorm.weight",
            ),
            (
                "blk.2.post_ffw_norm.weight",
                "model.layers.2.post_feedforward_layernorm.weight",
            ),
            (
                "blk.2.attn_q_norm.weight",
                "model.layers.2.self_attn.q_norm.weight",
            ),
            (
                "blk.2.attn_k_norm.weight",
                "model.layers.2.self_attn.k_norm.weight",
            ),
            ("output_norm.weight", "model.norm.weight"),
            (
                "blk.2.ffn_gate.weight",
                "model.layers.2.mlp.gate_proj.weight",
            ),
        ] {
            assert_eq!(m(gguf).unwrap(), hf);
            let norm = gguf.ends_with("norm.weight");
            assert_eq!(
                norm_offset(Arch::Gemma3, gguf),
                if norm { 1.0 } else { 0.0 }
            );
            assert_eq!(norm_offset(Arch::Llama, gguf), 0.0);
        }
        // Llama has no post norms; its FFN norm keeps its llama name.
        assert_eq!(hf_module(Arch::Llama, "blk.0.post_ffw_norm.weight"), None);
        let nested = Prefixes::detect(|n| n == "language_model.model.embed_tokens.weight");
        assert_eq!(
            nested.apply("model.layers.1.mlp.up_proj"),
            "language_model.model.layers.1.mlp.up_proj"
        );
        assert_eq!(nested.apply("lm_head"), "language_model.lm_head");
        let newer = Prefixes::detect(|n| n == "model.language_model.embed_tokens.weight");
        assert_eq!(newer.apply("model.norm"), "model.language_model.norm");
        assert_eq!(newer.apply("lm_head"), "lm_head");
        assert_eq!(Prefixes::detect(|_| false), Prefixes::TEXT);
    }
}
