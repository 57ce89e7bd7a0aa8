//! Causal attention with grouped-query heads, over a contiguous KV cache.
//!
//! `q: [n_tokens, n_heads, head_dim]`, `k, v: [capacity, n_kv_heads, head_dim]`,
//! `out: [n_tokens, n_heads, head_dim]`. Query head `h` reads KV head `h / (n_heads / n_kv_heads)`
//! (GQA without expanding the cache): with 9 query and 3 KV heads, heads 0-2 read KV head 0.
//! Token `i` at position `pos0 + i` attends to positions `0 ..= pos0 + i`, or with a window of
//! `w` to `max(0, pos0 + i + 1 - w) ..= pos0 + i`: `out = Σ_j softmax_j(scale · q·k_j) v_j`.
//! [`full`] is the bidirectional form: every row attends to every key.

use crate::backend::{window_start, AttnParams, FullAttnParams};
use crate::error::Result;
use crate::shapes;

pub fn reference(q: &[f32], k: &[f32], v: &[f32], p: AttnParams, out: &mut [f32]) -> Result<()> {
    let AttnParams {
        n_tokens,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
        scale,
        window,
    } = p;
    shapes::attention(q.len(), k.len(), v.len(), &p, out.len())?;
    let kv_dim = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    for i in 0..n_tokens {
        let last = pos0 + i; // inclusive
        let keys = window_start(last, window)..last + 1;
        for h in 0..n_heads {
            let kvh = h / group;
            let row = (i * n_heads + h) * head_dim;
            let o = &mut out[row..][..head_dim];
            let key = |j: usize| &k[j * kv_dim + kvh * head_dim..][..head_dim];
            let val = |j: usize, d: usize| v[j * kv_dim + kvh * head_dim + d];
            attend_row(&q[row..][..head_dim], keys.clone(), scale, key, val, o);
        }
    }
    Ok(())
}

/// Bidirectional attention: row `i` of `q` attends to keys `0 .. n_tokens`.
pub fn full(q: &[f32], k: &[f32], v: &[f32], p: FullAttnParams, out: &mut [f32]) -> Result<()> {
    shapes::attention_full(q.len(), k.len(), v.len(), &p, out.len())?;
    let (hd, kv_dim) = (p.head_dim, p.n_kv_heads * p.head_dim);
    let group = p.n_heads / p.n_kv_heads;
    for i in 0..p.n_tokens {
        for h in 0..p.n_heads {
            let kvh = h / group;
            let row = (i * p.n_heads + h) * hd;
            let key = |j: usize| &k[j * kv_dim + kvh * hd..][..hd];
            let val = |j: usize, d: usize| v[j * kv_dim + kvh * hd + d];
            attend_row(
                &q[row..][..hd],
                0..p.n_tokens,
                p.scale,
                key,
                val,
                &mut out[row..][..hd],
            );
        }
    }
    Ok(())
}

/// One query row over the positions `keys`: `out = Σ_j softmax_j(scale · q·k_j) v_j`, the
/// scores and sums in f64.
pub(crate) fn attend_row<'a>(
    q: &[f32],
    keys: std::ops::Range<usize>,
    scale: f32,
    key: impl Fn(usize) -> &'a [f32],
    val: impl Fn(usize, usize) -> f32,
    out: &mut [f32],
) {
    let scores: Vec<f64> = keys
        .clone()
        .map(|j| {
            let dot: f64 = q
                .iter()
                .zip(key(j))
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            dot * scale as f64
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let denom: f64 = weights.iter().sum();
    for (d, od) in out.iter_mut().enumerate() {
        let acc: f64 = keys
            .clone()
            .zip(&weights)
            .map(|(j, w)| w * val(j, d) as f64)
            .sum();
        *od = (acc / denom) as f32;
    }
}
