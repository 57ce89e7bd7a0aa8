//! The transformer forward, written once against [`Backend`]: prefill of many tokens and
//! token-by-token decode are the same code with a different `n`.
//!
//! Per layer, for `n` tokens at positions `pos0 .. pos0+n`:
//! ```text
//! x = embedding (· √d_model)               (gemma3)
//! xn = rms_norm(x)                         (fused with the residual add of the previous block)
//! q, k, v = Wq·xn (+bq), Wk·xn (+bk), Wv·xn (+bv)
//! q, k = head_norm(q, k)                   (qwen3, gemma3)
//! q, k = rope(q, k)                        (the layer's base: gemma3's local layers have their own)
//! cache[pos0 .. pos0+n] = k, v
//! x += post_norm(Wo · attention(q, cache)) (the layer's window; post_norm: gemma3)
//! xn = rms_norm(x)
//! x += post_norm(Wdown · (act(Wgate·xn) * (Wup·xn)))   (act: silu, or gelu_tanh for gemma3)
//! logits = Wout · rms_norm(x)  (→ c·tanh(logits / c) with a final softcap)
//! ```

use std::sync::Mutex;

use plumb_ops::{Backend, RopeParams};

use crate::config::{FfnAct, ModelConfig};
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::route::KvRoute;
use crate::weights::{LayerWeights, Weights};

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's: `[vocab]`.
    Last,
    /// Every token's: `[n, vocab]` (perplexity, model checks).
    All,
}

/// Scratch activations for up to `cap` tokens.
pub(crate) struct Workspace<B: Backend> {
    /// Unique per workspace: a recorded step holds its buffers' addresses.
    pub(crate) id: u64,
    pub(crate) cap: usize,
    /// Rows of `logits`.
    pub(crate) logit_rows: usize,
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
    pub(crate) logits: B::Buf,
}

impl<B: Backend> Workspace<B> {
    pub(crate) fn new(b: &B, cfg: &ModelConfig, cap: usize, logit_rows: usize) -> Result<Self> {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        // q, k and tmp trade places (the per-head norms swap their output in), so each is
        // large enough to be any of them.
        let qkt = cap * q.max(kv).max(d);
        Ok(Workspace {
            id: crate::kv_cache::next_id(),
            cap,
            logit_rows,
            x: b.alloc(cap * d)?,
            xn: b.alloc(cap * d)?,
            q: b.alloc(qkt)?,
            k: b.alloc(qkt)?,
            v: b.alloc(cap * kv)?,
            tmp: b.alloc(qkt)?,
            attn: b.alloc(cap * q)?,
            proj: b.alloc(cap * d.max(q))?,
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
    /// The workspace of single-token decode steps, kept so that its buffers stay put and a
    /// recorded step can be replayed.
    decode_ws: Mutex<Option<Workspace<B>>>,
    /// The workspace of paged forwards (see `paged.rs`), grown when a larger batch comes.
    pub(crate) paged_ws: Mutex<Option<Workspace<B>>>,
}

impl<B: Backend> Model<B> {
    pub fn new(config: ModelConfig, backend: B, weights: Weights<B>) -> Self {
        Model {
            config,
            backend,
            weights,
            max_batch: 256,
            decode_ws: Mutex::new(None),
            paged_ws: Mutex::new(None),
        }
    }

    /// One decode step: runs `token` at the cache's next position and returns the argmax of
    /// its logits, moving only the token id off the backend.
    pub fn decode_argmax(&self, token: u32, cache: &mut KvCache<B>) -> Result<u32> {
        self.decode_step(
            token,
            cache,
            |b, ws, vocab| Ok(b.argmax(&ws.logits, vocab)?),
        )
    }

    /// One decode step through the kept workspace; recorded on first use for this cache and
    /// replayed afterwards where the backend can. `read` takes the result off the backend.
    fn decode_step<T>(
        &self,
        token: u32,
        cache: &mut KvCache<B>,
        read: impl FnOnce(&B, &Workspace<B>, usize) -> Result<T>,
    ) -> Result<T> {
        let (b, cfg) = (&self.backend, &self.config);
        self.validate_tokens(&[token], Some(cache))?;
        let mut guard = self.decode_ws.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Workspace::new(b, cfg, 1, 1)?);
        }
        let ws = guard
            .as_mut()
            .ok_or_else(|| ModelError::Config("decode workspace".into()))?;
        let pos = [cache.len as u32];
        b.begin_step(&[token], &pos)?;
        // A recording bakes in the cache's buffers, so it is keyed by the cache.
        let key = cache.id;
        let run = (|| -> Result<()> {
            if b.replay(key)? {
                cache.len += 1;
                return Ok(());
            }
            let recording = b.record_begin(key)?;
            self.forward_chunk(&[token], &pos, cache, ws, Logits::Last)?;
            if recording {
                b.record_end(key)?;
            }
            Ok(())
        })();
        let ended = b.end_step();
        run?;
        ended?;
        read(b, ws, cfg.vocab_size)
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
        if let ([token], Logits::Last) = (tokens, want) {
            return self.decode_step(*token, cache, |b, ws, vocab| {
                let mut out = vec![0f32; vocab];
                b.download(&ws.logits, &mut out)?;
                Ok(out)
            });
        }
        self.validate_tokens(tokens, Some(cache))?;
        let cap = tokens.len().min(self.max_batch);
        let logit_rows = if want == Logits::All { cap } else { 1 };
        let mut ws = Workspace::new(&self.backend, cfg, cap, logit_rows)?;
        let mut out = Vec::with_capacity(if want == Logits::All {
            tokens.len() * cfg.vocab_size
        } else {
            cfg.vocab_size
        });
        for chunk in tokens.chunks(cap) {
            let positions: Vec<u32> = (cache.len..cache.len + chunk.len())
                .map(|p| p as u32)
                .collect();
            self.backend.begin_step(chunk, &positions)?;
            let rows = self.forward_chunk(chunk, &positions, cache, &mut ws, want);
            self.backend.end_step()?;
            let rows = rows?;
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

    /// One chunk of at most `ws.cap` tokens of one sequence at `positions`, inside a step the
    /// backend was told of; appends them to the cache, leaves logits in `ws.logits` and returns
    /// their rows. The ops see exactly the step's values (`kv_write`, attention in place), so
    /// a single-token step can be recorded.
    fn forward_chunk(
        &self,
        tokens: &[u32],
        positions: &[u32],
        cache: &mut KvCache<B>,
        ws: &mut Workspace<B>,
        want: Logits,
    ) -> Result<usize> {
        let n = tokens.len();
        let mut route = KvRoute::Contiguous { cache, n };
        let rows = self.forward_layers(tokens, positions, &mut route, &[n - 1], ws, want)?;
        route.advance();
        Ok(rows)
    }

    /// Checks the input of a forward: at least one token, every id inside the vocabulary,
    /// and, with a contiguous `cache`, room for all of them after what it holds.
    pub(crate) fn validate_tokens(&self, tokens: &[u32], cache: Option<&KvCache<B>>) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::Config("forward called with no tokens".into()));
        }
        if let Some(cache) = cache {
            let needed = cache.len + tokens.len();
            if needed > cache.capacity {
                return Err(ModelError::ContextFull {
                    needed,
                    capacity: cache.capacity,
                });
            }
        }
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&id) => Err(ModelError::BadToken { id, vocab }),
            None => Ok(()),
        }
    }

    /// The layers over `tokens` (rows of one or several sequences), with `kv` saying where
    /// their keys and values go and how attention reads them. Leaves logits in `ws.logits`:
    /// every row's for [`Logits::All`], else those of `last_rows` (row `i` of the logits = row
    /// `last_rows[i]` of the batch). Returns the number of logit rows.
    pub(crate) fn forward_layers(
        &self,
        tokens: &[u32],
        positions: &[u32],
        kv: &mut KvRoute<'_, B>,
        last_rows: &[usize],
        ws: &mut Workspace<B>,
        want: Logits,
    ) -> Result<usize> {
        let (b, cfg, w) = (&self.backend, &self.config, &self.weights);
        let n = tokens.len();
        debug_assert!(n <= ws.cap);
        b.embedding(&w.tok_embd, tokens, &mut ws.x)?;
        if let Some(s) = cfg.embed_scale {
            b.scale(&mut ws.x, s, n * cfg.d_model)?;
        }
        let first_norm = &w.layers[0].attn_norm;
        b.rms_norm(&ws.x, first_norm, cfg.rms_eps, n, cfg.d_model, &mut ws.xn)?;
        for (li, lw) in w.layers.iter().enumerate() {
            self.attention_block(li, lw, positions, kv, ws)?;
            let next_norm = match w.layers.get(li + 1) {
                Some(next) => &next.attn_norm,
                None => &w.output_norm,
            };
            self.ffn_block(lw, next_norm, n, ws)?;
        }
        self.head(last_rows, n, ws, want)
    }

    /// `x += Wo · attention(q, kv)` for layer `li` over the rows of `ws.xn` (one per entry of
    /// `positions`), then `xn = rms_norm(x)` with the layer's FFN norm.
    fn attention_block(
        &self,
        li: usize,
        lw: &LayerWeights<B>,
        positions: &[u32],
        kv: &mut KvRoute<'_, B>,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (b, cfg) = (&self.backend, &self.config);
        let n = positions.len();
        let (qd, kvd, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        b.matmul_many(
            &ws.xn,
            n,
            &mut [
                (&lw.wq, &mut ws.q),
                (&lw.wk, &mut ws.k),
                (&lw.wv, &mut ws.v),
            ],
        )?;
        if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
            b.add_bias(&mut ws.q, bq, n, qd)?;
            b.add_bias(&mut ws.k, bk, n, kvd)?;
            b.add_bias(&mut ws.v, bv, n, kvd)?;
        }
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            b.rms_norm(&ws.q, qn, cfg.rms_eps, n * cfg.n_heads, hd, &mut ws.tmp)?;
            std::mem::swap(&mut ws.q, &mut ws.tmp);
            b.rms_norm(&ws.k, kn, cfg.rms_eps, n * cfg.n_kv_heads, hd, &mut ws.tmp)?;
            std::mem::swap(&mut ws.k, &mut ws.tmp);
        }
        let rope = RopeParams {
            style: cfg.rope_style,
            theta: cfg.layer_rope_theta(li),
            n_rot: cfg.n_rot,
        };
        let ff = self.weights.rope_freqs.as_ref();
        b.rope(&mut ws.q, positions, cfg.n_heads, hd, rope, ff)?;
        b.rope(&mut ws.k, positions, cfg.n_kv_heads, hd, rope, ff)?;
        kv.write_kv(b, cfg, li, &ws.k, &ws.v)?;
        kv.attend(b, cfg, li, &ws.q, &mut ws.attn)?;
        b.matmul(&lw.wo, &ws.attn, n, &mut ws.proj)?;
        let delta = match &lw.post_attn_norm {
            Some(pn) => {
                b.rms_norm(&ws.proj, pn, cfg.rms_eps, n, cfg.d_model, &mut ws.tmp)?;
                &ws.tmp
            }
            None => &ws.proj,
        };
        b.add_rms_norm(
            &mut ws.x,
            delta,
            &lw.ffn_norm,
            cfg.rms_eps,
            n,
            cfg.d_model,
            &mut ws.xn,
        )?;
        Ok(())
    }

    /// `x += post_norm(Wdown · (act(Wgate·xn) * (Wup·xn)))` over `n` rows, then
    /// `xn = rms_norm(x)` with `next_norm` (the next layer's attention norm, or the output
    /// norm).
    fn ffn_block(
        &self,
        lw: &LayerWeights<B>,
        next_norm: &B::Buf,
        n: usize,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (b, cfg) = (&self.backend, &self.config);
        b.matmul_many(
            &ws.xn,
            n,
            &mut [(&lw.w_gate, &mut ws.gate), (&lw.w_up, &mut ws.up)],
        )?;
        match cfg.arch.ffn_act() {
            FfnAct::Silu => b.swiglu(&ws.gate, &ws.up, n * cfg.d_ff, &mut ws.act)?,
            FfnAct::GeluTanh => b.geglu(&ws.gate, &ws.up, n * cfg.d_ff, &mut ws.act)?,
        }
        b.matmul(&lw.w_down, &ws.act, n, &mut ws.proj)?;
        let delta = match &lw.post_ffn_norm {
            Some(pn) => {
                b.rms_norm(&ws.proj, pn, cfg.rms_eps, n, cfg.d_model, &mut ws.tmp)?;
                &ws.tmp
            }
            None => &ws.proj,
        };
        b.add_rms_norm(
            &mut ws.x,
            delta,
            next_norm,
            cfg.rms_eps,
            n,
            cfg.d_model,
            &mut ws.xn,
        )?;
        Ok(())
    }

    /// The output head over the final `xn` of `n` rows: logits of every row or of
    /// `last_rows` into `ws.logits`; returns their rows.
    fn head(
        &self,
        last_rows: &[usize],
        n: usize,
        ws: &mut Workspace<B>,
        want: Logits,
    ) -> Result<usize> {
        let (b, w, cfg) = (&self.backend, &self.weights, &self.config);
        let (d, vocab) = (cfg.d_model, cfg.vocab_size);
        let head = w.output.as_ref().unwrap_or(&w.tok_embd);
        let rows = match want {
            // No row wants logits (prompt chunks that do not end their prompt).
            Logits::Last if last_rows.is_empty() => 0,
            Logits::All => {
                b.matmul(head, &ws.xn, n, &mut ws.logits)?;
                n
            }
            // Every row is a last row (a decode step of many sequences): no gather.
            Logits::Last
                if last_rows.len() == n && last_rows.iter().enumerate().all(|(i, &r)| i == r) =>
            {
                b.matmul(head, &ws.xn, n, &mut ws.logits)?;
                n
            }
            Logits::Last => {
                for (i, &row) in last_rows.iter().enumerate() {
                    b.copy(&ws.xn, row * d, &mut ws.proj, i * d, d)?;
                }
                b.matmul(head, &ws.proj, last_rows.len(), &mut ws.logits)?;
                last_rows.len()
            }
        };
        if let Some(cap) = cfg.final_softcap {
            b.softcap(&mut ws.logits, cap, rows * vocab)?;
        }
        Ok(rows)
    }
}
