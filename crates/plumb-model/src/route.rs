//! Where a forward's keys and values go and how its attention reads them. The layer code
//! asks the route to store each layer's keys and values and to run that layer's attention;
//! after a successful pass, [`KvRoute::advance`] moves every sequence past its new rows.

use plumb_ops::{AttnParams, Backend, PagedParams, PagedSeq};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;

pub(crate) enum KvRoute<'s, B: Backend> {
    /// One sequence: the `n` rows of the batch are positions `cache.len .. cache.len + n` of
    /// its contiguous cache.
    Contiguous { cache: &'s mut KvCache<B>, n: usize },
    /// One paged pool per layer (`[n_blocks * block_size, kv_dim]`): row `r` of the batch is
    /// written to slot `slots[r]`, `seqs` say which rows and blocks are whose, and `lens[i]`
    /// is the length of sequence `i`'s block table.
    Paged {
        k: &'s mut [B::Buf],
        v: &'s mut [B::Buf],
        block_size: usize,
        slots: Vec<u32>,
        seqs: Vec<PagedSeq<'s>>,
        lens: Vec<&'s mut usize>,
    },
}

impl<B: Backend> KvRoute<'_, B> {
    /// Stores layer `li`'s keys and values: the rows (`[n, kv_dim]`) of `k` and `v`.
    pub(crate) fn write_kv(
        &mut self,
        b: &B,
        cfg: &ModelConfig,
        li: usize,
        k: &B::Buf,
        v: &B::Buf,
    ) -> Result<()> {
        let kvd = cfg.kv_dim();
        match self {
            KvRoute::Contiguous { cache, n } => {
                b.kv_write(k, &mut cache.k[li], cache.len, *n, kvd)?;
                b.kv_write(v, &mut cache.v[li], cache.len, *n, kvd)?;
            }
            KvRoute::Paged {
                k: pool_k,
                v: pool_v,
                slots,
                ..
            } => {
                b.kv_write_slots(k, &mut pool_k[li], slots, kvd)?;
                b.kv_write_slots(v, &mut pool_v[li], slots, kvd)?;
            }
        }
        Ok(())
    }

    /// Layer `li`'s causal attention of the query rows `q` (`[n, n_heads, head_dim]`) over
    /// the keys and values the route holds, the rows just written included (only the last
    /// `window` positions on a sliding-window layer), into `out`.
    pub(crate) fn attend(
        &self,
        b: &B,
        cfg: &ModelConfig,
        li: usize,
        q: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        let (scale, window) = (cfg.attn_scale, cfg.layer_window(li));
        match self {
            KvRoute::Contiguous { cache, n } => {
                let p = AttnParams {
                    n_tokens: *n,
                    pos0: cache.len,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: cfg.head_dim,
                    scale,
                    window,
                };
                b.attention(q, &cache.k[li], &cache.v[li], p, out)?;
            }
            KvRoute::Paged {
                k,
                v,
                block_size,
                seqs,
                ..
            } => {
                let p = PagedParams {
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: cfg.head_dim,
                    scale,
                    block_size: *block_size,
                    window,
                };
                b.attention_paged(q, &k[li], &v[li], seqs, p, out)?;
            }
        }
        Ok(())
    }

    /// Counts the rows just run as held: each sequence's length grows by its new tokens.
    pub(crate) fn advance(self) {
        match self {
            KvRoute::Contiguous { cache, n } => cache.len += n,
            KvRoute::Paged { seqs, lens, .. } => {
                for (len, seq) in lens.into_iter().zip(&seqs) {
                    *len += seq.n_tokens;
                }
            }
        }
    }
}
