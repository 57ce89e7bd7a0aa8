//! The sampler's draws against the distributions they should follow (chi-square, as in
//! `plumb check --op sample`): the reference passes, and a walk off by one position — the bug
//! the test exists for — fails.

use plumb_core::rng::Rng;
use plumb_ops::check::stats::chi_square;
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::ops::sample;
use plumb_ops::{Backend, ReferenceBackend, SampleParams, SampleRow};

fn row(params: SampleParams, u: f64) -> SampleRow<'static> {
    SampleRow {
        params,
        history: &[],
        mask: None,
        bias: &[],
        u,
    }
}

/// A sampler with the walk off by one: it takes the token after the one whose cumulative
/// weight passes the target (the last when there is none).
fn off_by_one(logits: &[f32], params: SampleParams, u: f64) -> u32 {
    let d = sample::distribution(&mut logits.to_vec(), &row(params, u));
    let mut cum = 0.0;
    let at = d.iter().position(|&(_, p)| {
        cum += p;
        u < cum
    });
    d[(at.unwrap_or(d.len() - 1) + 1).min(d.len() - 1)].0
}

#[test]
fn reference_draws_pass_and_an_off_by_one_walk_fails() {
    let b = ReferenceBackend::default();
    let mut rng = Rng::new(21);
    for params in check::sample_draw_params() {
        let vocab = 1200;
        let logits = rng.normals(vocab, 2.0);
        let us: Vec<f64> = (0..20_000).map(|_| rng.next_f64()).collect();
        let dist = sample::distribution(&mut logits.clone(), &row(params, 0.0));
        let buf = b.upload(&logits.repeat(1000)).unwrap();
        let mut ids = Vec::new();
        for chunk in us.chunks(1000) {
            let rows: Vec<SampleRow<'_>> = chunk.iter().map(|&u| row(params, u)).collect();
            ids.extend(
                b.sample_rows(&buf, vocab, &rows)
                    .unwrap()
                    .iter()
                    .map(|s| s.id),
            );
        }
        let good = chi_square(&ids, &dist);
        assert!(good.passes(), "{params:?}: {good:?}");
        let biased: Vec<u32> = us.iter().map(|&u| off_by_one(&logits, params, u)).collect();
        let bad = chi_square(&biased, &dist);
        assert!(
            !bad.passes() && bad.stat > 2.0 * bad.threshold,
            "{params:?}: {bad:?}"
        );
    }
}

/// The check's sample cases pass on the reference, its four draw cases among them.
#[test]
fn the_check_cases_of_sample_pass_on_the_reference() {
    let opts = CheckOptions {
        op: Some("sample".into()),
        seed: 4,
        quick: true,
    };
    let results = check::run(&ReferenceBackend::default(), &opts, &mut |_| {});
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .map(|r| format!("{} {}: {}", r.shape, r.status.as_str(), r.detail))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(results.iter().filter(|r| r.shape.contains("χ²")).count(), 4);
    assert_eq!(results.len(), 14);
}
