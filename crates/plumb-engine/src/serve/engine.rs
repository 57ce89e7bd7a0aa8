//! The engine thread: commands in, the scheduler, one step at a time.
//!
//! A step: take every command that arrived, drop requests whose receiver is gone, admit
//! waiting requests while slots are free (FIFO; a request with `n` choices needs `n`), then
//! advance every running request: prefilling ones by a chunk of their prompt (at most
//! `prefill_chunk` prompt tokens per step over all of them), decoding ones by one token of
//! each choice.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use plumb_model::{BatchItem, Model};
use plumb_ops::Backend;
use plumb_tokenizer::Tokenizer;

use super::metrics::RequestStatus;
use super::sequence::{Choice, SeqKv, StepResult};
use super::{lock, Command, DoneEvent, Event, EventSender, Request, RequestId, Shared};
use crate::error::Result;
use crate::generate::FinishReason;

struct Pending {
    req: Box<Request>,
    tx: EventSender,
    submitted: Instant,
}

enum Phase<B: Backend> {
    /// The prompt goes in, `done` tokens so far, into one sequence.
    Prefill { kv: SeqKv<B>, done: usize },
    /// The unfinished choices.
    Decode { choices: Vec<Choice<B>> },
}

struct Active<B: Backend> {
    req: Box<Request>,
    tx: EventSender,
    submitted: Instant,
    first_token_sent: bool,
    phase: Phase<B>,
}

impl<B: Backend> Active<B> {
    fn sequences(&self) -> usize {
        match &self.phase {
            Phase::Prefill { .. } => 1,
            Phase::Decode { choices } => choices.len(),
        }
    }

    fn kv_bytes(&self, model: &Model<B>) -> usize {
        match &self.phase {
            Phase::Prefill { kv, .. } => kv.bytes(&model.config),
            Phase::Decode { choices } => choices.iter().map(|c| c.kv.bytes(&model.config)).sum(),
        }
    }

    /// Sends `Done(Cancelled)` for every choice still open.
    fn cancel(self) {
        let open: Vec<(usize, usize)> = match &self.phase {
            Phase::Prefill { .. } => (0..self.req.n).map(|i| (i, 0)).collect(),
            Phase::Decode { choices } => choices.iter().map(|c| (c.index, c.generated)).collect(),
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
struct StepStats {
    ttft: Vec<f64>,
    itl: Vec<f64>,
    generated: u64,
    ended: Vec<RequestStatus>,
}

pub(crate) struct Worker<B: Backend> {
    model: Model<B>,
    tok: Arc<Tokenizer>,
    stop_tokens: Vec<u32>,
    shared: Arc<Shared>,
    rx: Receiver<Command>,
    /// Every handle is gone: finish what runs, then end.
    disconnected: bool,
    waiting: VecDeque<Pending>,
    running: Vec<Active<B>>,
}

impl<B: Backend> Worker<B> {
    pub(crate) fn new(
        model: Model<B>,
        tok: Arc<Tokenizer>,
        shared: Arc<Shared>,
        rx: Receiver<Command>,
    ) -> Self {
        Worker {
            stop_tokens: tok.stop_tokens().to_vec(),
            model,
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
        for a in std::mem::take(&mut self.running) {
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
            self.running.remove(i).cancel();
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
        let before_running = self.running.len();
        self.running.retain(|a| !a.tx.is_closed());
        let gone = gone + before_running - self.running.len();
        stats
            .ended
            .extend((0..gone).map(|_| RequestStatus::Cancelled));
    }

    /// Moves waiting requests to running while their choices fit in the batch.
    fn admit(&mut self, stats: &mut StepStats) {
        let max = self.shared.config.max_batch;
        let mut used: usize = self.running.iter().map(|a| a.req.n).sum();
        while let Some(p) = self.waiting.front() {
            if used + p.req.n > max {
                break;
            }
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            let capacity = p.req.prompt.len() + p.req.max_tokens;
            match SeqKv::new(&self.model, capacity) {
                Ok(kv) => {
                    used += p.req.n;
                    lock(&self.shared.metrics).prompt_tokens += p.req.prompt.len() as u64;
                    self.running.push(Active {
                        req: p.req,
                        tx: p.tx,
                        submitted: p.submitted,
                        first_token_sent: false,
                        phase: Phase::Prefill { kv, done: 0 },
                    });
                }
                Err(e) => {
                    p.tx.send(Event::Error(format!(
                        "cannot allocate the KV cache for {capacity} positions: {e}"
                    )));
                    stats.ended.push(RequestStatus::Failed);
                }
            }
        }
    }

    /// Advances every running request once.
    fn step(&mut self, stats: &mut StepStats) {
        let mut budget = self.shared.config.prefill_chunk;
        let (model, tok, stops) = (&self.model, &*self.tok, &self.stop_tokens[..]);
        let mut i = 0;
        while i < self.running.len() {
            let a = &mut self.running[i];
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                advance(model, tok, stops, a, &mut budget, stats)
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
                    self.running.remove(i);
                    stats.ended.push(status);
                }
                None => i += 1,
            }
        }
        self.decode_batch(stats);
    }

    /// Runs the token every decoding choice sampled this step through the model as one
    /// batch (in slices of at most `max_batch` tokens), and hands each choice its logits.
    /// A failed batch fails the requests in it.
    fn decode_batch(&mut self, stats: &mut StepStats) {
        let limit = self.model.max_batch.max(1);
        loop {
            let model = &self.model;
            let mut batch: Vec<(usize, &mut Choice<B>)> = self
                .running
                .iter_mut()
                .enumerate()
                .flat_map(|(ri, a)| match &mut a.phase {
                    Phase::Decode { choices } => choices.iter_mut().map(|c| (ri, c)).collect(),
                    Phase::Prefill { .. } => Vec::new(),
                })
                .filter(|(_, c)| c.pending.is_some())
                .take(limit)
                .collect();
            if batch.is_empty() {
                return;
            }
            let ids: Vec<u32> = batch
                .iter_mut()
                .filter_map(|(_, c)| c.pending.take())
                .collect();
            let owners: Vec<usize> = batch.iter().map(|(ri, _)| *ri).collect();
            let result = {
                let mut items: Vec<BatchItem<'_, B>> = batch
                    .iter_mut()
                    .zip(&ids)
                    .map(|((_, c), id)| BatchItem {
                        tokens: std::slice::from_ref(id),
                        cache: c.kv.cache_mut(),
                    })
                    .collect();
                catch_unwind(AssertUnwindSafe(|| model.forward_batch(&mut items)))
            };
            match result {
                Ok(Ok(logits)) => {
                    for ((_, c), l) in batch.iter_mut().zip(logits) {
                        c.set_logits(l);
                    }
                }
                failure => {
                    let msg = match failure {
                        Ok(Err(e)) => format!("generation failed: {e}"),
                        _ => "internal error in the batched forward".to_string(),
                    };
                    drop(batch);
                    let mut owners = owners;
                    owners.dedup();
                    for &ri in owners.iter().rev() {
                        let a = self.running.remove(ri);
                        a.tx.send(Event::Error(msg.clone()));
                        stats.ended.push(RequestStatus::Failed);
                    }
                }
            }
        }
    }

    fn publish(&self, stats: StepStats, stepped: bool) {
        let sequences = self.running.iter().map(Active::sequences).sum();
        let kv: usize = self.running.iter().map(|a| a.kv_bytes(&self.model)).sum();
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
        m.kv_bytes_used = kv as u64;
        if stepped {
            m.steps += 1;
        }
    }
}

fn cancel_pending(p: Pending) {
    for choice in 0..p.req.n {
        p.tx.send(Event::Done(DoneEvent {
            choice,
            finish_reason: FinishReason::Cancelled,
            text: String::new(),
            prompt_tokens: p.req.prompt.len(),
            completion_tokens: 0,
        }));
    }
}

/// One step of request `a`; true when all its choices have finished.
fn advance<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    stop_tokens: &[u32],
    a: &mut Active<B>,
    budget: &mut usize,
    stats: &mut StepStats,
) -> Result<bool> {
    if let Phase::Prefill { kv, done } = &mut a.phase {
        let prompt = &a.req.prompt;
        let take = (*budget).min(prompt.len() - *done);
        if take == 0 {
            return Ok(false);
        }
        *budget -= take;
        let logits = kv.forward(model, &prompt[*done..*done + take])?;
        *done += take;
        if *done < prompt.len() {
            return Ok(false);
        }
        let mut kvs = Vec::with_capacity(a.req.n);
        for _ in 1..a.req.n {
            kvs.push(kv.fork(model)?);
        }
        // The prompt's own sequence becomes choice 0; the first tokens are sampled below, in
        // this same step.
        let placeholder = Phase::Decode { choices: vec![] };
        if let Phase::Prefill { kv, .. } = std::mem::replace(&mut a.phase, placeholder) {
            kvs.insert(0, kv);
        }
        let choices = kvs
            .into_iter()
            .enumerate()
            .map(|(i, kv)| Choice::new(i, kv, logits.clone(), &a.req))
            .collect();
        a.phase = Phase::Decode { choices };
    }
    let Phase::Decode { choices } = &mut a.phase else {
        return Ok(false);
    };
    let mut i = 0;
    while i < choices.len() {
        let c = &mut choices[i];
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
                choices.remove(i);
            }
            None => i += 1,
        }
    }
    Ok(choices.is_empty())
}
