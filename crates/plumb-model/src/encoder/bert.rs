//! A BERT-family encoder (`model_type: bert`, absolute positions, post-norm layers, GELU),
//! written once against [`Backend`]. For the `n` tokens of each input sequence:
//! ```text
//! x = LayerNorm(word[ids] + position[0 .. n] + token_type[0])
//! per layer:
//!   q, k, v = Wq·x + bq, Wk·x + bk, Wv·x + bv
//!   x = LayerNorm(x + Wo · attention_full(q, k, v) + bo)      (every token sees every token)
//!   x = LayerNorm(x + W2 · gelu(W1·x + b1) + b2)
//! ```
//! The sequences of a batch share every matmul (their rows stacked); attention runs per
//! sequence over its own rows.

use std::path::Path;

use plumb_core::HostWeight;
use plumb_ops::{Backend, FullAttnParams};
use serde_json::Value;

use super::safetensors::SafeTensors;
use crate::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
}

impl BertConfig {
    /// From a Hugging Face `config.json`.
    pub fn from_json(v: &Value) -> Result<BertConfig> {
        let bad = |m: String| ModelError::Config(format!("config.json: {m}"));
        let model_type = v["model_type"].as_str().unwrap_or("");
        if model_type != "bert" {
            return Err(ModelError::Unsupported(format!(
                "encoder model_type {model_type:?} (plumb runs bert)"
            )));
        }
        let act = v["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(ModelError::Unsupported(format!(
                "hidden_act {act:?} (plumb runs gelu)"
            )));
        }
        if v["position_embedding_type"]
            .as_str()
            .is_some_and(|p| p != "absolute")
        {
            return Err(ModelError::Unsupported(
                "positions other than absolute".into(),
            ));
        }
        let get = |k: &str| -> Result<usize> {
            v[k].as_u64()
                .map(|x| x as usize)
                .filter(|&x| x > 0 && x < 1 << 24)
                .ok_or_else(|| bad(format!("{k} is missing or not a positive integer")))
        };
        let cfg = BertConfig {
            vocab_size: get("vocab_size")?,
            d_model: get("hidden_size")?,
            n_layers: get("num_hidden_layers")?,
            n_heads: get("num_attention_heads")?,
            d_ff: get("intermediate_size")?,
            max_positions: get("max_position_embeddings")?,
            type_vocab: get("type_vocab_size")?,
            eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        };
        if !cfg.d_model.is_multiple_of(cfg.n_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of {} heads",
                cfg.d_model, cfg.n_heads
            )));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

struct Norm<B: Backend> {
    w: B::Buf,
    b: B::Buf,
}

struct Linear<B: Backend> {
    w: B::Weight,
    b: B::Buf,
}

struct Layer<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    attn_norm: Norm<B>,
    up: Linear<B>,
    down: Linear<B>,
    out_norm: Norm<B>,
}

pub struct BertWeights<B: Backend> {
    word: B::Weight,
    position: B::Weight,
    token_type: B::Weight,
    emb_norm: Norm<B>,
    layers: Vec<Layer<B>>,
}

/// Tensors by their names in a `BertModel` file (or under `bert.` in a task model's).
struct Loader<'a, B: Backend> {
    st: &'a SafeTensors,
    b: &'a B,
    prefix: &'static str,
}

impl<B: Backend> Loader<'_, B> {
    fn host(&self, name: &str, rows: usize, cols: usize) -> Result<HostWeight> {
        self.st
            .weight(&format!("{}{name}", self.prefix), rows, cols)
    }
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<B::Weight> {
        Ok(self.b.upload_weight(&self.host(name, rows, cols)?)?)
    }
    fn vector(&self, name: &str, len: usize) -> Result<B::Buf> {
        Ok(self.b.upload(&self.host(name, 1, len)?.to_f32()?)?)
    }
    fn norm(&self, name: &str, d: usize) -> Result<Norm<B>> {
        Ok(Norm {
            w: self.vector(&format!("{name}.weight"), d)?,
            b: self.vector(&format!("{name}.bias"), d)?,
        })
    }
    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear<B>> {
        Ok(Linear {
            w: self.matrix(&format!("{name}.weight"), rows, cols)?,
            b: self.vector(&format!("{name}.bias"), rows)?,
        })
    }
}

impl<B: Backend> BertWeights<B> {
    pub fn load(file: &Path, cfg: &BertConfig, b: &B) -> Result<BertWeights<B>> {
        let st = SafeTensors::open(file)?;
        let prefix = if st
            .weight("embeddings.LayerNorm.weight", 1, cfg.d_model)
            .is_ok()
        {
            ""
        } else {
            "bert."
        };
        let l = Loader { st: &st, b, prefix };
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let n = |s: &str| format!("encoder.layer.{i}.{s}");
                Ok(Layer {
                    q: l.linear(&n("attention.self.query"), d, d)?,
                    k: l.linear(&n("attention.self.key"), d, d)?,
                    v: l.linear(&n("attention.self.value"), d, d)?,
                    o: l.linear(&n("attention.output.dense"), d, d)?,
                    attn_norm: l.norm(&n("attention.output.LayerNorm"), d)?,
                    up: l.linear(&n("intermediate.dense"), ff, d)?,
                    down: l.linear(&n("output.dense"), d, ff)?,
                    out_norm: l.norm(&n("output.LayerNorm"), d)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(BertWeights {
            word: l.matrix("embeddings.word_embeddings.weight", cfg.vocab_size, d)?,
            position: l.matrix(
                "embeddings.position_embeddings.weight",
                cfg.max_positions,
                d,
            )?,
            token_type: l.matrix("embeddings.token_type_embeddings.weight", cfg.type_vocab, d)?,
            emb_norm: l.norm("embeddings.LayerNorm", d)?,
            layers,
        })
    }
}

/// Activations of a batch of `rows` tokens, and one sequence's attention inputs.
struct Scratch<B: Backend> {
    x: B::Buf,
    t: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    attn: B::Buf,
    h: B::Buf,
    g: B::Buf,
    seq: [B::Buf; 4],
}

/// The hidden states of every token of every sequence in `seqs` (each `[n_i, d_model]`),
/// the sequences run as one batch. Each sequence holds 1 ..= `max_positions` ids.
pub fn forward<B: Backend>(
    b: &B,
    cfg: &BertConfig,
    w: &BertWeights<B>,
    seqs: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    for s in seqs {
        if s.is_empty() || s.len() > cfg.max_positions {
            return Err(ModelError::Config(format!(
                "an encoder input of {} tokens (1 to {} fit)",
                s.len(),
                cfg.max_positions
            )));
        }
        if let Some(&id) = s.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(ModelError::BadToken {
                id,
                vocab: cfg.vocab_size,
            });
        }
    }
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    let rows: usize = seqs.iter().map(Vec::len).sum();
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut s = Scratch {
        x: b.alloc(rows * d)?,
        t: b.alloc(rows * d)?,
        q: b.alloc(rows * d)?,
        k: b.alloc(rows * d)?,
        v: b.alloc(rows * d)?,
        attn: b.alloc(rows * d)?,
        h: b.alloc(rows * ff)?,
        g: b.alloc(rows * ff)?,
        seq: [
            b.alloc(longest * d)?,
            b.alloc(longest * d)?,
            b.alloc(longest * d)?,
            b.alloc(longest * d)?,
        ],
    };
    embed(b, cfg, w, seqs, &mut s)?;
    for layer in &w.layers {
        attention_block(b, cfg, layer, seqs, &mut s)?;
        ffn_block(b, cfg, layer, rows, &mut s)?;
    }
    let mut all = vec![0f32; rows * d];
    b.download(&s.x, &mut all)?;
    let mut out = Vec::with_capacity(seqs.len());
    let mut at = 0;
    for seq in seqs {
        out.push(all[at * d..(at + seq.len()) * d].to_vec());
        at += seq.len();
    }
    Ok(out)
}

/// `x = LayerNorm(word[ids] + position[p] + token_type[0])`, positions from 0 per sequence.
fn embed<B: Backend>(
    b: &B,
    cfg: &BertConfig,
    w: &BertWeights<B>,
    seqs: &[Vec<u32>],
    s: &mut Scratch<B>,
) -> Result<()> {
    let ids: Vec<u32> = seqs.concat();
    let positions: Vec<u32> = seqs.iter().flat_map(|q| 0..q.len() as u32).collect();
    let n = ids.len() * cfg.d_model;
    b.embedding(&w.word, &ids, &mut s.t)?;
    b.embedding(&w.position, &positions, &mut s.q)?;
    b.add(&mut s.t, &s.q, n)?;
    b.embedding(&w.token_type, &vec![0; ids.len()], &mut s.q)?;
    b.add(&mut s.t, &s.q, n)?;
    let en = &w.emb_norm;
    b.layer_norm(
        &s.t,
        &en.w,
        &en.b,
        cfg.eps,
        ids.len(),
        cfg.d_model,
        &mut s.x,
    )?;
    Ok(())
}

/// `x = LayerNorm(x + Wo · attention(q, k, v) + bo)`, attention per sequence.
fn attention_block<B: Backend>(
    b: &B,
    cfg: &BertConfig,
    l: &Layer<B>,
    seqs: &[Vec<u32>],
    s: &mut Scratch<B>,
) -> Result<()> {
    let d = cfg.d_model;
    let rows: usize = seqs.iter().map(Vec::len).sum();
    b.matmul_many(
        &s.x,
        rows,
        &mut [(&l.q.w, &mut s.q), (&l.k.w, &mut s.k), (&l.v.w, &mut s.v)],
    )?;
    b.add_bias(&mut s.q, &l.q.b, rows, d)?;
    b.add_bias(&mut s.k, &l.k.b, rows, d)?;
    b.add_bias(&mut s.v, &l.v.b, rows, d)?;
    let [qs, ks, vs, os] = &mut s.seq;
    let mut r0 = 0;
    for seq in seqs {
        let (n, off) = (seq.len(), r0 * d);
        b.copy(&s.q, off, qs, 0, n * d)?;
        b.copy(&s.k, off, ks, 0, n * d)?;
        b.copy(&s.v, off, vs, 0, n * d)?;
        let p = FullAttnParams {
            n_tokens: n,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_heads,
            head_dim: cfg.head_dim(),
            scale: 1.0 / (cfg.head_dim() as f32).sqrt(),
        };
        b.attention_full(qs, ks, vs, p, os)?;
        b.copy(os, 0, &mut s.attn, off, n * d)?;
        r0 += n;
    }
    b.matmul(&l.o.w, &s.attn, rows, &mut s.t)?;
    b.add_bias(&mut s.t, &l.o.b, rows, d)?;
    b.add(&mut s.t, &s.x, rows * d)?;
    let nm = &l.attn_norm;
    b.layer_norm(&s.t, &nm.w, &nm.b, cfg.eps, rows, d, &mut s.x)?;
    Ok(())
}

/// `x = LayerNorm(x + W2 · gelu(W1·x + b1) + b2)`.
fn ffn_block<B: Backend>(
    b: &B,
    cfg: &BertConfig,
    l: &Layer<B>,
    rows: usize,
    s: &mut Scratch<B>,
) -> Result<()> {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    b.matmul(&l.up.w, &s.x, rows, &mut s.h)?;
    b.add_bias(&mut s.h, &l.up.b, rows, ff)?;
    b.gelu(&s.h, rows * ff, &mut s.g)?;
    b.matmul(&l.down.w, &s.g, rows, &mut s.t)?;
    b.add_bias(&mut s.t, &l.down.b, rows, d)?;
    b.add(&mut s.t, &s.x, rows * d)?;
    let nm = &l.out_norm;
    b.layer_norm(&s.t, &nm.w, &nm.b, cfg.eps, rows, d, &mut s.x)?;
    Ok(())
}
