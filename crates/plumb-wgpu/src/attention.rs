//! Launcher of shaders/attention.wgsl: contiguous (prefill and decode alike) and paged, each
//! with or without a sliding window.

use plumb_ops::{shapes, AttnParams, OpError, PagedParams, PagedSeq, Result};

use crate::buffer::WgpuBuf;
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

/// The largest head the shader holds (64 invocations × 4 dimensions).
const MAX_HEAD_DIM: usize = 256;

fn head_dim_fits(op: &'static str, head_dim: usize) -> Result<()> {
    if head_dim > MAX_HEAD_DIM {
        return Err(OpError::Unsupported {
            op,
            what: format!("head_dim {head_dim} (at most {MAX_HEAD_DIM})"),
        });
    }
    Ok(())
}

/// The shader's `window`: keys per query, 0 for all of them. A window past u32::MAX keys
/// cuts nothing the shader can index (positions are u32), so it is no window.
fn window_word(window: Option<usize>) -> u32 {
    window.map_or(0, |w| u32::try_from(w).unwrap_or(0))
}

/// The paged launch's data: (q row, last position, table start) per query row, then the
/// block tables; table starts count from the start of the data.
fn paged_data(seqs: &[PagedSeq<'_>], block_size: usize) -> Vec<u32> {
    let items: usize = seqs.iter().map(|s| s.n_tokens).sum();
    let mut rows = Vec::with_capacity(3 * items);
    let mut tables = Vec::new();
    for s in seqs {
        let start = (3 * items + tables.len()) as u32;
        for i in 0..s.n_tokens {
            rows.extend([(s.q_row + i) as u32, (s.pos0 + i) as u32, start]);
        }
        // As many blocks as the positions need (shapes::paged_tables checked they are there).
        let used = (s.pos0 + s.n_tokens).div_ceil(block_size);
        tables.extend_from_slice(&s.blocks[..used]);
    }
    rows.extend(tables);
    rows
}

impl WgpuBackend {
    pub(crate) fn attention_impl(
        &self,
        q: &WgpuBuf,
        k: &WgpuBuf,
        v: &WgpuBuf,
        p: AttnParams,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        shapes::attention(q.len, k.len, v.len, &p, out.len)?;
        head_dim_fits("attention", p.head_dim)?;
        let params = [
            p.n_tokens as u32,
            p.n_heads as u32,
            (p.n_heads / p.n_kv_heads) as u32,
            p.head_dim as u32,
            (p.n_kv_heads * p.head_dim) as u32,
            p.scale.to_bits(),
            p.pos0 as u32,
            1,
            window_word(p.window),
        ];
        let kern = Kernel::new(shaders::ATTENTION, "attention");
        let binds = [Bind::r(q), Bind::r(k), Bind::r(v), Bind::w(out)];
        let groups = p.n_tokens * p.n_heads;
        self.op(|e, ctx| e.launch(ctx, &kern, &params, &[], &binds, groups))
    }

    pub(crate) fn attention_paged_impl(
        &self,
        q: &WgpuBuf,
        k_pool: &WgpuBuf,
        v_pool: &WgpuBuf,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        shapes::attention_paged(q.len, k_pool.len, v_pool.len, seqs, &p, out.len)?;
        head_dim_fits("attention_paged", p.head_dim)?;
        let items: usize = seqs.iter().map(|s| s.n_tokens).sum();
        let params = [
            items as u32,
            p.n_heads as u32,
            (p.n_heads / p.n_kv_heads) as u32,
            p.head_dim as u32,
            (p.n_kv_heads * p.head_dim) as u32,
            p.scale.to_bits(),
            0,
            p.block_size as u32,
            window_word(p.window),
        ];
        let data = paged_data(seqs, p.block_size);
        let kern = Kernel::new(shaders::ATTENTION, "attention_paged");
        let binds = [Bind::r(q), Bind::r(k_pool), Bind::r(v_pool), Bind::w(out)];
        let groups = items * p.n_heads;
        self.op(|e, ctx| e.launch(ctx, &kern, &params, &data, &binds, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paged_data_lists_rows_then_tables() {
        let (a, b) = ([7u32, 2, 9], [4u32]);
        let seqs = [
            PagedSeq {
                q_row: 0,
                n_tokens: 2,
                pos0: 17,
                blocks: &a,
            },
            PagedSeq {
                q_row: 2,
                n_tokens: 1,
                pos0: 0,
                blocks: &b,
            },
        ];
        // Three rows (9 words), then seq 0's two blocks (positions 0..19 need 2 of 16), then
        // seq 1's one.
        assert_eq!(
            paged_data(&seqs, 16),
            [0, 17, 9, 1, 18, 9, 2, 0, 11, 7, 2, 4]
        );
    }
}
