//! `plumb check --device wgpu` as CI runs it (scripts/test points Vulkan at Mesa's lavapipe):
//! every op and shape of the harness on every variant combination the adapter runs, and the
//! whole default model against the reference backend, with the thresholds of every backend.

mod common;

use std::process::Command;

use common::{plumb, text};

#[test]
fn every_op_passes_on_every_wgpu_variant() {
    let o = plumb(&["check", "--device", "wgpu", "--seed", "11"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Every case runs on every variant combination, sliding-window attention included: none
    // failed and none skipped (the summary counts every combination's cases).
    let summaries: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("plumb:") && l.contains(" passed,"))
        .collect();
    assert!(!summaries.is_empty(), "{out}");
    for l in &summaries {
        assert!(l.ends_with(" 0 failed, 0 skipped"), "{l}\n{out}");
    }
    assert!(!out.contains(" SKIP "), "{out}");
    // The portable variants run on every adapter; the subgroup ones where it has subgroups.
    for v in ["reduce=workgroup, dot=native", "reduce=workgroup, dot=soft"] {
        assert!(out.contains(&format!("({v})")), "{v} did not run:\n{out}");
    }
    let passed: usize = out
        .lines()
        .filter(|l| l.starts_with("plumb:") && l.contains(" passed,"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        .sum();
    assert!(passed >= 2 * 200, "{passed} cases passed:\n{out}");
}

#[test]
fn the_default_model_on_wgpu_meets_the_model_check() {
    let o = plumb(&["check", "--model", "--device", "wgpu", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["backend"], "wgpu");
    assert_eq!(v["precision"], "EightBitActivations");
    assert_eq!(v["pass"], true);
    assert_eq!(v["decisive_agree"], v["decisive"]);
}

/// Gemma 3 270M (Q4_K_M: Q5_0, Q8_0, Q4_K and Q6_K matrices, a 180 MiB Q8_0 embedding that
/// lavapipe binds in two parts; GELU-tanh gates, QK norms, post norms, the scaled embedding and
/// sliding-window layers) against the reference backend. The prompt's 20 positions run as one
/// prefill (f32 activations), held to the accurate thresholds; about a minute on lavapipe.
#[test]
fn gemma_3_on_wgpu_meets_the_model_check() {
    let o = plumb(&[
        "check",
        "--model",
        "gemma-3-270m",
        "--device",
        "wgpu",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["backend"], "wgpu");
    assert_eq!(v["pass"], true);
    assert!(v["positions"].as_u64().unwrap_or(0) >= 8, "{v}");
    assert!(v["decisive"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["decisive_agree"], v["decisive"]);
}

#[test]
fn a_missing_adapter_is_named() {
    // No Vulkan driver at all: the error says what is missing and how to get one.
    let o = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["check", "--device", "wgpu", "--op", "add"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("running plumb");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("no GPU adapter") && out.contains("mesa-vulkan-drivers"),
        "{out}"
    );
    let o = plumb(&["run", "--device", "wgpu:99", "--prompt", "x", "-n", "1"]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("no adapter wgpu:99"),
        "{out}"
    );
}
