//! Throughput measurement in the manner of llama-bench: `ppN` times the prefill of N tokens
//! from an empty cache, `tgN` times N single-token decode steps from an empty cache. Each test
//! runs once to warm up, then `reps` times; the figures are tokens per second.

use std::time::Instant;

use plumb_core::rng::Rng;
use plumb_model::{KvCache, Logits, Model};
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
