//! Causal attention with grouped-query heads, over a contiguous KV cache.
//!
//! `q: [n_tokens, n_heads, head_dim]`, `k, v: [capacity, n_kv_heads, head_dim]`,
//! `out: [n_tokens, n_heads, head_dim]`. Query head `h` reads KV head `h / (n_heads / n_kv_heads)`
//! (GQA without expanding the cache): with 9 query and 3 KV heads, heads 0-2 read KV head 0.
//! Token `i` at position `pos0 + i` attends to positions `0 ..= pos0 + i`:
//! `out = Σ_j softmax_j(scale · q·k_j) v_j`.

use crate::backend::AttnParams;
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
    } = p;
    shapes::attention(q.len(), k.len(), v.len(), &p, out.len())?;
    let kv_dim = n_kv_heads * head_dim;
    let n_kv = pos0 + n_tokens;
    let group = n_heads / n_kv_heads;
    let mut scores = vec![0f64; n_kv];
    for i in 0..n_tokens {
        let last = pos0 + i; // inclusive
        for h in 0..n_heads {
            let kvh = h / group;
            let qv = &q[(i * n_heads + h) * head_dim..][..head_dim];
            let mut max = f64::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate().take(last + 1) {
                let kj = &k[j * kv_dim + kvh * head_dim..][..head_dim];
                let dot: f64 = qv.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                *s = dot * scale as f64;
                max = max.max(*s);
            }
            let mut denom = 0f64;
            for s in scores.iter_mut().take(last + 1) {
                *s = (*s - max).exp();
                denom += *s;
            }
            let o = &mut out[(i * n_heads + h) * head_dim..][..head_dim];
            for (d, od) in o.iter_mut().enumerate() {
                let mut acc = 0f64;
                for (j, s) in scores.iter().enumerate().take(last + 1) {
                    acc += s * v[j * kv_dim + kvh * head_dim + d] as f64;
                }
                *od = (acc / denom) as f32;
            }
        }
    }
    Ok(())
}
