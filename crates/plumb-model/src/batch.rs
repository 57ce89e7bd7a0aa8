//! Batched forward: one pass over the new tokens of many sequences, each with its own cache
//! (continuous batching), or each with its block table in one [`PagedKv`]. The weights are
//! read once for the whole batch.

use std::sync::Mutex;

use plumb_ops::{Backend, PagedSeq};

use crate::error::{ModelError, Result};
use crate::forward::{KvRoute, Logits, Model, Segment, Workspace};
use crate::kv_cache::KvCache;
use crate::paged::{BlockTable, PagedKv};

/// The new tokens of one sequence and the cache they extend.
pub struct BatchItem<'a, B: Backend> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache<B>,
}

/// The new tokens of one sequence and its block table in a [`PagedKv`].
pub struct PagedItem<'a> {
    pub tokens: &'a [u32],
    pub table: &'a mut BlockTable,
}

/// A workspace kept between batches, grown when a larger batch comes.
pub(crate) type BatchWorkspace<B> = Mutex<Option<Workspace<B>>>;

impl<B: Backend> Model<B> {
    /// Runs every item's tokens after its cache's contents and returns, per item, the logits
    /// of its last token (`[vocab]` each). Items may mix prompt chunks and single decode
    /// tokens. The total number of tokens must not exceed `max_batch`.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_, B>]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let n: usize = items.iter().map(|it| it.tokens.len()).sum();
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if n > self.max_batch.max(items.len()) {
            return Err(ModelError::Config(format!(
                "a batch of {n} tokens exceeds max_batch {}",
                self.max_batch
            )));
        }
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for it in items.iter() {
            if it.tokens.is_empty() {
                return Err(ModelError::Config("a batch item has no tokens".into()));
            }
            let needed = it.cache.len + it.tokens.len();
            if needed > it.cache.capacity {
                return Err(ModelError::ContextFull {
                    needed,
                    capacity: it.cache.capacity,
                });
            }
            if let Some(&id) = it.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(ModelError::BadToken {
                    id,
                    vocab: cfg.vocab_size,
                });
            }
            ids.extend_from_slice(it.tokens);
            positions.extend((it.cache.len..needed).map(|p| p as u32));
        }
        let mut guard = self.batch_ws.lock().unwrap_or_else(|e| e.into_inner());
        let ws = self.batch_workspace(&mut guard, n)?;
        let mut off = 0;
        let mut segs: Vec<Segment<'_, B>> = items
            .iter_mut()
            .map(|it| {
                let s = Segment {
                    off,
                    len: it.tokens.len(),
                    cache: &mut *it.cache,
                };
                off += s.len;
                s
            })
            .collect();
        // Not a step: the segments have different positions, so the ops take their arguments.
        let rows = self.forward_segments(&ids, &positions, &mut segs, ws, Logits::Last)?;
        let vocab = cfg.vocab_size;
        let mut all = vec![0f32; rows * vocab];
        self.backend.download(&ws.logits, &mut all)?;
        Ok(all.chunks(vocab).map(|c| c.to_vec()).collect())
    }

    /// The kept batch workspace, grown to at least `n` rows.
    fn batch_workspace<'g>(
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
            .ok_or_else(|| ModelError::Config("batch workspace".into()))
    }

    /// Runs every item's tokens after the `table.len` positions its table holds in `kv`, and
    /// returns, per item, the logits of its last token (`[vocab]` each). Reserves the blocks
    /// it needs (copying shared ones first); on an error no table's `len` moves. Rows are the
    /// items' tokens in order: items of 3 and 1 tokens → rows 0..3 and 3, logits of rows 2, 3.
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
        let cfg = &self.config;
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
            if it.tokens.is_empty() {
                return Err(ModelError::Config("a batch item has no tokens".into()));
            }
            if let Some(&id) = it.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(ModelError::BadToken {
                    id,
                    vocab: cfg.vocab_size,
                });
            }
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
        let mut q_row = 0;
        let seqs: Vec<PagedSeq<'_>> = items
            .iter()
            .map(|it| {
                let s = PagedSeq {
                    q_row,
                    n_tokens: it.tokens.len(),
                    pos0: it.table.len,
                    blocks: &it.table.blocks,
                };
                q_row += it.tokens.len();
                s
            })
            .collect();
        let mut guard = self.batch_ws.lock().unwrap_or_else(|e| e.into_inner());
        let ws = self.batch_workspace(&mut guard, n)?;
        let block_size = kv.block_size;
        let mut route = KvRoute::Paged {
            k: &mut kv.k,
            v: &mut kv.v,
            slots: &slots,
            seqs: &seqs,
            block_size,
        };
        // Not a step: the sequences have different positions, so the ops take their arguments.
        let rows =
            self.forward_layers(&ids, &positions, &mut route, &last_rows, ws, Logits::Last)?;
        let out = finish(&self.backend, &ws.logits, rows)?;
        drop(seqs);
        for it in items.iter_mut() {
            it.table.len += it.tokens.len();
        }
        Ok(out)
    }
}
