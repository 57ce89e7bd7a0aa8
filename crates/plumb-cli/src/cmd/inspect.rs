//! `plumb inspect`: what a GGUF file or a Hugging Face / MLX model directory holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use plumb_gguf::GgufFile;
use plumb_model::formats::HfDir;
use plumb_model::{store, ModelConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file or model directory.
    path: PathBuf,
    /// Also list every metadata key (long arrays are summarized).
    #[arg(long)]
    metadata: bool,
}

pub fn main(a: Args) -> Result<()> {
    let kind = store::detect(&a.path)?;
    if kind != store::ModelKind::Gguf {
        return directory(&a.path, kind);
    }
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

fn print_config(c: &ModelConfig) {
    println!("architecture: {}", c.arch.name());
    println!(
        "layers {}, d_model {}, ffn {}, heads {} (kv {}), head_dim {}, vocab {}, context {}",
        c.n_layers,
        c.d_model,
        c.d_ff,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.n_ctx_train
    );
    println!(
        "rope: {:?} base {} over {} dims; rms eps {:e}",
        c.rope_style, c.rope_theta, c.n_rot, c.rms_eps
    );
}

/// A Hugging Face or MLX directory: config, quantization, generation defaults, tensors.
fn directory(path: &std::path::Path, kind: store::ModelKind) -> Result<()> {
    let d = HfDir::open(path).with_context(|| format!("opening {}", path.display()))?;
    println!(
        "directory: {} ({}; {} safetensors file(s), {:.1} MiB of tensors)",
        path.display(),
        kind.describe(),
        d.tensors.files.len(),
        d.tensors.data_bytes() as f64 / (1 << 20) as f64
    );
    print_config(&d.config);
    println!("tied embeddings: {}", d.tied);
    if let Some(q) = &d.quant {
        let mut o: Vec<String> = q
            .overrides
            .iter()
            .map(|(m, p)| match p {
                Some((bits, group)) => format!("{m}: {bits}-bit/{group}"),
                None => format!("{m}: unquantized"),
            })
            .collect();
        o.sort();
        println!(
            "quantization: MLX affine, {}-bit groups of {}; {} per-module entries{}{}",
            q.default.0,
            q.default.1,
            o.len(),
            if o.is_empty() { "" } else { ": " },
            o.join(", ")
        );
    }
    match d.generation_config()? {
        Some(g) => println!("generation_config.json: {g:?}"),
        None => println!("generation_config.json: none"),
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        println!("{f}: {}", if path.join(f).is_file() { "yes" } else { "no" });
    }
    println!("\ntensors:");
    for (name, t) in d.tensors.iter() {
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        println!(
            "  {name:<52} {:<5} {:>14} {:>9.2} MiB",
            format!("{:?}", t.dtype),
            shape.join("×"),
            t.data.len() as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
