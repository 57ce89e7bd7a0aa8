//! Contiguous KV cache: per layer `k, v: [capacity, n_kv_heads, head_dim]`.
//! Position `p` of layer `l` lives at offset `p * kv_dim` of `k[l]` and `v[l]`.

use plumb_ops::Backend;

use crate::config::ModelConfig;
use crate::error::Result;

/// A number no other cache, pool or workspace of this process has: the keys of recorded
/// steps are made of them.
pub(crate) fn next_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub struct KvCache<B: Backend> {
    /// Unique per cache: recorded decode steps are keyed by the cache they write.
    pub id: u64,
    pub k: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    /// Positions written so far.
    pub len: usize,
    pub capacity: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, cfg: &ModelConfig, capacity: usize) -> Result<Self> {
        let n = capacity * cfg.kv_dim();
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            k.push(backend.alloc(n)?);
            v.push(backend.alloc(n)?);
        }
        Ok(KvCache {
            id: next_id(),
            k,
            v,
            len: 0,
            capacity,
        })
    }

    /// Forgets every position (the memory is reused).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on, keeping a shared prefix.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held, for memory accounting.
    pub fn bytes(cfg: &ModelConfig, capacity: usize) -> usize {
        2 * cfg.n_layers * capacity * cfg.kv_dim() * std::mem::size_of::<f32>()
    }
}
