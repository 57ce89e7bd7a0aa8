//! `plumb tokenize`: token ids of a text (no BOS unless the model asks for one).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_gguf::GgufFile;
use plumb_tokenizer::Tokenizer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1, fetched on first use]
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// The text to tokenize.
    #[arg(long, short = 'p', conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the text from this file.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Print a JSON array of ids instead of one `id<TAB>piece` line per token.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result<()> {
    let text = match (&a.prompt, &a.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("give the text with --prompt TEXT or --file PATH"),
    };
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&text, tok.add_bos_default(), true)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in &ids {
            println!("{id}\t{:?}", String::from_utf8_lossy(&tok.token_bytes(*id)));
        }
        eprintln!("plumb: {} tokens", ids.len());
    }
    Ok(())
}
