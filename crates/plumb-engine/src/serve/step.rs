//! One engine step: a single forward over every running sequence, then a token for every
//! row that samples, in the same step.
//!
//! ```text
//! plan      prompts not started take what the prefix cache holds of them by now; rows
//!           under max_step_tokens: each decoding choice's waiting tokens (its last token;
//!           a preempted choice's generated ones), then prompt chunks, oldest first
//! reserve   their blocks (out of blocks: preempt the youngest request, plan again)
//! launch    one forward_paged_launch; logits only for rows that sample
//! overlap   while a queueing backend runs it: new commands, admissions
//! read      the logits, then: prompts that are in become choices (forks share blocks),
//!           every full block is named in the prefix cache
//! sample    sample_rows: the one place tokens are drawn
//! emit      ids to the receivers, end-of-sequence and max_tokens, finished choices freed
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use plumb_model::{Model, PagedError, PagedItem, PagedKv, PagedLogits};
use plumb_ops::Backend;

use super::channel::Raw;
use super::engine::{Active, Phase, StepStats, Worker};
use super::metrics::{RequestStatus, StepTimes};
use super::sample::{sample_rows, SampleRow, Sampled};
use super::sequence::Choice;
use crate::constrain;
use crate::generate::FinishReason;

/// The next `n` tokens of one sequence in the step's batch: of choice `choice` of running
/// request `ri`, or of its prompt (`None`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    ri: usize,
    choice: Option<usize>,
    n: usize,
    /// The row samples: a choice that caught up, or a fresh prompt's last chunk.
    logits: bool,
}

/// The step's vectors, kept from step to step.
#[derive(Default)]
pub(crate) struct StepScratch {
    rows: Vec<Row>,
    flags: Vec<bool>,
    logits: Vec<f32>,
    /// (logits row, request, choice) of every draw, in request and choice order.
    draws: Vec<(usize, usize, usize)>,
    sampled: Vec<Option<Sampled>>,
    /// Requests whose sampler failed this step, and why.
    failed: Vec<usize>,
    sample_error: Option<String>,
    /// Requests whose constraint failed this step (no mask, or no allowed token), and why.
    constraint_failed: Vec<(usize, String)>,
    /// Choices receivers ended (see `Worker::poll_streams`).
    pub(super) ended: Vec<usize>,
}

impl<B: Backend> Worker<B> {
    /// Runs one step; `t0` is when the engine began it (the time since is the step's).
    pub(super) fn step(&mut self, model: &Model<B>, t0: Instant, stats: &mut StepStats) {
        if !self.plan(&model.backend, stats) {
            return;
        }
        let t_launch = Instant::now();
        let launched = self.launch(model, stats);
        let launch = t_launch.elapsed().as_secs_f64();
        // The backend may still be running the forward: take new requests meanwhile.
        self.take_commands(true);
        self.admit();
        let t_read = Instant::now();
        let ran = launched.as_ref().is_some_and(|l| self.wait(l, stats));
        let wait = t_read.elapsed().as_secs_f64();
        let mut sample = 0.0;
        if let (true, Some(l)) = (ran, &launched) {
            self.after_pass();
            let t_sample = Instant::now();
            self.sample(l, model.config.vocab_size);
            sample = t_sample.elapsed().as_secs_f64();
            self.emit(stats);
        }
        drop(launched);
        self.apply_deferred();
        stats.times = Some(StepTimes {
            steps: 1,
            launch,
            wait,
            sample,
            host: (t0.elapsed().as_secs_f64() - launch - wait - sample).max(0.0),
        });
    }

    /// Plans the step's rows and reserves their blocks; false when there is nothing to run.
    fn plan(&mut self, b: &B, stats: &mut StepStats) -> bool {
        loop {
            self.extend_prefixes();
            self.plan_rows();
            if self.scratch.rows.is_empty() {
                return false;
            }
            if self.reserve_rows(b, stats) {
                return true;
            }
            // A request was preempted or failed: plan again.
        }
    }

    /// Every decoding choice's waiting tokens first, then prompt chunks, within the step's
    /// token budget; rows end up in running order.
    fn plan_rows(&mut self) {
        let rows = &mut self.scratch.rows;
        rows.clear();
        let mut budget = self.shared.config.max_step_tokens;
        for (ri, a) in self.running.iter().enumerate() {
            let Phase::Decode { choices } = &a.phase else {
                continue;
            };
            for (ci, c) in choices.iter().enumerate() {
                let behind = c.behind();
                let n = behind.min(budget);
                if n > 0 {
                    let logits = n == behind;
                    rows.push(Row {
                        ri,
                        choice: Some(ci),
                        n,
                        logits,
                    });
                    budget -= n;
                }
            }
        }
        for (ri, a) in self.running.iter().enumerate() {
            let Phase::Prefill { done, resume, .. } = &a.phase else {
                continue;
            };
            let left = a.req.prompt.len() - done;
            let n = left.min(budget);
            if n > 0 {
                // A preempted request's choices sample after catching up, not here.
                let logits = n == left && resume.is_none();
                rows.push(Row {
                    ri,
                    choice: None,
                    n,
                    logits,
                });
                budget -= n;
            }
        }
        rows.sort_unstable_by_key(|r| (r.ri, r.choice));
    }

    /// Reserves the blocks of every planned row; false if a request had to be preempted or
    /// failed on the way (the plan is then stale).
    fn reserve_rows(&mut self, b: &B, stats: &mut StepStats) -> bool {
        for k in 0..self.scratch.rows.len() {
            let r = self.scratch.rows[k];
            let table = match (&mut self.running[r.ri].phase, r.choice) {
                (Phase::Prefill { table, .. }, None) => table,
                (Phase::Decode { choices }, Some(ci)) => match choices.get_mut(ci) {
                    Some(c) => &mut c.table,
                    None => continue,
                },
                _ => continue,
            };
            match self.kv.reserve(b, table, r.n) {
                Ok(()) => {}
                Err(PagedError::OutOfBlocks { .. }) => {
                    self.make_room(r.ri, stats);
                    return false;
                }
                Err(e) => {
                    self.fail(r.ri, format!("generation failed: {e}"), stats);
                    return false;
                }
            }
        }
        true
    }

    /// Queues the step's forward. A failure fails every request in it.
    fn launch<'m>(
        &mut self,
        model: &'m Model<B>,
        stats: &mut StepStats,
    ) -> Option<PagedLogits<'m, B>> {
        let sc = &mut self.scratch;
        sc.flags.clear();
        sc.flags.extend(sc.rows.iter().map(|r| r.logits));
        let result = {
            let mut items: Vec<PagedItem<'_>> = Vec::with_capacity(sc.rows.len());
            let mut rows = sc.rows.iter().peekable();
            for (ri, a) in self.running.iter_mut().enumerate() {
                let Active { req, phase, .. } = a;
                match phase {
                    Phase::Prefill { table, done, .. } => {
                        if let Some(r) = rows.next_if(|r| r.ri == ri) {
                            let tokens = &req.prompt[*done..*done + r.n];
                            items.push(PagedItem { tokens, table });
                        }
                    }
                    Phase::Decode { choices } => {
                        for (ci, c) in choices.iter_mut().enumerate() {
                            if let Some(r) = rows.next_if(|r| r.ri == ri && r.choice == Some(ci)) {
                                let from = c.table.len;
                                let tokens = &c.history[from..from + r.n];
                                items.push(PagedItem {
                                    tokens,
                                    table: &mut c.table,
                                });
                            }
                        }
                    }
                }
            }
            let (kv, flags) = (&mut self.kv, &sc.flags);
            catch_unwind(AssertUnwindSafe(|| {
                model.forward_paged_launch(kv, &mut items, flags)
            }))
        };
        match result {
            Ok(Ok(launched)) => Some(launched),
            Ok(Err(e)) => {
                self.fail_rows(format!("generation failed: {e}"), stats);
                None
            }
            Err(_) => {
                self.fail_rows("internal error in the batched forward".into(), stats);
                None
            }
        }
    }

    /// Waits for the forward; false (the step's requests failed) if it failed.
    fn wait(&mut self, launched: &PagedLogits<'_, B>, stats: &mut StepStats) -> bool {
        let msg = match catch_unwind(AssertUnwindSafe(|| launched.wait())) {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => format!("generation failed: {e}"),
            Err(_) => "internal error reading the batched forward".into(),
        };
        self.fail_rows(msg, stats);
        false
    }

    /// Fails every request with a row in the step.
    fn fail_rows(&mut self, msg: String, stats: &mut StepStats) {
        let mut ris: Vec<usize> = self.scratch.rows.iter().map(|r| r.ri).collect();
        ris.dedup();
        for &ri in ris.iter().rev() {
            self.fail(ri, msg.clone(), stats);
        }
    }

    /// After the pass: prompts that are in become choices, the full blocks written are
    /// named in the prefix cache, and the step's draws are listed.
    fn after_pass(&mut self) {
        let sc = &mut self.scratch;
        sc.draws.clear();
        let mut logits_row = 0;
        for r in &sc.rows {
            let Active { req, phase, .. } = &mut self.running[r.ri];
            match (phase, r.choice) {
                (
                    Phase::Prefill {
                        table, done, fresh, ..
                    },
                    None,
                ) => {
                    *done += r.n;
                    *fresh = false;
                    self.kv.commit_prefix(table, &req.prompt);
                    if *done == req.prompt.len() {
                        into_decode(&mut self.running[r.ri], &mut self.kv);
                    }
                }
                (Phase::Decode { choices }, Some(ci)) => {
                    if let Some(c) = choices.get(ci) {
                        self.kv.commit_prefix(&c.table, &c.history);
                    }
                }
                _ => {}
            }
            if !r.logits {
                continue;
            }
            // A fresh prompt's row feeds each of its choices; a choice's row, that choice.
            if let Phase::Decode { choices } = &self.running[r.ri].phase {
                match r.choice {
                    Some(ci) => sc.draws.push((logits_row, r.ri, ci)),
                    None => sc
                        .draws
                        .extend((0..choices.len()).map(|ci| (logits_row, r.ri, ci))),
                }
            }
            logits_row += 1;
        }
    }

    /// Draws the step's tokens where the logits are: the one call of [`sample_rows`].
    fn sample(&mut self, launched: &PagedLogits<'_, B>, vocab: usize) {
        let sc = &mut self.scratch;
        sc.constraint_failed.clear();
        let mut rows: Vec<SampleRow<'_>> = Vec::with_capacity(sc.draws.len());
        let mut want = sc.draws.iter().peekable();
        for (ri, a) in self.running.iter_mut().enumerate() {
            let Active { req, phase, .. } = a;
            let Phase::Decode { choices } = phase else {
                continue;
            };
            for (ci, c) in choices.iter_mut().enumerate() {
                if let Some(&(logits_row, ..)) = want.next_if(|d| (d.1, d.2) == (ri, ci)) {
                    let mask = match c.constraint.as_mut().map(|l| l.mask()) {
                        Some(Ok(m)) => Some(m),
                        Some(Err(e)) => {
                            sc.constraint_failed.push((ri, e.to_string()));
                            None
                        }
                        None => None,
                    };
                    rows.push(SampleRow {
                        logits_row,
                        sampler: &mut c.sampler,
                        history: &c.history,
                        top_logprobs: req.logprobs,
                        mask,
                    });
                }
            }
        }
        let n = launched.rows();
        let result = launched.buf().map_err(|e| e.to_string()).and_then(|buf| {
            let (b, host) = (launched.backend(), &mut sc.logits);
            sample_rows(b, buf, n, vocab, &mut rows, host, &mut sc.sampled)
                .map_err(|e| e.to_string())
        });
        sc.sample_error = result.err();
        // A constrained draw must land on an allowed token (none allowed: the op gives 0).
        for (r, s) in rows.iter().zip(&sc.sampled) {
            if let (Some(m), Some(s)) = (r.mask, s) {
                if !constrain::allows(m, s.id) {
                    let ri = sc.draws.iter().find(|d| d.0 == r.logits_row).map(|d| d.1);
                    let why = "no token satisfies the output constraint".to_string();
                    sc.constraint_failed.extend(ri.map(|ri| (ri, why)));
                }
            }
        }
    }

    /// Hands each drawn token to its receiver and ends the choices that are done.
    fn emit(&mut self, stats: &mut StepStats) {
        let now = Instant::now();
        let sc = &mut self.scratch;
        sc.failed.clear();
        for (&(_, ri, ci), s) in sc.draws.iter().zip(sc.sampled.iter_mut()) {
            let a = &mut self.running[ri];
            let Phase::Decode { choices } = &mut a.phase else {
                continue;
            };
            let Some(c) = choices.get_mut(ci) else {
                continue;
            };
            let Some(Sampled { id, logprob }) = s.take() else {
                sc.failed.push(ri);
                continue;
            };
            if sc.constraint_failed.iter().any(|f| f.0 == ri) {
                continue;
            }
            if !a.req.ignore_eos && self.stop_tokens.contains(&id) {
                c.finished = true;
                let (choice, finish) = (c.index, FinishReason::Stop);
                a.tx.send(Raw::Done { choice, finish });
                continue;
            }
            c.history.push(id);
            c.generated += 1;
            if let Some(l) = &mut c.constraint {
                // The next mask is computed while the next step's forward runs.
                l.commit(id);
            }
            if !a.first_token_sent {
                a.first_token_sent = true;
                stats.ttft.push((now - a.submitted).as_secs_f64());
            }
            if let Some(prev) = c.last_token_at {
                stats.itl.push((now - prev).as_secs_f64());
            }
            c.last_token_at = Some(now);
            stats.generated += 1;
            let choice = c.index;
            a.tx.send(Raw::Token {
                choice,
                id,
                logprob,
            });
            if c.generated >= a.req.max_tokens {
                c.finished = true;
                let finish = FinishReason::Length;
                a.tx.send(Raw::Done { choice, finish });
            }
        }
        self.sweep(stats);
    }

    /// Frees the choices that ended this step and the requests that are over.
    fn sweep(&mut self, stats: &mut StepStats) {
        let mut failed = std::mem::take(&mut self.scratch.failed);
        failed.dedup();
        let constrained = std::mem::take(&mut self.scratch.constraint_failed);
        for ri in (0..self.running.len()).rev() {
            if let Some((_, why)) = constrained.iter().find(|f| f.0 == ri) {
                self.fail(ri, format!("constrained decoding failed: {why}"), stats);
                continue;
            }
            if failed.contains(&ri) {
                let why = self.scratch.sample_error.as_deref().unwrap_or("no token");
                self.fail(
                    ri,
                    format!("internal error: the sampler failed: {why}"),
                    stats,
                );
                continue;
            }
            let Phase::Decode { choices } = &mut self.running[ri].phase else {
                continue;
            };
            for c in choices.iter_mut().filter(|c| c.finished) {
                self.kv.free(std::mem::take(&mut c.table));
            }
            choices.retain(|c| !c.finished);
            if choices.is_empty() {
                self.running.remove(ri);
                stats.ended.push(RequestStatus::Completed);
            }
        }
        self.scratch.failed = failed;
        self.scratch.constraint_failed = constrained;
    }
}

/// The prompt of `a` is in: it becomes `n` choices sharing the prompt's blocks (the first
/// takes the table, the others fork it), or a preempted request's choices get their tables
/// back and catch up on their generated tokens in the next steps.
fn into_decode<B: Backend>(a: &mut Active, kv: &mut PagedKv<B>) {
    let placeholder = Phase::Decode {
        choices: Vec::new(),
    };
    let Phase::Prefill { table, resume, .. } = std::mem::replace(&mut a.phase, placeholder) else {
        return;
    };
    let wanted = resume.as_ref().map_or(a.req.n, Vec::len);
    let mut tables = Vec::with_capacity(wanted);
    for _ in 1..wanted {
        tables.push(kv.fork(&table));
    }
    tables.insert(0, table);
    let choices = match resume {
        Some(mut choices) => {
            let mut tables = tables.into_iter();
            for (c, t) in choices.iter_mut().zip(tables.by_ref()) {
                c.table = t;
            }
            // No choice left to take the prompt (never expected): its blocks go back.
            for t in tables {
                kv.free(t);
            }
            choices
        }
        None => tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| Choice::new(i, t, &a.req))
            .collect(),
    };
    a.phase = Phase::Decode { choices };
}
