//! Paged KV cache: the keys and values of many sequences in one pool of fixed-size blocks.
//!
//! Per layer `k, v: [n_blocks * block_size, kv_dim]`. A sequence owns a [`BlockTable`]; its
//! position `p` lives in slot `blocks[p / block_size] * block_size + p % block_size`
//! (block_size 16, blocks [7, 2], position 19 → block 2, offset 3 → slot 35, floats
//! `35 * kv_dim ..` of every layer's pools). Blocks are reference counted so that forks share
//! their prefix; the first write into a shared block copies it first (copy-on-write).
//!
//! Prefix caching: [`PagedKv::commit_prefix`] names every full block of a sequence by a hash
//! chain of its tokens (`prefix.rs`); a named block whose last reference goes stays indexed
//! (idle) instead of free, and [`PagedKv::lookup_prefix`] hands a new sequence every idle or
//! held block that matches its prompt, block by block from the start. Idle blocks are evicted,
//! least recently used first, only when a block is needed and none is free; a block some
//! sequence holds is never evicted.
//!
//! [`Model::forward_paged`] runs the new tokens of many sequences ([`PagedItem`]s) in one
//! pass: matmuls over all rows, one `kv_write_slots` and one `attention_paged` per layer
//! (`paged/pass.rs`).

mod pass;
mod prefix;
#[cfg(test)]
mod tests;

use std::hash::{DefaultHasher, Hash, Hasher};

use plumb_ops::Backend;

use crate::error::{ModelError, Result};
use crate::forward::Model;
use prefix::PrefixIndex;

pub use pass::PagedLogits;

/// Default tokens per block.
pub const BLOCK_SIZE: usize = 16;

/// The blocks of one sequence, in position order, and how many positions hold data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    pub blocks: Vec<u32>,
    pub len: usize,
}

/// The new tokens of one sequence and its block table in a [`PagedKv`].
pub struct PagedItem<'a> {
    pub tokens: &'a [u32],
    pub table: &'a mut BlockTable,
}

#[derive(Debug, thiserror::Error)]
pub enum PagedError {
    #[error("out of KV cache blocks: {needed} more needed, {free} free")]
    OutOfBlocks { needed: usize, free: usize },
    #[error(transparent)]
    Op(#[from] plumb_ops::OpError),
}

impl From<PagedError> for ModelError {
    fn from(e: PagedError) -> Self {
        match e {
            PagedError::Op(e) => ModelError::Op(e),
            e => ModelError::Config(e.to_string()),
        }
    }
}

pub struct PagedKv<B: Backend> {
    /// Unique per pool: recorded paged steps are keyed by the pool they write.
    pub(crate) id: u64,
    /// Per layer `[n_blocks * block_size, kv_dim]`.
    pub k: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub block_size: usize,
    kv_dim: usize,
    n_layers: usize,
    /// References to each block (0 = free or idle).
    refs: Vec<u32>,
    /// Blocks with no reference and nothing worth keeping.
    free: Vec<u32>,
    /// Names of full blocks, and the idle ones in LRU order.
    index: PrefixIndex,
    /// Host vectors of the forward pass, reused.
    scratch: pass::PassScratch,
}

impl<B: Backend> PagedKv<B> {
    /// A pool of `n_blocks` blocks of `block_size` positions for `model`.
    pub fn new(model: &Model<B>, n_blocks: usize, block_size: usize) -> Result<Self> {
        let cfg = &model.config;
        if block_size == 0 || n_blocks == 0 || n_blocks > u32::MAX as usize - 1 {
            return Err(ModelError::Config(format!(
                "a paged KV cache needs ≥ 1 block of ≥ 1 position (got {n_blocks} of {block_size})"
            )));
        }
        let len = n_blocks * block_size * cfg.kv_dim();
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            k.push(model.backend.alloc(len)?);
            v.push(model.backend.alloc(len)?);
        }
        // The model's identity in every block name: its whole configuration.
        let mut identity = DefaultHasher::new();
        format!("{cfg:?}").hash(&mut identity);
        Ok(PagedKv {
            id: crate::kv_cache::next_id(),
            k,
            v,
            block_size,
            kv_dim: cfg.kv_dim(),
            n_layers: cfg.n_layers,
            refs: vec![0; n_blocks],
            // Popped from the back: block 0 is handed out first.
            free: (0..n_blocks as u32).rev().collect(),
            index: PrefixIndex::new(identity.finish(), n_blocks, block_size),
            scratch: pass::PassScratch::default(),
        })
    }

    /// Room for at least `tokens` positions (rounded up to whole blocks).
    pub fn with_capacity_tokens(
        model: &Model<B>,
        tokens: usize,
        block_size: usize,
    ) -> Result<Self> {
        Self::new(model, tokens.div_ceil(block_size.max(1)), block_size)
    }

    /// As many blocks as fit in `bytes` (keys and values of every layer, f32).
    pub fn with_memory_bytes(model: &Model<B>, bytes: usize, block_size: usize) -> Result<Self> {
        let per = Self::block_bytes(&model.config, block_size).max(1);
        Self::new(model, bytes / per, block_size)
    }

    /// Bytes of one block: keys and values of every layer, f32.
    pub fn block_bytes(cfg: &crate::ModelConfig, block_size: usize) -> usize {
        2 * cfg.n_layers * block_size * cfg.kv_dim() * std::mem::size_of::<f32>()
    }

    pub fn bytes_per_block(&self) -> usize {
        2 * self.n_layers * self.block_size * self.kv_dim * std::mem::size_of::<f32>()
    }

    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks no sequence holds: the free ones and the idle cached ones, which are evicted
    /// when a block is needed.
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.index.idle()
    }

    /// Of the [free blocks](Self::free_blocks), those that still hold an indexed prefix.
    pub fn cached_blocks(&self) -> usize {
        self.index.idle()
    }

    /// Blocks some sequence holds.
    pub fn used_blocks(&self) -> usize {
        self.n_blocks() - self.free_blocks()
    }

    pub fn tokens_free(&self) -> usize {
        self.free_blocks() * self.block_size
    }

    /// Blocks holding `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Makes room for `n_new` positions after `table.len`: allocates the missing blocks and
    /// gives the table its own copy of every shared block those positions fall in. Does not
    /// change `table.len`. On [`PagedError::OutOfBlocks`] the table keeps what it had.
    pub fn reserve(
        &mut self,
        b: &B,
        table: &mut BlockTable,
        n_new: usize,
    ) -> Result<(), PagedError> {
        let bs = self.block_size;
        let end = table.len + n_new;
        let want = end.div_ceil(bs);
        let first = table.len / bs; // first block written
        let shared = (first..want.min(table.blocks.len()))
            .filter(|&i| self.refs[table.blocks[i] as usize] > 1)
            .count();
        let needed = want.saturating_sub(table.blocks.len()) + shared;
        if needed > self.free_blocks() {
            return Err(PagedError::OutOfBlocks {
                needed,
                free: self.free_blocks(),
            });
        }
        for i in first..want.min(table.blocks.len()) {
            let old = table.blocks[i] as usize;
            if self.refs[old] <= 1 {
                continue;
            }
            let new = self.take_block();
            // Rows of the block that hold data: positions i*bs .. min(len, (i+1)*bs).
            let rows = table.len.saturating_sub(i * bs).min(bs);
            if rows > 0 {
                let n = rows * self.kv_dim;
                let mut tmp = b.alloc(n)?;
                for pool in self.k.iter_mut().chain(self.v.iter_mut()) {
                    b.copy(pool, old * bs * self.kv_dim, &mut tmp, 0, n)?;
                    b.copy(&tmp, 0, pool, new as usize * bs * self.kv_dim, n)?;
                }
            }
            // Shared, so another reference remains.
            self.refs[old] -= 1;
            table.blocks[i] = new;
        }
        while table.blocks.len() < want {
            let blk = self.take_block();
            table.blocks.push(blk);
        }
        Ok(())
    }

    /// A free block, or else the least recently used idle one, evicted from the index.
    fn take_block(&mut self) -> u32 {
        // Callers checked that enough blocks are free or idle.
        let blk = self.free.pop().or_else(|| self.index.evict()).unwrap_or(0);
        self.refs[blk as usize] = 1;
        blk
    }

    /// A table sharing every block of `table` (each gains a reference).
    pub fn fork(&mut self, table: &BlockTable) -> BlockTable {
        for &blk in &table.blocks {
            self.refs[blk as usize] += 1;
        }
        table.clone()
    }

    /// Drops the table's references. A block nobody holds becomes idle if it is indexed (its
    /// prefix can be reused), else free.
    pub fn free(&mut self, table: BlockTable) {
        for blk in table.blocks {
            let r = &mut self.refs[blk as usize];
            if *r == 0 {
                continue;
            }
            *r -= 1;
            if *r > 0 {
                continue;
            }
            if self.index.is_indexed(blk) {
                self.index.push_idle(blk);
            } else {
                self.index.forget(blk);
                self.free.push(blk);
            }
        }
    }

    /// A table holding the longest run of indexed blocks that match `tokens` from the start,
    /// whole blocks only (`len` = matched blocks × block_size; empty when none match). Each
    /// block gains a reference; idle ones leave the LRU list.
    pub fn lookup_prefix(&mut self, tokens: &[u32]) -> BlockTable {
        let mut table = BlockTable::default();
        self.extend_prefix(&mut table, tokens);
        table
    }

    /// Continues [`lookup_prefix`](Self::lookup_prefix) on `table`, which holds the first
    /// `table.len` of `tokens`: appends every further indexed block that matches (blocks
    /// other sequences have filled since). A table with a partial block, or with blocks
    /// reserved past its length, is left as it is.
    pub fn extend_prefix(&mut self, table: &mut BlockTable, tokens: &[u32]) {
        let bs = self.block_size;
        if table.len != table.blocks.len() * bs {
            return;
        }
        let mut parent = match table.blocks.last() {
            None => 0,
            Some(&blk) => match self.index.name(blk) {
                Some(name) => name,
                None => return,
            },
        };
        for chunk in tokens.get(table.len..).unwrap_or(&[]).chunks_exact(bs) {
            let Some((blk, name)) = self.index.find(parent, chunk) else {
                break;
            };
            if self.refs[blk as usize] == 0 {
                self.index.take_idle(blk);
            }
            self.refs[blk as usize] += 1;
            table.blocks.push(blk);
            parent = name;
        }
        table.len = table.blocks.len() * bs;
    }

    /// Names and indexes the table's full blocks not named yet; `tokens` are the sequence's
    /// tokens from position 0 (at least `table.len` of them, else only the blocks they
    /// cover are named). Cheap to call after every step: it starts at the first unnamed
    /// block, found from the end.
    pub fn commit_prefix(&mut self, table: &BlockTable, tokens: &[u32]) {
        let bs = self.block_size;
        let full = (table.len.min(tokens.len()) / bs).min(table.blocks.len());
        let mut first = full;
        while first > 0 && self.index.name(table.blocks[first - 1]).is_none() {
            first -= 1;
        }
        let mut parent = match first {
            0 => 0,
            i => self.index.name(table.blocks[i - 1]).unwrap_or(0),
        };
        for (i, chunk) in tokens[first * bs..full * bs].chunks_exact(bs).enumerate() {
            parent = self.index.record(table.blocks[first + i], parent, chunk);
        }
    }

    /// Pool slot of every position in `table.len .. table.len + n` (after `reserve`).
    pub(crate) fn slots(&self, table: &BlockTable, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let bs = self.block_size;
        for p in table.len..table.len + n {
            let blk = table
                .blocks
                .get(p / bs)
                .ok_or_else(|| ModelError::Config(format!("position {p} has no block reserved")))?;
            out.push(blk * bs as u32 + (p % bs) as u32);
        }
        Ok(())
    }

    #[cfg(test)]
    fn refcount(&self, blk: u32) -> u32 {
        self.refs[blk as usize]
    }
}
