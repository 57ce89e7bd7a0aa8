//! A tiny random-weight model for the forward tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_gguf::GgufFile;
use plumb_model::synth::{write_synthetic, SynthShape};
use plumb_model::Model;
use plumb_ops::ReferenceBackend;

/// Writes a 2-layer llama of random Q8_0 weights (GQA 4:2, vocab 300) under `dir`.
fn tiny(dir: &Path) -> PathBuf {
    let shape = SynthShape {
        name: "tiny",
        arch: "llama",
        n_layers: 2,
        d_model: 64,
        d_ff: 128,
        n_heads: 4,
        n_kv_heads: 2,
        vocab: 300,
        ctx: 256,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        tied: false,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    };
    let path = dir.join("tiny.gguf");
    write_synthetic(&shape, GgmlType::Q8_0, 9, &path, Arc::new(|_, _| {})).unwrap();
    path
}

/// The tiny model on the reference backend, its file in a directory named after `tag`.
pub fn tiny_model(tag: &str) -> Model<ReferenceBackend> {
    let dir = std::env::temp_dir().join(format!("plumb-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = GgufFile::open(&tiny(&dir)).unwrap();
    let m = Model::load(&file, ReferenceBackend { threads: false }).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    m
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
