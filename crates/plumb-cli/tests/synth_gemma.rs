//! `plumb synth --shape gemma3-270m`: a random-weight file that is the real Gemma 3 270M
//! (`gemma-3-270m-q4_k_m.gguf`, fetched as `--model gemma-3-270m` does) in everything but the
//! weights' values and the vocabulary's text, and that `plumb check --model` runs, so that a
//! GPU machine the real file cannot reach checks its backend on Gemma's exact shape.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plumb_gguf::{GgufFile, Value};
use plumb_model::ModelConfig;
use plumb_tokenizer::Tokenizer;

use common::{plumb, text};

/// The synthetic file, written once per test binary by `plumb synth` as a user runs it.
fn synth_path() -> PathBuf {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return p.clone();
    }
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synth-gemma3-270m-q4_k_m.gguf");
    let o = plumb(&[
        "synth",
        "--shape",
        "gemma3-270m",
        "--quant",
        "q4_k_m",
        "-o",
        p.to_str().expect("a UTF-8 path"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    *guard = Some(p.clone());
    p
}

fn real_path() -> PathBuf {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return p.clone();
    }
    let p = plumb_engine::store::resolve_model(Some(Path::new("gemma-3-270m")), &mut |m| {
        eprintln!("{m}")
    })
    .expect("fetching gemma-3-270m");
    *guard = Some(p.clone());
    p
}

fn keys_with_prefix<'a>(f: &'a GgufFile, prefix: &str) -> BTreeMap<&'a str, &'a Value> {
    f.metadata
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

#[test]
fn the_synthetic_gemma_has_the_real_files_hyperparameters_tensors_and_vocabulary_layout() {
    let real = GgufFile::open(&real_path()).unwrap();
    let synth = GgufFile::open(&synth_path()).unwrap();

    assert_eq!(synth.architecture().unwrap(), real.architecture().unwrap());
    // Every hyperparameter key, with its value and its type.
    assert_eq!(
        keys_with_prefix(&synth, "gemma3."),
        keys_with_prefix(&real, "gemma3.")
    );

    // The tokenizer's keys: the same set; the same scalars; arrays of the same type and length.
    let (rt, st) = (
        keys_with_prefix(&real, "tokenizer."),
        keys_with_prefix(&synth, "tokenizer."),
    );
    assert_eq!(st.keys().collect::<Vec<_>>(), rt.keys().collect::<Vec<_>>());
    for (k, rv) in &rt {
        match (rv, st[k]) {
            (Value::Array(rty, r), Value::Array(sty, s)) => {
                assert_eq!((sty, s.len()), (rty, r.len()), "{k}");
            }
            (rv, sv) => assert_eq!(sv, *rv, "{k}"),
        }
    }
    // The special tokens and the byte tokens sit where the real vocabulary has them.
    let (rtok, stok) = (
        real.get_array("tokenizer.ggml.tokens").unwrap(),
        synth.get_array("tokenizer.ggml.tokens").unwrap(),
    );
    let (rty, sty) = (
        real.get_array("tokenizer.ggml.token_type").unwrap(),
        synth.get_array("tokenizer.ggml.token_type").unwrap(),
    );
    for id in [0, 1, 2, 3, 105, 106, 238, 300, 493] {
        assert_eq!(stok[id], rtok[id], "token {id}");
        assert_eq!(sty[id], rty[id], "token type {id}");
    }

    // Every tensor: name, shape and (Q4_K_M's per-tensor choice) format.
    let tensors = |f: &GgufFile| -> BTreeMap<String, (Vec<u64>, String)> {
        f.tensors
            .iter()
            .map(|t| (t.name.clone(), (t.dims.clone(), t.ty.name().to_string())))
            .collect()
    };
    let (rt, st) = (tensors(&real), tensors(&synth));
    assert_eq!(st.len(), 236);
    assert_eq!(st, rt);

    // What the loader makes of both: every layer's window and RoPE base, scales, softcap.
    let (rc, sc) = (
        ModelConfig::from_gguf(&real).unwrap(),
        ModelConfig::from_gguf(&synth).unwrap(),
    );
    assert_eq!(format!("{sc:?}"), format!("{rc:?}"));
    assert!(sc.swa.as_ref().is_some_and(|s| s.local.contains(&false)));

    // The placeholder vocabulary loads as a SentencePiece tokenizer with Gemma's specials.
    let (rtk, stk) = (
        Tokenizer::from_gguf(&real).unwrap(),
        Tokenizer::from_gguf(&synth).unwrap(),
    );
    assert_eq!(stk.vocab_size(), rtk.vocab_size());
    assert_eq!(stk.model(), rtk.model());
    assert_eq!(
        (stk.bos(), stk.eos(), stk.pad()),
        (rtk.bos(), rtk.eos(), rtk.pad())
    );
    assert_eq!(stk.token_id("<end_of_turn>"), rtk.token_id("<end_of_turn>"));
    let ids = stk.encode("Héllo, world", true, false).unwrap();
    assert_eq!(ids[0], 2);
    assert_eq!(stk.decode(&ids[1..]), "Héllo, world");
}

#[test]
fn the_model_check_passes_on_the_synthetic_gemma_on_the_cpu_backend() {
    let path = synth_path();
    let o = plumb(&[
        "check",
        "--model",
        path.to_str().unwrap(),
        "--backend",
        "cpu",
        "--prompt",
        "Gemma 3, random weights",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["pass"], true, "{v}");
    assert_eq!(v["weights"], "Q5_0", "{v}");
    assert!(v["positions"].as_u64().unwrap() > 1, "{v}");
    assert!(v["max_abs"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn synth_help_lists_every_shape() {
    let o = plumb(&["synth", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("gemma3-270m"), "{out}");
    for s in plumb_model::synth::SHAPES {
        assert!(out.contains(s.name), "{} missing from: {out}", s.name);
    }
}
