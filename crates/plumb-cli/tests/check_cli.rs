//! `plumb check` as a user runs it: the exit status is the verdict.

mod common;

use common::{plumb, text};

#[test]
fn the_model_check_passes_within_its_thresholds_and_fails_beyond_them() {
    let ok = plumb(&["check", "--model", "--backend", "cpu"]);
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("EightBitActivations") && out.contains("PASS"),
        "{out}"
    );

    // The same run held to a bound it does not meet: a non-zero exit naming the bound.
    let bad = plumb(&[
        "check",
        "--model",
        "--backend",
        "cpu",
        "--max-dlogit",
        "0.01",
    ]);
    let out = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.contains("model check failed") && out.contains("exceeds 0.01"),
        "{out}"
    );
    assert!(!out.contains("PASS"), "{out}");

    let bad = plumb(&["check", "--model", "--backend", "cpu", "--max-kl", "1e-9"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
}

#[test]
fn the_reference_meets_the_accurate_thresholds_against_itself() {
    let o = plumb(&["check", "--model", "--backend", "reference", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["precision"], "Accurate");
    assert_eq!(v["max_abs"], 0.0);
    assert_eq!(v["pass"], true);
}

#[test]
fn the_self_test_catches_every_planted_fault() {
    let o = plumb(&["check", "--self-test", "--backend", "cpu", "--seed", "3"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("planted faults caught"), "{out}");
    assert!(!out.contains("MISSED"), "{out}");
}

#[test]
fn a_cpu_check_of_one_op_passes_and_reports_both_bounds() {
    let o = plumb(&["check", "--op", "swiglu", "--seed", "4", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = String::from_utf8_lossy(&o.stdout).to_string();
    let mut n = 0;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON case");
        assert_eq!(v["status"], "PASS", "{line}");
        assert!(v["tolerance"]["worst"].as_f64().unwrap() > 0.0, "{line}");
        assert!(v["worst"].as_f64().unwrap() <= v["tolerance"]["worst"].as_f64().unwrap());
        n += 1;
    }
    assert!(n >= 4, "{lines}");
}
