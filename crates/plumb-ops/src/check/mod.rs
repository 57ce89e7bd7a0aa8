//! The check harness: every op of a backend against its reference, on fresh random inputs.
//!
//! Each case draws inputs from a seeded generator, computes the reference on the host, uploads
//! the inputs, poisons the output with NaN (so an unwritten element fails), runs the backend's
//! op and compares it with the reference twice: the normalized mean squared error over the
//! whole output (Σ(y−r)² / Σ s²) and the worst single element (|y−r| / s), each against the
//! op's bound, where `s` is the output's natural scale. A case passes only within both. A
//! case a backend cannot run is SKIP, never PASS. [`self_test`] plants faults in a backend and
//! proves that each one fails.

mod cases;
mod compare;
mod damage;
pub mod faults;
mod self_test;
pub mod stats;

use crate::backend::Backend;

pub use cases::sample_draw_params;
pub use compare::{compare, compare_with, Comparison, Scale, Tolerance};
pub use self_test::{self_test, SelfTestRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// The outcome of one op × dtype × shape case on one backend.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub op: &'static str,
    pub backend: String,
    pub dtype: String,
    pub shape: String,
    pub status: Status,
    pub nmse: f64,
    /// The worst element's error relative to its scale.
    pub max_rel: f64,
    pub tolerance: Tolerance,
    pub max_abs: f64,
    /// Why it failed or was skipped, with the first mismatches.
    pub detail: String,
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Only ops whose name contains this.
    pub op: Option<String>,
    pub seed: u64,
    /// Skip the slowest shapes (long contexts, big matrices).
    pub quick: bool,
}

/// Every op the harness knows, in the order they run.
pub const OPS: &[&str] = &[
    "embedding",
    "rms_norm",
    "add_rms_norm",
    "matmul",
    "add_bias",
    "rope",
    "attention",
    "attention_paged",
    "swiglu",
    "add",
    "argmax",
    "sample",
    "geglu",
    "gelu",
    "scale",
    "softcap",
    "layer_norm",
    "attention_full",
];

/// Runs every selected case on `backend`, calling `on_result` as each finishes.
pub fn run<B: Backend>(
    backend: &B,
    opts: &CheckOptions,
    on_result: &mut dyn FnMut(&CaseResult),
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for &op in OPS {
        if let Some(f) = &opts.op {
            if !op.contains(f.as_str()) {
                continue;
            }
        }
        results.extend(cases::run_op(backend, op, opts, on_result));
    }
    results
}

/// Counts of (pass, fail, skip).
pub fn summarize(results: &[CaseResult]) -> (usize, usize, usize) {
    let count = |s| results.iter().filter(|r| r.status == s).count();
    (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
    )
}
