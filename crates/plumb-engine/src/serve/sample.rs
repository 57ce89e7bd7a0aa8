//! The one place where a step's tokens are drawn: [`sample_rows`] makes every draw of the step
//! a row of the backend's `sample_rows` op (each request's penalties over its history, logit
//! biases, constraint mask, temperature, top-k, top-p, min-p, its seeded uniform and the
//! log-probabilities it asked for) and runs them all in one call where the logits are. On a
//! GPU only the ids and the asked log-probabilities come back; host backends run the op's
//! reference (`plumb_ops::ops::sample`) on their own copy.
//!
//! Draws map one to one onto the step's rows of logits, except when a prompt with `n > 1`
//! choices ends: its choices all draw from the prompt's one row. Such a step copies the rows
//! into a buffer with a row per draw first.

use plumb_ops::Backend;

use super::TokenLogprob;
use crate::sampler::Sampler;

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
    /// Tokens the draw may choose (bit `t % 32` of word `t / 32`); None allows all.
    pub mask: Option<&'a [u32]>,
}

/// A drawn token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampled {
    pub id: u32,
    pub logprob: Option<TokenLogprob>,
}

/// Draws every row of `draws` from `logits` (`[rows, vocab]` on `b`); `out[i]` is draw `i`'s
/// token. On an error every entry is None (the caller fails those requests) and the error is
/// returned. `host` is a reusable copy for steps whose draws share rows.
pub(crate) fn sample_rows<B: Backend>(
    b: &B,
    logits: &B::Buf,
    rows: usize,
    vocab: usize,
    draws: &mut [SampleRow<'_>],
    host: &mut Vec<f32>,
    out: &mut Vec<Option<Sampled>>,
) -> plumb_ops::Result<()> {
    out.clear();
    out.resize(draws.len(), None);
    if draws.is_empty() {
        return Ok(());
    }
    let one_to_one =
        draws.len() == rows && draws.iter().enumerate().all(|(i, d)| d.logits_row == i);
    let order: Vec<usize> = draws.iter().map(|d| d.logits_row).collect();
    let op_rows: Vec<plumb_ops::SampleRow<'_>> = draws
        .iter_mut()
        .map(|d| {
            let mut r = d.sampler.next_row(d.history, d.top_logprobs);
            r.mask = d.mask;
            r
        })
        .collect();
    let sampled = if one_to_one {
        b.sample_rows(logits, vocab, &op_rows)?
    } else {
        if let Some(&r) = order.iter().find(|&&r| r >= rows) {
            return Err(plumb_ops::OpError::Shape {
                op: "sample_rows",
                msg: format!("a draw from row {r} of {rows} rows of logits"),
            });
        }
        host.resize(rows * vocab, 0.0);
        b.download(logits, host)?;
        let spread: Vec<f32> = order
            .iter()
            .flat_map(|&r| host[r * vocab..(r + 1) * vocab].iter().copied())
            .collect();
        let buf = b.upload(&spread)?;
        b.sample_rows(&buf, vocab, &op_rows)?
    };
    for (o, s) in out.iter_mut().zip(sampled) {
        *o = Some(Sampled {
            id: s.id,
            logprob: s.logprob.map(|logprob| TokenLogprob {
                logprob,
                top: s.top,
            }),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use plumb_ops::CpuBackend;

    use super::*;
    use crate::sampler::SamplingParams;

    /// Draws of `rows` (logits row, seed or None for greedy, logprobs) over `logits`.
    fn run(
        rows: &[(usize, Option<u64>, Option<usize>)],
        logits: &[f32],
        vocab: usize,
    ) -> Vec<Sampled> {
        let b = CpuBackend::with_threads(1);
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
                mask: None,
            })
            .collect();
        let buf = b.upload(logits).unwrap();
        let (mut host, mut out) = (Vec::new(), Vec::new());
        let n = logits.len() / vocab;
        sample_rows(&b, &buf, n, vocab, &mut draws, &mut host, &mut out).expect("sampled");
        out.into_iter().map(|o| o.expect("sampled")).collect()
    }

    #[test]
    fn every_draw_reads_its_row_and_shared_rows_are_spread() {
        // Three rows of 4: the best tokens are 2, 0 and 3.
        let logits = [0.0, 1.0, 5.0, 2.0, 9.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 8.0];
        let greedy = run(
            &[(0, None, None), (1, None, None), (2, None, None)],
            &logits,
            4,
        );
        let ids: Vec<u32> = greedy.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 0, 3]);
        // Rows shared by two draws, one with logprobs: same ids, logprobs of the row.
        let shared = run(
            &[(0, None, Some(2)), (0, None, None), (2, None, None)],
            &logits,
            4,
        );
        let ids: Vec<u32> = shared.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 2, 3]);
        let lp = shared[0].logprob.as_ref().expect("asked for");
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 3]);
        let want = 5.0
            - logits[..4]
                .iter()
                .map(|&v| (v as f64).exp())
                .sum::<f64>()
                .ln();
        assert!((lp.logprob as f64 - want).abs() < 1e-5, "{lp:?}");
        assert!(shared[1].logprob.is_none());
        // A row past the logits fails the step rather than reading elsewhere.
        let b = CpuBackend::with_threads(1);
        let buf = b.upload(&logits).unwrap();
        let mut s = Sampler::new(SamplingParams::greedy());
        let mut draws = [SampleRow {
            logits_row: 5,
            sampler: &mut s,
            history: &[],
            top_logprobs: None,
            mask: None,
        }];
        let (mut host, mut out) = (Vec::new(), Vec::new());
        assert!(sample_rows(&b, &buf, 3, 4, &mut draws, &mut host, &mut out).is_err());
        assert_eq!(out, [None]);
    }

    #[test]
    fn seeded_draws_do_not_depend_on_the_neighbours() {
        let vocab = 50;
        let logits: Vec<f32> = (0..4 * vocab)
            .map(|i| ((i * 37) % 11) as f32 * 0.3)
            .collect();
        let rows: Vec<(usize, Option<u64>, Option<usize>)> =
            (0..8).map(|i| (i / 2, Some(i as u64), None)).collect();
        let all = run(&rows, &logits, vocab);
        for (i, r) in rows.iter().enumerate() {
            let one = &logits[r.0 * vocab..(r.0 + 1) * vocab];
            assert_eq!(
                run(&[(0, r.1, r.2)], one, vocab)[0].id,
                all[i].id,
                "draw {i}"
            );
        }
    }

    /// A mask confines greedy and sampled draws to the allowed tokens.
    #[test]
    fn a_mask_confines_the_draw() {
        let b = CpuBackend::with_threads(1);
        let logits = [9.0f32, 1.0, 0.5, 0.2];
        let buf = b.upload(&logits).unwrap();
        let mask = [0b1100u32];
        for p in [
            SamplingParams::greedy(),
            SamplingParams {
                seed: Some(4),
                ..SamplingParams::default()
            },
        ] {
            let mut s = Sampler::new(p);
            for _ in 0..50 {
                let mut draws = [SampleRow {
                    logits_row: 0,
                    sampler: &mut s,
                    history: &[],
                    top_logprobs: None,
                    mask: Some(&mask),
                }];
                let (mut host, mut out) = (Vec::new(), Vec::new());
                sample_rows(&b, &buf, 1, 4, &mut draws, &mut host, &mut out).unwrap();
                let id = out[0].as_ref().unwrap().id;
                assert!(id == 2 || id == 3, "{id}");
            }
        }
    }
}
