//! The paged forward: the new tokens of many sequences in one pass over a [`PagedKv`].
//!
//! [`Model::forward_paged_launch`] queues the pass and returns its logits still on the
//! backend ([`PagedLogits`]); a backend that queues work (CUDA) is still running it when the
//! call returns, so the caller can do host work before [`PagedLogits::read`] waits for it.
//! Only the items that ask for logits get a row of the output head.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::MutexGuard;

use plumb_ops::{Backend, PagedSeq};

use super::{BlockTable, PagedItem, PagedKv};
use crate::error::{ModelError, Result};
use crate::forward::{Logits, Model, Workspace};
use crate::route::KvRoute;

/// Most rows of a recorded decode pass: the range of the backends' batched decode kernels;
/// a larger batch does enough work per launch that recording buys little.
pub const RECORD_MAX_ROWS: usize = 64;

/// The key of a recorded decode pass over `rows` rows of pool `kv` through workspace `ws`
/// (a recording holds all three's addresses); the top bit keeps it apart from the contiguous
/// caches' keys, which are small ids.
fn paged_key(kv: u64, ws: u64, rows: usize) -> u64 {
    let mut h = DefaultHasher::new();
    (kv, ws, rows).hash(&mut h);
    h.finish() | 1 << 63
}

/// Host vectors of a pass, kept by the pool so that a step allocates none of them.
#[derive(Default)]
pub(crate) struct PassScratch {
    ids: Vec<u32>,
    positions: Vec<u32>,
    slots: Vec<u32>,
    last_rows: Vec<usize>,
}

/// The logits of a launched paged pass, one row per item that asked for them (in item
/// order), still on the backend. Holds the model's paged workspace until read or dropped.
pub struct PagedLogits<'m, B: Backend> {
    model: &'m Model<B>,
    ws: MutexGuard<'m, Option<Workspace<B>>>,
    rows: usize,
}

impl<B: Backend> PagedLogits<'_, B> {
    /// Rows of logits (`[rows, vocab]`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn logits(&self) -> Result<&B::Buf> {
        self.ws
            .as_ref()
            .map(|ws| &ws.logits)
            .ok_or_else(|| ModelError::Config("paged workspace".into()))
    }

    /// Waits for the pass and copies its logits into `out` (resized to `rows × vocab`).
    pub fn read(self, out: &mut Vec<f32>) -> Result<()> {
        out.resize(self.rows * self.model.config.vocab_size, 0.0);
        if self.rows > 0 {
            self.model.backend.download(self.logits()?, out)?;
        }
        Ok(())
    }

    /// Waits until the pass has run (its errors surface here, not in a later call).
    pub fn wait(&self) -> Result<()> {
        Ok(self.model.backend.synchronize()?)
    }

    /// The logits (`[rows, vocab]`), still on the backend, for an op such as
    /// `Backend::sample_rows` that reads them where they are.
    pub fn buf(&self) -> Result<&B::Buf> {
        self.logits()
    }

    /// The backend that holds the logits.
    pub fn backend(&self) -> &B {
        &self.model.backend
    }

    /// The argmax of every row, taken where the logits are (on a GPU only the ids move).
    pub fn argmax(self) -> Result<Vec<u32>> {
        if self.rows == 0 {
            return Ok(Vec::new());
        }
        let vocab = self.model.config.vocab_size;
        Ok(self
            .model
            .backend
            .argmax_rows(self.logits()?, self.rows, vocab)?)
    }
}

impl<B: Backend> Model<B> {
    /// Runs every item's tokens after the `table.len` positions its table holds in `kv`, and
    /// returns, per item, the logits of its last token (`[vocab]` each). Reserves the blocks
    /// it needs (copying shared ones first); on an error before the pass runs no table's
    /// `len` moves. Rows are the items' tokens in order: items of 3 and 1 tokens → rows 0..3
    /// and 3, logits of rows 2, 3. The total number of tokens must not exceed `max_batch`.
    pub fn forward_paged(
        &self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let want = vec![true; items.len()];
        let mut all = Vec::new();
        self.forward_paged_launch(kv, items, &want)?
            .read(&mut all)?;
        let vocab = self.config.vocab_size;
        Ok(all.chunks(vocab).map(|c| c.to_vec()).collect())
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
        let want = vec![true; items.len()];
        self.forward_paged_launch(kv, items, &want)?.argmax()
    }

    /// Queues the pass of [`Model::forward_paged`] and returns without waiting for it; item
    /// `i` gets a row of logits when `logits[i]` (the others' last rows skip the output
    /// head). The tables' lengths have moved on when it returns; should reading the logits
    /// then fail, the positions written are not to be trusted.
    pub fn forward_paged_launch<'m>(
        &'m self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
        logits: &[bool],
    ) -> Result<PagedLogits<'m, B>> {
        let n: usize = items.iter().map(|it| it.tokens.len()).sum();
        if items.is_empty() || logits.len() != items.len() {
            return Err(ModelError::Config(format!(
                "a paged batch of {} items with {} logits flags",
                items.len(),
                logits.len()
            )));
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
        let mut s = std::mem::take(&mut kv.scratch);
        let planned = plan_rows(kv, &self.backend, items, logits, &mut s);
        let ran = planned.and_then(|()| self.run_pass(kv, items, &mut s));
        kv.scratch = s;
        ran
    }

    /// The layers over the rows `s` describes; moves every table past its new tokens. A
    /// decode pass (one token an item, every item sampling, at most [`RECORD_MAX_ROWS`]) is a
    /// step: its ids, positions, slots and tables are staged on the backend, and the pass is
    /// recorded on first use and replayed afterwards where the backend records (CUDA graphs),
    /// keyed by the pool, the workspace and the number of rows.
    fn run_pass<'m>(
        &'m self,
        kv: &mut PagedKv<B>,
        items: &mut [PagedItem<'_>],
        s: &mut PassScratch,
    ) -> Result<PagedLogits<'m, B>> {
        let b = &self.backend;
        let n = s.ids.len();
        let decode = n == items.len() && s.last_rows.len() == n && n <= RECORD_MAX_ROWS;
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
        let mut guard = self.paged_ws.lock().unwrap_or_else(|e| e.into_inner());
        let ws = self.paged_workspace(&mut guard, n, s.last_rows.len())?;
        let group = self.config.n_heads / self.config.n_kv_heads.max(1);
        if decode {
            b.begin_step(&s.ids, &s.positions)?;
        }
        let key = paged_key(kv.id, ws.id, n);
        let staged = if decode {
            b.stage_paged(&s.slots, &seqs, group)
        } else {
            Ok(())
        };
        let replayed = match staged {
            Ok(()) if decode => b.replay(key).map_err(ModelError::from),
            Ok(()) => Ok(false),
            Err(e) => Err(e.into()),
        };
        let mut route = KvRoute::Paged {
            k: &mut kv.k,
            v: &mut kv.v,
            block_size: kv.block_size,
            slots: std::mem::take(&mut s.slots),
            seqs,
            lens,
        };
        let ran = match replayed {
            Ok(true) => Ok(n),
            Ok(false) => (|| {
                let recording = decode && b.record_begin(key)?;
                // Outside a step the sequences' positions differ from call to call, so the ops
                // take their arguments.
                let rows = self.forward_layers(
                    &s.ids,
                    &s.positions,
                    &mut route,
                    &s.last_rows,
                    ws,
                    Logits::Last,
                )?;
                if recording {
                    b.record_end(key)?;
                }
                Ok(rows)
            })(),
            Err(e) => Err(e),
        };
        let ended = if decode { b.end_step() } else { Ok(()) };
        if let KvRoute::Paged { slots, .. } = &mut route {
            s.slots = std::mem::take(slots);
        }
        let rows = ran?;
        ended?;
        route.advance();
        Ok(PagedLogits {
            model: self,
            ws: guard,
            rows,
        })
    }

    /// The kept paged workspace, grown to at least `n` rows and `logit_rows` rows of logits
    /// (a step's logits rows are its sampling sequences, far fewer than its prompt rows).
    fn paged_workspace<'g>(
        &self,
        guard: &'g mut Option<Workspace<B>>,
        n: usize,
        logit_rows: usize,
    ) -> Result<&'g mut Workspace<B>> {
        let small = |ws: &Workspace<B>| ws.cap < n || ws.logit_rows < logit_rows;
        if guard.as_ref().is_none_or(small) {
            // Grow in powers of two so that a slowly growing batch reallocates rarely.
            let grow = |want: usize, have: usize| {
                want.next_power_of_two()
                    .min(self.max_batch.max(want))
                    .max(have)
            };
            let (have_cap, have_logits) =
                guard.as_ref().map_or((0, 0), |ws| (ws.cap, ws.logit_rows));
            let cap = grow(n, have_cap);
            let logits = grow(logit_rows.max(1), have_logits).min(cap);
            *guard = None;
            *guard = Some(Workspace::new(&self.backend, &self.config, cap, logits)?);
        }
        guard
            .as_mut()
            .ok_or_else(|| ModelError::Config("paged workspace".into()))
    }
}

/// Reserves every item's blocks and lays out the pass's rows: token ids, positions, pool
/// slots and the rows whose logits are wanted.
fn plan_rows<B: Backend>(
    kv: &mut PagedKv<B>,
    b: &B,
    items: &mut [PagedItem<'_>],
    logits: &[bool],
    s: &mut PassScratch,
) -> Result<()> {
    s.ids.clear();
    s.positions.clear();
    s.slots.clear();
    s.last_rows.clear();
    for (it, &want) in items.iter_mut().zip(logits) {
        kv.reserve(b, it.table, it.tokens.len())?;
        let len = it.table.len;
        kv.slots(it.table, it.tokens.len(), &mut s.slots)?;
        s.ids.extend_from_slice(it.tokens);
        s.positions
            .extend((len..len + it.tokens.len()).map(|p| p as u32));
        if want {
            s.last_rows.push(s.ids.len() - 1);
        }
    }
    Ok(())
}
