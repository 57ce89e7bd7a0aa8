//! The engine thread: commands in, the scheduler, one step at a time.
//!
//! A step: take every command that arrived, drop requests whose receiver is gone, admit
//! waiting requests while slots are free (FIFO; a request with `n` choices needs `n`), then
//! advance every running request: prefilling ones by a chunk of their prompt (at most
//! `prefill_chunk` prompt tokens per step over all of them), decoding ones by one token of
//! each choice (`paging.rs`: one batched forward over the paged KV cache, preempting the
//! youngest request when blocks run out).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use plumb_model::{BlockTable, Model, PagedError, PagedItem, PagedKv};
use plumb_ops::Backend;
use plumb_tokenizer::Tokenizer;

use super::metrics::RequestStatus;
use super::sequence::{Choice, StepResult};
use super::{lock, Command, DoneEvent, Event, EventSender, Request, RequestId, Shared};
use crate::error::Result;
use crate::generate::FinishReason;

/// Threads that sample a step's choices (Engine::pick_all).
const MAX_SAMPLING_THREADS: usize = 8;

pub(super) struct Pending {
    pub req: Box<Request>,
    pub tx: EventSender,
    pub submitted: Instant,
    /// Set when the request ran before and was preempted.
    pub resume: Option<Resume>,
}

/// What a preempted request keeps: its choices (without KV) once its prompt was in.
pub(super) struct Resume {
    pub choices: Option<Vec<Choice>>,
    pub first_token_sent: bool,
}

pub(super) enum Phase {
    /// The prompt goes in, `done` tokens so far, into one sequence. `resume`: the choices of
    /// a preempted request, which catch up on their generated tokens once the prompt is in.
    Prefill {
        table: BlockTable,
        done: usize,
        resume: Option<Vec<Choice>>,
    },
    /// The unfinished choices.
    Decode { choices: Vec<Choice> },
}

pub(super) struct Active {
    pub req: Box<Request>,
    pub tx: EventSender,
    pub submitted: Instant,
    pub first_token_sent: bool,
    pub phase: Phase,
}

impl Active {
    fn sequences(&self) -> usize {
        match &self.phase {
            Phase::Prefill { .. } => 1,
            Phase::Decode { choices } => choices.len(),
        }
    }

    /// Gives every block back to `kv` (the tables are left empty).
    pub(super) fn release<B: Backend>(&mut self, kv: &mut PagedKv<B>) {
        match &mut self.phase {
            Phase::Prefill { table, resume, .. } => {
                kv.free(std::mem::take(table));
                for c in resume.iter_mut().flatten() {
                    kv.free(std::mem::take(&mut c.table));
                }
            }
            Phase::Decode { choices } => {
                for c in choices {
                    kv.free(std::mem::take(&mut c.table));
                }
            }
        }
    }

    /// Sends `Done(Cancelled)` for every choice still open.
    fn cancel(self) {
        let open: Vec<(usize, usize)> = match &self.phase {
            Phase::Prefill {
                resume: Some(choices),
                ..
            }
            | Phase::Decode { choices } => choices.iter().map(|c| (c.index, c.generated)).collect(),
            Phase::Prefill { resume: None, .. } => (0..self.req.n).map(|i| (i, 0)).collect(),
        };
        for (choice, completion_tokens) in open {
            self.tx.send(Event::Done(DoneEvent {
                choice,
                finish_reason: FinishReason::Cancelled,
                text: String::new(),
                prompt_tokens: self.req.prompt.len(),
                completion_tokens,
            }));
        }
    }
}

/// Latencies and counts gathered during a step, published under one lock.
#[derive(Default)]
pub(super) struct StepStats {
    ttft: Vec<f64>,
    itl: Vec<f64>,
    generated: u64,
    pub ended: Vec<RequestStatus>,
}

pub(crate) struct Worker<B: Backend> {
    pub(super) model: Model<B>,
    /// Every sequence's keys and values.
    pub(super) kv: PagedKv<B>,
    /// Requests preempted so far.
    pub(super) preemptions: u64,
    tok: Arc<Tokenizer>,
    stop_tokens: Vec<u32>,
    pub(super) shared: Arc<Shared>,
    rx: Receiver<Command>,
    /// Every handle is gone: finish what runs, then end.
    disconnected: bool,
    pub(super) waiting: VecDeque<Pending>,
    /// In admission order: the last is the youngest, the first to be preempted.
    pub(super) running: Vec<Active>,
}

impl<B: Backend> Worker<B> {
    pub(crate) fn new(
        model: Model<B>,
        kv: PagedKv<B>,
        tok: Arc<Tokenizer>,
        shared: Arc<Shared>,
        rx: Receiver<Command>,
    ) -> Self {
        Worker {
            stop_tokens: tok.stop_tokens().to_vec(),
            model,
            kv,
            preemptions: 0,
            tok,
            shared,
            rx,
            disconnected: false,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) {
        while self.take_commands() {
            let mut stats = StepStats::default();
            self.drop_abandoned(&mut stats);
            self.admit(&mut stats);
            let busy = !self.running.is_empty();
            if busy {
                self.step(&mut stats);
            }
            self.publish(stats, busy);
            if self.disconnected && self.running.is_empty() && self.waiting.is_empty() {
                break;
            }
        }
        let mut stats = StepStats::default();
        for p in std::mem::take(&mut self.waiting) {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            cancel_pending(p);
            stats.ended.push(RequestStatus::Cancelled);
        }
        for mut a in std::mem::take(&mut self.running) {
            a.release(&mut self.kv);
            a.cancel();
            stats.ended.push(RequestStatus::Cancelled);
        }
        self.publish(stats, false);
    }

    /// Applies the commands that arrived, waiting for one when there is nothing to do.
    /// False on shutdown.
    fn take_commands(&mut self) -> bool {
        let idle = self.running.is_empty() && self.waiting.is_empty();
        if idle && !self.disconnected {
            match self.rx.recv() {
                Ok(cmd) => {
                    if !self.apply(cmd) {
                        return false;
                    }
                }
                Err(_) => self.disconnected = true,
            }
        }
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    if !self.apply(cmd) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    return true;
                }
            }
        }
    }

    fn apply(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(req, tx) => self.waiting.push_back(Pending {
                req,
                tx,
                submitted: Instant::now(),
                resume: None,
            }),
            Command::Cancel(id) => self.cancel(id),
            Command::Shutdown => return false,
        }
        true
    }

    fn cancel(&mut self, id: RequestId) {
        let ended = if let Some(i) = self.waiting.iter().position(|p| p.req.id == id) {
            if let Some(p) = self.waiting.remove(i) {
                self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
                cancel_pending(p);
            }
            true
        } else if let Some(i) = self.running.iter().position(|a| a.req.id == id) {
            let mut a = self.running.remove(i);
            a.release(&mut self.kv);
            a.cancel();
            true
        } else {
            false
        };
        if ended {
            lock(&self.shared.metrics).count(RequestStatus::Cancelled);
        }
    }

    /// Frees the requests whose receiver was dropped.
    fn drop_abandoned(&mut self, stats: &mut StepStats) {
        let before = self.waiting.len();
        self.waiting.retain(|p| !p.tx.is_closed());
        let gone = before - self.waiting.len();
        self.shared.waiting.fetch_sub(gone, Ordering::AcqRel);
        let mut gone = gone;
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].tx.is_closed() {
                self.running.remove(i).release(&mut self.kv);
                gone += 1;
            } else {
                i += 1;
            }
        }
        stats
            .ended
            .extend((0..gone).map(|_| RequestStatus::Cancelled));
    }

    /// Moves waiting requests to running while their choices fit in the batch and the KV
    /// cache has free blocks for their prompts (FIFO: the first that does not fit waits).
    fn admit(&mut self, _stats: &mut StepStats) {
        let max = self.shared.config.max_batch;
        let mut used: usize = self.running.iter().map(|a| a.req.n).sum();
        let mut free = self.kv.free_blocks();
        while let Some(p) = self.waiting.front() {
            let need = self.kv.blocks_for(p.req.prompt.len());
            if used + p.req.n > max || need > free {
                break;
            }
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            used += p.req.n;
            free -= need;
            if p.resume.is_none() {
                lock(&self.shared.metrics).prompt_tokens += p.req.prompt.len() as u64;
            }
            let (choices, first_token_sent) = match p.resume {
                Some(r) => (r.choices, r.first_token_sent),
                None => (None, false),
            };
            self.running.push(Active {
                req: p.req,
                tx: p.tx,
                submitted: p.submitted,
                first_token_sent,
                phase: Phase::Prefill {
                    table: BlockTable::default(),
                    done: 0,
                    resume: choices,
                },
            });
        }
    }

    /// Samples the next token of every decoding choice at once, spread over threads: a
    /// large vocabulary costs ~1 ms per token on the host, which would otherwise add up
    /// over a batch of sequences one after the other.
    fn pick_all(&mut self) {
        let mut work: Vec<(&mut Choice, &Request)> = Vec::new();
        for a in self.running.iter_mut() {
            if let Phase::Decode { choices } = &mut a.phase {
                for c in choices.iter_mut().filter(|c| c.behind() == 0) {
                    work.push((c, &a.req));
                }
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_SAMPLING_THREADS);
        if work.len() < 4 || threads < 2 {
            return; // each choice samples in its own step
        }
        let per = work.len().div_ceil(threads);
        std::thread::scope(|s| {
            for chunk in work.chunks_mut(per) {
                s.spawn(move || {
                    for (c, req) in chunk.iter_mut() {
                        // A panic leaves the choice unpicked; its step samples again and
                        // reports the failure for that request alone.
                        let _ = catch_unwind(AssertUnwindSafe(|| c.pick(req)));
                    }
                });
            }
        });
    }

    /// Advances every running request once.
    fn step(&mut self, stats: &mut StepStats) {
        self.pick_all();
        let mut budget = self.shared.config.prefill_chunk;
        let mut i = 0;
        while i < self.running.len() {
            // Blocks for this step's prompt chunk, preempting younger requests if need be.
            let a = &mut self.running[i];
            if let Phase::Prefill { table, done, .. } = &mut a.phase {
                let take = budget.min(a.req.prompt.len() - *done);
                match self.kv.reserve(&self.model.backend, table, take) {
                    Ok(()) => {}
                    Err(PagedError::OutOfBlocks { .. }) => {
                        self.make_room(i, stats);
                        continue;
                    }
                    Err(e) => {
                        self.fail(i, format!("generation failed: {e}"), stats);
                        continue;
                    }
                }
            }
            let (model, kv, tok, stops) =
                (&self.model, &mut self.kv, &*self.tok, &self.stop_tokens[..]);
            let a = &mut self.running[i];
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                advance(model, kv, tok, stops, a, &mut budget, stats)
            }));
            let ended = match outcome {
                Ok(Ok(false)) => None,
                Ok(Ok(true)) => Some(RequestStatus::Completed),
                Ok(Err(e)) => {
                    a.tx.send(Event::Error(format!("generation failed: {e}")));
                    Some(RequestStatus::Failed)
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("unknown panic");
                    a.tx.send(Event::Error(format!("internal error: {what}")));
                    Some(RequestStatus::Failed)
                }
            };
            match ended {
                Some(status) => {
                    self.running.remove(i).release(&mut self.kv);
                    stats.ended.push(status);
                }
                None => i += 1,
            }
        }
        self.decode_batch(stats);
    }

    fn publish(&self, stats: StepStats, stepped: bool) {
        let sequences = self.running.iter().map(Active::sequences).sum();
        let mut m = lock(&self.shared.metrics);
        for s in stats.ended {
            m.count(s);
        }
        for t in stats.ttft {
            m.ttft.observe(t);
        }
        for t in stats.itl {
            m.itl.observe(t);
        }
        m.generated_tokens += stats.generated;
        m.running_sequences = sequences;
        m.waiting_requests = self.shared.waiting.load(Ordering::Acquire);
        m.kv_bytes_used = (self.kv.used_blocks() * self.kv.bytes_per_block()) as u64;
        m.kv.blocks_used = self.kv.used_blocks();
        m.kv.blocks_free = self.kv.free_blocks();
        m.kv.peak_blocks_used = m.kv.peak_blocks_used.max(self.kv.used_blocks());
        m.kv.preemptions = self.preemptions;
        if stepped {
            m.steps += 1;
        }
    }
}

fn cancel_pending(p: Pending) {
    let open: Vec<(usize, usize)> = match p.resume.and_then(|r| r.choices) {
        Some(choices) => choices.iter().map(|c| (c.index, c.generated)).collect(),
        None => (0..p.req.n).map(|i| (i, 0)).collect(),
    };
    for (choice, completion_tokens) in open {
        p.tx.send(Event::Done(DoneEvent {
            choice,
            finish_reason: FinishReason::Cancelled,
            text: String::new(),
            prompt_tokens: p.req.prompt.len(),
            completion_tokens,
        }));
    }
}

/// One step of request `a`; true when all its choices have finished. A prompt chunk's blocks
/// were reserved by the caller.
fn advance<B: Backend>(
    model: &Model<B>,
    kv: &mut PagedKv<B>,
    tok: &Tokenizer,
    stop_tokens: &[u32],
    a: &mut Active,
    budget: &mut usize,
    stats: &mut StepStats,
) -> Result<bool> {
    if !prefill(model, kv, a, budget)? {
        return Ok(false);
    }
    let Phase::Decode { choices } = &mut a.phase else {
        return Ok(false);
    };
    let mut i = 0;
    while i < choices.len() {
        let c = &mut choices[i];
        if c.behind() > 0 {
            // Still catching up after a preemption.
            i += 1;
            continue;
        }
        let (finish, tail) = match c.step(tok, stop_tokens, &a.req)? {
            StepResult::Eos(tail) => (Some(FinishReason::Stop), tail),
            StepResult::Token(step) => {
                let now = Instant::now();
                if !a.first_token_sent {
                    a.first_token_sent = true;
                    stats.ttft.push((now - a.submitted).as_secs_f64());
                }
                if let Some(prev) = c.last_token_at {
                    stats.itl.push((now - prev).as_secs_f64());
                }
                c.last_token_at = Some(now);
                stats.generated += 1;
                a.tx.send(Event::Token(step.token));
                match step.finish {
                    Some((reason, tail)) => (Some(reason), tail),
                    None => (None, String::new()),
                }
            }
        };
        match finish {
            Some(finish_reason) => {
                a.tx.send(Event::Done(DoneEvent {
                    choice: c.index,
                    finish_reason,
                    text: tail,
                    prompt_tokens: a.req.prompt.len(),
                    completion_tokens: c.generated,
                }));
                // Frees the choice's KV now.
                kv.free(choices.remove(i).table);
            }
            None => i += 1,
        }
    }
    Ok(choices.is_empty())
}

/// Runs the next chunk of `a`'s prompt within `budget`; once the whole prompt is in, gives
/// the request its choices. True when the request decodes (now or already).
fn prefill<B: Backend>(
    model: &Model<B>,
    kv: &mut PagedKv<B>,
    a: &mut Active,
    budget: &mut usize,
) -> Result<bool> {
    let Phase::Prefill { table, done, .. } = &mut a.phase else {
        return Ok(true);
    };
    let prompt = &a.req.prompt;
    let take = (*budget).min(prompt.len() - *done);
    if take == 0 {
        return Ok(false);
    }
    *budget -= take;
    let mut items = [PagedItem {
        tokens: &prompt[*done..*done + take],
        table,
    }];
    let logits = model
        .forward_paged(kv, &mut items)?
        .pop()
        .unwrap_or_default();
    *done += take;
    if *done < prompt.len() {
        return Ok(false);
    }
    let placeholder = Phase::Decode { choices: vec![] };
    let Phase::Prefill { table, resume, .. } = std::mem::replace(&mut a.phase, placeholder) else {
        return Ok(false);
    };
    // Choices share the prompt's blocks: the first takes the table, the others fork it.
    let mut tables: Vec<BlockTable> = Vec::new();
    let wanted = resume.as_ref().map_or(a.req.n, Vec::len);
    for _ in 1..wanted {
        tables.push(kv.fork(&table));
    }
    tables.insert(0, table);
    let choices = match resume {
        // A preempted request: its choices catch up on their generated tokens in the
        // step's batched forward before they sample again.
        Some(mut choices) => {
            for (c, t) in choices.iter_mut().zip(tables) {
                c.table = t;
            }
            choices
        }
        // The first tokens are sampled by `advance`, in this same step.
        None => tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| Choice::new(i, t, logits.clone(), &a.req))
            .collect(),
    };
    a.phase = Phase::Decode { choices };
    Ok(true)
}
