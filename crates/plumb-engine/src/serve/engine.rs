//! The engine thread: commands in, the scheduler, one step at a time.
//!
//! Between steps: take every command that arrived, drop requests whose receiver is gone and
//! choices their receiver ended (stop strings), admit waiting requests while slots are free
//! (FIFO; a request with `n` choices needs `n`; each prompt first takes what the prefix
//! cache holds of it). Then one step (`step.rs`): a single forward over every running
//! sequence, and a token for each that samples.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use plumb_model::{BlockTable, Model, PagedKv};
use plumb_ops::Backend;
use plumb_tokenizer::Tokenizer;

use super::channel::{EventSender, Raw};
use super::metrics::{RequestStatus, StepTimes};
use super::sequence::Choice;
use super::step::StepScratch;
use super::{lock, Command, Request, RequestId, Shared};
use crate::generate::FinishReason;

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
    /// `fresh`: no chunk has run yet, so the prefix cache may still give more of the prompt.
    Prefill {
        table: BlockTable,
        done: usize,
        resume: Option<Vec<Choice>>,
        fresh: bool,
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
    pub(super) fn sequences(&self) -> usize {
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

    /// The choices not yet ended: all of them before the prompt is in.
    fn open_choices(&self) -> Vec<usize> {
        match &self.phase {
            Phase::Prefill {
                resume: Some(choices),
                ..
            }
            | Phase::Decode { choices } => choices.iter().map(|c| c.index).collect(),
            Phase::Prefill { resume: None, .. } => (0..self.req.n).collect(),
        }
    }

    /// Frees the choices whose receiver ended them; true when none is left.
    fn drop_choices<B: Backend>(&mut self, ended: &[usize], kv: &mut PagedKv<B>) -> bool {
        let choices = match &mut self.phase {
            Phase::Prefill {
                resume: Some(choices),
                ..
            }
            | Phase::Decode { choices } => choices,
            Phase::Prefill { resume: None, .. } => return false,
        };
        for c in choices.iter_mut().filter(|c| ended.contains(&c.index)) {
            kv.free(std::mem::take(&mut c.table));
        }
        choices.retain(|c| !ended.contains(&c.index));
        choices.is_empty()
    }
}

/// Sends `Done(Cancelled)` for each of `choices`.
fn send_cancelled(tx: &EventSender, choices: Vec<usize>) {
    for choice in choices {
        tx.send(Raw::Done {
            choice,
            finish: FinishReason::Cancelled,
        });
    }
}

fn cancel_pending(p: Pending) {
    let open = match p.resume.and_then(|r| r.choices) {
        Some(choices) => choices.iter().map(|c| c.index).collect(),
        None => (0..p.req.n).collect(),
    };
    send_cancelled(&p.tx, open);
}

/// Latencies and counts gathered during a step, published under one lock.
#[derive(Default)]
pub(super) struct StepStats {
    pub ttft: Vec<f64>,
    pub itl: Vec<f64>,
    pub generated: u64,
    pub ended: Vec<RequestStatus>,
    /// The step's forward, sampling and other host time, when it ran a forward.
    pub times: Option<StepTimes>,
}

pub(crate) struct Worker<B: Backend> {
    /// Every sequence's keys and values.
    pub(super) kv: PagedKv<B>,
    /// Requests preempted so far.
    pub(super) preemptions: u64,
    pub(super) stop_tokens: Vec<u32>,
    pub(super) shared: Arc<Shared>,
    rx: Receiver<Command>,
    /// Every handle is gone: finish what runs, then end.
    disconnected: bool,
    /// A shutdown command arrived: cancel everything and end.
    stop: bool,
    /// Cancels that arrived while a step's forward ran, applied when the step is over.
    deferred: Vec<RequestId>,
    pub(super) waiting: VecDeque<Pending>,
    /// In admission order: the last is the youngest, the first to be preempted.
    pub(super) running: Vec<Active>,
    /// The step's vectors, kept from step to step.
    pub(super) scratch: StepScratch,
    /// The step's figures, kept from step to step for their vectors.
    stats: StepStats,
}

impl<B: Backend> Worker<B> {
    pub(crate) fn new(
        kv: PagedKv<B>,
        tok: &Tokenizer,
        shared: Arc<Shared>,
        rx: Receiver<Command>,
    ) -> Self {
        Worker {
            kv,
            preemptions: 0,
            stop_tokens: tok.stop_tokens().to_vec(),
            shared,
            rx,
            disconnected: false,
            stop: false,
            deferred: Vec::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            scratch: StepScratch::default(),
            stats: StepStats::default(),
        }
    }

    pub(crate) fn run(mut self, model: Model<B>) {
        loop {
            self.take_commands(false);
            if self.stop {
                break;
            }
            let (t0, mut stats) = (Instant::now(), std::mem::take(&mut self.stats));
            self.poll_streams(&mut stats);
            self.admit();
            let busy = !self.running.is_empty();
            if busy {
                self.step(&model, t0, &mut stats);
            }
            self.publish(&mut stats, busy);
            self.stats = stats;
            let drained = self.running.is_empty() && self.waiting.is_empty();
            if self.stop || (self.disconnected && drained) {
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
            send_cancelled(&a.tx, a.open_choices());
            stats.ended.push(RequestStatus::Cancelled);
        }
        self.publish(&mut stats, false);
    }

    /// Applies the commands that arrived, waiting for one when there is nothing to do.
    /// `in_step`: a step's forward is running, so cancels wait until it is over (the step
    /// refers to the running requests by position).
    pub(super) fn take_commands(&mut self, in_step: bool) {
        let idle = self.running.is_empty() && self.waiting.is_empty();
        if idle && !in_step && !self.disconnected {
            match self.rx.recv() {
                Ok(cmd) => self.apply(cmd, in_step),
                Err(_) => self.disconnected = true,
            }
        }
        while !self.stop {
            match self.rx.try_recv() {
                Ok(cmd) => self.apply(cmd, in_step),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    return;
                }
            }
        }
    }

    fn apply(&mut self, cmd: Command, in_step: bool) {
        match cmd {
            Command::Submit(req, tx) => self.waiting.push_back(Pending {
                req,
                tx,
                submitted: Instant::now(),
                resume: None,
            }),
            Command::Cancel(id) if in_step => self.deferred.push(id),
            Command::Cancel(id) => self.cancel(id),
            Command::Shutdown => self.stop = true,
        }
    }

    /// Applies the cancels that arrived during the step.
    pub(super) fn apply_deferred(&mut self) {
        for id in std::mem::take(&mut self.deferred) {
            self.cancel(id);
        }
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
            send_cancelled(&a.tx, a.open_choices());
            true
        } else {
            false
        };
        if ended {
            lock(&self.shared.metrics).count(RequestStatus::Cancelled);
        }
    }

    /// Frees the requests whose receiver was dropped and the choices their receiver ended.
    fn poll_streams(&mut self, stats: &mut StepStats) {
        let mut ended = std::mem::take(&mut self.scratch.ended);
        let before = self.waiting.len();
        self.waiting.retain(|p| p.tx.poll(&mut ended));
        let gone = before - self.waiting.len();
        self.shared.waiting.fetch_sub(gone, Ordering::AcqRel);
        stats
            .ended
            .extend((0..gone).map(|_| RequestStatus::Cancelled));
        let mut i = 0;
        while i < self.running.len() {
            ended.clear();
            let a = &mut self.running[i];
            let status = if !a.tx.poll(&mut ended) {
                Some(RequestStatus::Cancelled)
            } else if !ended.is_empty() && a.drop_choices(&ended, &mut self.kv) {
                Some(RequestStatus::Completed)
            } else {
                None
            };
            match status {
                Some(s) => {
                    self.running.remove(i).release(&mut self.kv);
                    stats.ended.push(s);
                }
                None => i += 1,
            }
        }
        ended.clear();
        self.scratch.ended = ended;
    }

    /// Moves waiting requests to running while their choices fit in the batch and the KV
    /// cache has blocks for the part of their prompt it does not hold already (FIFO: the
    /// first that does not fit waits). The prompt's last token is always computed: its
    /// logits give the first token.
    pub(super) fn admit(&mut self) {
        let max = self.shared.config.max_batch;
        let mut used: usize = self.running.iter().map(|a| a.req.n).sum();
        while let Some(p) = self.waiting.front() {
            if used + p.req.n > max {
                break;
            }
            let prompt = &p.req.prompt;
            let table = self.kv.lookup_prefix(&prompt[..prompt.len() - 1]);
            let need = self.kv.blocks_for(prompt.len()) - table.blocks.len();
            if need > self.kv.free_blocks() {
                self.kv.free(table);
                break;
            }
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            used += p.req.n;
            if p.resume.is_none() {
                let n = p.req.prompt.len() as u64;
                let mut m = lock(&self.shared.metrics);
                m.prompt_tokens += n;
                m.prefix_cache_queries += n - 1;
                m.prefix_cache_hits += table.len as u64;
                drop(m);
                p.tx.send(Raw::Started { cached: table.len });
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
                    done: table.len,
                    table,
                    resume: choices,
                    fresh: true,
                },
            });
        }
    }

    /// Gives the prompts that have not started more of the prefix cache: the blocks that
    /// requests ahead of them have filled since they were admitted (a burst of requests with
    /// one system prompt computes it once).
    pub(super) fn extend_prefixes(&mut self) {
        for a in &mut self.running {
            let Phase::Prefill {
                table,
                done,
                resume,
                fresh: true,
            } = &mut a.phase
            else {
                continue;
            };
            let (before, prompt) = (table.len, &a.req.prompt);
            self.kv.extend_prefix(table, &prompt[..prompt.len() - 1]);
            if table.len == before {
                continue;
            }
            *done = table.len;
            if resume.is_none() {
                lock(&self.shared.metrics).prefix_cache_hits += (table.len - before) as u64;
                a.tx.send(Raw::Started { cached: table.len });
            }
        }
    }

    /// Publishes the step's figures and empties `stats` (its vectors are kept for the next).
    fn publish(&self, stats: &mut StepStats, stepped: bool) {
        let sequences = self.running.iter().map(Active::sequences).sum();
        let mut m = lock(&self.shared.metrics);
        for s in stats.ended.drain(..) {
            m.count(s);
        }
        for t in stats.ttft.drain(..) {
            m.ttft.observe(t);
        }
        for t in stats.itl.drain(..) {
            m.itl.observe(t);
        }
        if let Some(t) = stats.times.take() {
            let acc = &mut m.step_times;
            acc.steps += t.steps;
            acc.launch += t.launch;
            acc.wait += t.wait;
            acc.sample += t.sample;
            acc.host += t.host;
        }
        m.generated_tokens += std::mem::take(&mut stats.generated);
        m.running_sequences = sequences;
        m.waiting_requests = self.shared.waiting.load(Ordering::Acquire);
        m.kv_bytes_used = (self.kv.used_blocks() * self.kv.bytes_per_block()) as u64;
        m.kv.blocks_used = self.kv.used_blocks();
        m.kv.blocks_free = self.kv.free_blocks();
        m.kv.blocks_cached = self.kv.cached_blocks();
        m.kv.peak_blocks_used = m.kv.peak_blocks_used.max(self.kv.used_blocks());
        m.kv.preemptions = self.preemptions;
        if stepped {
            m.steps += 1;
        }
    }
}
