//! Causal GQA attention with an online (streaming) softmax.
//!
//! Work items are (token, KV head) with all the query heads that read that KV head, so each
//! key and value row is loaded once for the whole group; when there are too few of those
//! to keep the threads busy (decode), items are (token, query head). Keys are processed in
//! blocks of `B`: scores, a running max and denominator per head, and the output accumulator
//! rescaled whenever the max grows. Items are dealt round-robin over the threads so that the
//! long rows of a causal prefill spread evenly. A sliding window only moves where an item's
//! keys start.

use super::matmul::SendPtr;
use super::mv::exp;
use super::simd::{dot, scale_axpy, simd_fn, Simd};
use super::CpuBackend;
use crate::backend::{window_start, AttnParams};
use crate::error::Result;
use crate::shapes;

/// Keys per softmax block.
const B: usize = 64;

/// Shapes of one work item.
#[derive(Clone, Copy)]
struct Item {
    /// Offset of the first query head's row in `q` and `out`.
    q_off: usize,
    /// Query heads (contiguous) in the item.
    heads: usize,
    /// Offset of the KV head inside a cache row.
    kv_off: usize,
    kv_dim: usize,
    hd: usize,
    /// Keys `first .. n_keys` are attended (a sliding window starts past 0).
    first: usize,
    n_keys: usize,
    scale: f32,
}

/// One block of the online softmax: the scores `s[..jn]` become `e^(s - m')` with
/// `m' = max(m, max s)`; returns `(m', e^(m - m'), Σ e^(s - m'))`.
///
/// # Safety
/// `s` is valid for `jn` f32 reads and writes; `S`'s features are present (see `simd.rs`).
#[inline(always)]
unsafe fn softmax_block<S: Simd>(s: *mut f32, jn: usize, m: f32) -> (f32, f32, f32) {
    let mut mv = S::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + S::N <= jn {
        mv = S::max(mv, S::load(s.add(i)));
        i += S::N;
    }
    let mut bm = S::hmax(mv);
    for i in i..jn {
        bm = bm.max(*s.add(i));
    }
    let new_m = m.max(bm);
    let corr = exp(m - new_m);
    let neg = S::splat(-new_m);
    let mut sv = S::zero();
    let mut i = 0;
    while i + S::N <= jn {
        let e = S::exp(S::add(S::load(s.add(i)), neg));
        S::store(s.add(i), e);
        sv = S::add(sv, e);
        i += S::N;
    }
    let mut sum = S::sum(sv);
    for i in i..jn {
        let e = exp(*s.add(i) - new_m);
        *s.add(i) = e;
        sum += e;
    }
    (new_m, corr, sum)
}

/// Attention of `it.heads` query heads over `it.n_keys` keys. `scratch` holds at least
/// `heads * (hd + B + 2)` values; `out` is the item's `heads * hd` outputs.
///
/// # Safety
/// `S`'s features are present (see `simd.rs`). Nothing else: the slices are asserted up
/// front to hold every row the item reads or writes.
#[inline(always)]
unsafe fn attend_g<S: Simd>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    it: Item,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let (nh, hd) = (it.heads, it.hd);
    let last_row = (it.n_keys - 1) * it.kv_dim + it.kv_off + hd;
    assert!(k.len() >= last_row && v.len() >= last_row && q.len() >= it.q_off + nh * hd);
    assert!(out.len() >= nh * hd && scratch.len() >= nh * (hd + B + 2));
    let (acc, rest) = scratch.split_at_mut(nh * hd);
    let (s, rest) = rest.split_at_mut(nh * B);
    let (m, rest) = rest.split_at_mut(nh);
    let l = &mut rest[..nh];
    acc.fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);
    let qp = q.as_ptr().add(it.q_off);
    let mut j0 = it.first;
    while j0 < it.n_keys {
        let jn = B.min(it.n_keys - j0);
        // Scores: each key row is read once for all the heads of the item.
        for jj in 0..jn {
            let kr = k.as_ptr().add((j0 + jj) * it.kv_dim + it.kv_off);
            for h in 0..nh {
                s[h * B + jj] = dot::<S>(qp.add(h * hd), kr, hd) * it.scale;
            }
        }
        // Online softmax: new running max, rescale what was accumulated, exponentiate.
        for h in 0..nh {
            let (new_m, corr, sum) = softmax_block::<S>(s.as_mut_ptr().add(h * B), jn, m[h]);
            l[h] = l[h] * corr + sum;
            m[h] = new_m;
            if corr != 1.0 {
                let a = acc.as_mut_ptr().add(h * hd);
                scale_axpy::<S>(a, corr, 0.0, a, hd);
            }
        }
        for jj in 0..jn {
            let vr = v.as_ptr().add((j0 + jj) * it.kv_dim + it.kv_off);
            for h in 0..nh {
                scale_axpy::<S>(acc.as_mut_ptr().add(h * hd), 1.0, s[h * B + jj], vr, hd);
            }
        }
        j0 += jn;
    }
    for h in 0..nh {
        let inv = 1.0 / l[h];
        for (o, &a) in out[h * hd..(h + 1) * hd]
            .iter_mut()
            .zip(&acc[h * hd..(h + 1) * hd])
        {
            *o = a * inv;
        }
    }
}

/// The fast path for `hd == NV * S::N`: one query head at a time with its query and output
/// accumulator in registers, scores four keys at a time (one combined horizontal sum).
///
/// # Safety
/// As [`attend_g`] (the bounds are asserted here too, and `hd == NV * S::N`).
#[inline(always)]
unsafe fn attend_regs<S: Simd, const NV: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    it: Item,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let (nh, hd) = (it.heads, it.hd);
    assert!(hd == NV * S::N);
    let last_row = (it.n_keys - 1) * it.kv_dim + it.kv_off + hd;
    assert!(k.len() >= last_row && v.len() >= last_row && q.len() >= it.q_off + nh * hd);
    assert!(out.len() >= nh * hd && scratch.len() >= B);
    let s = scratch.as_mut_ptr();
    let kp = k.as_ptr().add(it.kv_off);
    let vp = v.as_ptr().add(it.kv_off);
    for h in 0..nh {
        let qh = q.as_ptr().add(it.q_off + h * hd);
        let qv: [S::V; NV] =
            std::array::from_fn(|i| S::mul(S::load(qh.add(i * S::N)), S::splat(it.scale)));
        // Two accumulator sets (even and odd keys): two FMA chains per output vector.
        let (mut acc0, mut acc1) = ([S::zero(); NV], [S::zero(); NV]);
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        let mut j0 = it.first;
        while j0 < it.n_keys {
            let jn = B.min(it.n_keys - j0);
            let mut jj = 0;
            while jj + 4 <= jn {
                let kr: [*const f32; 4] =
                    std::array::from_fn(|i| kp.add((j0 + jj + i) * it.kv_dim));
                let mut a = [S::zero(); 4];
                for (i, qi) in qv.iter().enumerate() {
                    for (r, ar) in a.iter_mut().enumerate() {
                        *ar = S::fmadd(*qi, S::load(kr[r].add(i * S::N)), *ar);
                    }
                }
                let r = S::sum4(a[0], a[1], a[2], a[3]);
                std::ptr::copy_nonoverlapping(r.as_ptr(), s.add(jj), 4);
                jj += 4;
            }
            while jj < jn {
                let kr = kp.add((j0 + jj) * it.kv_dim);
                let mut a = S::zero();
                for (i, qi) in qv.iter().enumerate() {
                    a = S::fmadd(*qi, S::load(kr.add(i * S::N)), a);
                }
                *s.add(jj) = S::sum(a);
                jj += 1;
            }
            let (new_m, corr, sum) = softmax_block::<S>(s, jn, m);
            l = l * corr + sum;
            m = new_m;
            let c = S::splat(corr);
            for a in acc0.iter_mut().chain(acc1.iter_mut()) {
                *a = S::mul(*a, c);
            }
            let mut jj = 0;
            while jj < jn {
                let v0 = vp.add((j0 + jj) * it.kv_dim);
                let p0 = S::splat(*s.add(jj));
                for (i, a) in acc0.iter_mut().enumerate() {
                    *a = S::fmadd(p0, S::load(v0.add(i * S::N)), *a);
                }
                if jj + 1 < jn {
                    let v1 = vp.add((j0 + jj + 1) * it.kv_dim);
                    let p1 = S::splat(*s.add(jj + 1));
                    for (i, a) in acc1.iter_mut().enumerate() {
                        *a = S::fmadd(p1, S::load(v1.add(i * S::N)), *a);
                    }
                }
                jj += 2;
            }
            j0 += jn;
        }
        let inv = S::splat(1.0 / l);
        for i in 0..NV {
            let mut tmp = [0f32; 16];
            // `S::N` ≤ 16 values.
            S::store(tmp.as_mut_ptr(), S::mul(S::add(acc0[i], acc1[i]), inv));
            out[h * hd + i * S::N..h * hd + (i + 1) * S::N].copy_from_slice(&tmp[..S::N]);
        }
    }
}

/// Picks the register-resident path for the common head sizes.
///
/// # Safety
/// `S`'s features are present; both paths check their own bounds.
#[inline(always)]
unsafe fn attend_any<S: Simd>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    it: Item,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    match (S::N, it.hd / S::N.max(1), it.hd % S::N.max(1)) {
        (8 | 16, 4, 0) => attend_regs::<S, 4>(q, k, v, it, scratch, out),
        (8 | 16, 8, 0) => attend_regs::<S, 8>(q, k, v, it, scratch, out),
        _ => attend_g::<S>(q, k, v, it, scratch, out),
    }
}

simd_fn!(fn attend = attend_any(q: &[f32], k: &[f32], v: &[f32], it: Item, scratch: &mut [f32], out: &mut [f32]));

pub(crate) fn attention(
    be: &CpuBackend,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: AttnParams,
    out: &mut [f32],
) -> Result<()> {
    let AttnParams {
        n_tokens,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale,
        window,
    } = p;
    shapes::attention(q.len(), k.len(), v.len(), &p, out.len())?;
    let kv_dim = n_kv_heads * hd;
    if n_tokens == 0 || n_heads == 0 || hd == 0 {
        return Ok(());
    }
    let group = n_heads / n_kv_heads;
    let threads = be.pool.threads();
    // Items: per (token, KV head) with its whole group, or per (token, head) if that gives
    // too few items to share.
    let per_group = n_tokens * n_kv_heads >= 4 * threads || group == 1;
    let heads_per_item = if per_group { group } else { 1 };
    let n_items = n_tokens * n_heads / heads_per_item;
    let item = |idx: usize| {
        let (t, hi) = (
            idx / (n_heads / heads_per_item),
            idx % (n_heads / heads_per_item),
        );
        let h0 = hi * heads_per_item;
        Item {
            q_off: (t * n_heads + h0) * hd,
            heads: heads_per_item,
            kv_off: (h0 / group) * hd,
            kv_dim,
            hd,
            first: window_start(pos0 + t, window),
            n_keys: pos0 + t + 1,
            scale,
        }
    };
    let op = SendPtr(out.as_mut_ptr());
    // Chunks are items, longest first (a causal prefill's last tokens see the most keys).
    let run_item = |c: usize| {
        let it = item(n_items - 1 - c);
        let mut scratch = vec![0f32; heads_per_item * (hd + B + 2)];
        // SAFETY: the item's outputs lie within `out` (checked above) and no other item
        // writes them.
        let o = unsafe { std::slice::from_raw_parts_mut(op.get().add(it.q_off), it.heads * hd) };
        attend(be.level, q, k, v, it, &mut scratch, o);
    };
    // Small calls (a short decode) stay on this thread.
    let flops = n_tokens * n_heads * hd * (pos0 + n_tokens);
    if threads == 1 || flops < 1 << 14 {
        (0..n_items).for_each(run_item);
    } else {
        be.pool.run(n_items, &run_item);
    }
    Ok(())
}
