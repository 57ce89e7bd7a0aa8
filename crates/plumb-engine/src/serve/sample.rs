//! The one place where a step's tokens are drawn: [`sample_rows`] takes the step's logits
//! (one row per sequence position that samples) and every draw asked of them, and returns
//! the ids (and log-probabilities) through the host [`Sampler`]s. A device sampler replaces
//! this function whole; a per-request token mask belongs in [`draw`], the per-row call.
//!
//! Draws run on several threads when there are enough of them: a large vocabulary costs
//! ~1 ms per token on the host, which would add up over a batch one after the other.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::sequence::logprobs;
use super::TokenLogprob;
use crate::sampler::Sampler;

/// Threads that sample a step's rows.
const MAX_SAMPLING_THREADS: usize = 8;
/// Fewer draws than this run on the engine thread alone.
const MIN_THREADED_DRAWS: usize = 4;

/// One token to draw.
pub(crate) struct SampleRow<'a> {
    /// Row of the step's logits. Rows are in increasing order over a step's draws; choices
    /// forked from one prompt draw from the same row.
    pub logits_row: usize,
    pub sampler: &'a mut Sampler,
    /// Prompt and generated tokens so far (the penalties' window).
    pub history: &'a [u32],
    /// Report the token's log-probability and this many alternatives.
    pub top_logprobs: Option<usize>,
}

/// A drawn token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampled {
    pub id: u32,
    pub logprob: Option<TokenLogprob>,
}

/// Where a draw reads its row: in place (the row is its alone and nobody needs it after),
/// or from a copy (another draw reads the row too, or its log-probabilities need the logits
/// before penalties).
enum Src<'a> {
    Own(&'a mut [f32]),
    Shared(&'a [f32]),
}

/// Draws every row of `draws` from `logits` (`[rows, vocab]`); `out[i]` is draw `i`'s token,
/// or None if its sampler failed (the caller fails that request). `logits` may be changed.
pub(crate) fn sample_rows(
    draws: &mut [SampleRow<'_>],
    logits: &mut [f32],
    vocab: usize,
    out: &mut Vec<Option<Sampled>>,
) {
    out.clear();
    out.resize(draws.len(), None);
    let srcs = sources(draws, logits, vocab);
    let mut work: Vec<(&mut SampleRow<'_>, Option<Src<'_>>)> = draws.iter_mut().zip(srcs).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SAMPLING_THREADS);
    if work.len() < MIN_THREADED_DRAWS || threads < 2 {
        let mut scratch = Vec::new();
        for ((row, src), o) in work.iter_mut().zip(out.iter_mut()) {
            *o = draw(row, src, &mut scratch);
        }
        return;
    }
    let per = work.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (chunk, outs) in work.chunks_mut(per).zip(out.chunks_mut(per)) {
            s.spawn(move || {
                let mut scratch = Vec::new();
                for ((row, src), o) in chunk.iter_mut().zip(outs.iter_mut()) {
                    *o = draw(row, src, &mut scratch);
                }
            });
        }
    });
}

/// Each draw's row of `logits`: its own where it may change it, else a shared view; None
/// for a row past the logits.
fn sources<'l>(
    draws: &[SampleRow<'_>],
    logits: &'l mut [f32],
    vocab: usize,
) -> Vec<Option<Src<'l>>> {
    let mut srcs = Vec::with_capacity(draws.len());
    let mut rows = logits.chunks_mut(vocab.max(1)).enumerate();
    let mut i = 0;
    while i < draws.len() {
        let r = draws[i].logits_row;
        let users = draws[i..].iter().take_while(|d| d.logits_row == r).count();
        match rows.find(|(k, _)| *k == r).map(|(_, row)| row) {
            None => srcs.extend((0..users).map(|_| None)),
            Some(row) if users == 1 && draws[i].top_logprobs.is_none() => {
                srcs.push(Some(Src::Own(row)))
            }
            Some(row) => {
                let shared: &[f32] = row;
                srcs.extend((0..users).map(|_| Some(Src::Shared(shared))));
            }
        }
        i += users;
    }
    srcs
}

/// The per-row sampling call.
fn draw(
    row: &mut SampleRow<'_>,
    src: &mut Option<Src<'_>>,
    scratch: &mut Vec<f32>,
) -> Option<Sampled> {
    let src = src.as_mut()?;
    catch_unwind(AssertUnwindSafe(|| match src {
        Src::Own(logits) => Sampled {
            id: row.sampler.sample(logits, row.history),
            logprob: None,
        },
        Src::Shared(logits) => {
            scratch.clear();
            scratch.extend_from_slice(logits);
            let id = row.sampler.sample(scratch, row.history);
            Sampled {
                id,
                logprob: row.top_logprobs.map(|k| logprobs(logits, id, k)),
            }
        }
    }))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;

    /// Draws of `rows` (logits row, seed or None for greedy, logprobs) over `logits`.
    fn run(
        rows: &[(usize, Option<u64>, Option<usize>)],
        logits: &[f32],
        vocab: usize,
    ) -> Vec<Sampled> {
        let mut samplers: Vec<Sampler> = rows
            .iter()
            .map(|&(_, seed, _)| {
                let p = match seed {
                    None => SamplingParams::greedy(),
                    Some(s) => SamplingParams {
                        seed: Some(s),
                        ..SamplingParams::default()
                    },
                };
                Sampler::new(p)
            })
            .collect();
        let history = [0u32];
        let mut draws: Vec<SampleRow<'_>> = samplers
            .iter_mut()
            .zip(rows)
            .map(|(sampler, &(logits_row, _, top_logprobs))| SampleRow {
                logits_row,
                sampler,
                history: &history,
                top_logprobs,
            })
            .collect();
        let mut l = logits.to_vec();
        let mut out = Vec::new();
        sample_rows(&mut draws, &mut l, vocab, &mut out);
        out.into_iter().map(|o| o.expect("sampled")).collect()
    }

    #[test]
    fn every_draw_reads_its_row_and_shared_rows_are_copied() {
        // Three rows of 4: the best tokens are 2, 0 and 3.
        let logits = [0.0, 1.0, 5.0, 2.0, 9.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 8.0];
        let greedy = run(
            &[(0, None, None), (1, None, None), (2, None, None)],
            &logits,
            4,
        );
        let ids: Vec<u32> = greedy.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 0, 3]);
        // Rows shared by two draws, one with logprobs: same ids, logprobs of the raw row.
        let shared = run(
            &[(0, None, Some(2)), (0, None, None), (2, None, None)],
            &logits,
            4,
        );
        let ids: Vec<u32> = shared.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 2, 3]);
        let lp = shared[0].logprob.as_ref().expect("asked for");
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 3]);
        assert!(shared[1].logprob.is_none());
        // Enough draws to spread over threads: each still gets its own row's token.
        let many: Vec<(usize, Option<u64>, Option<usize>)> =
            (0..9).map(|i| (i / 3, None, None)).collect();
        let ids: Vec<u32> = run(&many, &logits, 4).iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 2, 2, 0, 0, 0, 3, 3, 3]);
    }

    #[test]
    fn seeded_draws_do_not_depend_on_the_threads_or_the_neighbours() {
        let vocab = 50;
        let logits: Vec<f32> = (0..4 * vocab)
            .map(|i| ((i * 37) % 11) as f32 * 0.3)
            .collect();
        let rows: Vec<(usize, Option<u64>, Option<usize>)> =
            (0..8).map(|i| (i / 2, Some(i as u64), None)).collect();
        let all = run(&rows, &logits, vocab);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(run(&[*r], &logits, vocab)[0].id, all[i].id, "draw {i}");
        }
    }
}
