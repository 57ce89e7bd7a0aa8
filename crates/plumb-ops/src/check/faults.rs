//! A backend with a planted fault, for proving that the harness can fail.
//!
//! [`Faulty`] runs every op on the backend it wraps and then, for the calls of one op only,
//! damages the output the way a kernel bug would: one wrong element, a wrong row, the output
//! written transposed, or a region left unwritten (holding what it held before the call). The
//! self-test ([`super::self_test`]) checks that every case so damaged FAILs.

use std::sync::atomic::{AtomicUsize, Ordering};

use plumb_core::{GgmlType, HostWeight};

use super::damage::{damage_values, wrong_index};
use crate::backend::{
    AttnParams, Backend, FullAttnParams, PagedParams, PagedSeq, Precision, RopeParams, SampleRow,
    Sampled,
};
use crate::error::{OpError, Result};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One element off by half its scale: the output's RMS, or for a matmul that element's
    /// own `√Σ_k (w_k x_k)²` (an argmax or sampled id off by one).
    WrongElement,
    /// The last row holds the first row's values (an argmax or sampled row takes the first
    /// row's id).
    WrongRow,
    /// `[rows, cols]` written as `[cols, rows]`.
    Transposed,
    /// The last quarter of the output keeps what it held before the call.
    Stale,
    /// The op reports itself unsupported (must be SKIP, never PASS).
    Unsupported,
}

impl Fault {
    /// The faults that damage an output.
    pub const DAMAGE: [Fault; 4] = [
        Fault::WrongElement,
        Fault::WrongRow,
        Fault::Transposed,
        Fault::Stale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::WrongElement => "one wrong element",
            Fault::WrongRow => "a wrong row",
            Fault::Transposed => "a transposed output",
            Fault::Stale => "a stale (unwritten) region",
            Fault::Unsupported => "unsupported",
        }
    }
}

/// A buffer of the wrapped backend with its length, so outputs can be read back.
pub struct FaultyBuf<T> {
    inner: T,
    len: usize,
}

/// A weight of the wrapped backend with the host copy it was made from.
pub struct FaultyWeight<T> {
    inner: T,
    host: HostWeight,
}

/// `inner` with `fault` planted in every call of the check op `op`.
pub struct Faulty<'a, B: Backend> {
    inner: &'a B,
    fault: Fault,
    op: &'static str,
    applied: AtomicUsize,
}

impl<'a, B: Backend> Faulty<'a, B> {
    pub fn new(inner: &'a B, fault: Fault, op: &'static str) -> Self {
        Faulty {
            inner,
            fault,
            op,
            applied: AtomicUsize::new(0),
        }
    }

    /// How many outputs were actually changed so far (a fault that would leave an output as
    /// it was, such as transposing a single row, is not counted).
    pub fn applied(&self) -> usize {
        self.applied.load(Ordering::Relaxed)
    }

    fn targets(&self, op: &str) -> bool {
        self.op == op
    }

    fn unsupported(&self, op: &'static str) -> Result<()> {
        if self.targets(op) && self.fault == Fault::Unsupported {
            return Err(OpError::Unsupported {
                op,
                what: "a planted fault".into(),
            });
        }
        Ok(())
    }

    fn read(&self, buf: &FaultyBuf<B::Buf>) -> Result<Vec<f32>> {
        let mut v = vec![0f32; buf.len];
        self.inner.download(&buf.inner, &mut v)?;
        Ok(v)
    }

    /// The contents of `buf` before an op of `op` writes it, when the fault needs them.
    fn before(&self, op: &str, buf: &FaultyBuf<B::Buf>) -> Result<Option<Vec<f32>>> {
        if self.targets(op) && self.fault == Fault::Stale {
            return self.read(buf).map(Some);
        }
        Ok(None)
    }

    /// Damages the first `rows * cols` elements of `buf` after an op of `op` wrote them.
    fn damage(
        &self,
        op: &str,
        buf: &mut FaultyBuf<B::Buf>,
        rows: usize,
        cols: usize,
        before: Option<Vec<f32>>,
    ) -> Result<()> {
        self.damage_scaled(op, buf, rows, cols, before, None)
    }

    /// [`Self::damage`] of a matmul output `[n, w.rows]`: a wrong element is off by half of
    /// its own dot product's scale.
    fn damage_matmul(
        &self,
        w: &FaultyWeight<B::Weight>,
        x: &FaultyBuf<B::Buf>,
        n: usize,
        out: &mut FaultyBuf<B::Buf>,
        before: Option<Vec<f32>>,
    ) -> Result<()> {
        let rows = w.host.rows;
        let mut scale = None;
        if self.targets("matmul") && self.fault == Fault::WrongElement {
            let (t, r) = (wrong_index(n * rows) / rows, wrong_index(n * rows) % rows);
            let cols = w.host.cols;
            let mut wr = vec![0f32; cols];
            w.host.dequantize_row(r, &mut wr)?;
            let xs = self.read(x)?;
            let xt = xs.get(t * cols..(t + 1) * cols).unwrap_or(&[]);
            let s: f64 = wr
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (a as f64 * b as f64).powi(2))
                .sum();
            scale = Some(s.sqrt());
        }
        self.damage_scaled("matmul", out, n, rows, before, scale)
    }

    fn damage_scaled(
        &self,
        op: &str,
        buf: &mut FaultyBuf<B::Buf>,
        rows: usize,
        cols: usize,
        before: Option<Vec<f32>>,
        scale: Option<f64>,
    ) -> Result<()> {
        if !self.targets(op) || self.fault == Fault::Unsupported {
            return Ok(());
        }
        let mut v = self.read(buf)?;
        let len = (rows * cols).min(v.len());
        let orig = v.clone();
        damage_values(
            self.fault,
            &mut v[..len],
            rows,
            cols,
            before.as_deref(),
            scale,
        );
        if v.iter().zip(&orig).any(|(a, b)| a.to_bits() != b.to_bits()) {
            self.applied.fetch_add(1, Ordering::Relaxed);
            buf.inner = self.inner.upload(&v)?;
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Faulty<'_, B> {
    type Buf = FaultyBuf<B::Buf>;
    type Weight = FaultyWeight<B::Weight>;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buf> {
        let inner = self.inner.alloc(len)?;
        Ok(FaultyBuf { inner, len })
    }

    fn upload(&self, data: &[f32]) -> Result<Self::Buf> {
        let inner = self.inner.upload(data)?;
        Ok(FaultyBuf {
            inner,
            len: data.len(),
        })
    }

    fn download(&self, buf: &Self::Buf, out: &mut [f32]) -> Result<()> {
        self.inner.download(&buf.inner, out)
    }

    fn upload_weight(&self, w: &HostWeight) -> Result<Self::Weight> {
        let inner = self.inner.upload_weight(w)?;
        Ok(FaultyWeight {
            inner,
            host: w.clone(),
        })
    }

    fn copy(
        &self,
        src: &Self::Buf,
        src_off: usize,
        dst: &mut Self::Buf,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        self.inner
            .copy(&src.inner, src_off, &mut dst.inner, dst_off, len)
    }

    fn embedding(&self, table: &Self::Weight, ids: &[u32], out: &mut Self::Buf) -> Result<()> {
        self.unsupported("embedding")?;
        let before = self.before("embedding", out)?;
        self.inner.embedding(&table.inner, ids, &mut out.inner)?;
        let rows = ids.len().max(1);
        self.damage("embedding", out, rows, out.len / rows, before)
    }

    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("rms_norm")?;
        let before = self.before("rms_norm", out)?;
        self.inner
            .rms_norm(&x.inner, &w.inner, eps, rows, dim, &mut out.inner)?;
        self.damage("rms_norm", out, rows, dim, before)
    }

    fn add_rms_norm(
        &self,
        residual: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("add_rms_norm")?;
        let before = self.before("add_rms_norm", out)?;
        self.inner.add_rms_norm(
            &mut residual.inner,
            &x.inner,
            &w.inner,
            eps,
            rows,
            dim,
            &mut out.inner,
        )?;
        self.damage("add_rms_norm", out, rows, dim, before)
    }

    fn matmul(&self, w: &Self::Weight, x: &Self::Buf, n: usize, out: &mut Self::Buf) -> Result<()> {
        self.unsupported("matmul")?;
        let before = self.before("matmul", out)?;
        self.inner.matmul(&w.inner, &x.inner, n, &mut out.inner)?;
        self.damage_matmul(w, x, n, out, before)
    }

    fn matmul_many(
        &self,
        x: &Self::Buf,
        n: usize,
        pairs: &mut [(&Self::Weight, &mut Self::Buf)],
    ) -> Result<()> {
        self.unsupported("matmul")?;
        // The fault goes into the last matrix's output: every output must be checked.
        let Some(last) = pairs.len().checked_sub(1) else {
            return Ok(());
        };
        let before = self.before("matmul", pairs[last].1)?;
        {
            let mut inner: Vec<(&B::Weight, &mut B::Buf)> = pairs
                .iter_mut()
                .map(|(w, o)| (&w.inner, &mut o.inner))
                .collect();
            self.inner.matmul_many(&x.inner, n, &mut inner)?;
        }
        let (w, out) = (&pairs[last].0, &mut pairs[last].1);
        self.damage_matmul(w, x, n, out, before)
    }

    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Buf, rows: usize, dim: usize) -> Result<()> {
        self.unsupported("add_bias")?;
        let before = self.before("add_bias", x)?;
        self.inner.add_bias(&mut x.inner, &bias.inner, rows, dim)?;
        self.damage("add_bias", x, rows, dim, before)
    }

    fn rope(
        &self,
        x: &mut Self::Buf,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&Self::Buf>,
    ) -> Result<()> {
        self.unsupported("rope")?;
        let before = self.before("rope", x)?;
        let ff = freq_factors.map(|f| &f.inner);
        self.inner
            .rope(&mut x.inner, positions, n_heads, head_dim, p, ff)?;
        let rows = positions.len();
        self.damage("rope", x, rows, n_heads * head_dim, before)
    }

    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: AttnParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("attention")?;
        let before = self.before("attention", out)?;
        self.inner
            .attention(&q.inner, &k.inner, &v.inner, p, &mut out.inner)?;
        let cols = p.n_heads * p.head_dim;
        self.damage("attention", out, p.n_tokens, cols, before)
    }

    fn swiglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        len: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("swiglu")?;
        let before = self.before("swiglu", out)?;
        self.inner
            .swiglu(&gate.inner, &up.inner, len, &mut out.inner)?;
        self.damage("swiglu", out, 1, len, before)
    }

    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<()> {
        self.unsupported("add")?;
        let before = self.before("add", x)?;
        self.inner.add(&mut x.inner, &y.inner, len)?;
        self.damage("add", x, 1, len, before)
    }

    fn geglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        len: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("geglu")?;
        let before = self.before("geglu", out)?;
        self.inner
            .geglu(&gate.inner, &up.inner, len, &mut out.inner)?;
        self.damage("geglu", out, 1, len, before)
    }

    fn gelu(&self, x: &Self::Buf, len: usize, out: &mut Self::Buf) -> Result<()> {
        self.unsupported("gelu")?;
        let before = self.before("gelu", out)?;
        self.inner.gelu(&x.inner, len, &mut out.inner)?;
        self.damage("gelu", out, 1, len, before)
    }

    fn scale(&self, x: &mut Self::Buf, s: f32, len: usize) -> Result<()> {
        self.unsupported("scale")?;
        let before = self.before("scale", x)?;
        self.inner.scale(&mut x.inner, s, len)?;
        self.damage("scale", x, 1, len, before)
    }

    fn softcap(&self, x: &mut Self::Buf, cap: f32, len: usize) -> Result<()> {
        self.unsupported("softcap")?;
        let before = self.before("softcap", x)?;
        self.inner.softcap(&mut x.inner, cap, len)?;
        self.damage("softcap", x, 1, len, before)
    }

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
        self.unsupported("layer_norm")?;
        let before = self.before("layer_norm", out)?;
        self.inner
            .layer_norm(&x.inner, &w.inner, &b.inner, eps, rows, dim, &mut out.inner)?;
        self.damage("layer_norm", out, rows, dim, before)
    }

    fn attention_full(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: FullAttnParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("attention_full")?;
        let before = self.before("attention_full", out)?;
        self.inner
            .attention_full(&q.inner, &k.inner, &v.inner, p, &mut out.inner)?;
        let cols = p.n_heads * p.head_dim;
        self.damage("attention_full", out, p.n_tokens, cols, before)
    }

    fn argmax(&self, x: &Self::Buf, len: usize) -> Result<u32> {
        self.unsupported("argmax")?;
        let mut id = [self.inner.argmax(&x.inner, len)?];
        self.damage_ids("argmax", &mut id, len);
        Ok(id[0])
    }

    fn argmax_rows(&self, x: &Self::Buf, rows: usize, len: usize) -> Result<Vec<u32>> {
        self.unsupported("argmax")?;
        let mut ids = self.inner.argmax_rows(&x.inner, rows, len)?;
        self.damage_ids("argmax", &mut ids, len);
        Ok(ids)
    }

    fn sample_rows(
        &self,
        logits: &Self::Buf,
        vocab: usize,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<Sampled>> {
        self.unsupported("sample")?;
        let mut out = self.inner.sample_rows(&logits.inner, vocab, rows)?;
        let mut ids: Vec<u32> = out.iter().map(|s| s.id).collect();
        self.damage_ids("sample", &mut ids, vocab);
        out.iter_mut().zip(ids).for_each(|(s, id)| s.id = id);
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }

    fn kv_write_slots(
        &self,
        src: &Self::Buf,
        pool: &mut Self::Buf,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        self.inner
            .kv_write_slots(&src.inner, &mut pool.inner, slots, kv_dim)
    }

    fn attention_paged(
        &self,
        q: &Self::Buf,
        k_pool: &Self::Buf,
        v_pool: &Self::Buf,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.unsupported("attention_paged")?;
        let before = self.before("attention_paged", out)?;
        self.inner.attention_paged(
            &q.inner,
            &k_pool.inner,
            &v_pool.inner,
            seqs,
            p,
            &mut out.inner,
        )?;
        let rows: usize = seqs.iter().map(|s| s.n_tokens).sum();
        self.damage("attention_paged", out, rows, p.n_heads * p.head_dim, before)
    }

    fn kv_write(
        &self,
        src: &Self::Buf,
        cache: &mut Self::Buf,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        self.inner
            .kv_write(&src.inner, &mut cache.inner, pos0, n, kv_dim)
    }

    fn begin_step(&self, tokens: &[u32], positions: &[u32]) -> Result<()> {
        self.inner.begin_step(tokens, positions)
    }

    fn end_step(&self) -> Result<()> {
        self.inner.end_step()
    }

    fn record_begin(&self, key: u64) -> Result<bool> {
        self.inner.record_begin(key)
    }

    fn record_end(&self, key: u64) -> Result<()> {
        self.inner.record_end(key)
    }

    fn replay(&self, key: u64) -> Result<bool> {
        self.inner.replay(key)
    }

    fn stage_paged(&self, slots: &[u32], seqs: &[PagedSeq<'_>], group: usize) -> Result<()> {
        self.inner.stage_paged(slots, seqs, group)
    }

    fn precision(&self, weights: GgmlType) -> Precision {
        self.inner.precision(weights)
    }
}

impl<B: Backend> Faulty<'_, B> {
    /// The damage of the ops that return ids (argmax, sample): an id off by one, or the last
    /// row's id replaced by the first row's.
    fn damage_ids(&self, op: &str, ids: &mut [u32], len: usize) {
        if !self.targets(op) || ids.is_empty() {
            return;
        }
        let orig = ids.to_vec();
        match self.fault {
            Fault::WrongElement if len > 1 => ids[0] = (ids[0] + 1) % len as u32,
            Fault::WrongRow if ids.len() >= 2 => {
                let last = ids.len() - 1;
                ids[last] = ids[0];
            }
            _ => {}
        }
        if ids != orig.as_slice() {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}
