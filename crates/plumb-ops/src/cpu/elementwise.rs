//! Row-wise and elementwise ops: rms_norm (plain and fused with the residual add),
//! layer_norm, add, add_bias, swiglu, rope. Plain loops, multiversioned (see `mv.rs`); rows or chunks go to
//! the pool only when there is enough work to pay for a dispatch.

use std::sync::Mutex;

use super::matmul::SendPtr;
use super::mv::multiversion;
use super::pool::split;
use super::simd::{dot, simd_fn, Simd};
use super::CpuBackend;
use crate::backend::{RopeParams, RopeStyle};
use crate::error::Result;
use crate::shapes;

/// Elements below which an op stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

impl CpuBackend {
    /// Runs `f(range)` over `0..total` (in multiples of `align`), on the pool when `work`
    /// (elements touched) is large enough.
    pub(crate) fn par_ranges(
        &self,
        total: usize,
        align: usize,
        work: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let threads = self.pool.threads();
        if work < PAR_MIN || threads == 1 || total <= align {
            return f(0..total);
        }
        let chunks = (super::matmul::CHUNKS_PER_THREAD * threads).min(total.div_ceil(align));
        self.pool.run(chunks, &|c| {
            let r = split(total, chunks, c, align);
            if !r.is_empty() {
                f(r)
            }
        });
    }
}

/// `out = x * inv_rms(x) * w` for each row of `dim` in `x`.
///
/// # Safety
/// `S`'s features are present (see `simd.rs`); the slices' lengths are checked here.
#[inline(always)]
unsafe fn norm_rows_g<S: Simd>(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut [f32]) {
    assert!(w.len() >= dim);
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ss = dot::<S>(xr.as_ptr(), xr.as_ptr(), dim) as f64;
        let inv = (1.0 / (ss / dim as f64 + eps as f64).sqrt()) as f32;
        scale_mul::<S>(xr.as_ptr(), inv, w.as_ptr(), or.as_mut_ptr(), dim);
    }
}

/// `res += x`, then `out = rms_norm(res)`, per row of `dim`.
///
/// # Safety
/// `S`'s features are present (see `simd.rs`); the slices' lengths are checked here.
#[inline(always)]
unsafe fn add_norm_rows_g<S: Simd>(
    res: &mut [f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
    dim: usize,
    out: &mut [f32],
) {
    assert!(w.len() >= dim);
    let rows = res
        .chunks_exact_mut(dim)
        .zip(x.chunks_exact(dim))
        .zip(out.chunks_exact_mut(dim));
    for ((rr, xr), or) in rows {
        let (rp, xp) = (rr.as_mut_ptr(), xr.as_ptr());
        let mut ss = S::zero();
        let mut i = 0;
        while i + S::N <= dim {
            let r = S::add(S::load(rp.add(i)), S::load(xp.add(i)));
            S::store(rp.add(i), r);
            ss = S::fmadd(r, r, ss);
            i += S::N;
        }
        let mut ss = S::sum(ss);
        for i in i..dim {
            let r = *rp.add(i) + *xp.add(i);
            *rp.add(i) = r;
            ss += r * r;
        }
        let inv = (1.0 / (ss as f64 / dim as f64 + eps as f64).sqrt()) as f32;
        scale_mul::<S>(rp, inv, w.as_ptr(), or.as_mut_ptr(), dim);
    }
}

/// `out[i] = x[i] * c * w[i]`.
///
/// # Safety
/// `x` and `w` are valid for `n` f32 reads and `out` for `n` writes; `S`'s features are
/// present (see `simd.rs`).
#[inline(always)]
unsafe fn scale_mul<S: Simd>(x: *const f32, c: f32, w: *const f32, out: *mut f32, n: usize) {
    let cv = S::splat(c);
    let mut i = 0;
    while i + S::N <= n {
        S::store(
            out.add(i),
            S::mul(S::mul(S::load(x.add(i)), cv), S::load(w.add(i))),
        );
        i += S::N;
    }
    for i in i..n {
        *out.add(i) = *x.add(i) * c * *w.add(i);
    }
}

/// `out = silu(g) * u = g / (1 + e^-g) * u`.
///
/// # Safety
/// `S`'s features are present (see `simd.rs`); the slices' lengths are checked here.
#[inline(always)]
unsafe fn swiglu_g<S: Simd>(g: &[f32], u: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(g.len() >= n && u.len() >= n);
    let (gp, up, op) = (g.as_ptr(), u.as_ptr(), out.as_mut_ptr());
    let (one, neg) = (S::splat(1.0), S::splat(-1.0));
    let f = |g: *const f32, u: *const f32, o: *mut f32| {
        let a = S::load(g);
        let den = S::add(one, S::exp(S::mul(a, neg)));
        // a / den as a * (1 / den): the vector abstraction has no divide.
        let r = S::recip(den);
        S::store(o, S::mul(S::mul(a, r), S::load(u)));
    };
    let mut i = 0;
    while i + S::N <= n {
        f(gp.add(i), up.add(i), op.add(i));
        i += S::N;
    }
    if i < n {
        // The tail through the same vector code (padded), so that an element's value does
        // not depend on where the call's (or a thread's) range ends. `S::N` ≤ 16.
        let k = n - i;
        let (mut ga, mut ua, mut oa) = ([0f32; 16], [0f32; 16], [0f32; 16]);
        ga[..k].copy_from_slice(&g[i..n]);
        ua[..k].copy_from_slice(&u[i..n]);
        f(ga.as_ptr(), ua.as_ptr(), oa.as_mut_ptr());
        out[i..n].copy_from_slice(&oa[..k]);
    }
}

/// The largest value ignoring NaNs (`-inf` if none).
///
/// # Safety
/// `S`'s features are present (see `simd.rs`); `x` is a slice, read within its length.
#[inline(always)]
unsafe fn max_g<S: Simd>(x: &[f32]) -> f32 {
    let p = x.as_ptr();
    let mut m = S::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + S::N <= x.len() {
        // `max(new, acc)` keeps `acc` where `new` is NaN (x86 semantics; `f32::max` too).
        m = S::max(S::load(p.add(i)), m);
        i += S::N;
    }
    x[i..].iter().fold(S::hmax(m), |a, &b| a.max(b))
}

simd_fn!(fn max_of = max_g(x: &[f32]) -> f32);

/// Index of the first largest value (NaNs ignored; 0 when nothing exceeds `-inf`), as the
/// trait's default `argmax`, without copying the logits.
pub(crate) fn argmax(be: &CpuBackend, x: &[f32], len: usize) -> Result<u32> {
    shapes::argmax(x.len(), 1, len)?;
    let x = &x[..len];
    let m = max_of(be.level, x);
    if m == f32::NEG_INFINITY {
        return Ok(0);
    }
    Ok(x.iter().position(|&v| v == m).unwrap_or(0) as u32)
}

simd_fn!(fn norm_rows = norm_rows_g(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut [f32]));
simd_fn!(fn add_norm_rows = add_norm_rows_g(res: &mut [f32], x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut [f32]));
simd_fn!(fn swiglu_into = swiglu_g(g: &[f32], u: &[f32], out: &mut [f32]));

multiversion! {
    fn add_into(x: &mut [f32], y: &[f32]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

/// Splits `(ptr, len)` views for a pool job; `r` is in elements.
///
/// # Safety
/// `r` lies within the buffer behind `p`, which outlives `'a`, and no other live reference
/// overlaps `r` while the slice is in use.
unsafe fn sub<'a>(p: SendPtr<f32>, r: &std::ops::Range<usize>) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(p.get().add(r.start), r.len())
}

pub(crate) fn rms_norm(
    be: &CpuBackend,
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::rms_norm(x.len(), w.len(), rows, dim, out.len())?;
    if dim == 0 {
        return Ok(());
    }
    let op = SendPtr(out.as_mut_ptr());
    be.par_ranges(rows, 1, rows * dim, &|r| {
        let e = r.start * dim..r.end * dim;
        // SAFETY: rows `r` of `out` (checked above) belong to this share alone.
        let o = unsafe { sub(op, &e) };
        norm_rows(be.level, &x[e.clone()], w, eps, dim, o);
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn add_rms_norm(
    be: &CpuBackend,
    res: &mut [f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::add_rms_norm(res.len(), x.len(), w.len(), rows, dim, out.len())?;
    if dim == 0 {
        return Ok(());
    }
    let (rp, op) = (SendPtr(res.as_mut_ptr()), SendPtr(out.as_mut_ptr()));
    be.par_ranges(rows, 1, rows * dim, &|r| {
        let e = r.start * dim..r.end * dim;
        // SAFETY: rows `r` of `res` and `out` (checked above) belong to this share alone.
        let (rs, o) = unsafe { (sub(rp, &e), sub(op, &e)) };
        add_norm_rows(be.level, rs, &x[e.clone()], w, eps, dim, o);
    });
    Ok(())
}

multiversion! {
    /// LayerNorm of each row of `dim`: mean and variance summed in f64 (two passes).
    fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, dim: usize, out: &mut [f32]) {
        for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            let (m, inv) = (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
            for (((o, &v), &wi), &bi) in or.iter_mut().zip(xr).zip(&w[..dim]).zip(&b[..dim]) {
                *o = (v - m) * inv * wi + bi;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm(
    be: &CpuBackend,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::layer_norm(x.len(), w.len(), b.len(), rows, dim, out.len())?;
    if dim == 0 {
        return Ok(());
    }
    let op = SendPtr(out.as_mut_ptr());
    be.par_ranges(rows, 1, rows * dim, &|r| {
        let e = r.start * dim..r.end * dim;
        // SAFETY: rows `r` of `out` (checked above) belong to this share alone.
        let o = unsafe { sub(op, &e) };
        layer_norm_rows(be.level, &x[e.clone()], w, b, eps, dim, o);
    });
    Ok(())
}

pub(crate) fn add(be: &CpuBackend, x: &mut [f32], y: &[f32], len: usize) -> Result<()> {
    shapes::add(x.len(), y.len(), len)?;
    let xp = SendPtr(x.as_mut_ptr());
    be.par_ranges(len, 64, 2 * len, &|r| {
        // SAFETY: `r` lies within `len` ≤ `x.len()` and belongs to this share alone.
        add_into(be.level, unsafe { sub(xp, &r) }, &y[r.clone()]);
    });
    Ok(())
}

pub(crate) fn add_bias(
    be: &CpuBackend,
    x: &mut [f32],
    b: &[f32],
    rows: usize,
    dim: usize,
) -> Result<()> {
    shapes::add_bias(x.len(), b.len(), rows, dim)?;
    for row in x[..rows * dim].chunks_exact_mut(dim.max(1)) {
        add_into(be.level, row, &b[..dim]);
    }
    Ok(())
}

pub(crate) fn swiglu(
    be: &CpuBackend,
    g: &[f32],
    u: &[f32],
    len: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::swiglu(g.len(), u.len(), len, out.len())?;
    let op = SendPtr(out.as_mut_ptr());
    be.par_ranges(len, 64, 4 * len, &|r| {
        // SAFETY: `r` lies within `len` ≤ `out.len()` and belongs to this share alone.
        swiglu_into(be.level, &g[r.clone()], &u[r.clone()], unsafe {
            sub(op, &r)
        });
    });
    Ok(())
}

/// Cos/sin of every rotated pair, per position, for one (θ, n_rot, freq factors).
#[derive(Default)]
pub(crate) struct RopeCache {
    key: Option<(u32, usize, Vec<u32>)>,
    /// Per position: `half` cosines then `half` sines.
    table: Vec<f32>,
}

/// Positions beyond this are computed per call instead of cached.
const ROPE_CACHE_POSITIONS: usize = 1 << 15;

fn rope_row(p: &RopeParams, ff: Option<&[f32]>, pos: u32, out: &mut [f32]) {
    let half = p.n_rot / 2;
    for i in 0..half {
        let inv_freq = (p.theta as f64).powf(-2.0 * i as f64 / p.n_rot as f64);
        let f = ff.map_or(1.0, |f| f[i] as f64);
        let (s, c) = (pos as f64 * inv_freq / f).sin_cos();
        out[i] = c as f32;
        out[half + i] = s as f32;
    }
}

multiversion! {
    /// Rotates `heads` heads of `hd` at one position with its `cs` (cosines, then sines).
    fn rotate(x: &mut [f32], cs: &[f32], hd: usize, half: usize, neox: bool) {
        let (c, s) = cs.split_at(half);
        for h in x.chunks_exact_mut(hd) {
            if neox {
                let (a, b) = h.split_at_mut(half);
                for i in 0..half {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * c[i] - x1 * s[i];
                    b[i] = x0 * s[i] + x1 * c[i];
                }
            } else {
                for i in 0..half {
                    let (x0, x1) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = x0 * c[i] - x1 * s[i];
                    h[2 * i + 1] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }
}

pub(crate) fn rope(
    be: &CpuBackend,
    x: &mut [f32],
    positions: &[u32],
    n_heads: usize,
    hd: usize,
    p: RopeParams,
    ff: Option<&[f32]>,
) -> Result<()> {
    let n = positions.len();
    shapes::rope(x.len(), n, n_heads, hd, p.n_rot, ff.map(<[f32]>::len))?;
    let half = p.n_rot / 2;
    if n == 0 || half == 0 || n_heads == 0 {
        return Ok(());
    }
    let ff = ff.map(|f| &f[..half]);
    let key = (
        p.theta.to_bits(),
        p.n_rot,
        ff.map_or(Vec::new(), |f| f.iter().map(|v| v.to_bits()).collect()),
    );
    let max_pos = positions.iter().copied().max().unwrap_or(0) as usize;
    let mut cache = be.rope.lock().unwrap_or_else(|e| e.into_inner());
    if cache.key.as_ref() != Some(&key) {
        cache.key = Some(key);
        cache.table.clear();
    }
    let have = cache.table.len() / p.n_rot;
    if max_pos >= have && max_pos < ROPE_CACHE_POSITIONS {
        let want = (max_pos + 1)
            .next_power_of_two()
            .clamp(64, ROPE_CACHE_POSITIONS);
        cache.table.resize(want * p.n_rot, 0.0);
        for pos in have..want {
            rope_row(
                &p,
                ff,
                pos as u32,
                &mut cache.table[pos * p.n_rot..(pos + 1) * p.n_rot],
            );
        }
    }
    let table = &cache.table;
    let row = n_heads * hd;
    let xp = SendPtr(x.as_mut_ptr());
    let neox = p.style == RopeStyle::Neox;
    be.par_ranges(n, 1, n * row, &|r| {
        let mut cs = vec![0f32; p.n_rot];
        for t in r {
            let pos = positions[t] as usize;
            let c = if pos < table.len() / p.n_rot {
                &table[pos * p.n_rot..(pos + 1) * p.n_rot]
            } else {
                rope_row(&p, ff, pos as u32, &mut cs);
                &cs
            };
            // SAFETY: token `t`'s row lies within `x` (checked above) and belongs to this
            // share alone.
            let xt = unsafe { sub(xp, &(t * row..(t + 1) * row)) };
            rotate(be.level, xt, c, hd, half, neox);
        }
    });
    Ok(())
}

pub(crate) type RopeLock = Mutex<RopeCache>;
