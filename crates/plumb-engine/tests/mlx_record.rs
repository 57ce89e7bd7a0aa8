//! Hugging Face and MLX directories of the default model against mlx-lm
//! (`fixtures/mlx/record.json`, made by scripts/make_mlx_fixture.py with mlx 0.32.4 and
//! mlx-lm 0.32.2). plumb builds the directories itself with its quantize writers — a bf16
//! Hugging Face directory from the default GGUF, then mlx-lm's `convert` equivalents
//! (4-bit groups of 64, and the `mixed_3_6` recipe) from it — and the record's tensor
//! digests prove they hold the tensors mlx-lm was measured on, bit for bit. Then mlx-lm's
//! greedy tokens are fed back (teacher forcing) and plumb's perplexity is held to mlx-lm's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plumb_engine::perplexity::perplexity;
use plumb_engine::Session;
use plumb_model::formats::safetensors::Safetensors;
use plumb_model::quantize::dir::{write_dir, DirFormat, MlxRecipe};
use plumb_model::{Checkpoint, Model};
use sha2::{Digest, Sha256};

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

/// The digest of scripts/make_mlx_fixture.py's `tensor_digest`: sha256 over the tensors in
/// name order of `name\0DTYPE\0d0,d1\0` and the raw bytes.
fn tensor_digest(dir: &Path) -> String {
    let st = Safetensors::open_dir(dir).unwrap();
    let mut h = Sha256::new();
    for (name, t) in st.iter() {
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        h.update(format!("{name}\0{:?}\0{}\0", t.dtype, shape.join(",")).as_bytes());
        h.update(t.data.as_slice());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A session over a directory, with the GGUF's tokenizer (the directories plumb writes from
/// a GGUF carry weights and config only).
fn session<B: plumb_ops::Backend>(gguf: &Path, dir: &Path, backend: B) -> Session<B> {
    let (tok, tmpl) = plumb_engine::text_side(&Checkpoint::open(gguf).unwrap()).unwrap();
    let model = Model::load_checkpoint(&Checkpoint::open(dir).unwrap(), backend).unwrap();
    Session::from_parts(model, tok, tmpl, 512).unwrap()
}

/// Where the engines pick different tokens, each one's pick must be within this of the top
/// in the other's logits: a near-tie seen from both sides. mlx-lm computes in bf16 (its
/// activations rounded at every op, its logits here to 1/16), plumb's reference in f32.
const NEAR_TIE: f32 = 1.0;

/// mlx-lm's logit of `id` at a step, if `id` is among its top five.
fn mlx_logit(step: &serde_json::Value, id: usize) -> Option<f32> {
    let ids = step["ids"].as_array()?;
    let at = ids.iter().position(|v| v.as_u64() == Some(id as u64))?;
    Some(step["logits"][at].as_f64()? as f32)
}

fn check(name: &str) {
    let (gguf, out) = dirs();
    let record = json(&root().join("mlx/record.json"));
    let want = &record["models"][name];
    let dir = out.join(name);
    assert_eq!(
        tensor_digest(&dir),
        want["tensor_digest"].as_str().unwrap(),
        "{name}: plumb's directory does not hold the tensors mlx-lm's record was made on"
    );
    // Teacher forcing on the reference backend (f32 throughout: the plumb line); the
    // optimized CPU backend's 8-bit activations move a 4-bit model's logits by up to ~2.6
    // (`plumb check --model`), more than mlx-lm's near-ties. Perplexity on the CPU backend.
    let reference = plumb_ops::ReferenceBackend { threads: true };
    let mut s = session(&gguf, &dir, reference);
    let vocab = s.model.config.vocab_size;
    let (mut positions, mut agree, mut worst) = (0, 0, 0f32);
    let mut report = String::new();
    for case in want["greedy"].as_array().unwrap() {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let (prompt, theirs) = (ids("prompt_token_ids"), ids("greedy_ids_24"));
        let full: Vec<u32> = prompt.iter().chain(&theirs).copied().collect();
        let logits = s.logits_all(&full).unwrap();
        for (k, &expected) in theirs.iter().enumerate() {
            let pos = prompt.len() - 1 + k;
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            let top = plumb_engine::sampler::argmax(row) as usize;
            let gap = row[top] - row[expected as usize];
            positions += 1;
            if gap == 0.0 {
                agree += 1;
                continue;
            }
            // Our top token in mlx-lm's logits: how far below its pick (∞ if not in its top 5).
            let step = &case["top5"][k];
            let their_gap = match mlx_logit(step, top) {
                Some(l) => step["logits"][0].as_f64().unwrap() as f32 - l,
                None => f32::INFINITY,
            };
            report.push_str(&format!(
                "{name} +{k}: mlx-lm {expected}, ours {top}: {gap:.3} below ours in our logits, \
                 ours {their_gap:.3} below in mlx-lm's\n"
            ));
            worst = worst.max(gap).max(their_gap);
        }
        s.reset();
    }
    let text =
        std::fs::read_to_string(root().join("smollm2-135m-instruct-q4_1/apache-2.0.txt")).unwrap();
    let mut s = session(&gguf, &dir, plumb_ops::CpuBackend::new());
    let ids = s.tokenizer.encode(&text, false, false).unwrap();
    let ppl = perplexity(&mut s, &ids, 512, &mut |_, _, _| {}).unwrap();
    let theirs = want["perplexity_512"].as_f64().unwrap();
    let rel = (ppl.ppl - theirs).abs() / theirs;
    eprintln!(
        "{name}: {agree}/{positions} positions agree, worst gap {worst:.3}; perplexity {:.4} \
         vs mlx-lm {theirs} ({:.2}%)\n{report}",
        ppl.ppl,
        rel * 100.0
    );
    assert!(
        worst < NEAR_TIE,
        "{name}: a choice is {worst:.3} below the top in the other engine's logits\n{report}"
    );
    assert!(
        agree * 100 >= positions * 95,
        "{name}: only {agree}/{positions} agree\n{report}"
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
