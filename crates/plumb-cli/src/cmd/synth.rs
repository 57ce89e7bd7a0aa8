//! `plumb synth`: a GGUF with a real model's shape and random weights.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use plumb_model::quantize::Recipe;
use plumb_model::synth;

/// The help's list of shapes, from the table itself.
fn after_help() -> String {
    let names: Vec<&str> = synth::SHAPES.iter().map(|s| s.name).collect();
    format!(
        "Shapes: {}.\n\
Example: plumb synth --shape llama3-8b --quant q4_0 -o /tmp/llama3-8b-q4_0.gguf",
        names.join(", ")
    )
}

#[derive(Debug, clap::Args)]
#[command(after_help = after_help())]
pub struct Args {
    /// Model shape to imitate.
    #[arg(long)]
    shape: String,
    /// Storage format of the weight matrices (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    /// Q2_K .. Q6_K), or llama.cpp's per-tensor mixes Q4_K_M and Q5_K_M.
    #[arg(long, default_value = "q4_0")]
    quant: String,
    /// Output file.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn main(a: Args) -> Result<()> {
    let shape = synth::shape(&a.shape).ok_or_else(|| {
        let names: Vec<&str> = synth::SHAPES.iter().map(|s| s.name).collect();
        anyhow!(
            "unknown shape {:?}; known shapes: {}",
            a.shape,
            names.join(", ")
        )
    })?;
    let quant = Recipe::parse(&a.quant)?;
    let t0 = std::time::Instant::now();
    eprintln!(
        "plumb: writing {} ({}) to {}",
        shape.name,
        quant.name(),
        a.output.display()
    );
    let tty = std::io::stderr().is_terminal();
    let progress = Arc::new(move |done: usize, total: usize| {
        if tty && (done == total || done.is_multiple_of(16)) {
            eprint!("\rplumb: {done}/{total} tensors");
            let _ = std::io::stderr().flush();
        }
    });
    synth::write_synthetic_recipe(shape, quant, a.seed, &a.output, progress)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "\nplumb: wrote {:.1} MiB in {:.1} s",
        size as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
