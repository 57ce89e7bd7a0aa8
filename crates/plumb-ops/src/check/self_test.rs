//! The harness's self-test: every planted fault must FAIL, and an unsupported op must SKIP.

use super::faults::{Fault, Faulty};
use super::{cases, CheckOptions, Status, OPS};
use crate::backend::Backend;

/// One fault planted in one op's cases.
#[derive(Debug, Clone)]
pub struct SelfTestRow {
    pub fault: Fault,
    pub op: &'static str,
    /// Cases of the op that ran.
    pub cases: usize,
    /// Cases whose outputs the fault actually changed.
    pub faulted: usize,
    /// Faulted cases that FAILed (for [`Fault::Unsupported`]: cases that were SKIP).
    pub caught: usize,
    /// Unfaulted cases that FAILed (the backend itself failing; a case the backend does not
    /// support is a SKIP, not a failure of the harness).
    pub other_failures: usize,
}

impl SelfTestRow {
    /// Every faulted case was caught, and nothing else failed.
    pub fn ok(&self) -> bool {
        self.caught == self.faulted && self.other_failures == 0
    }
}

/// Plants each fault of [`Fault::DAMAGE`] (and [`Fault::Unsupported`]) in each op of
/// [`OPS`] on top of `backend`, runs the op's cases, and counts which were caught. A fault
/// that cannot change an output (a transposed single row, a wrong row of a flat vector) is
/// not counted as planted.
pub fn self_test<B: Backend>(backend: &B, seed: u64) -> Vec<SelfTestRow> {
    let opts = CheckOptions {
        op: None,
        seed,
        quick: true,
    };
    let mut rows = Vec::new();
    for fault in Fault::DAMAGE.into_iter().chain([Fault::Unsupported]) {
        for &op in OPS {
            let faulty = Faulty::new(backend, fault, op);
            let mut row = SelfTestRow {
                fault,
                op,
                cases: 0,
                faulted: 0,
                caught: 0,
                other_failures: 0,
            };
            let mut seen = 0;
            cases::run_op(&faulty, op, &opts, &mut |r| {
                row.cases += 1;
                let planted = if fault == Fault::Unsupported {
                    true
                } else {
                    let now = faulty.applied();
                    let planted = now > seen;
                    seen = now;
                    planted
                };
                let want = if fault == Fault::Unsupported {
                    Status::Skip
                } else {
                    Status::Fail
                };
                if planted {
                    row.faulted += 1;
                    row.caught += (r.status == want) as usize;
                } else if r.status == Status::Fail {
                    row.other_failures += 1;
                }
            });
            rows.push(row);
        }
    }
    rows
}
