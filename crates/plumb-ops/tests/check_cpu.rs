//! `plumb check` for the optimized CPU backend, at every SIMD level this machine has (so the
//! AVX2 and portable fallbacks are proven on an AVX-512 machine too): every case passes and
//! none is skipped.

use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::cpu::SimdLevel;
use plumb_ops::CpuBackend;

#[test]
fn every_cpu_level_passes_the_check_harness() {
    let levels = SimdLevel::available();
    assert!(!levels.is_empty());
    for (i, level) in levels.into_iter().enumerate() {
        for threads in [1, 2] {
            let b = CpuBackend::with_threads(threads).with_level(level).unwrap();
            let opts = CheckOptions {
                op: None,
                seed: 1000 + i as u64,
                quick: false,
            };
            let results = check::run(&b, &opts, &mut |_| {});
            let bad: Vec<String> = results
                .iter()
                .filter(|r| r.status != Status::Pass)
                .map(|r| {
                    format!(
                        "{} {} {} {}: {}",
                        r.op,
                        r.dtype,
                        r.shape,
                        r.status.as_str(),
                        r.detail
                    )
                })
                .collect();
            assert!(
                bad.is_empty(),
                "{level:?}, {threads} threads:\n{}",
                bad.join("\n")
            );
            assert!(results.len() > 100, "only {} cases ran", results.len());
        }
    }
}
