//! The model-level check on the default model: the optimized CPU backend is within the
//! thresholds of its precision, and the same backend with a planted fault is not. (One wrong
//! element of one op is far too small a change for a whole model: the op check catches that.)

use plumb_engine::check::{compare_logits, LogitThresholds};
use plumb_engine::Session;
use plumb_ops::check::faults::{Fault, Faulty};
use plumb_ops::{Backend, CpuBackend, Precision, ReferenceBackend};

const PROMPT: &str = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein";

fn logits<B: Backend>(b: B) -> (Vec<f32>, usize) {
    let path = plumb_engine::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let mut s = Session::load(&path, b, 128).unwrap();
    let ids = s.encode(PROMPT).unwrap();
    (s.logits_all(&ids).unwrap(), s.model.config.vocab_size)
}

#[test]
fn a_faulty_backend_fails_the_model_check_that_the_correct_one_passes() {
    let (want, vocab) = logits(ReferenceBackend::default());
    let cpu = CpuBackend::with_threads(2);
    let t = LogitThresholds::for_precision(cpu.precision(plumb_core::GgmlType::Q4_1));
    assert_eq!(
        t,
        LogitThresholds::for_precision(Precision::EightBitActivations)
    );
    let (got, _) = logits(CpuBackend::with_threads(2));
    let c = compare_logits(&got, &want, vocab, t.decisive_margin);
    assert!(c.violations(&t).is_empty(), "{c:?}: {:?}", c.violations(&t));
    assert!(c.decisive > 0);

    for (fault, op) in [
        (Fault::WrongRow, "matmul"),
        (Fault::Stale, "attention"),
        (Fault::Transposed, "add_rms_norm"),
    ] {
        let (got, _) = logits(Faulty::new(&cpu, fault, op));
        let c = compare_logits(&got, &want, vocab, t.decisive_margin);
        let v = c.violations(&t);
        assert!(
            !v.is_empty(),
            "{} in {op} passed the model check: {c:?}",
            fault.name()
        );
    }
}
