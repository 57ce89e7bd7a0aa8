//! Causal attention of many sequences over one paged KV cache.
//!
//! Pools: `[n_blocks * block_size, n_kv_heads, head_dim]`; sequence `s` owns the blocks listed
//! in `s.blocks`, so its position `p` lives in slot `blocks[p / block_size] * block_size +
//! p % block_size` (block_size 16, blocks [7, 2], position 19 → slot 2·16 + 3 = 35). Its query
//! rows `q_row .. q_row + n_tokens` of `q` and `out` are `[n_heads, head_dim]` each; token `i`
//! at position `pos0 + i` attends to positions `0 ..= pos0 + i` with GQA as in
//! [`super::attention`].

use crate::backend::{PagedParams, PagedSeq};
use crate::error::Result;
use crate::shapes;

pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[PagedSeq<'_>],
    p: PagedParams,
    out: &mut [f32],
) -> Result<()> {
    let PagedParams {
        n_heads,
        n_kv_heads,
        head_dim,
        scale,
        block_size,
    } = p;
    shapes::attention_paged(q.len(), k.len(), v.len(), seqs, &p, out.len())?;
    let (kv_dim, q_dim, group) = (
        n_kv_heads * head_dim,
        n_heads * head_dim,
        n_heads / n_kv_heads,
    );
    for s in seqs {
        let n_kv = s.pos0 + s.n_tokens;
        let slot = |pos: usize| s.blocks[pos / block_size] as usize * block_size + pos % block_size;
        let mut scores = vec![0f64; n_kv];
        for i in 0..s.n_tokens {
            let last = s.pos0 + i;
            for h in 0..n_heads {
                let kvh = h / group;
                let qv = &q[(s.q_row + i) * q_dim + h * head_dim..][..head_dim];
                let mut max = f64::NEG_INFINITY;
                for (pos, sc) in scores.iter_mut().enumerate().take(last + 1) {
                    let kp = &k[slot(pos) * kv_dim + kvh * head_dim..][..head_dim];
                    let dot: f64 = qv.iter().zip(kp).map(|(&a, &b)| a as f64 * b as f64).sum();
                    *sc = dot * scale as f64;
                    max = max.max(*sc);
                }
                let mut denom = 0f64;
                for sc in scores.iter_mut().take(last + 1) {
                    *sc = (*sc - max).exp();
                    denom += *sc;
                }
                let o = &mut out[(s.q_row + i) * q_dim + h * head_dim..][..head_dim];
                for (d, od) in o.iter_mut().enumerate() {
                    let mut acc = 0f64;
                    for (pos, sc) in scores.iter().enumerate().take(last + 1) {
                        acc += sc * v[slot(pos) * kv_dim + kvh * head_dim + d] as f64;
                    }
                    *od = (acc / denom) as f32;
                }
            }
        }
    }
    Ok(())
}
