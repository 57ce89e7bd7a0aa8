//! The serving engine: one thread that owns the model and runs every request to completion
//! with continuous batching. Callers talk to it through an [`EngineHandle`] (clonable, `Send`):
//! [`submit`](EngineHandle::submit) a [`Request`], read its [`Event`]s from the returned
//! [`EventReceiver`] (blocking or async), [`cancel`](EngineHandle::cancel) it or just drop the
//! receiver.
//!
//! ```text
//! submit ──► commands ──► waiting queue ──(slots, prefix cache)──► running
//!                                                      │ each step, one forward of
//!                                                      │  ≤ max_step_tokens rows:
//!                                                      │  one token of every decoding sequence
//!                                                      │  + chunks of prompts being prefilled
//!                                                      │ then a token for every row that ends
//!                                                      ▼ a prompt or decodes
//!                         token ids ──► EventReceiver (text, stop strings) ──► Token / Done
//! ```
//!
//! - Every sequence's keys and values live in one paged KV cache
//!   ([`PagedKv`](plumb_model::PagedKv), blocks of 16 positions). A request starts when its
//!   prompt's blocks are free; a request with `n > 1` prefills its prompt once and forks it
//!   into `n` choices that share the prompt's blocks (copy-on-write).
//! - Prefix caching: full blocks stay indexed by a hash chain of their tokens after their
//!   request ends; a new request takes every cached block its prompt starts with and
//!   prefills only the rest ([`DoneEvent::cached_tokens`]). Idle cached blocks are evicted,
//!   least recently used first, only when blocks run out.
//! - When a step finds no free block, the youngest running request is preempted: its
//!   blocks are freed and it waits at the front of the queue, to be recomputed from its prompt
//!   and the tokens it generated (its streams continue where they were).
//! - New requests join between steps; long prompts are prefilled in chunks that fill the
//!   step's token budget beside the decoding sequences, so running streams keep flowing.
//! - The engine thread hands token ids to each request's channel and never waits on it;
//!   the receiver makes the text (UTF-8, stop strings). A cancelled request, a dropped
//!   receiver or a stop string frees its sequences at the next step.

mod channel;
mod engine;
mod metrics;
mod paging;
pub(crate) mod sample;
mod sequence;
mod step;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cache;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use plumb_model::{Model, PagedKv};
use plumb_ops::Backend;
use plumb_tokenizer::Tokenizer;

use crate::constrain::Grammar;
use crate::error::{EngineError, Result};
use crate::generate::FinishReason;
use crate::sampler::SamplingParams;

pub use channel::{EventReceiver, Timeout};
pub use metrics::{Histogram, KvStats, MetricsSnapshot, RequestStatus, StepTimes};

/// Most `top_logprobs` alternatives a request may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A request's identity, unique within the process.
pub type RequestId = u64;

/// Limits of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoding at once (a request with `n` choices takes `n`).
    pub max_batch: usize,
    /// Context size: `prompt + max_tokens` of a request must fit in it.
    pub ctx: usize,
    /// Most requests waiting for a slot; more are refused with [`SubmitError::Overloaded`].
    pub max_queue: usize,
    /// Most tokens one step's forward runs: every decoding sequence's next token first, then
    /// prompt chunks up to the budget. At least `max_batch`. Larger steps prefill faster and
    /// make the streams that run beside them wait longer for their next token.
    pub max_step_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 16,
            ctx: 2048,
            max_queue: 256,
            max_step_tokens: 512,
        }
    }
}

/// How much memory the paged KV cache gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvBudget {
    /// `max_batch × ctx` positions: every running sequence can reach the full context.
    #[default]
    Default,
    /// At least this many positions (rounded up to whole blocks).
    Tokens(usize),
    /// As many blocks as fit in this many bytes.
    Bytes(usize),
}

/// Positions per KV cache block.
pub const KV_BLOCK_SIZE: usize = plumb_model::paged::BLOCK_SIZE;

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Assigned by [`Request::new`]; the key for [`EngineHandle::cancel`].
    pub id: RequestId,
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these; the stop string is not returned.
    pub stop: Vec<String>,
    /// Most tokens generated per choice.
    pub max_tokens: usize,
    /// Number of choices; `n > 1` prefills the prompt once and forks it. Choice `i` samples
    /// with seed `seed + i` when a seed is given.
    pub n: usize,
    /// `Some(k)`: report each token's log-probability and the `k` most likely alternatives
    /// (log-softmax of the model's logits, before penalties and temperature).
    pub logprobs: Option<usize>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// What every choice's output must match; each choice samples only tokens its matcher
    /// allows and ends when the grammar is complete.
    pub constraint: Option<Grammar>,
}

impl Request {
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Request {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Request {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            prompt,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            max_tokens,
            n: 1,
            logprobs: None,
            ignore_eos: false,
            constraint: None,
        }
    }
}

/// What a request's receiver gets, in order: `Token`s of every choice interleaved, then one
/// `Done` per choice — or a single `Error`, after which nothing follows.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(TokenEvent),
    Done(DoneEvent),
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub choice: usize,
    pub token: u32,
    /// Text that became final with this token: never half a UTF-8 character, never part of a
    /// stop string (possibly empty while text is held back).
    pub text: String,
    /// Present when the request asked for logprobs.
    pub logprob: Option<TokenLogprob>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Natural log of the token's probability.
    pub logprob: f32,
    /// The most likely tokens, best first, with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DoneEvent {
    pub choice: usize,
    pub finish_reason: FinishReason,
    /// Text released at the end (it was held back because it could have begun a stop string,
    /// or was an unfinished character); usually empty. Token texts + this = the choice's text.
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// Why a request was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is overloaded: {waiting} requests are already waiting; retry later")]
    Overloaded { waiting: usize },
    #[error(
        "this request needs {prompt} prompt tokens + {max_tokens} max_tokens = {} tokens, \
         but the context holds {ctx}; shorten the prompt or lower max_tokens",
        prompt + max_tokens
    )]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        ctx: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the engine has stopped")]
    Closed,
}

enum Command {
    Submit(Box<Request>, channel::EventSender),
    Cancel(RequestId),
    Shutdown,
}

/// State shared by the handles and the engine thread.
struct Shared {
    config: EngineConfig,
    /// Blocks of the paged KV cache, and positions per block.
    kv_blocks: usize,
    block_size: usize,
    vocab: usize,
    /// Turns ids into text on the receivers' side.
    tokenizer: Arc<Tokenizer>,
    /// Requests submitted but not yet running (in the command channel or the waiting queue).
    waiting: AtomicUsize,
    metrics: Mutex<metrics::Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The caller's side of the engine. Cheap to clone; every clone talks to the same thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// Starts the engine thread with `model`. `tokenizer` turns ids into text and says which
    /// tokens end a sequence.
    pub fn start<B: Backend + 'static>(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<EngineHandle> {
        Self::start_with_kv(model, tokenizer, config, KvBudget::Default)
    }

    /// [`EngineHandle::start`] with a paged KV cache of `kv` memory.
    pub fn start_with_kv<B: Backend + 'static>(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        kv: KvBudget,
    ) -> Result<EngineHandle> {
        if config.max_batch == 0 || config.ctx == 0 || config.max_step_tokens < config.max_batch {
            return Err(EngineError::BadRequest(format!(
                "max_batch and ctx must be ≥ 1 and max_step_tokens ≥ max_batch (got {}, {}, {})",
                config.max_batch, config.ctx, config.max_step_tokens
            )));
        }
        // One forward takes a whole step: the model's batch (its workspace, grown on
        // demand) must hold it.
        let mut model = model;
        model.max_batch = model.max_batch.max(config.max_step_tokens);
        let bs = KV_BLOCK_SIZE;
        let pool = match kv {
            KvBudget::Default => {
                PagedKv::with_capacity_tokens(&model, config.max_batch * config.ctx, bs)
            }
            KvBudget::Tokens(t) => PagedKv::with_capacity_tokens(&model, t, bs),
            KvBudget::Bytes(b) => PagedKv::with_memory_bytes(&model, b, bs),
        }
        .map_err(|e| {
            EngineError::BadRequest(format!("cannot allocate the KV cache ({kv:?}): {e}"))
        })?;
        let kv_stats = KvStats {
            block_size: bs,
            blocks_total: pool.n_blocks(),
            blocks_used: 0,
            blocks_free: pool.n_blocks(),
            blocks_cached: 0,
            peak_blocks_used: 0,
            bytes_per_block: pool.bytes_per_block(),
            preemptions: 0,
        };
        let shared = Arc::new(Shared {
            kv_blocks: pool.n_blocks(),
            block_size: bs,
            vocab: model.config.vocab_size,
            tokenizer: tokenizer.clone(),
            waiting: AtomicUsize::new(0),
            metrics: Mutex::new(metrics::Metrics::new(kv_stats)),
            thread: Mutex::new(None),
            config,
        });
        let (tx, rx) = mpsc::channel();
        let worker = engine::Worker::new(pool, &tokenizer, shared.clone(), rx);
        let thread = std::thread::Builder::new()
            .name("plumb-engine".into())
            .spawn(move || worker.run(model))
            .map_err(|e| EngineError::BadRequest(format!("cannot start the engine thread: {e}")))?;
        *lock(&shared.thread) = Some(thread);
        Ok(EngineHandle { tx, shared })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Queues `req`; its events arrive on the returned receiver. Dropping the receiver cancels
    /// the request.
    pub fn submit(&self, req: Request) -> std::result::Result<EventReceiver, SubmitError> {
        let outcome = self.check_and_send(req);
        if let Err(e) = &outcome {
            lock(&self.shared.metrics).rejected(e);
        }
        outcome
    }

    fn check_and_send(&self, req: Request) -> std::result::Result<EventReceiver, SubmitError> {
        self.validate(&req)?;
        let limit = self.shared.config.max_queue;
        self.shared
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < limit).then_some(w + 1)
            })
            .map_err(|waiting| SubmitError::Overloaded { waiting })?;
        let (etx, erx) = channel::channel(channel::TextSpec {
            tok: self.shared.tokenizer.clone(),
            stop: req.stop.clone(),
            n: req.n,
            prompt_tokens: req.prompt.len(),
        });
        if self.tx.send(Command::Submit(Box::new(req), etx)).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Closed);
        }
        Ok(erx)
    }

    fn validate(&self, req: &Request) -> std::result::Result<(), SubmitError> {
        let cfg = &self.shared.config;
        let invalid = |m: String| Err(SubmitError::Invalid(m));
        if req.prompt.is_empty() {
            return invalid("the prompt is empty".into());
        }
        if let Some(&id) = req
            .prompt
            .iter()
            .find(|&&t| t as usize >= self.shared.vocab)
        {
            return invalid(format!(
                "prompt token id {id} is out of range (the vocabulary has {} tokens)",
                self.shared.vocab
            ));
        }
        if req.max_tokens == 0 {
            return invalid("max_tokens must be ≥ 1".into());
        }
        if req.n == 0 || req.n > cfg.max_batch {
            return invalid(format!(
                "n must be between 1 and {} (the batch size), got {}",
                cfg.max_batch, req.n
            ));
        }
        if let Some(k) = req.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return invalid(format!(
                "at most {MAX_TOP_LOGPROBS} top logprobs can be returned, got {k}"
            ));
        }
        req.sampling.validate().map_err(SubmitError::Invalid)?;
        if req.ignore_eos && req.constraint.is_some() {
            return invalid("ignore_eos cannot be combined with a constrained output".into());
        }
        let too_long = |ctx| SubmitError::TooLong {
            prompt: req.prompt.len(),
            max_tokens: req.max_tokens,
            ctx,
        };
        if req.prompt.len().saturating_add(req.max_tokens) > cfg.ctx {
            return Err(too_long(cfg.ctx));
        }
        // Blocks the request may hold at once: its whole sequence alone, or with n choices
        // the shared prompt and per choice its generated tokens plus a copied partial block.
        let bs = self.shared.block_size;
        let blocks = if req.n == 1 {
            (req.prompt.len() + req.max_tokens).div_ceil(bs)
        } else {
            req.prompt.len().div_ceil(bs) + req.n * (req.max_tokens.div_ceil(bs) + 1)
        };
        if blocks > self.shared.kv_blocks {
            return Err(too_long(self.shared.kv_blocks * bs / req.n));
        }
        Ok(())
    }

    /// Stops request `id` (waiting or running) and frees its sequences; its receiver gets a
    /// `Done` with [`FinishReason::Cancelled`] for each unfinished choice. Unknown ids are
    /// ignored.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.tx.send(Command::Cancel(id));
    }

    /// Counters, gauges and histograms as of the last engine step.
    pub fn metrics(&self) -> MetricsSnapshot {
        lock(&self.shared.metrics).snapshot()
    }

    /// The paged KV cache as of the last engine step.
    pub fn kv_stats(&self) -> KvStats {
        lock(&self.shared.metrics).kv.clone()
    }

    /// Cancels everything and waits for the engine thread to end.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
        let thread = lock(&self.shared.thread).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Locks `m`, taking the data even if a thread panicked while holding it (the engine's
/// shared state stays consistent between its own statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
