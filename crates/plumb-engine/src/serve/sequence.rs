//! One sequence's state once its prompt is in: a [`Choice`] with its sampler, its tokens and
//! its [`BlockTable`] in the engine's paged KV cache. Its text is made by the request's
//! receiver (`channel.rs`), off the engine thread.

use std::time::Instant;

use plumb_model::BlockTable;

use super::Request;
use crate::constrain::Live;
use crate::sampler::Sampler;

/// A choice being decoded. Its KV cache holds `history[..table.len]`; the tokens after
/// that (the one sampled last step, or everything generated before a preemption) go into
/// the next step's forward.
pub(crate) struct Choice {
    pub index: usize,
    pub table: BlockTable,
    pub sampler: Sampler,
    /// Prompt and generated tokens (the penalties' window).
    pub history: Vec<u32>,
    pub generated: usize,
    /// The request's grammar as this choice advances through it: its mask confines the
    /// next draw, and each drawn token advances it.
    pub constraint: Option<Live>,
    pub last_token_at: Option<Instant>,
    /// Ended this step (freed when the step's tokens have all been handed out).
    pub finished: bool,
}

impl Choice {
    pub(crate) fn new(index: usize, table: BlockTable, req: &Request) -> Self {
        let mut params = req.sampling.clone();
        params.seed = params.seed.map(|s| s.wrapping_add(index as u64));
        Choice {
            index,
            table,
            sampler: Sampler::new(params),
            history: req.prompt.clone(),
            generated: 0,
            constraint: req.constraint.as_ref().map(Live::start),
            last_token_at: None,
            finished: false,
        }
    }

    /// Tokens of `history` not yet in the KV cache.
    pub(crate) fn behind(&self) -> usize {
        self.history.len().saturating_sub(self.table.len)
    }
}
