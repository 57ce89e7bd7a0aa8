//! Shared test helpers: locating the real model and the fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

use plumb_gguf::GgufFile;
use plumb_tokenizer::Tokenizer;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/smollm2-135m-instruct-q4_1/"
);

/// `$PLUMB_MODEL` when set, else the default model from plumb's cache, fetched on first use
/// exactly as the CLI does (never skipped).
pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PLUMB_MODEL") {
        return PathBuf::from(p);
    }
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("the test model {MODEL_FILE} is needed: {e}"))
}

pub fn open_model() -> GgufFile {
    let path = model_path();
    GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

pub fn smollm() -> (GgufFile, Tokenizer) {
    let file = open_model();
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer from GGUF");
    (file, tok)
}

/// Gemma 3 270M (Q4_K_M) from plumb's cache, fetched on first use as `--model gemma-3-270m`
/// does, and its tokenizer.
pub fn gemma() -> (GgufFile, Tokenizer) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let path = {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let name = std::path::Path::new("gemma-3-270m");
        plumb_model::store::resolve_model(Some(name), &mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("the test model gemma-3-270m is needed: {e}"))
    };
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer from GGUF");
    (file, tok)
}

pub const GEMMA_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/gemma-3-270m-q4_k_m/"
);

/// A file of the Gemma fixtures.
pub fn gemma_fixture(name: &str) -> String {
    let path = format!("{GEMMA_FIXTURES}{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
}

pub fn fixture(name: &str) -> String {
    let path = format!("{FIXTURES}{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("parsing fixture {name}: {e}"))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
