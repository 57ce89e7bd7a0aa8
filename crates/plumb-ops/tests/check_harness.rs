//! The harness must catch what it exists to catch. A fault is planted in each op of a correct
//! backend in turn — one wrong element, a wrong row, a transposed output, a stale (unwritten)
//! region — and every case it damages must FAIL; an op that reports itself unsupported must be
//! SKIP, never PASS.

use plumb_ops::check::faults::Fault;
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::{CpuBackend, ReferenceBackend};

fn assert_self_test_catches_everything<B: plumb_ops::Backend>(b: &B) {
    let rows = check::self_test(b, 5);
    let mut report = String::new();
    for r in &rows {
        report.push_str(&format!(
            "{:<28} {:<16} {:>3} cases, {:>3} faulted, {:>3} caught, {} other failures\n",
            r.fault.name(),
            r.op,
            r.cases,
            r.faulted,
            r.caught,
            r.other_failures
        ));
    }
    eprintln!("{}:\n{report}", b.name());
    assert!(
        rows.iter().all(|r| r.ok()),
        "a planted fault passed:\n{report}"
    );
    for r in &rows {
        let what = format!("{}: {}\n{report}", r.fault.name(), r.op);
        match applies(r.fault, r.op) {
            Applies::EveryCase => assert_eq!(r.faulted, r.cases, "{what}"),
            Applies::SomeCases => assert!(r.faulted > 0, "never planted: {what}"),
            Applies::Never => assert_eq!(r.faulted, 0, "{what}"),
        }
    }
}

enum Applies {
    EveryCase,
    SomeCases,
    Never,
}

/// Where each fault can change an output: a wrong element, a stale region and an unsupported
/// op in every case (argmax and sample return ids, so they have no region to leave stale); a
/// wrong row and a transposition in the cases with several rows (not in the flat elementwise
/// ops; argmax and sample have rows of ids but nothing to transpose).
fn applies(fault: Fault, op: &str) -> Applies {
    match (fault, op) {
        (Fault::WrongElement | Fault::Unsupported, _) => Applies::EveryCase,
        (Fault::Stale | Fault::Transposed, "argmax" | "sample") => Applies::Never,
        (Fault::Stale, _) => Applies::EveryCase,
        (
            Fault::WrongRow | Fault::Transposed,
            "swiglu" | "add" | "geglu" | "gelu" | "scale" | "softcap",
        ) => Applies::Never,
        (Fault::WrongRow | Fault::Transposed, _) => Applies::SomeCases,
    }
}

#[test]
fn every_planted_fault_fails_on_the_reference_backend() {
    assert_self_test_catches_everything(&ReferenceBackend::default());
}

#[test]
fn every_planted_fault_fails_on_the_cpu_backend() {
    assert_self_test_catches_everything(&CpuBackend::with_threads(2));
}

#[test]
fn a_single_wrong_matmul_element_among_thousands_fails() {
    // The case that once passed on NMSE alone: 3 matrices × 40 tokens (≈ 8,000 outputs), one
    // of them off by half the output's RMS.
    let b = CpuBackend::with_threads(2);
    let faulty = check::faults::Faulty::new(&b, Fault::WrongElement, "matmul");
    let opts = CheckOptions {
        op: Some("matmul".into()),
        seed: 9,
        quick: true,
    };
    let results = check::run(&faulty, &opts, &mut |_| {});
    let many = results
        .iter()
        .find(|r| r.dtype == "Q4_0" && r.shape.contains("n 40, one call"))
        .expect("the matmul_many case");
    assert_eq!(many.status, Status::Fail, "{many:?}");
    assert!(
        many.nmse < many.tolerance.nmse,
        "NMSE alone would pass: {many:?}"
    );
}
