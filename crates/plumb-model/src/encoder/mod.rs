//! Sentence encoders: a BERT-family model from a Hugging Face directory (`config.json`,
//! `model.safetensors`) with its sentence-transformers pooling (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`), giving one vector per input.

mod bert;
mod safetensors;

use std::path::{Path, PathBuf};

use plumb_ops::Backend;
use serde_json::Value;

pub use bert::BertConfig;
use bert::BertWeights;

use crate::error::{ModelError, Result};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// The mean over the tokens.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    pub mode: PoolMode,
    /// Scale each vector to unit length (a `Normalize` module).
    pub normalize: bool,
    /// Inputs are cut to this many tokens, special tokens included.
    pub max_tokens: usize,
    /// Texts are lower-cased before tokenizing (`do_lower_case`).
    pub lowercase: bool,
}

pub struct Encoder<B: Backend> {
    pub config: BertConfig,
    pub pooling: Pooling,
    pub backend: B,
    weights: BertWeights<B>,
    pub dir: PathBuf,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Config(format!("cannot read {} ({e})", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{} is not JSON ({e})", path.display())))
}

/// The pooling of a sentence-transformers directory: the `Pooling` module's config (mean
/// when there is none), whether a `Normalize` module follows, and `max_seq_length`.
fn pooling(dir: &Path, cfg: &BertConfig) -> Result<Pooling> {
    let modules = match dir.join("modules.json") {
        p if p.is_file() => read_json(&p)?.as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    let of_type = |t: &str| {
        modules
            .iter()
            .find(|m| m["type"].as_str().is_some_and(|x| x.ends_with(t)))
    };
    let mode = match of_type(".Pooling").and_then(|m| m["path"].as_str()) {
        Some(path) => {
            let pc = read_json(&dir.join(path).join("config.json"))?;
            // Every `pooling_mode_*` that is on: exactly one of mean and [CLS] is supported.
            let on: Vec<&str> = pc
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| k.starts_with("pooling_mode_") && v.as_bool() == Some(true))
                .map(|(k, _)| k.as_str())
                .collect();
            match on[..] {
                ["pooling_mode_mean_tokens"] => PoolMode::Mean,
                ["pooling_mode_cls_token"] => PoolMode::Cls,
                _ => {
                    return Err(ModelError::Unsupported(format!(
                        "the pooling of {path}/config.json (plumb pools by mean or [CLS])"
                    )))
                }
            }
        }
        None => PoolMode::Mean,
    };
    let st = match dir.join("sentence_bert_config.json") {
        p if p.is_file() => read_json(&p)?,
        _ => Value::Null,
    };
    let max_seq = st["max_seq_length"].as_u64().map(|x| x as usize);
    Ok(Pooling {
        mode,
        normalize: of_type(".Normalize").is_some(),
        max_tokens: max_seq
            .unwrap_or(cfg.max_positions)
            .clamp(1, cfg.max_positions),
        lowercase: st["do_lower_case"].as_bool().unwrap_or(false),
    })
}

impl<B: Backend> Encoder<B> {
    /// Loads the encoder in `dir` onto `backend`.
    pub fn load(dir: &Path, backend: B) -> Result<Encoder<B>> {
        let config = BertConfig::from_json(&read_json(&dir.join("config.json"))?)?;
        let pooling = pooling(dir, &config)?;
        let weights = BertWeights::load(&dir.join("model.safetensors"), &config, &backend)?;
        Ok(Encoder {
            config,
            pooling,
            backend,
            weights,
            dir: dir.to_path_buf(),
        })
    }

    /// The dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.config.d_model
    }

    /// One pooled (and, per the model, normalized) vector per input sequence of ids, the
    /// sequences run as one batch.
    pub fn embed(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let states = bert::forward(&self.backend, &self.config, &self.weights, seqs)?;
        let d = self.dim();
        Ok(states
            .iter()
            .map(|h| {
                let n = h.len() / d;
                let mut v: Vec<f32> = match self.pooling.mode {
                    PoolMode::Cls => h[..d].to_vec(),
                    PoolMode::Mean => (0..d)
                        .map(|i| (0..n).map(|t| h[t * d + i] as f64).sum::<f64>() / n as f64)
                        .map(|x| x as f32)
                        .collect(),
                };
                if self.pooling.normalize {
                    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                    v.iter_mut().for_each(|x| *x = (*x as f64 * inv) as f32);
                }
                v
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BertConfig {
        BertConfig {
            vocab_size: 10,
            d_model: 4,
            n_layers: 1,
            n_heads: 1,
            d_ff: 8,
            max_positions: 512,
            type_vocab: 2,
            eps: 1e-12,
        }
    }

    /// A sentence-transformers directory with `pooling` as 1_Pooling/config.json.
    fn dir_with(name: &str, pooling: &str, normalize: bool, st: Option<&str>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plumb-pool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        let mut modules = vec![
            r#"{"path": "", "type": "sentence_transformers.models.Transformer"}"#,
            r#"{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}"#,
        ];
        if normalize {
            modules.push(
                r#"{"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}"#,
            );
        }
        std::fs::write(dir.join("modules.json"), format!("[{}]", modules.join(","))).unwrap();
        std::fs::write(dir.join("1_Pooling/config.json"), pooling).unwrap();
        if let Some(st) = st {
            std::fs::write(dir.join("sentence_bert_config.json"), st).unwrap();
        }
        dir
    }

    #[test]
    fn pooling_is_read_from_the_sentence_transformers_config() {
        let mean = r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false}"#;
        let d = dir_with("mean", mean, true, Some(r#"{"max_seq_length": 256}"#));
        let p = pooling(&d, &cfg()).unwrap();
        assert_eq!(
            (p.mode, p.normalize, p.max_tokens, p.lowercase),
            (PoolMode::Mean, true, 256, false)
        );
        std::fs::remove_dir_all(&d).unwrap();

        let cls = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#;
        let st = r#"{"max_seq_length": 4096, "do_lower_case": true}"#;
        let d = dir_with("cls", cls, false, Some(st));
        let p = pooling(&d, &cfg()).unwrap();
        // max_seq_length is held to the model's positions.
        assert_eq!(
            (p.mode, p.normalize, p.max_tokens, p.lowercase),
            (PoolMode::Cls, false, 512, true)
        );
        std::fs::remove_dir_all(&d).unwrap();

        for (name, bad) in [
            ("max", r#"{"pooling_mode_max_tokens": true}"#),
            (
                "two",
                r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#,
            ),
            ("none", r#"{"pooling_mode_mean_tokens": false}"#),
        ] {
            let d = dir_with(name, bad, true, None);
            let e = pooling(&d, &cfg()).unwrap_err().to_string();
            assert!(e.contains("pooling"), "{name}: {e}");
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}
