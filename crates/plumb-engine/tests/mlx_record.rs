//! Hugging Face and MLX directories of the default model against mlx-lm
//! (`fixtures/mlx/record.json`, made by scripts/make_mlx_fixture.py with mlx 0.32.4 and
//! mlx-lm 0.32.2). plumb builds the directories itself with its quantize writers — a bf16
//! Hugging Face directory from the default GGUF, then mlx-lm's `convert` equivalents
//! (4-bit groups of 64, and the `mixed_3_6` recipe) from it — and the record's tensor
//! digests prove they hold the tensors mlx-lm was measured on, bit for bit. Then mlx-lm's
//! greedy tokens are fed back (teacher forcing) and plumb's perplexity is held to mlx-lm's.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plumb_engine::perplexity::perplexity;
use plumb_model::quantize::dir::{write_dir, DirFormat, MlxRecipe};
use plumb_model::Checkpoint;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

/// The three directories, built once per test binary.
fn dirs() -> (PathBuf, PathBuf) {
    static DIRS: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);
    let mut guard = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = guard.as_ref() {
        return d.clone();
    }
    let gguf = plumb_engine::store::resolve_model(None, &mut |m| eprintln!("{m}")).unwrap();
    let out = std::env::temp_dir().join(format!("plumb-mlx-record-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let quiet = Arc::new(|_: usize, _: usize, _: &str| {});
    let hf = out.join("smollm2-135m-hf-bf16");
    let ck = Checkpoint::open(&gguf).unwrap();
    write_dir(
        &ck,
        DirFormat::Hf(plumb_core::GgmlType::BF16),
        &hf,
        quiet.clone(),
    )
    .unwrap();
    let hf_ck = Checkpoint::open(&hf).unwrap();
    for (name, recipe) in [
        (
            "smollm2-135m-mlx-q4g64",
            MlxRecipe::Uniform { bits: 4, group: 64 },
        ),
        (
            "smollm2-135m-mlx-mixed36",
            MlxRecipe::mixed("mixed_3_6").unwrap(),
        ),
    ] {
        let format = DirFormat::Mlx {
            recipe,
            dtype: plumb_core::GgmlType::BF16,
        };
        write_dir(&hf_ck, format, &out.join(name), quiet.clone()).unwrap();
    }
    *guard = Some((gguf.clone(), out.clone()));
    (gguf, out)
}

/// Where the engines pick different tokens, each one's pick must be within this of the top
/// in the other's logits: a near-tie seen from both sides. mlx-lm computes in bf16 (its
/// activations rounded at every op, its logits here to 1/16), plumb's reference in f32.
const NEAR_TIE: f32 = 1.0;

fn check(name: &str) {
    let (gguf, out) = dirs();
    let record = json(&root().join("mlx/record.json"));
    let want = &record["models"][name];
    let dir = out.join(name);
    assert_eq!(
        common::mlx::tensor_digest(&dir),
        want["tensor_digest"].as_str().unwrap(),
        "{name}: plumb's directory does not hold the tensors mlx-lm's record was made on"
    );
    // Teacher forcing on the reference backend (f32 throughout: the plumb line); the
    // optimized CPU backend's 8-bit activations move a 4-bit model's logits by up to ~2.6
    // (`plumb check --model`), more than mlx-lm's near-ties. Perplexity on the CPU backend.
    let reference = plumb_ops::ReferenceBackend { threads: true };
    let mut s = common::mlx::session(&gguf, &dir, reference, 512);
    let forced = common::mlx::teacher_forced(&mut s, name, want);
    let text =
        std::fs::read_to_string(root().join("smollm2-135m-instruct-q4_1/apache-2.0.txt")).unwrap();
    let mut s = common::mlx::session(&gguf, &dir, plumb_ops::CpuBackend::new(), 512);
    let ids = s.tokenizer.encode(&text, false, false).unwrap();
    let ppl = perplexity(&mut s, &ids, 512, &mut |_, _, _| {}).unwrap();
    let theirs = want["perplexity_512"].as_f64().unwrap();
    let rel = (ppl.ppl - theirs).abs() / theirs;
    eprintln!(
        "{name}: perplexity {:.4} vs mlx-lm {theirs} ({:.2}%)",
        ppl.ppl,
        rel * 100.0
    );
    forced.assert_agrees(NEAR_TIE);
    assert_eq!(ppl.chunks as u64, want["chunks_512"].as_u64().unwrap());
    assert!(
        rel < 0.01,
        "{name}: perplexity {:.4} is {:.2}% from mlx-lm's {theirs}",
        ppl.ppl,
        rel * 100.0
    );
}

#[test]
fn hf_bf16_directory_matches_mlx_lm() {
    check("smollm2-135m-hf-bf16");
}

#[test]
fn mlx_4bit_directory_matches_mlx_lm() {
    check("smollm2-135m-mlx-q4g64");
}

#[test]
fn mlx_mixed_3_6_directory_matches_mlx_lm() {
    check("smollm2-135m-mlx-mixed36");
}
