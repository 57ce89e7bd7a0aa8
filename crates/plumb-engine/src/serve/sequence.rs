//! One sequence's state once its prompt is in: a [`Choice`] that samples, decodes and watches
//! for stop strings token by token, with its [`BlockTable`] in the engine's paged KV cache.

use std::time::Instant;

use plumb_model::BlockTable;
use plumb_tokenizer::{Tokenizer, Utf8Decoder};

use super::{Request, TokenEvent, TokenLogprob};
use crate::constrain::{self, ConstraintError, Live};
use crate::error::Result;
use crate::generate::FinishReason;
use crate::sampler::Sampler;
use crate::text::StopMatcher;

/// What one decode step of a choice produced.
pub(crate) struct ChoiceStep {
    pub token: TokenEvent,
    /// Set when the choice ended: why, and the text released at the end.
    pub finish: Option<(FinishReason, String)>,
}

/// A choice being decoded. Its KV cache holds `history[..table.len]`; the tokens after
/// that (the one sampled this step, or everything generated before a preemption) wait for
/// the step's batched forward.
pub(crate) struct Choice {
    pub index: usize,
    pub table: BlockTable,
    sampler: Sampler,
    /// Prompt and generated tokens (the penalties' window).
    pub history: Vec<u32>,
    pub generated: usize,
    utf8: Utf8Decoder,
    stops: StopMatcher,
    /// Logits to sample the next token from (valid when the cache holds all of `history`).
    logits: Vec<f32>,
    /// The next token, sampled ahead by [`Choice::pick`] (with the logits before penalties
    /// when the request wants logprobs); cleared by new logits.
    picked: Option<(u32, Option<Vec<f32>>)>,
    /// The request's grammar as this choice advances through it.
    constraint: Option<Live>,
    pub last_token_at: Option<Instant>,
}

impl Choice {
    pub(crate) fn new(index: usize, table: BlockTable, logits: Vec<f32>, req: &Request) -> Self {
        let mut params = req.sampling.clone();
        params.seed = params.seed.map(|s| s.wrapping_add(index as u64));
        Choice {
            index,
            table,
            sampler: Sampler::new(params),
            history: req.prompt.clone(),
            generated: 0,
            utf8: Utf8Decoder::default(),
            stops: StopMatcher::new(&req.stop),
            logits,
            picked: None,
            constraint: req.constraint.as_ref().map(Live::start),
            last_token_at: None,
        }
    }

    /// Tokens of `history` not yet in the KV cache.
    pub(crate) fn behind(&self) -> usize {
        self.history.len().saturating_sub(self.table.len)
    }

    /// Samples one token and decodes it; unless the choice ends here, the token waits in
    /// `history` for the step's batched forward, which brings the next logits
    /// ([`Choice::set_logits`]). An end-of-sequence token ends the choice without a token
    /// event.
    pub(crate) fn step(
        &mut self,
        tok: &Tokenizer,
        stop_tokens: &[u32],
        req: &Request,
    ) -> Result<StepResult> {
        let (id, raw) = match self.picked.take() {
            Some(p) => p,
            None => self.sample(req)?,
        };
        if !req.ignore_eos && stop_tokens.contains(&id) {
            return Ok(StepResult::Eos(self.release()));
        }
        let logprob = raw.zip(req.logprobs).map(|(l, k)| logprobs(&l, id, k));
        self.history.push(id);
        self.generated += 1;
        let piece = self.utf8.push(&tok.token_bytes(id));
        let (text, hit) = self.stops.push(&piece);
        let token = TokenEvent {
            choice: self.index,
            token: id,
            text,
            logprob,
        };
        let finish = if hit {
            Some((FinishReason::Stop, String::new()))
        } else if self.generated >= req.max_tokens {
            Some((FinishReason::Length, self.release()))
        } else {
            // The engine runs every waiting token of the step in one batched forward; the
            // next mask is computed meanwhile.
            if let Some(c) = &mut self.constraint {
                c.commit(id);
            }
            None
        };
        Ok(StepResult::Token(ChoiceStep { token, finish }))
    }

    pub(crate) fn set_logits(&mut self, logits: Vec<f32>) {
        self.logits = logits;
        self.picked = None;
    }

    /// Samples the next token ahead of [`Choice::step`], which then uses it: the engine
    /// samples many choices on several threads (each choice owns its sampler and logits).
    /// A failure leaves the choice unpicked: its step samples again and reports it.
    pub(crate) fn pick(&mut self, req: &Request) {
        if self.picked.is_none() {
            self.picked = self.sample(req).ok();
        }
    }

    /// Samples from the logits, within the constraint's mask when there is one.
    fn sample(&mut self, req: &Request) -> Result<(u32, Option<Vec<f32>>)> {
        let raw = req.logprobs.map(|_| self.logits.clone());
        let mask = match &mut self.constraint {
            Some(c) => Some(c.mask()?),
            None => None,
        };
        if let Some(m) = mask {
            constrain::apply_mask(&mut self.logits, m);
        }
        let id = self.sampler.sample(&mut self.logits, &self.history);
        if mask.is_some_and(|m| !constrain::allows(m, id)) {
            return Err(ConstraintError::Failed("no token satisfies the constraint".into()).into());
        }
        Ok((id, raw))
    }

    /// The text held back (unfinished characters, a possible stop-string start).
    fn release(&mut self) -> String {
        let (mut text, hit) = self.stops.push(&self.utf8.finish());
        if !hit {
            text.push_str(&self.stops.finish());
        }
        text
    }
}

pub(crate) enum StepResult {
    Token(ChoiceStep),
    /// An end-of-sequence token: the choice ends with this released text.
    Eos(String),
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
