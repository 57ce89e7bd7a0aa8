//! When the KV cache runs out of blocks the youngest running request is preempted: its
//! blocks are freed and it goes back to the front of the waiting queue, keeping its choices'
//! tokens and sampler state, to be recomputed from prompt + generated tokens (what the prefix
//! cache still holds of its prompt is taken back, not recomputed). A request that fails ends
//! with an error event.

use std::sync::atomic::Ordering;

use plumb_ops::Backend;

use super::channel::Raw;
use super::engine::{Pending, Phase, Resume, StepStats, Worker};
use super::metrics::RequestStatus;

impl<B: Backend> Worker<B> {
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
            a.tx.send(Raw::Error(msg));
            stats.ended.push(RequestStatus::Failed);
        }
    }
}
