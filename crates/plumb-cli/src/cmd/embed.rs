//! `plumb embed`: sentence embeddings of texts (arguments, or lines of a file), one JSON array
//! per line on stdout.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_engine::{EmbedInput, Embedder, TooLong};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: plumb embed \"The quick brown fox\" \"A fast auburn fox\" --similarity"
)]
pub struct Args {
    /// The texts to embed.
    texts: Vec<String>,
    /// Embed every line of this file too.
    #[arg(long, short = 'f', value_name = "PATH")]
    file: Option<PathBuf>,
    /// The encoder: a Hugging Face directory, or `all-minilm-l6-v2` [default: all-minilm-l6-v2,
    /// fetched on first use].
    #[arg(long, short = 'm', value_name = "DIR|NAME")]
    model: Option<PathBuf>,
    /// Print the cosine similarity of every pair of inputs instead of the vectors.
    #[arg(long)]
    similarity: bool,
    /// Refuse a text longer than the model takes instead of cutting it to the model's length
    /// (256 tokens for all-MiniLM-L6-v2), as sentence-transformers does.
    #[arg(long)]
    no_truncate: bool,
}

pub fn main(a: Args) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(f) = &a.file {
        let body =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.extend(
            body.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if texts.is_empty() {
        bail!("nothing to embed: give texts as arguments or --file");
    }
    let dir = plumb_engine::store::resolve_embedding_model(a.model.as_deref(), &mut |m| {
        eprintln!("plumb: {m}")
    })?;
    let t0 = std::time::Instant::now();
    let e = Embedder::load(&dir, plumb_ops::CpuBackend::new())
        .with_context(|| format!("loading {}", dir.display()))?;
    let inputs: Vec<EmbedInput> = texts.iter().cloned().map(EmbedInput::Text).collect();
    let too_long = if a.no_truncate {
        TooLong::Refuse
    } else {
        TooLong::Truncate
    };
    let out = e.embed(&inputs, too_long)?;
    for &i in &out.truncated {
        eprintln!(
            "plumb: input {i} is longer than {} tokens; only its first tokens were embedded",
            e.max_tokens()
        );
    }
    eprintln!(
        "plumb: {} inputs, {} tokens, {} dimensions, {:.2} s",
        inputs.len(),
        out.tokens,
        e.dim(),
        t0.elapsed().as_secs_f64()
    );
    if a.similarity {
        let v = &out.vectors;
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                println!("{:.4}\t{}\t{}", cosine(&v[i], &v[j]), texts[i], texts[j]);
            }
        }
    } else {
        for v in &out.vectors {
            println!("{}", serde_json::to_string(v)?);
        }
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (n(a) * n(b)).max(f64::MIN_POSITIVE)
}
