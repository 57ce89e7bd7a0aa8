//! Paged KV cache: the keys and values of many sequences in one pool of fixed-size blocks.
//!
//! Per layer `k, v: [n_blocks * block_size, kv_dim]`. A sequence owns a [`BlockTable`]; its
//! position `p` lives in slot `blocks[p / block_size] * block_size + p % block_size`
//! (block_size 16, blocks [7, 2], position 19 → block 2, offset 3 → slot 35, floats
//! `35 * kv_dim ..` of every layer's pools). Blocks are reference counted so that forks share
//! their prefix; the first write into a shared block copies it first (copy-on-write).
//!
//! [`Model::forward_paged`] runs the new tokens of many sequences ([`PagedItem`]s) in one
//! pass: matmuls over all rows, one `kv_write_slots` and one `attention_paged` per layer.

use plumb_ops::{Backend, PagedSeq};

use crate::error::{ModelError, Result};
use crate::forward::{Logits, Model, Workspace};
use crate::route::KvRoute;

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
    /// Per layer `[n_blocks * block_size, kv_dim]`.
    pub k: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub block_size: usize,
    kv_dim: usize,
    n_layers: usize,
    /// References to each block (0 = free).
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl<B: Backend> PagedKv<B> {
    /// A pool of `n_blocks` blocks of `block_size` positions for `model`.
    pub fn new(model: &Model<B>, n_blocks: usize, block_size: usize) -> Result<Self> {
        let cfg = &model.config;
        if block_size == 0 || n_blocks == 0 || n_blocks > u32::MAX as usize {
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
        Ok(PagedKv {
            k,
            v,
            block_size,
            kv_dim: cfg.kv_dim(),
            n_layers: cfg.n_layers,
            refs: vec![0; n_blocks],
            // Popped from the back: block 0 is handed out first.
            free: (0..n_blocks as u32).rev().collect(),
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

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn used_blocks(&self) -> usize {
        self.n_blocks() - self.free.len()
    }

    pub fn tokens_free(&self) -> usize {
        self.free.len() * self.block_size
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
        let shared: Vec<usize> = (first..want.min(table.blocks.len()))
            .filter(|&i| self.refs[table.blocks[i] as usize] > 1)
            .collect();
        let needed = want.saturating_sub(table.blocks.len()) + shared.len();
        if needed > self.free.len() {
            return Err(PagedError::OutOfBlocks {
                needed,
                free: self.free.len(),
            });
        }
        for i in shared {
            let old = table.blocks[i] as usize;
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
            self.refs[old] -= 1;
            table.blocks[i] = new;
        }
        while table.blocks.len() < want {
            let blk = self.take_block();
            table.blocks.push(blk);
        }
        Ok(())
    }

    fn take_block(&mut self) -> u32 {
        // Callers checked that enough blocks are free.
        let blk = self.free.pop().unwrap_or(0);
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

    /// Drops the table's references; blocks nobody holds become free.
    pub fn free(&mut self, table: BlockTable) {
        for blk in table.blocks {
            let r = &mut self.refs[blk as usize];
            if *r > 0 {
                *r -= 1;
                if *r == 0 {
                    self.free.push(blk);
                }
            }
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

impl<B: Backend> Model<B> {
    /// Runs every item's tokens after the `table.len` positions its table holds in `kv`, and
    /// returns, per item, the logits of its last token (`[vocab]` each). Reserves the blocks
    /// it needs (copying shared ones first); on an error no table's `len` moves. Rows are the
    /// items' tokens in order: items of 3 and 1 tokens → rows 0..3 and 3, logits of rows 2, 3.
    /// The total number of tokens must not exceed `max_batch`.
    pub fn forward_paged(
        &self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = self.config.vocab_size;
        self.paged_pass(kv, items, |b, logits, rows| {
            let mut all = vec![0f32; rows * vocab];
            b.download(logits, &mut all)?;
            Ok(all.chunks(vocab).map(|c| c.to_vec()).collect())
        })
    }

    /// [`Model::forward_paged`], but returns each item's greedy next token: the argmax of its
    /// logits, taken where the logits are (on the GPU only the ids come back).
    pub fn forward_paged_argmax(
        &self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
    ) -> Result<Vec<u32>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = self.config.vocab_size;
        self.paged_pass(kv, items, |b, logits, rows| {
            Ok(b.argmax_rows(logits, rows, vocab)?)
        })
    }

    /// The pass of [`Model::forward_paged`]; `finish` reads the logits (`rows` rows of
    /// `vocab`) before the tables move on.
    fn paged_pass<R>(
        &self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
        finish: impl FnOnce(&B, &B::Buf, usize) -> Result<R>,
    ) -> Result<R> {
        let n: usize = items.iter().map(|it| it.tokens.len()).sum();
        if items.is_empty() {
            return Err(ModelError::Config("a paged batch with no items".into()));
        }
        if n > self.max_batch.max(items.len()) {
            return Err(ModelError::Config(format!(
                "a batch of {n} tokens exceeds max_batch {}",
                self.max_batch
            )));
        }
        for it in items.iter() {
            self.validate_tokens(it.tokens, None)?;
        }
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        let mut last_rows = Vec::with_capacity(items.len());
        for it in items.iter_mut() {
            kv.reserve(&self.backend, it.table, it.tokens.len())?;
            let len = it.table.len;
            kv.slots(it.table, it.tokens.len(), &mut slots)?;
            ids.extend_from_slice(it.tokens);
            positions.extend((len..len + it.tokens.len()).map(|p| p as u32));
            last_rows.push(ids.len() - 1);
        }
        let (mut seqs, mut lens) = (Vec::with_capacity(items.len()), Vec::new());
        let mut q_row = 0;
        for it in items.iter_mut() {
            let BlockTable { blocks, len } = &mut *it.table;
            seqs.push(PagedSeq {
                q_row,
                n_tokens: it.tokens.len(),
                pos0: *len,
                blocks,
            });
            lens.push(len);
            q_row += it.tokens.len();
        }
        let mut route = KvRoute::Paged {
            k: &mut kv.k,
            v: &mut kv.v,
            block_size: kv.block_size,
            slots,
            seqs,
            lens,
        };
        let mut guard = self.paged_ws.lock().unwrap_or_else(|e| e.into_inner());
        let ws = self.paged_workspace(&mut guard, n)?;
        // Not a step: the sequences have different positions, so the ops take their arguments.
        let rows =
            self.forward_layers(&ids, &positions, &mut route, &last_rows, ws, Logits::Last)?;
        let out = finish(&self.backend, &ws.logits, rows)?;
        route.advance();
        Ok(out)
    }

    /// The kept paged workspace, grown to at least `n` rows.
    fn paged_workspace<'g>(
        &self,
        guard: &'g mut Option<Workspace<B>>,
        n: usize,
    ) -> Result<&'g mut Workspace<B>> {
        if guard.as_ref().is_none_or(|ws| ws.cap < n) {
            // Grow in powers of two so that a slowly growing batch reallocates rarely.
            let cap = n.next_power_of_two().min(self.max_batch.max(n));
            *guard = None;
            *guard = Some(Workspace::new(&self.backend, &self.config, cap, cap)?);
        }
        guard
            .as_mut()
            .ok_or_else(|| ModelError::Config("paged workspace".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{write_synthetic, SynthShape};
    use plumb_ops::ReferenceBackend;

    fn model(name: &str) -> Model<ReferenceBackend> {
        let shape = SynthShape {
            name: "tiny",
            arch: "llama",
            n_layers: 1,
            d_model: 32,
            d_ff: 64,
            n_heads: 2,
            n_kv_heads: 1,
            vocab: 64,
            ctx: 64,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tied: true,
            qkv_bias: false,
        };
        let dir = std::env::temp_dir().join(format!("plumb-paged-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.gguf"));
        write_synthetic(
            &shape,
            plumb_core::GgmlType::Q8_0,
            3,
            &path,
            std::sync::Arc::new(|_, _| {}),
        )
        .unwrap();
        let file = plumb_gguf::GgufFile::open(&path).unwrap();
        Model::load(&file, ReferenceBackend { threads: false }).unwrap()
    }

    #[test]
    fn allocation_fork_cow_and_free_balance() {
        let m = model("a");
        let b = &m.backend;
        let mut kv = PagedKv::with_capacity_tokens(&m, 64, 4).unwrap(); // 16 blocks of 4
        assert_eq!(
            (kv.n_blocks(), kv.free_blocks(), kv.tokens_free()),
            (16, 16, 64)
        );
        assert_eq!(kv.bytes_per_block(), 2 * 4 * 16 * 4);
        let mut a = BlockTable::default();
        kv.reserve(b, &mut a, 6).unwrap(); // positions 0..6 → 2 blocks
        a.len = 6;
        assert_eq!((a.blocks.len(), kv.used_blocks()), (2, 2));
        kv.reserve(b, &mut a, 2).unwrap(); // 6..8 fit in block 1
        assert_eq!(kv.used_blocks(), 2);
        let mut f = kv.fork(&a);
        assert_eq!(kv.used_blocks(), 2);
        assert!(a.blocks.iter().all(|&x| kv.refcount(x) == 2));
        // The fork writes position 6: the shared block 1 is copied, block 0 stays shared.
        kv.reserve(b, &mut f, 1).unwrap();
        assert_eq!(kv.used_blocks(), 3);
        assert_eq!(f.blocks[0], a.blocks[0]);
        assert_ne!(f.blocks[1], a.blocks[1]);
        assert_eq!(kv.refcount(a.blocks[1]), 1);
        // The original writes too: its block is no longer shared, no copy.
        kv.reserve(b, &mut a, 1).unwrap();
        assert_eq!(kv.used_blocks(), 3);
        // A fork at a block boundary needs no copy for the next position.
        a.len = 8;
        let g = kv.fork(&a);
        let mut g2 = g.clone();
        kv.reserve(b, &mut g2, 1).unwrap();
        assert_eq!(kv.used_blocks(), 4);
        kv.free(a);
        kv.free(f);
        kv.free(g2);
        assert_eq!(kv.free_blocks(), 16);
    }

    #[test]
    fn out_of_blocks_leaves_the_table_alone() {
        let m = model("b");
        let mut kv = PagedKv::with_capacity_tokens(&m, 8, 4).unwrap();
        let mut t = BlockTable::default();
        kv.reserve(&m.backend, &mut t, 5).unwrap();
        t.len = 5;
        let before = t.clone();
        match kv.reserve(&m.backend, &mut t, 12) {
            Err(PagedError::OutOfBlocks { needed: 3, free: 0 }) => {}
            other => panic!("expected OutOfBlocks, got {other:?}"),
        }
        assert_eq!(t, before);
        kv.free(t);
        assert_eq!(kv.free_blocks(), 2);
        assert!(PagedKv::with_capacity_tokens(&m, 0, 4).is_err());
    }
}
