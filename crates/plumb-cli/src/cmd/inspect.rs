//! `plumb inspect`: what a GGUF file holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use plumb_gguf::GgufFile;
use plumb_model::ModelConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file.
    path: PathBuf,
    /// Also list every metadata key (long arrays are summarized).
    #[arg(long)]
    metadata: bool,
}

pub fn main(a: Args) -> Result<()> {
    let f = GgufFile::open(&a.path).with_context(|| format!("opening {}", a.path.display()))?;
    println!(
        "file: {} ({:.1} MiB, GGUF v{})",
        a.path.display(),
        f.file_size() as f64 / (1 << 20) as f64,
        f.version
    );
    if let Ok(name) = f.get_str("general.name") {
        println!("name: {name}");
    }
    match ModelConfig::from_gguf(&f) {
        Ok(c) => {
            println!("architecture: {}", c.arch.name());
            println!(
                "layers {}, d_model {}, ffn {}, heads {} (kv {}), head_dim {}, vocab {}, context {}",
                c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.n_ctx_train
            );
            println!(
                "rope: {:?} base {} over {} dims; rms eps {:e}",
                c.rope_style, c.rope_theta, c.n_rot, c.rms_eps
            );
        }
        Err(e) => println!("architecture: not runnable by plumb ({e})"),
    }
    let tok_model = f.get_str("tokenizer.ggml.model").unwrap_or("none");
    let n_tokens = f
        .get_array("tokenizer.ggml.tokens")
        .map(|t| t.len())
        .unwrap_or(0);
    let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
    println!(
        "tokenizer: {tok_model} (pre-tokenizer {pre}), {n_tokens} tokens, bos {}, eos {}, chat template: {}",
        f.get_u64("tokenizer.ggml.bos_token_id").map_or("-".into(), |v| v.to_string()),
        f.get_u64("tokenizer.ggml.eos_token_id").map_or("-".into(), |v| v.to_string()),
        if f.get("tokenizer.chat_template").is_some() { "yes" } else { "no" }
    );
    if a.metadata {
        println!("\nmetadata ({} keys):", f.metadata.len());
        for (k, v) in &f.metadata {
            println!("  {k:<44} {}", v.summary());
        }
    }
    println!("\ntensors ({}):", f.tensors.len());
    println!(
        "  {:<32} {:<6} {:>18} {:>10}",
        "name", "type", "shape", "MiB"
    );
    let mut total = 0usize;
    let mut by_type: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in &f.tensors {
        let shape: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        println!(
            "  {:<32} {:<6} {:>18} {:>10.2}",
            t.name,
            t.ty.name(),
            shape.join("×"),
            t.n_bytes as f64 / (1 << 20) as f64
        );
        total += t.n_bytes;
        *by_type.entry(t.ty.name()).or_default() += t.n_bytes;
    }
    let summary: Vec<String> = by_type
        .iter()
        .map(|(k, v)| format!("{k} {:.1} MiB", *v as f64 / (1 << 20) as f64))
        .collect();
    println!(
        "total {:.1} MiB: {}",
        total as f64 / (1 << 20) as f64,
        summary.join(", ")
    );
    Ok(())
}
