//! The Backend trait: the seam between the model forward and the hardware.
//!
//! Buffers hold f32 activations laid out row-major; every op is told how many rows it works
//! on, so a buffer may be larger than the data in it (scratch buffers sized for the largest
//! batch). Weights stay in their stored format on the backend.

use plumb_core::{GgmlType, HostWeight};

use crate::error::{OpError, Result};
use crate::{ops, shapes};

/// Index of the first largest of `x` (NaN never wins; 0 when nothing exceeds `-inf`): the
/// host scan behind [`Backend::argmax`]'s default and greedy sampling.
pub fn argmax_host(x: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0 as u32
}

/// How close to the reference a backend's arithmetic is, which decides the thresholds a whole
/// model's logits are held to (`plumb check --model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations and KV cache; only the order of f32 sums differs from the reference.
    Accurate,
    /// Activations quantized to 8 bits per block for the matmuls (or rounded to f16), or an
    /// f16 KV cache.
    EightBitActivations,
}

/// How RoPE pairs the elements of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): GGUF llama.
    Normal,
    /// Halves (x[i], x[i + d/2]): GPT-NeoX, Qwen2/3.
    Neox,
}

#[derive(Debug, Clone, Copy)]
pub struct RopeParams {
    pub style: RopeStyle,
    /// Frequency base θ (10000, 500000, ...).
    pub theta: f32,
    /// Rotated dimensions per head (≤ head_dim; the rest pass through).
    pub n_rot: usize,
}

/// Shapes of one attention call.
///
/// `q: [n_tokens, n_heads, head_dim]`, caches `[capacity, n_kv_heads, head_dim]`,
/// `out: [n_tokens, n_heads, head_dim]`. Token `i` of the batch sits at position `pos0 + i`
/// and attends to cache positions `0 ..= pos0 + i` (causal), or with a `window` of `w` to the
/// last `w` of them: `max(0, pos0 + i + 1 - w) ..= pos0 + i` (sliding-window layers).
#[derive(Debug, Clone, Copy)]
pub struct AttnParams {
    pub n_tokens: usize,
    pub pos0: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
}

/// The first position a query at `pos` attends to under `window` (see [`AttnParams`]):
/// window 512 at position 600 → 89; no window, or a window past the start → 0.
pub fn window_start(pos: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// Shapes of a bidirectional (non-causal) attention call: every one of the `n_tokens` query
/// rows attends to all `n_tokens` keys and values (an encoder's self-attention).
/// `q, k, v, out: [n_tokens, heads, head_dim]` with `n_kv_heads` heads in `k` and `v`.
#[derive(Debug, Clone, Copy)]
pub struct FullAttnParams {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// One sequence of a paged attention call: its query rows `q_row .. q_row + n_tokens` (of `q`
/// and `out`) sit at positions `pos0 ..`, and position `p` of the sequence lives in pool slot
/// `blocks[p / block_size] * block_size + p % block_size`.
/// Worked example: block_size 16, blocks [7, 2], position 19 → block 2, offset 3 → slot 35.
#[derive(Debug, Clone, Copy)]
pub struct PagedSeq<'a> {
    pub q_row: usize,
    pub n_tokens: usize,
    pub pos0: usize,
    pub blocks: &'a [u32],
}

/// Shapes of a paged attention call. Pools are `[n_blocks * block_size, n_kv_heads, head_dim]`;
/// `window` as in [`AttnParams`].
#[derive(Debug, Clone, Copy)]
pub struct PagedParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub block_size: usize,
    pub window: Option<usize>,
}

impl PagedParams {
    /// The contiguous [`Backend::attention`] call that sequence `s` amounts to once its blocks
    /// are gathered into a cache of its own.
    pub fn seq_attn(&self, s: &PagedSeq<'_>) -> AttnParams {
        AttnParams {
            n_tokens: s.n_tokens,
            pos0: s.pos0,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            scale: self.scale,
            window: self.window,
        }
    }
}

/// The first `len` values of `buf`, on the host (the host defaults' input).
fn host_copy<B: Backend + ?Sized>(b: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut v = vec![0f32; len];
    b.download(buf, &mut v)?;
    Ok(v)
}

/// `dst[..vals.len()] = vals`, through an uploaded copy (the host defaults' output).
fn host_store<B: Backend + ?Sized>(b: &B, vals: &[f32], dst: &mut B::Buf) -> Result<()> {
    let tmp = b.upload(vals)?;
    b.copy(&tmp, 0, dst, 0, vals.len())
}

/// Most `top_logprobs` alternatives a row may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How one row is sampled (spec and reference: [`crate::ops::sample`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// ≤ 0: greedy (the first largest allowed logit).
    pub temperature: f32,
    /// Keep the `top_k` best tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the shortest best-first prefix whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Keep the tokens at least `min_p` times as likely as the best; 0 keeps all.
    pub min_p: f32,
    /// Divides the positive logits of the tokens in the history and multiplies the negative
    /// ones (1 disables).
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token in the history.
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a token in the history.
    pub frequency_penalty: f32,
    /// `Some(n)`: report the chosen token's log-probability and the `n` most likely tokens
    /// (at most [`MAX_TOP_LOGPROBS`]); `None`: no log-probabilities.
    pub top_logprobs: Option<usize>,
}

impl SampleParams {
    /// Greedy, no penalties, no log-probabilities.
    pub fn greedy() -> SampleParams {
        SampleParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: None,
        }
    }

    /// Whether any penalty changes a logit.
    pub fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }

    /// Whether top-p or min-p cuts the candidates.
    pub fn filters(&self) -> bool {
        self.top_p < 1.0 || self.min_p > 0.0
    }
}

/// One row of a [`Backend::sample_rows`] call.
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    pub params: SampleParams,
    /// The tokens the penalties look at (the penalty window, already cut by the caller).
    pub history: &'a [u32],
    /// Allowed tokens: bit `t % 32` of word `t / 32` set means token `t` may be chosen (at
    /// least `vocab.div_ceil(32)` words); `None` allows every token.
    pub mask: Option<&'a [u32]>,
    /// Added to these tokens' logits after the penalties, before everything else (distinct
    /// ids below the vocabulary, in increasing order).
    pub bias: &'a [(u32, f32)],
    /// The row's uniform draw in [0, 1), from the caller's seeded generator.
    pub u: f64,
}

/// What [`Backend::sample_rows`] returns for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// When the row asked for log-probabilities: the chosen token's log-softmax under the
    /// penalized, unfiltered, unmasked distribution at temperature 1.
    pub logprob: Option<f32>,
    /// The `top_logprobs` most likely tokens under that distribution, best first (ties by
    /// id), with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

pub trait Backend: Send + Sync {
    /// f32 activations resident on the backend.
    type Buf: Send + Sync;
    /// A weight in its stored format, resident on the backend.
    type Weight: Send + Sync;

    fn name(&self) -> &'static str;

    // --- memory ---
    /// A buffer of `len` zeros.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// Copies the first `out.len()` elements of `buf` to the host.
    fn download(&self, buf: &Self::Buf, out: &mut [f32]) -> Result<()>;
    fn upload_weight(&self, w: &HostWeight) -> Result<Self::Weight>;
    /// `dst[dst_off .. dst_off+len] = src[src_off .. src_off+len]`.
    fn copy(
        &self,
        src: &Self::Buf,
        src_off: usize,
        dst: &mut Self::Buf,
        dst_off: usize,
        len: usize,
    ) -> Result<()>;

    // --- ops (spec and reference of each in `crate::ops`) ---
    /// `out[t, :] = dequant(table[ids[t], :])`.
    fn embedding(&self, table: &Self::Weight, ids: &[u32], out: &mut Self::Buf) -> Result<()>;
    /// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w` for `rows` rows of `dim`.
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `residual += x`, then `out = rms_norm(residual)`.
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &self,
        residual: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `out[t, :] = W · x[t, :]` for `n` rows of x (`x: [n, w.cols]`, `out: [n, w.rows]`).
    fn matmul(&self, w: &Self::Weight, x: &Self::Buf, n: usize, out: &mut Self::Buf) -> Result<()>;
    /// [`Backend::matmul`] of several matrices reading the same `x` (Wq, Wk, Wv; Wgate, Wup):
    /// `out_i = x · W_iᵀ` for each pair, which a backend may run as one launch.
    fn matmul_many(
        &self,
        x: &Self::Buf,
        n: usize,
        pairs: &mut [(&Self::Weight, &mut Self::Buf)],
    ) -> Result<()> {
        for (w, out) in pairs.iter_mut() {
            self.matmul(w, x, n, out)?;
        }
        Ok(())
    }
    /// `x[r, :] += bias` for `rows` rows of `dim`.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Buf, rows: usize, dim: usize) -> Result<()>;
    /// Rotates `x: [n_tokens, n_heads, head_dim]` in place; token `t` is at `positions[t]`.
    /// `freq_factors` (Llama 3.1 style) divide each pair's frequency when present.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&Self::Buf>,
    ) -> Result<()>;
    /// Causal attention of `q` against the first `pos0 + n_tokens` cache positions.
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: AttnParams,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `out = silu(gate) * up` over `len` elements.
    fn swiglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        len: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `x += y` over `len` elements.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<()>;

    // --- ops with a host default (spec and reference in `crate::ops`): a backend without a
    // kernel of its own runs them on host copies of its buffers, correct and slow ---

    /// `out = gelu_tanh(gate) * up` over `len` elements (Gemma's gated FFN).
    fn geglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        len: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let (g, u) = (host_copy(self, gate, len)?, host_copy(self, up, len)?);
        let mut o = vec![0f32; len];
        ops::elementwise::geglu(&g, &u, len, &mut o)?;
        host_store(self, &o, out)
    }

    /// `out = gelu(x)` (the exact, erf form) over `len` elements (BERT's FFN).
    fn gelu(&self, x: &Self::Buf, len: usize, out: &mut Self::Buf) -> Result<()> {
        let xs = host_copy(self, x, len)?;
        let mut o = vec![0f32; len];
        ops::elementwise::gelu(&xs, len, &mut o)?;
        host_store(self, &o, out)
    }

    /// `x *= s` over `len` elements (Gemma's embedding scale).
    fn scale(&self, x: &mut Self::Buf, s: f32, len: usize) -> Result<()> {
        let mut xs = host_copy(self, x, len)?;
        ops::elementwise::scale(&mut xs, s, len)?;
        host_store(self, &xs, x)
    }

    /// `x = cap · tanh(x / cap)` over `len` elements (final-logit softcapping).
    fn softcap(&self, x: &mut Self::Buf, cap: f32, len: usize) -> Result<()> {
        let mut xs = host_copy(self, x, len)?;
        ops::elementwise::softcap(&mut xs, cap, len)?;
        host_store(self, &xs, x)
    }

    /// `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b` for `rows` rows of `dim`
    /// (BERT's LayerNorm; the variance is the population one).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let n = rows.checked_mul(dim).ok_or_else(|| OpError::Shape {
            op: "layer_norm",
            msg: format!("{rows} rows × {dim} overflows"),
        })?;
        let xs = host_copy(self, x, n)?;
        let (ws, bs) = (host_copy(self, w, dim)?, host_copy(self, b, dim)?);
        let mut o = vec![0f32; n];
        ops::layer_norm::reference(&xs, &ws, &bs, eps, rows, dim, &mut o)?;
        host_store(self, &o, out)
    }

    /// Bidirectional attention of `n_tokens` rows over the same `n_tokens` keys (spec and
    /// reference: `crate::ops::attention::full`). The default runs each query row as a
    /// one-token [`Backend::attention`] at the last position, which sees every key.
    fn attention_full(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: FullAttnParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let Some(last) = p.n_tokens.checked_sub(1) else {
            return Ok(());
        };
        let q_dim = p.n_heads * p.head_dim;
        let ap = AttnParams {
            n_tokens: 1,
            pos0: last,
            n_heads: p.n_heads,
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            scale: p.scale,
            window: None,
        };
        let mut qs = self.alloc(q_dim)?;
        let mut os = self.alloc(q_dim)?;
        for t in 0..p.n_tokens {
            self.copy(q, t * q_dim, &mut qs, 0, q_dim)?;
            self.attention(&qs, k, v, ap, &mut os)?;
            self.copy(&os, 0, out, t * q_dim, q_dim)?;
        }
        Ok(())
    }

    /// Index of the largest of the first `len` values (the first on ties), so that greedy
    /// decoding moves only a token id to the host.
    fn argmax(&self, x: &Self::Buf, len: usize) -> Result<u32> {
        let mut host = vec![0f32; len];
        self.download(x, &mut host)?;
        Ok(argmax_host(&host))
    }

    /// [`Backend::argmax`] of each of `rows` rows of `len` values (row `r` at `r * len`), so
    /// that greedy decoding of a batch moves only `rows` token ids to the host.
    fn argmax_rows(&self, x: &Self::Buf, rows: usize, len: usize) -> Result<Vec<u32>> {
        if len == 0 {
            return Ok(vec![0; rows]);
        }
        let mut host = vec![0f32; rows * len];
        self.download(x, &mut host)?;
        Ok(host.chunks(len).take(rows).map(argmax_host).collect())
    }

    /// One token from each row of `logits` (row `r` at `r * vocab`): penalties, the
    /// allow-mask, temperature, top-k, top-p, min-p and the draw with the row's uniform (spec
    /// and reference: `crate::ops::sample`). The default downloads the rows and runs the
    /// reference; a device backend moves only the ids and the asked log-probabilities.
    fn sample_rows(
        &self,
        logits: &Self::Buf,
        vocab: usize,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<Sampled>> {
        shapes::sample_rows(usize::MAX, vocab, rows)?;
        let mut host = vec![0f32; rows.len() * vocab];
        self.download(logits, &mut host)?;
        crate::ops::sample::reference(&mut host, vocab, rows)
    }

    /// Waits until every queued op has finished (a no-op on synchronous backends); timing
    /// code calls it before reading a clock.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // --- paged KV cache: many sequences' keys and values in one pool of fixed-size blocks ---

    /// `pool[slots[i] * kv_dim ..][.. kv_dim] = src[i * kv_dim ..][.. kv_dim]` for every `i`.
    fn kv_write_slots(
        &self,
        src: &Self::Buf,
        pool: &mut Self::Buf,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        for (i, &slot) in slots.iter().enumerate() {
            self.copy(src, i * kv_dim, pool, slot as usize * kv_dim, kv_dim)?;
        }
        Ok(())
    }

    /// Causal attention of every sequence in `seqs` against its own positions in the pools
    /// (spec and reference: `crate::ops::paged_attention`). The default gathers each
    /// sequence's blocks into a contiguous scratch cache and runs [`Backend::attention`]:
    /// correct everywhere, fast nowhere.
    fn attention_paged(
        &self,
        q: &Self::Buf,
        k_pool: &Self::Buf,
        v_pool: &Self::Buf,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        // The buffers' bounds are `copy`'s to check.
        shapes::paged_params(&p)?;
        shapes::paged_tables(seqs, &p)?;
        let kv_dim = p.n_kv_heads * p.head_dim;
        let q_dim = p.n_heads * p.head_dim;
        for s in seqs {
            let n_kv = s.pos0 + s.n_tokens;
            let mut k = self.alloc(n_kv * kv_dim)?;
            let mut v = self.alloc(n_kv * kv_dim)?;
            for pos in 0..n_kv {
                // In the table: checked above.
                let block = s.blocks[pos / p.block_size] as usize;
                let slot = block * p.block_size + pos % p.block_size;
                self.copy(k_pool, slot * kv_dim, &mut k, pos * kv_dim, kv_dim)?;
                self.copy(v_pool, slot * kv_dim, &mut v, pos * kv_dim, kv_dim)?;
            }
            let mut qs = self.alloc(s.n_tokens * q_dim)?;
            self.copy(q, s.q_row * q_dim, &mut qs, 0, s.n_tokens * q_dim)?;
            let mut os = self.alloc(s.n_tokens * q_dim)?;
            self.attention(&qs, &k, &v, p.seq_attn(s), &mut os)?;
            self.copy(&os, 0, out, s.q_row * q_dim, s.n_tokens * q_dim)?;
        }
        Ok(())
    }

    // --- steps: what lets a backend record a decode step once and replay it ---

    /// `cache[pos0*kv_dim ..][.. n*kv_dim] = src[.. n*kv_dim]`: the KV-cache write of a step.
    fn kv_write(
        &self,
        src: &Self::Buf,
        cache: &mut Self::Buf,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        self.copy(src, 0, cache, pos0 * kv_dim, n * kv_dim)
    }

    /// Announces the tokens and positions of the forward step about to run. Until
    /// [`Backend::end_step`], the ops of the step receive exactly these values (`ids` of
    /// `embedding`, `positions` of `rope`, `pos0 = positions[0]` of `attention` and `kv_write`),
    /// so a backend may read them from its own device-side copy, which is what lets a recorded
    /// step be replayed with new values. Inside a step a backend may also defer or merge
    /// launches (e.g. the q, k and v matmuls that share an input), so the buffers an op was
    /// given must stay alive and unchanged by the host until the next backend call.
    fn begin_step(&self, tokens: &[u32], positions: &[u32]) -> Result<()> {
        let _ = (tokens, positions);
        Ok(())
    }

    fn end_step(&self) -> Result<()> {
        Ok(())
    }

    /// Starts recording the ops that follow (inside a step) under `key`. Returns `false` when
    /// the backend does not record, in which case the ops simply run.
    fn record_begin(&self, key: u64) -> Result<bool> {
        let _ = key;
        Ok(false)
    }

    /// Ends the recording started by `record_begin` and runs what was recorded once.
    fn record_end(&self, key: u64) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Replays the step recorded under `key` (with the values of the current step) and
    /// returns `true`, or returns `false` if there is no such recording.
    fn replay(&self, key: u64) -> Result<bool> {
        let _ = key;
        Ok(false)
    }

    /// Announces, inside a step, the slots of every `kv_write_slots` and the sequences of
    /// every `attention_paged` about to run (all the step's layers take these same values;
    /// `group` = query heads per KV head). A backend may copy them to the device once here
    /// and have those ops read its copy, which is what lets a recorded paged step be replayed
    /// with the next step's tables. The ops still receive the values and may be called alone.
    fn stage_paged(&self, slots: &[u32], seqs: &[PagedSeq<'_>], group: usize) -> Result<()> {
        let _ = (slots, seqs, group);
        Ok(())
    }

    /// The precision of this backend's arithmetic on a model whose matrices are `weights`.
    fn precision(&self, weights: GgmlType) -> Precision {
        let _ = weights;
        Precision::Accurate
    }
}
