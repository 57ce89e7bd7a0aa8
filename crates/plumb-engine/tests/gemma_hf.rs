//! Gemma 3 270M as a Hugging Face directory against mlx-lm (`fixtures/mlx/gemma3-record.json`,
//! made by scripts/make_gemma_hf_fixture.py with mlx 0.32.4 and mlx-lm 0.32.2). plumb writes
//! the bf16 gemma3_text directory from the Gemma 3 GGUF with its quantize writer (norms
//! without the converter's `1 +`, Hugging Face names and config), and the record's tensor
//! digest proves it holds the tensors mlx-lm was measured on, bit for bit; the record also
//! says how well mlx-lm on that directory agrees with llama.cpp on the GGUF. Then plumb
//! loads the directory (adding the `1 +` back), mlx-lm's greedy tokens are fed back (teacher
//! forcing) and plumb's perplexity is held to mlx-lm's.

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

fn record() -> serde_json::Value {
    json(&root().join("mlx/gemma3-record.json"))
}

const HF: &str = "gemma-3-270m-hf-bf16";
const MLX: &str = "gemma-3-270m-mlx-q4g64";

/// The GGUF, and the directories plumb writes from it, built once per test binary.
fn dirs() -> (PathBuf, PathBuf) {
    static DIRS: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);
    let mut guard = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = guard.as_ref() {
        return d.clone();
    }
    let name = Path::new("gemma-3-270m");
    let gguf = plumb_engine::store::resolve_model(Some(name), &mut |m| eprintln!("{m}"))
        .expect("fetching gemma-3-270m");
    let out = std::env::temp_dir().join(format!("plumb-gemma-hf-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let quiet = Arc::new(|_: usize, _: usize, _: &str| {});
    let hf = out.join(HF);
    let format = DirFormat::Hf(plumb_core::GgmlType::BF16);
    write_dir(
        &Checkpoint::open(&gguf).unwrap(),
        format,
        &hf,
        quiet.clone(),
    )
    .unwrap();
    if record()["models"].get(MLX).is_some() {
        let format = DirFormat::Mlx {
            recipe: MlxRecipe::Uniform { bits: 4, group: 64 },
            dtype: plumb_core::GgmlType::BF16,
        };
        let hf_ck = Checkpoint::open(&hf).unwrap();
        write_dir(&hf_ck, format, &out.join(MLX), quiet).unwrap();
    }
    *guard = Some((gguf.clone(), out.clone()));
    (gguf, out)
}

/// Where the engines pick different tokens, each one's pick must be within this of the top
/// in the other's logits (as in mlx_record.rs): mlx-lm computes in bf16 (activations
/// rounded at every op), plumb's reference in f32.
const NEAR_TIE: f32 = 1.0;

/// Digest, teacher forcing and (with `ppl`) perplexity of the directory `name`.
fn check(name: &str, ppl: bool) {
    let (gguf, out) = dirs();
    let record = record();
    let want = &record["models"][name];
    let dir = out.join(name);
    assert_eq!(
        common::mlx::tensor_digest(&dir),
        want["tensor_digest"].as_str().unwrap(),
        "{name}: plumb's directory does not hold the tensors mlx-lm's record was made on"
    );
    let agree = &want["llama_cpp_agreement"];
    eprintln!(
        "{name}: mlx-lm agrees with llama.cpp on {}/{} greedy tokens ({}/{} prompts identical)",
        agree["prefix_tokens"], agree["tokens"], agree["prompts_identical"], agree["prompts"]
    );
    // Teacher forcing on the reference backend (f32 throughout); perplexity on the CPU one.
    let reference = plumb_ops::ReferenceBackend { threads: true };
    let mut s = common::mlx::session(&gguf, &dir, reference, 128);
    let forced = common::mlx::teacher_forced(&mut s, name, want);
    drop(s);
    forced.assert_agrees(NEAR_TIE);
    if !ppl {
        return;
    }
    // The fixture's token ids (BOS first); `perplexity` replaces each chunk's first token by
    // BOS, as the script does for mlx-lm.
    let ids: Vec<u32> = json(&root().join("gemma-3-270m-q4_k_m/apache-2.0.tokens.json"))
        ["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut s = common::mlx::session(&gguf, &dir, plumb_ops::CpuBackend::new(), 512);
    let ppl = perplexity(&mut s, &ids, 512, &mut |_, _, _| {}).unwrap();
    let theirs = want["perplexity_512"].as_f64().unwrap();
    let rel = (ppl.ppl - theirs).abs() / theirs;
    eprintln!(
        "{name}: perplexity {:.4} vs mlx-lm {theirs} ({:.2}%)",
        ppl.ppl,
        rel * 100.0
    );
    assert_eq!(ppl.chunks as u64, want["chunks_512"].as_u64().unwrap());
    assert!(
        rel < 0.01,
        "{name}: perplexity {:.4} is {:.2}% from mlx-lm's {theirs}",
        ppl.ppl,
        rel * 100.0
    );
}

#[test]
fn gemma3_hf_bf16_directory_matches_mlx_lm() {
    check(HF, true);
}

/// mlx-lm's 4-bit conversion of that directory, which plumb's MLX writer reproduces bit for
/// bit (the digest), loaded through the affine path with Gemma's module names and
/// teacher-forced against mlx-lm (its quantized layers evaluated as `mx.dequantize`'s
/// weights). Perplexity is left to the bf16 directory to keep the test short.
#[test]
fn gemma3_mlx_4bit_directory_matches_mlx_lm() {
    check(MLX, false);
}

/// The directory's config.json is what mlx-lm and Hugging Face read for gemma3_text, and
/// plumb reads it back to the GGUF's configuration.
#[test]
fn gemma3_directory_config_round_trips() {
    let (gguf, out) = dirs();
    let from_gguf = Checkpoint::open(&gguf).unwrap().config().unwrap();
    let from_dir = Checkpoint::open(&out.join(HF)).unwrap().config().unwrap();
    assert_eq!(format!("{from_gguf:?}"), format!("{from_dir:?}"));
    let j = json(&out.join(HF).join("config.json"));
    assert_eq!(j["model_type"], "gemma3_text");
    assert_eq!(j["sliding_window_pattern"], 6);
    assert_eq!(j["query_pre_attn_scalar"], 256);
    assert_eq!(j["hidden_activation"], "gelu_pytorch_tanh");
}
