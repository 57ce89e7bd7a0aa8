//! The transformer forward, written once against [`Backend`]: prefill of many tokens and
//! token-by-token decode are the same code with a different `n`.
//!
//! Per layer, for `n` tokens at positions `pos0 .. pos0+n`:
//! ```text
//! xn = rms_norm(x)                         (fused with the residual add of the previous block)
//! q, k, v = Wq·xn (+bq), Wk·xn (+bk), Wv·xn (+bv)
//! q, k = head_norm(q, k)                   (qwen3)
//! q, k = rope(q, k)
//! cache[pos0 .. pos0+n] = k, v
//! x += Wo · attention(q, cache)
//! xn = rms_norm(x)
//! x += Wdown · (silu(Wgate·xn) * (Wup·xn))
//! ```

use plumb_ops::{AttnParams, Backend, RopeParams};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::weights::Weights;

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's: `[vocab]`.
    Last,
    /// Every token's: `[n, vocab]` (perplexity, model checks).
    All,
}

/// Scratch activations for up to `cap` tokens.
struct Workspace<B: Backend> {
    cap: usize,
    x: B::Buf,
    xn: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    tmp: B::Buf,
    attn: B::Buf,
    proj: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    act: B::Buf,
    logits: B::Buf,
}

impl<B: Backend> Workspace<B> {
    fn new(b: &B, cfg: &ModelConfig, cap: usize, logit_rows: usize) -> Result<Self> {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        Ok(Workspace {
            cap,
            x: b.alloc(cap * d)?,
            xn: b.alloc(cap * d)?,
            q: b.alloc(cap * q)?,
            k: b.alloc(cap * kv)?,
            v: b.alloc(cap * kv)?,
            tmp: b.alloc(cap * q.max(kv).max(d))?,
            attn: b.alloc(cap * q)?,
            proj: b.alloc(cap * d)?,
            gate: b.alloc(cap * ff)?,
            up: b.alloc(cap * ff)?,
            act: b.alloc(cap * ff)?,
            logits: b.alloc(logit_rows * cfg.vocab_size)?,
        })
    }
}

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    pub weights: Weights<B>,
    /// Most tokens one forward pass processes at once; longer inputs go in chunks.
    pub max_batch: usize,
}

impl<B: Backend> Model<B> {
    pub fn new(config: ModelConfig, backend: B, weights: Weights<B>) -> Self {
        Model {
            config,
            backend,
            weights,
            max_batch: 256,
        }
    }

    pub fn new_cache(&self, capacity: usize) -> Result<KvCache<B>> {
        KvCache::new(&self.backend, &self.config, capacity)
    }

    /// Runs `tokens` after the cache's current contents and appends them to it.
    /// Returns `[vocab]` logits of the last token, or `[tokens.len(), vocab]` for [`Logits::All`].
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        want: Logits,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(ModelError::Config("forward called with no tokens".into()));
        }
        let needed = cache.len + tokens.len();
        if needed > cache.capacity {
            return Err(ModelError::ContextFull {
                needed,
                capacity: cache.capacity,
            });
        }
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::BadToken {
                id,
                vocab: cfg.vocab_size,
            });
        }
        let cap = tokens.len().min(self.max_batch);
        let logit_rows = if want == Logits::All { cap } else { 1 };
        let mut ws = Workspace::new(&self.backend, cfg, cap, logit_rows)?;
        let mut out = Vec::with_capacity(if want == Logits::All {
            tokens.len() * cfg.vocab_size
        } else {
            cfg.vocab_size
        });
        for chunk in tokens.chunks(cap) {
            let rows = self.forward_chunk(chunk, cache, &mut ws, want)?;
            let start = out.len();
            out.resize(start + rows * cfg.vocab_size, 0.0);
            self.backend.download(&ws.logits, &mut out[start..])?;
        }
        if want == Logits::Last {
            let keep = out.len() - cfg.vocab_size;
            out.drain(..keep);
        }
        Ok(out)
    }

    /// One chunk of at most `ws.cap` tokens; leaves logits in `ws.logits`, returns their rows.
    fn forward_chunk(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        ws: &mut Workspace<B>,
        want: Logits,
    ) -> Result<usize> {
        let (b, cfg, w) = (&self.backend, &self.config, &self.weights);
        let n = tokens.len();
        debug_assert!(n <= ws.cap);
        let (d, qd, kvd) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim());
        let pos0 = cache.len;
        let positions: Vec<u32> = (pos0..pos0 + n).map(|p| p as u32).collect();
        let rope = RopeParams {
            style: cfg.arch.rope_style(),
            theta: cfg.rope_theta,
            n_rot: cfg.n_rot,
        };
        let attn = AttnParams {
            n_tokens: n,
            pos0,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        };

        b.embedding(&w.tok_embd, tokens, &mut ws.x)?;
        b.rms_norm(&ws.x, &w.layers[0].attn_norm, cfg.rms_eps, n, d, &mut ws.xn)?;
        for (li, lw) in w.layers.iter().enumerate() {
            // Attention block.
            b.matmul(&lw.wq, &ws.xn, n, &mut ws.q)?;
            b.matmul(&lw.wk, &ws.xn, n, &mut ws.k)?;
            b.matmul(&lw.wv, &ws.xn, n, &mut ws.v)?;
            if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
                b.add_bias(&mut ws.q, bq, n, qd)?;
                b.add_bias(&mut ws.k, bk, n, kvd)?;
                b.add_bias(&mut ws.v, bv, n, kvd)?;
            }
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                b.rms_norm(
                    &ws.q,
                    qn,
                    cfg.rms_eps,
                    n * cfg.n_heads,
                    cfg.head_dim,
                    &mut ws.tmp,
                )?;
                std::mem::swap(&mut ws.q, &mut ws.tmp);
                b.rms_norm(
                    &ws.k,
                    kn,
                    cfg.rms_eps,
                    n * cfg.n_kv_heads,
                    cfg.head_dim,
                    &mut ws.tmp,
                )?;
                std::mem::swap(&mut ws.k, &mut ws.tmp);
            }
            let ff = w.rope_freqs.as_ref();
            b.rope(&mut ws.q, &positions, cfg.n_heads, cfg.head_dim, rope, ff)?;
            b.rope(
                &mut ws.k,
                &positions,
                cfg.n_kv_heads,
                cfg.head_dim,
                rope,
                ff,
            )?;
            b.copy(&ws.k, 0, &mut cache.k[li], pos0 * kvd, n * kvd)?;
            b.copy(&ws.v, 0, &mut cache.v[li], pos0 * kvd, n * kvd)?;
            b.attention(&ws.q, &cache.k[li], &cache.v[li], attn, &mut ws.attn)?;
            b.matmul(&lw.wo, &ws.attn, n, &mut ws.proj)?;
            b.add_rms_norm(
                &mut ws.x,
                &ws.proj,
                &lw.ffn_norm,
                cfg.rms_eps,
                n,
                d,
                &mut ws.xn,
            )?;

            // Feed-forward block.
            b.matmul(&lw.w_gate, &ws.xn, n, &mut ws.gate)?;
            b.matmul(&lw.w_up, &ws.xn, n, &mut ws.up)?;
            b.swiglu(&ws.gate, &ws.up, n * cfg.d_ff, &mut ws.act)?;
            b.matmul(&lw.w_down, &ws.act, n, &mut ws.proj)?;
            let next_norm = match w.layers.get(li + 1) {
                Some(next) => &next.attn_norm,
                None => &w.output_norm,
            };
            b.add_rms_norm(
                &mut ws.x,
                &ws.proj,
                next_norm,
                cfg.rms_eps,
                n,
                d,
                &mut ws.xn,
            )?;
        }
        cache.len = pos0 + n;

        let head = w.output.as_ref().unwrap_or(&w.tok_embd);
        match want {
            Logits::All => {
                b.matmul(head, &ws.xn, n, &mut ws.logits)?;
                Ok(n)
            }
            Logits::Last => {
                b.copy(&ws.xn, (n - 1) * d, &mut ws.proj, 0, d)?;
                b.matmul(head, &ws.proj, 1, &mut ws.logits)?;
                Ok(1)
            }
        }
    }
}
