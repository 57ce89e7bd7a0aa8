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

/// The type of one argument of a [`forward!`] or [`planted!`] op: `buf` (`&Self::Buf`),
/// `mut_buf` (`&mut Self::Buf`), `weight` (`&Self::Weight`), `opt_buf` (`Option<&Self::Buf>`),
/// or any other type in parentheses, passed through as it is.
macro_rules! arg_ty {
    (buf) => { &Self::Buf };
    (mut_buf) => { &mut Self::Buf };
    (weight) => { &Self::Weight };
    (opt_buf) => { Option<&Self::Buf> };
    (($t:ty)) => { $t };
}

/// What the wrapped backend receives for an argument declared as in [`arg_ty!`].
macro_rules! arg_inner {
    (buf, $a:ident) => {
        &$a.inner
    };
    (mut_buf, $a:ident) => {
        &mut $a.inner
    };
    (weight, $a:ident) => {
        &$a.inner
    };
    (opt_buf, $a:ident) => {
        $a.map(|b| &b.inner)
    };
    (($t:ty), $a:ident) => {
        $a
    };
}

/// Methods that only pass their call on to the wrapped backend.
macro_rules! forward {
    ($(fn $name:ident($($arg:ident: $kind:tt),*) -> $ret:ty;)*) => {$(
        fn $name(&self, $($arg: arg_ty!($kind)),*) -> $ret {
            self.inner.$name($(arg_inner!($kind, $arg)),*)
        }
    )*};
}

/// Ops whose planted fault damages one output buffer, `$out` as `[$rows, $cols]` (expressions
/// of the arguments, read after the call): the op reports itself unsupported when that is the
/// fault, keeps what `$out` held for a stale region, runs on the wrapped backend, then its
/// output is damaged. The check op is named as the method.
macro_rules! planted {
    ($(fn $name:ident($($arg:ident: $kind:tt),*) damages $out:ident[$rows:expr, $cols:expr];)*) => {$(
        fn $name(&self, $($arg: arg_ty!($kind)),*) -> Result<()> {
            let op = stringify!($name);
            self.unsupported(op)?;
            let before = self.before(op, $out)?;
            self.inner.$name($(arg_inner!($kind, $arg)),*)?;
            let (rows, cols): (usize, usize) = ($rows, $cols);
            self.damage(op, $out, rows, cols, before)
        }
    )*};
}

impl<B: Backend> Backend for Faulty<'_, B> {
    type Buf = FaultyBuf<B::Buf>;
    type Weight = FaultyWeight<B::Weight>;

    forward! {
        fn name() -> &'static str;
        fn download(buf: buf, out: (&mut [f32])) -> Result<()>;
        fn copy(src: buf, src_off: (usize), dst: mut_buf, dst_off: (usize), len: (usize))
            -> Result<()>;
        fn synchronize() -> Result<()>;
        fn kv_write_slots(src: buf, pool: mut_buf, slots: (&[u32]), kv_dim: (usize)) -> Result<()>;
        fn kv_write(src: buf, cache: mut_buf, pos0: (usize), n: (usize), kv_dim: (usize))
            -> Result<()>;
        fn begin_step(tokens: (&[u32]), positions: (&[u32])) -> Result<()>;
        fn end_step() -> Result<()>;
        fn record_begin(key: (u64)) -> Result<bool>;
        fn record_end(key: (u64)) -> Result<()>;
        fn replay(key: (u64)) -> Result<bool>;
        fn stage_paged(slots: (&[u32]), seqs: (&[PagedSeq<'_>]), group: (usize)) -> Result<()>;
        fn precision(weights: (GgmlType)) -> Precision;
    }

    planted! {
        fn embedding(table: weight, ids: (&[u32]), out: mut_buf)
            damages out[ids.len().max(1), out.len / ids.len().max(1)];
        fn rms_norm(x: buf, w: buf, eps: (f32), rows: (usize), dim: (usize), out: mut_buf)
            damages out[rows, dim];
        fn add_rms_norm(
            residual: mut_buf, x: buf, w: buf, eps: (f32), rows: (usize), dim: (usize),
            out: mut_buf
        ) damages out[rows, dim];
        fn add_bias(x: mut_buf, bias: buf, rows: (usize), dim: (usize)) damages x[rows, dim];
        fn rope(
            x: mut_buf, positions: (&[u32]), n_heads: (usize), head_dim: (usize),
            p: (RopeParams), freq_factors: opt_buf
        ) damages x[positions.len(), n_heads * head_dim];
        fn attention(q: buf, k: buf, v: buf, p: (AttnParams), out: mut_buf)
            damages out[p.n_tokens, p.n_heads * p.head_dim];
        fn swiglu(gate: buf, up: buf, len: (usize), out: mut_buf) damages out[1, len];
        fn add(x: mut_buf, y: buf, len: (usize)) damages x[1, len];
        fn geglu(gate: buf, up: buf, len: (usize), out: mut_buf) damages out[1, len];
        fn gelu(x: buf, len: (usize), out: mut_buf) damages out[1, len];
        fn scale(x: mut_buf, s: (f32), len: (usize)) damages x[1, len];
        fn softcap(x: mut_buf, cap: (f32), len: (usize)) damages x[1, len];
        fn layer_norm(
            x: buf, w: buf, b: buf, eps: (f32), rows: (usize), dim: (usize), out: mut_buf
        ) damages out[rows, dim];
        fn attention_full(q: buf, k: buf, v: buf, p: (FullAttnParams), out: mut_buf)
            damages out[p.n_tokens, p.n_heads * p.head_dim];
        fn attention_paged(
            q: buf, k_pool: buf, v_pool: buf, seqs: (&[PagedSeq<'_>]), p: (PagedParams),
            out: mut_buf
        ) damages out[seqs.iter().map(|s| s.n_tokens).sum(), p.n_heads * p.head_dim];
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

    fn upload_weight(&self, w: &HostWeight) -> Result<Self::Weight> {
        let inner = self.inner.upload_weight(w)?;
        Ok(FaultyWeight {
            inner,
            host: w.clone(),
        })
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
