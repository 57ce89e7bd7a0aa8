//! Launches held back inside a step, so that neighbouring ops share one kernel.
//!
//! A decode step of a small model is bound by kernel boundaries (~2.4 µs each replayed from a
//! graph on an H100 for SmolLM2-135M), and the forward issues ops one by one: Wq·xn, Wk·xn,
//! Wv·xn, rope(q), rope(k), kv_write(k), kv_write(v), ... Inside a step (begin_step ..
//! end_step) the CUDA backend therefore queues the q8 matvecs, ropes and KV writes here, and
//! the next other call (or `end_step`, `record_end`, any allocation, transfer or wait) launches
//! them in order, merging:
//! - consecutive matvecs that read the same x (`MvItem::joins`): one matvec_q8 launch over up to
//!   3 weights (Wq, Wk, Wv -> 1 launch; Wgate, Wup -> 1);
//! - rope(q), rope(k), kv_write(k), kv_write(v) of one step: one rope_kv_f32 launch (rope.cu).
//!
//! `matmul_many` holds its matvecs the same way outside a step (its outputs and x live for the
//! call), and flushes before it returns.
//!
//! Anything else launches alone, in the order it was called, so the stream sees the same work
//! in the same order as without holding back. What this asks of callers: the buffers of a
//! step's ops live until the next backend call (the forward's workspace and KV cache live for
//! the whole step). Nothing is held back outside a step, so the check harness (and any caller
//! that drops a buffer right after an op) sees immediate launches.

use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::launch::{poisoned, KvItem, MvItem, RopeItem};
use crate::state::Pending;

/// Ops held at most (a step's attention preamble is 7).
const MAX_PENDING: usize = 8;

impl CudaBackend {
    fn in_step(&self) -> bool {
        self.step.lock().map(|s| s.is_active()).unwrap_or(false)
    }

    fn hold(&self, op: Pending) -> Result<()> {
        let full = {
            let mut q = self.pending.lock().map_err(|_| OpError::from(poisoned()))?;
            q.push(op);
            q.len() >= MAX_PENDING
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn defer_matvec(&self, item: MvItem) -> Result<()> {
        if self.in_step() || self.grouping.load(std::sync::atomic::Ordering::Relaxed) {
            return self.hold(Pending::Matvec(item));
        }
        self.flush()?;
        self.matvec_set(&[item])
    }

    pub(crate) fn defer_rope(&self, item: RopeItem, in_step: bool) -> Result<()> {
        if in_step {
            return self.hold(Pending::Rope(item));
        }
        self.flush()?;
        self.launch_rope(&item)
    }

    pub(crate) fn defer_kv_write(&self, item: KvItem, in_step: bool) -> Result<()> {
        if in_step {
            return self.hold(Pending::KvWrite(item));
        }
        self.flush()?;
        self.launch_kv_write(&item)
    }

    /// Launches every held op, in order, merged where `defer.rs`'s rules allow.
    pub(crate) fn flush(&self) -> Result<()> {
        let ops: Vec<Pending> = {
            let mut q = self.pending.lock().map_err(|_| OpError::from(poisoned()))?;
            std::mem::take(&mut *q)
        };
        let mut i = 0;
        while i < ops.len() {
            match ops[i] {
                Pending::Matvec(first) => {
                    let mut group = vec![first];
                    while group.len() < 3 {
                        match ops.get(i + group.len()) {
                            Some(Pending::Matvec(m))
                                if group.iter().all(|g| g.joins(m)) && first.joins(m) =>
                            {
                                group.push(*m)
                            }
                            _ => break,
                        }
                    }
                    i += group.len();
                    self.matvec_set(&group)?;
                }
                Pending::Rope(q) => match rope_kv_pattern(&ops[i..]) {
                    Some((k, kw, vw)) => {
                        self.launch_rope_kv(&q, &k, &kw, &vw)?;
                        i += 4;
                    }
                    None => {
                        self.launch_rope(&q)?;
                        i += 1;
                    }
                },
                Pending::KvWrite(kv) => {
                    self.launch_kv_write(&kv)?;
                    i += 1;
                }
            }
        }
        Ok(())
    }
}

/// Whether `ops` starts with rope(q), rope(k), kv_write(k), kv_write(v) of one step; returns
/// the last three.
fn rope_kv_pattern(ops: &[Pending]) -> Option<(RopeItem, KvItem, KvItem)> {
    let [Pending::Rope(q), Pending::Rope(k), Pending::KvWrite(kw), Pending::KvWrite(vw), ..] = ops
    else {
        return None;
    };
    let same_rope = q.n == k.n
        && q.head_dim == k.head_dim
        && q.pos == k.pos
        && q.ff == k.ff
        && q.p.n_rot == k.p.n_rot
        && q.p.style == k.p.style
        && q.p.theta.to_bits() == k.p.theta.to_bits()
        && q.x != k.x;
    let kv_dim = k.n_heads * k.head_dim;
    let writes = kw.src == k.x
        && vw.src != k.x
        && vw.src != q.x
        && kw.cache != vw.cache
        && kw.n == k.n
        && vw.n == k.n
        && kw.kv_dim == kv_dim
        && vw.kv_dim == kv_dim
        && kw.pos0 == k.pos
        && vw.pos0 == k.pos;
    (same_rope && writes).then_some((*k, *kw, *vw))
}
