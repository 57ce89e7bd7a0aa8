//! The decode half of a step over the paged KV cache: every choice's waiting tokens (the one
//! it sampled this step, or a preempted choice's generated tokens) go through one
//! `Model::forward_paged`. When the cache runs out of blocks the youngest running request is
//! preempted: its blocks are freed and it goes back to the front of the waiting queue, keeping
//! its choices' tokens and stream state, to be recomputed from prompt + generated tokens.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use plumb_model::{PagedError, PagedItem};
use plumb_ops::Backend;

use super::engine::{Pending, Phase, Resume, StepStats, Worker};
use super::metrics::RequestStatus;
use super::Event;

impl<B: Backend> Worker<B> {
    /// Feeds every choice's waiting tokens through the model as one batch (at most
    /// `max_batch` tokens per forward, repeated until none wait), and hands each choice that
    /// caught up its logits. A failed batch fails the requests in it.
    pub(super) fn decode_batch(&mut self, stats: &mut StepStats) {
        let limit = self.model.max_batch.max(1);
        loop {
            // (request, choice, tokens), oldest request first.
            let mut plan: Vec<(usize, usize, usize)> = Vec::new();
            let mut total = 0;
            for (ri, a) in self.running.iter().enumerate() {
                let Phase::Decode { choices } = &a.phase else {
                    continue;
                };
                for (ci, c) in choices.iter().enumerate() {
                    let behind = c.behind();
                    if behind > 0 && total < limit {
                        let t = behind.min(limit - total);
                        plan.push((ri, ci, t));
                        total += t;
                    }
                }
            }
            if plan.is_empty() {
                return;
            }
            if !self.reserve(&plan, stats) {
                // Something was preempted or failed: plan again.
                continue;
            }
            let (model, kv) = (&self.model, &mut self.kv);
            let mut owners: Vec<usize> = Vec::with_capacity(plan.len());
            let result = {
                let mut want = plan.iter().peekable();
                let mut items: Vec<PagedItem<'_>> = Vec::with_capacity(plan.len());
                for (ri, a) in self.running.iter_mut().enumerate() {
                    let Phase::Decode { choices } = &mut a.phase else {
                        continue;
                    };
                    for (ci, c) in choices.iter_mut().enumerate() {
                        if let Some(&&(pr, pc, t)) = want.peek() {
                            if (pr, pc) == (ri, ci) {
                                want.next();
                                let from = c.table.len;
                                let (history, table) = (&c.history, &mut c.table);
                                items.push(PagedItem {
                                    tokens: &history[from..from + t],
                                    table,
                                });
                                owners.push(ri);
                            }
                        }
                    }
                }
                catch_unwind(AssertUnwindSafe(|| model.forward_paged(kv, &mut items)))
            };
            match result {
                Ok(Ok(logits)) => {
                    for (&(ri, ci, _), l) in plan.iter().zip(logits) {
                        if let Phase::Decode { choices } = &mut self.running[ri].phase {
                            if let Some(c) = choices.get_mut(ci).filter(|c| c.behind() == 0) {
                                c.set_logits(l);
                            }
                        }
                    }
                }
                failure => {
                    let msg = match failure {
                        Ok(Err(e)) => format!("generation failed: {e}"),
                        _ => "internal error in the batched forward".to_string(),
                    };
                    owners.dedup();
                    for &ri in owners.iter().rev() {
                        self.fail(ri, msg.clone(), stats);
                    }
                }
            }
        }
    }

    /// Reserves the blocks of every planned choice; false if a request had to be preempted
    /// or failed on the way (the plan is then stale).
    fn reserve(&mut self, plan: &[(usize, usize, usize)], stats: &mut StepStats) -> bool {
        for &(ri, ci, t) in plan {
            let Phase::Decode { choices } = &mut self.running[ri].phase else {
                continue;
            };
            let Some(c) = choices.get_mut(ci) else {
                continue;
            };
            match self.kv.reserve(&self.model.backend, &mut c.table, t) {
                Ok(()) => {}
                Err(PagedError::OutOfBlocks { .. }) => {
                    self.make_room(ri, stats);
                    return false;
                }
                Err(e) => {
                    self.fail(ri, format!("generation failed: {e}"), stats);
                    return false;
                }
            }
        }
        true
    }

    /// Frees blocks for request `needy`: preempts the youngest running request (possibly
    /// `needy` itself). A request alone that still does not fit can never run: it fails.
    pub(super) fn make_room(&mut self, needy: usize, stats: &mut StepStats) {
        if self.running.len() <= 1 {
            let msg = format!(
                "the KV cache ({} blocks of {} positions) is too small for this request",
                self.kv.n_blocks(),
                self.kv.block_size
            );
            self.fail(needy, msg, stats);
            return;
        }
        let victim = self.running.len() - 1;
        let mut a = self.running.remove(victim);
        a.release(&mut self.kv);
        let choices = match a.phase {
            Phase::Prefill { resume, .. } => resume,
            Phase::Decode { choices } => Some(choices),
        };
        self.waiting.push_front(Pending {
            req: a.req,
            tx: a.tx,
            submitted: a.submitted,
            resume: Some(Resume {
                choices,
                first_token_sent: a.first_token_sent,
            }),
        });
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        self.preemptions += 1;
    }

    /// Ends request `ri` with an error event and frees its blocks.
    pub(super) fn fail(&mut self, ri: usize, msg: String, stats: &mut StepStats) {
        if ri < self.running.len() {
            let mut a = self.running.remove(ri);
            a.release(&mut self.kv);
            a.tx.send(Event::Error(msg));
            stats.ended.push(RequestStatus::Failed);
        }
    }
}
