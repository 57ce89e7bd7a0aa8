//! Throughput measurement in the manner of llama-bench: `ppN` times the prefill of N tokens
//! from an empty cache, `tgN` times N single-token decode steps from an empty cache. Each test
//! runs once to warm up, then `reps` times; the figures are tokens per second.

use std::time::Instant;

use plumb_core::rng::Rng;
use plumb_model::paged::{BlockTable, PagedKv};
use plumb_model::{KvCache, Logits, Model, PagedItem};
use plumb_ops::Backend;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Prompt(usize),
    Generate(usize),
}

impl Test {
    pub fn name(&self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Generate(n) => format!("tg{n}"),
        }
    }

    pub fn tokens(&self) -> usize {
        match *self {
            Test::Prompt(n) | Test::Generate(n) => n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub test: Test,
    /// Tokens per second of each repetition.
    pub samples: Vec<f64>,
}

impl BenchResult {
    pub fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }

    /// Sample standard deviation (0 for a single sample).
    pub fn stddev(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.samples.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// Runs `test` `reps` times after one warm-up run.
pub fn run<B: Backend>(
    model: &Model<B>,
    cache: &mut KvCache<B>,
    test: Test,
    reps: usize,
    seed: u64,
) -> Result<BenchResult> {
    if test.tokens() == 0 || test.tokens() > cache.capacity {
        return Err(EngineError::BadRequest(format!(
            "{} needs 1 to {} tokens of context",
            test.name(),
            cache.capacity
        )));
    }
    let mut rng = Rng::new(seed);
    let vocab = model.config.vocab_size as u64;
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        cache.clear();
        let t0 = Instant::now();
        match test {
            Test::Prompt(n) => {
                let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
                model.forward(&ids, cache, Logits::Last)?;
            }
            Test::Generate(n) => {
                // Greedy decode on the backend: only token ids cross to the host.
                let mut id = rng.below(vocab) as u32;
                for _ in 0..n {
                    id = model.decode_argmax(id, cache)?;
                }
            }
        }
        model.backend.synchronize()?;
        let secs = t0.elapsed().as_secs_f64();
        if rep > 0 {
            samples.push(test.tokens() as f64 / secs.max(1e-12));
        }
    }
    Ok(BenchResult { test, samples })
}

/// Throughput of `parallel` sequences decoded together, like llama-batched-bench, through the
/// paged KV cache the server uses: each sequence gets a prompt of `prompt` random tokens
/// (prefilled as batches of whole prompts), then `gen` tokens are decoded for all of them at
/// once, one `forward_paged` per step. Returns aggregate (prompt, generation) tokens per second
/// of each repetition.
pub fn run_parallel<B: Backend>(
    model: &Model<B>,
    parallel: usize,
    prompt: usize,
    gen: usize,
    reps: usize,
    seed: u64,
) -> Result<(BenchResult, BenchResult)> {
    if parallel == 0 || prompt == 0 || gen == 0 {
        return Err(EngineError::BadRequest(
            "parallel, prompt and generation lengths must be at least 1".into(),
        ));
    }
    if parallel > model.max_batch {
        return Err(EngineError::BadRequest(format!(
            "{parallel} sequences exceed the batch limit of {} tokens",
            model.max_batch
        )));
    }
    let mut rng = Rng::new(seed);
    let vocab = model.config.vocab_size as u64;
    let block = plumb_model::paged::BLOCK_SIZE;
    let per_seq = (prompt + gen).div_ceil(block) * block;
    let mut kv = PagedKv::with_capacity_tokens(model, parallel * per_seq, block)?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    // Whole prompts per prefill batch, as many as fit the token limit.
    let per_batch = (model.max_batch / prompt).max(1);
    for rep in 0..=reps {
        let mut tables: Vec<BlockTable> = (0..parallel).map(|_| BlockTable::default()).collect();
        let prompts: Vec<Vec<u32>> = (0..parallel)
            .map(|_| (0..prompt).map(|_| rng.below(vocab) as u32).collect())
            .collect();
        let t0 = Instant::now();
        let mut last = Vec::with_capacity(parallel);
        if prompt > model.max_batch {
            // A prompt longer than a batch: each in chunks of max_batch tokens.
            for (p, t) in prompts.iter().zip(tables.iter_mut()) {
                let mut next = 0;
                for c in p.chunks(model.max_batch.max(1)) {
                    let mut items = [PagedItem {
                        tokens: c,
                        table: &mut *t,
                    }];
                    next = model.forward_paged_argmax(&mut kv, &mut items)?[0];
                }
                last.push(next);
            }
        } else {
            for (ps, ts) in prompts.chunks(per_batch).zip(tables.chunks_mut(per_batch)) {
                let mut items: Vec<PagedItem<'_>> = ps
                    .iter()
                    .zip(ts.iter_mut())
                    .map(|(p, t)| PagedItem {
                        tokens: p,
                        table: t,
                    })
                    .collect();
                last.extend(model.forward_paged_argmax(&mut kv, &mut items)?);
            }
        }
        model.backend.synchronize()?;
        let t_pp = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..gen {
            let mut items: Vec<PagedItem<'_>> = last
                .iter()
                .zip(tables.iter_mut())
                .map(|(id, t)| PagedItem {
                    tokens: std::slice::from_ref(id),
                    table: t,
                })
                .collect();
            last = model.forward_paged_argmax(&mut kv, &mut items)?;
        }
        model.backend.synchronize()?;
        let t_tg = t1.elapsed().as_secs_f64();
        for t in tables {
            kv.free(t);
        }
        if rep > 0 {
            pp.push((parallel * prompt) as f64 / t_pp.max(1e-12));
            tg.push((parallel * gen) as f64 / t_tg.max(1e-12));
        }
    }
    Ok((
        BenchResult {
            test: Test::Prompt(prompt),
            samples: pp,
        },
        BenchResult {
            test: Test::Generate(gen),
            samples: tg,
        },
    ))
}
