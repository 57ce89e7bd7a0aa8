//! The check harness (plumb_ops::check, the same cases and bounds as every backend) on the
//! wgpu backend, once per variant combination: every op must PASS, none may SKIP. On CI the
//! adapter is Mesa's lavapipe (scripts/test); the harness's `quick` shapes keep it to a couple
//! of minutes there (the long-context attention and the largest matmuls are left to
//! `plumb check --device wgpu` on a GPU).

use plumb_ops::check::{self, CheckOptions, Status};
use plumb_wgpu::{Options, Variants, WgpuBackend};

#[test]
fn every_op_passes_the_harness_on_every_variant() {
    let mut report = String::new();
    let mut ran = Vec::new();
    for v in Variants::all() {
        let b = WgpuBackend::with_options(Options {
            variants: v,
            ..Options::default()
        })
        .expect("a wgpu adapter (scripts/test sets up lavapipe)");
        if b.variants() != v {
            // The adapter lacks what this variant needs; its fallback runs elsewhere.
            report.push_str(&format!("{}: not on {}\n", v.describe(), b.describe()));
            continue;
        }
        let opts = CheckOptions {
            op: None,
            seed: 11,
            quick: true,
        };
        let results = check::run(&b, &opts, &mut |_| {});
        let (pass, fail, skip) = check::summarize(&results);
        for r in results.iter().filter(|r| r.status != Status::Pass) {
            report.push_str(&format!(
                "{} {} {} {}: {}\n",
                r.status.as_str(),
                r.op,
                r.dtype,
                r.shape,
                r.detail
            ));
        }
        assert!(pass > 100, "{pass} cases");
        ran.push((v, pass, fail, skip));
    }
    let bad = ran.iter().any(|&(_, _, fail, skip)| fail + skip > 0);
    assert!(!bad, "{ran:?}\n{report}");
    assert!(!ran.is_empty(), "no variant ran: {report}");
}
