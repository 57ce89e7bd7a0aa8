//! Throughput measurement in the manner of llama-bench: `ppN` times the prefill of N tokens
//! from an empty cache, `tgN` times N single-token decode steps from an empty cache. Each test
//! runs once to warm up, then `reps` times; the figures are tokens per second.

use std::time::Instant;

use plumb_core::rng::Rng;
use plumb_model::paged::{BlockTable, PagedKv};
use plumb_model::{KvCache, Logits, Model, PagedItem};
use plumb_ops::Backend;

use crate::error::{EngineError, Result};
use crate::sampler::{Sampler, SamplingParams};
use crate::serve::sample::{sample_rows, SampleRow, Sampled};

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

/// How [`run_parallel`] picks each next token.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// The argmax, taken on the backend: only the ids come back.
    Greedy,
    /// Drawn on the host by the server's sampling step (every row's logits come back, as in
    /// `plumb serve`); sequence `i` draws with seed `seed + i` (or `i` without a seed).
    Sample(SamplingParams),
}

/// The sequences' next-token state in a [`Pick::Sample`] run.
struct Draws {
    samplers: Vec<Sampler>,
    /// Prompt and generated tokens of each sequence (the penalties' window).
    history: Vec<Vec<u32>>,
    flags: Vec<bool>,
    logits: Vec<f32>,
    sampled: Vec<Option<Sampled>>,
}

impl Draws {
    fn new(params: &SamplingParams, prompts: &[Vec<u32>]) -> Draws {
        let samplers = (0..prompts.len())
            .map(|i| {
                let mut p = params.clone();
                p.seed = Some(p.seed.unwrap_or(0).wrapping_add(i as u64));
                Sampler::new(p)
            })
            .collect();
        Draws {
            samplers,
            history: prompts.to_vec(),
            flags: Vec::new(),
            logits: Vec::new(),
            sampled: Vec::new(),
        }
    }
}

/// Runs `items` (sequences `first ..` in order) and returns each one's next token.
fn forward_pick<B: Backend>(
    model: &Model<B>,
    kv: &mut PagedKv<B>,
    items: &mut [PagedItem<'_>],
    first: usize,
    draws: Option<&mut Draws>,
) -> Result<Vec<u32>> {
    let Some(d) = draws else {
        return Ok(model.forward_paged_argmax(kv, items)?);
    };
    d.flags.clear();
    d.flags.resize(items.len(), true);
    let launched = model.forward_paged_launch(kv, items, &d.flags)?;
    let seqs = first..first + items.len();
    let mut rows: Vec<SampleRow<'_>> = d.samplers[seqs.clone()]
        .iter_mut()
        .zip(&d.history[seqs.clone()])
        .enumerate()
        .map(|(logits_row, (sampler, history))| SampleRow {
            logits_row,
            sampler,
            history,
            top_logprobs: None,
            mask: None,
        })
        .collect();
    let (n, vocab) = (launched.rows(), model.config.vocab_size);
    let buf = launched.buf()?;
    sample_rows(
        &model.backend,
        buf,
        n,
        vocab,
        &mut rows,
        &mut d.logits,
        &mut d.sampled,
    )?;
    let ids = d
        .sampled
        .iter()
        .map(|s| s.as_ref().map(|s| s.id))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| EngineError::BadRequest("the sampler failed".into()))?;
    for (h, &id) in d.history[seqs].iter_mut().zip(&ids) {
        h.push(id);
    }
    Ok(ids)
}

/// Throughput of `parallel` sequences decoded together, like llama-batched-bench, through the
/// paged KV cache the server uses: each sequence gets a prompt of `prompt` random tokens
/// (prefilled as batches of whole prompts), then `gen` tokens are decoded for all of them at
/// once, one `forward_paged` per step, each token picked as `pick` says. Returns aggregate
/// (prompt, generation) tokens per second of each repetition.
pub fn run_parallel<B: Backend>(
    model: &Model<B>,
    parallel: usize,
    prompt: usize,
    gen: usize,
    reps: usize,
    seed: u64,
    pick: &Pick,
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
    for rep in 0..=reps {
        let mut tables: Vec<BlockTable> = (0..parallel).map(|_| BlockTable::default()).collect();
        let prompts: Vec<Vec<u32>> = (0..parallel)
            .map(|_| (0..prompt).map(|_| rng.below(vocab) as u32).collect())
            .collect();
        let mut draws = match pick {
            Pick::Greedy => None,
            Pick::Sample(params) => Some(Draws::new(params, &prompts)),
        };
        let t0 = Instant::now();
        let mut last = prefill(model, &mut kv, &prompts, &mut tables, draws.as_mut())?;
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
            last = forward_pick(model, &mut kv, &mut items, 0, draws.as_mut())?;
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

/// Prefills every prompt (whole prompts per batch, as many as fit the token limit; a prompt
/// longer than a batch alone, in chunks) and returns each sequence's first token.
fn prefill<B: Backend>(
    model: &Model<B>,
    kv: &mut PagedKv<B>,
    prompts: &[Vec<u32>],
    tables: &mut [BlockTable],
    mut draws: Option<&mut Draws>,
) -> Result<Vec<u32>> {
    let batch = model.max_batch.max(1);
    let mut last = Vec::with_capacity(prompts.len());
    let prompt = prompts.first().map_or(0, Vec::len);
    if prompt > batch {
        for (i, (p, t)) in prompts.iter().zip(tables.iter_mut()).enumerate() {
            let chunks: Vec<&[u32]> = p.chunks(batch).collect();
            for (k, c) in chunks.iter().enumerate() {
                let mut items = [PagedItem {
                    tokens: c,
                    table: &mut *t,
                }];
                if k + 1 < chunks.len() {
                    model.forward_paged_launch(kv, &mut items, &[false])?;
                } else {
                    last.extend(forward_pick(
                        model,
                        kv,
                        &mut items,
                        i,
                        draws.as_deref_mut(),
                    )?);
                }
            }
        }
        return Ok(last);
    }
    let per_batch = (batch / prompt.max(1)).max(1);
    for (k, (ps, ts)) in prompts
        .chunks(per_batch)
        .zip(tables.chunks_mut(per_batch))
        .enumerate()
    {
        let mut items: Vec<PagedItem<'_>> = ps
            .iter()
            .zip(ts.iter_mut())
            .map(|(p, t)| PagedItem {
                tokens: p,
                table: t,
            })
            .collect();
        let first = k * per_batch;
        last.extend(forward_pick(
            model,
            kv,
            &mut items,
            first,
            draws.as_deref_mut(),
        )?);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumb_model::synth::{write_synthetic, SynthShape};
    use plumb_ops::ReferenceBackend;

    fn model() -> Model<ReferenceBackend> {
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
            head_dim: None,
            sliding_window: None,
        };
        let dir = std::env::temp_dir().join(format!("plumb-bench-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        let q = plumb_core::GgmlType::Q8_0;
        write_synthetic(&shape, q, 5, &path, std::sync::Arc::new(|_, _| {})).unwrap();
        let file = plumb_gguf::GgufFile::open(&path).unwrap();
        Model::load(&file, ReferenceBackend { threads: false }).unwrap()
    }

    /// Prefill and `steps` decode steps of `prompts`; every sequence's tokens.
    fn generate(
        m: &Model<ReferenceBackend>,
        prompts: &[Vec<u32>],
        steps: usize,
        pick: &Pick,
    ) -> Vec<Vec<u32>> {
        let mut kv = PagedKv::with_capacity_tokens(m, 64, 4).unwrap();
        let mut tables = vec![BlockTable::default(); prompts.len()];
        let mut draws = match pick {
            Pick::Greedy => None,
            Pick::Sample(p) => Some(Draws::new(p, prompts)),
        };
        let mut last = prefill(m, &mut kv, prompts, &mut tables, draws.as_mut()).unwrap();
        let mut out: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
        for _ in 0..steps {
            let mut items: Vec<PagedItem<'_>> = last
                .iter()
                .zip(tables.iter_mut())
                .map(|(id, t)| PagedItem {
                    tokens: std::slice::from_ref(id),
                    table: t,
                })
                .collect();
            last = forward_pick(m, &mut kv, &mut items, 0, draws.as_mut()).unwrap();
            for (o, &t) in out.iter_mut().zip(&last) {
                o.push(t);
            }
        }
        out
    }

    #[test]
    fn host_draws_at_temperature_zero_are_the_backend_argmax_and_seeds_reproduce() {
        let m = model();
        let prompts = vec![
            vec![1, 2, 3, 4, 5],
            vec![9, 8, 7, 6, 5],
            vec![3, 3, 3, 3, 3],
        ];
        let greedy = generate(&m, &prompts, 6, &Pick::Greedy);
        let host = generate(&m, &prompts, 6, &Pick::Sample(SamplingParams::greedy()));
        assert_eq!(host, greedy);
        let hot = Pick::Sample(SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplingParams::default()
        });
        let a = generate(&m, &prompts, 6, &hot);
        assert_eq!(a, generate(&m, &prompts, 6, &hot));
        assert_ne!(
            a, greedy,
            "a hot draw over 21 tokens follows the argmax everywhere"
        );
        let (pp, tg) = run_parallel(&m, 3, 5, 4, 2, 1, &hot).unwrap();
        assert_eq!((pp.samples.len(), tg.samples.len()), (2, 2));
        assert!(tg.mean() > 0.0);
    }
}
