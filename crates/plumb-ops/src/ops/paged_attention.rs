//! Causal attention of many sequences over one paged KV cache.
//!
//! Pools: `[n_blocks * block_size, n_kv_heads, head_dim]`; sequence `s` owns the blocks listed
//! in `s.blocks`, so its position `p` lives in slot `blocks[p / block_size] * block_size +
//! p % block_size` (block_size 16, blocks [7, 2], position 19 → slot 2·16 + 3 = 35). Its query
//! rows `q_row .. q_row + n_tokens` of `q` and `out` are `[n_heads, head_dim]` each; token `i`
//! at position `pos0 + i` attends to positions `0 ..= pos0 + i` (or the last `window` of them)
//! with GQA as in [`super::attention`].

use super::attention::attend_row;
use crate::backend::{window_start, PagedParams, PagedSeq};
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
        window,
    } = p;
    shapes::attention_paged(q.len(), k.len(), v.len(), seqs, &p, out.len())?;
    let (kv_dim, q_dim, group) = (
        n_kv_heads * head_dim,
        n_heads * head_dim,
        n_heads / n_kv_heads,
    );
    for s in seqs {
        let slot = |pos: usize| s.blocks[pos / block_size] as usize * block_size + pos % block_size;
        for i in 0..s.n_tokens {
            let last = s.pos0 + i;
            let keys = window_start(last, window)..last + 1;
            for h in 0..n_heads {
                let kvh = h / group;
                let row = (s.q_row + i) * q_dim + h * head_dim;
                let key = |pos: usize| &k[slot(pos) * kv_dim + kvh * head_dim..][..head_dim];
                let val = |pos: usize, d: usize| v[slot(pos) * kv_dim + kvh * head_dim + d];
                let o = &mut out[row..][..head_dim];
                attend_row(&q[row..][..head_dim], keys.clone(), scale, key, val, o);
            }
        }
    }
    Ok(())
}
