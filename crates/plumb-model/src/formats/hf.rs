//! Hugging Face checkpoints: `config.json` to a [`ModelConfig`], and GGUF tensor names to the
//! Hugging Face names of the llama, qwen2 and qwen3 families.
//!
//! RoPE: the GGUF converter permutes the rows of a llama's Wq and Wk so that adjacent pairs
//! rotate together ("normal" RoPE); a Hugging Face checkpoint keeps the original rows, which
//! rotate in halves (`rotate_half`). Rather than permuting at load (a copy), a Hugging Face
//! model runs with [`RopeStyle::Neox`], which is the same rotation of the original rows.

use plumb_ops::RopeStyle;
use serde_json::Value as Json;

use crate::config::{Arch, ModelConfig};
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

/// The architecture of a `model_type`.
fn arch(j: &Json) -> Result<Arch> {
    let t = j
        .get("model_type")
        .and_then(Json::as_str)
        .ok_or_else(|| config_err("\"model_type\" is missing".into()))?;
    match t {
        "llama" | "qwen2" | "qwen3" => Arch::parse(t),
        other => Err(ModelError::Unsupported(format!(
            "model_type {other:?} in config.json (plumb loads llama, qwen2 and qwen3 \
             directories)"
        ))),
    }
}

/// The model configuration of a parsed `config.json`.
pub fn config_from_json(j: &Json) -> Result<ModelConfig> {
    let arch = arch(j)?;
    if !matches!(j.get("rope_scaling"), None | Some(Json::Null)) {
        return Err(ModelError::Unsupported(format!(
            "config.json: rope_scaling {} is not supported",
            j["rope_scaling"]
        )));
    }
    let d_model = int(j, "hidden_size", None)?;
    let n_heads = int(j, "num_attention_heads", None)?;
    let n_kv_heads = int(j, "num_key_value_heads", Some(n_heads))?;
    if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(config_err(format!(
            "{n_heads} query heads and {n_kv_heads} KV heads: query heads must be a nonzero \
             multiple"
        )));
    }
    let head_dim = int(j, "head_dim", Some(d_model / n_heads))?;
    let rotary = float(j, "partial_rotary_factor", 1.0)?;
    let cfg = ModelConfig {
        arch,
        n_layers: int(j, "num_hidden_layers", None)?,
        d_model,
        d_ff: int(j, "intermediate_size", None)?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size: int(j, "vocab_size", None)?,
        n_ctx_train: int(j, "max_position_embeddings", Some(2048))?,
        rms_eps: float(j, "rms_norm_eps", 1e-6)?,
        rope_theta: float(j, "rope_theta", 10_000.0)?,
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

/// Whether the output head is the embedding table (`tie_word_embeddings`, false if absent).
pub fn tied_embeddings(j: &Json) -> bool {
    j.get("tie_word_embeddings")
        .and_then(Json::as_bool)
        .unwrap_or(false)
}

/// The Hugging Face module (name without `.weight` / `.bias`) and suffix of a GGUF tensor
/// name: `blk.3.attn_q.weight` → (`model.layers.3.self_attn.q_proj`, `weight`). `None` for
/// names Hugging Face checkpoints do not have (`rope_freqs.weight`).
pub fn hf_module(gguf: &str) -> Option<(String, &str)> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_norm" => "post_attention_layernorm",
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
        let m = |n: &str| hf_module(n).map(|(a, b)| format!("{a}.{b}"));
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
}
