//! `plumb perplexity`: the perplexity of a text file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use plumb_engine::perplexity::perplexity;

use crate::common::{with_session, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file to score.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// Tokens per chunk; each chunk is evaluated from an empty cache and its second half scored.
    #[arg(long = "ctx", default_value_t = 512, value_name = "N")]
    chunk: usize,
    /// Print {"ppl", "chunks", "tokens"} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let ctx = a.chunk;
    with_session!(a.model, ctx, |s| {
        // With BOS when the model wants it, as llama.cpp tokenizes the text it scores.
        let ids = s.tokenizer.encode(&text, true, false)?;
        eprintln!(
            "plumb: {} tokens, {} chunks of {}",
            ids.len(),
            ids.len() / a.chunk.max(1),
            a.chunk
        );
        let r = perplexity(&mut s, &ids, a.chunk, &mut |done, total, ppl| {
            eprintln!("plumb: chunk {done}/{total}: ppl so far {ppl:.4}");
        })?;
        if a.json {
            let v = serde_json::json!({"ppl": r.ppl, "chunks": r.chunks, "tokens": r.tokens, "scored": r.scored});
            println!("{v}");
        } else {
            println!(
                "perplexity: {:.4} ({} chunks of {}, {} tokens scored)",
                r.ppl, r.chunks, a.chunk, r.scored
            );
        }
        Ok(())
    })
}
