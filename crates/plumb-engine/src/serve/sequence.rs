//! One sequence's state once its prompt is in: a [`Choice`] with its sampler, its tokens and
//! its [`BlockTable`] in the engine's paged KV cache. Its text is made by the request's
//! receiver (`channel.rs`), off the engine thread.

use std::time::Instant;

use plumb_model::BlockTable;

use super::{Request, TokenLogprob};
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
            last_token_at: None,
            finished: false,
        }
    }

    /// Tokens of `history` not yet in the KV cache.
    pub(crate) fn behind(&self) -> usize {
        self.history.len().saturating_sub(self.table.len)
    }
}

/// Log-softmax of `logits` at `id`, and the `k` most likely tokens (best first, ties by id).
pub(crate) fn logprobs(logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64 - max).exp())
        .sum();
    let lse = max + sum.ln();
    let lp = |i: u32| {
        logits
            .get(i as usize)
            .map_or(f32::NEG_INFINITY, |&v| (v as f64 - lse) as f32)
    };
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| {
        let (va, vb) = (logits[*a as usize], logits[*b as usize]);
        vb.total_cmp(&va).then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit);
    }
    idx.truncate(k);
    idx.sort_by(by_logit);
    TokenLogprob {
        logprob: lp(id),
        top: idx.into_iter().map(|i| (i, lp(i))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        // logits ln 1, ln 3, ln 4: probabilities 1/8, 3/8, 1/2.
        let l = [0.0f32, 3f32.ln(), 4f32.ln()];
        let p = logprobs(&l, 1, 2);
        assert!((p.logprob - (3.0f32 / 8.0).ln()).abs() < 1e-6);
        assert_eq!(p.top.len(), 2);
        assert_eq!(p.top[0].0, 2);
        assert!((p.top[0].1 - 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(p.top[1].0, 1);
        assert!(logprobs(&l, 0, 0).top.is_empty());
        assert_eq!(logprobs(&l, 0, 9).top.len(), 3);
    }
}
