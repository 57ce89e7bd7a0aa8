//! `plumb quantize`: a GGUF file or model directory re-encoded to GGUF (Q4_0 .. Q6_K, Q4_K_M,
//! Q5_K_M), to an MLX directory (affine groups, or mlx-lm's mixed recipes) or to a Hugging
//! Face directory (f32 / f16 / bf16), streaming tensor by tensor; with `--ppl-file`, the
//! perplexity of the source and of the result side by side. Tokenizers convert with the
//! model: a directory's tokenizer.json becomes GGUF metadata, a GGUF's byte-level BPE
//! vocabulary becomes tokenizer.json, tokenizer_config.json and generation_config.json.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use plumb_core::GgmlType;
use plumb_engine::perplexity::perplexity;
use plumb_engine::{text_side, Session};
use plumb_model::quantize::dir::{write_dir, DirFormat, MlxRecipe};
use plumb_model::quantize::gguf::{quantize_dir, quantize_gguf, Progress};
use plumb_model::quantize::Recipe;
use plumb_model::{Checkpoint, Model};
use plumb_tokenizer::GgufVocab;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Tokenizers are converted with the model: a directory's tokenizer.json \
(byte-level BPE) becomes the GGUF's tokenizer metadata; a GGUF's byte-level BPE vocabulary \
becomes the directory's tokenizer.json, tokenizer_config.json and generation_config.json, so \
that the directory runs by itself. SentencePiece vocabularies are not converted (a directory \
written from such a GGUF has no tokenizer.json).\n\nExamples:\n  \
plumb quantize -m model.gguf --quant q4_k_m -o model-q4_k_m.gguf\n  \
plumb quantize -m hf-dir --quant q8_0 -o model-q8_0.gguf\n  \
plumb quantize -m hf-dir --mlx 4 --group 64 -o mlx-dir\n  \
plumb quantize -m hf-dir --mlx mixed_3_6 -o mlx-dir\n  \
plumb quantize -m model.gguf --hf bf16 -o hf-dir --ppl-file text.txt"
)]
pub struct Args {
    /// The source: a GGUF file or a Hugging Face / MLX directory [default: the default model]
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// Output GGUF file or directory.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// GGUF output (from a GGUF or a directory) in this format: q4_0, q4_1, q5_0, q5_1, q8_0,
    /// q2_k, q3_k, q4_k, q5_k, q6_k, f16, bf16, f32, or llama.cpp's mixes q4_k_m, q5_k_m.
    #[arg(long, value_name = "Q", group = "to")]
    quant: Option<String>,
    /// MLX directory output: bits (2, 3, 4, 5, 6, 8) or an mlx-lm recipe (mixed_2_6,
    /// mixed_3_4, mixed_3_6, mixed_4_6).
    #[arg(long, value_name = "BITS|RECIPE", group = "to")]
    mlx: Option<String>,
    /// Hugging Face directory output in this float type: f32, f16, bf16.
    #[arg(long, value_name = "DTYPE", group = "to")]
    hf: Option<String>,
    /// Group size of MLX output (32, 64, 128).
    #[arg(long, default_value_t = 64)]
    group: usize,
    /// Float type of an MLX directory's unquantized tensors, scales and biases (f16, bf16).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Score this text with the source and the result (perplexity, CPU backend).
    #[arg(long, value_name = "FILE")]
    ppl_file: Option<PathBuf>,
    /// Tokens per perplexity chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
}

fn float(name: &str) -> Result<GgmlType> {
    GgmlType::parse(name)
        .filter(|t| matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
        .ok_or_else(|| anyhow!("{name:?} is not a float type (f32, f16, bf16)"))
}

/// A progress bar on stderr when it is a terminal, a closing line otherwise.
fn progress_bar() -> Progress {
    let tty = std::io::stderr().is_terminal();
    Arc::new(move |done: usize, total: usize, _name: &str| {
        if tty {
            let width = 40;
            let filled = done * width / total.max(1);
            eprint!(
                "\rplumb: [{}{}] {done}/{total} tensors",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stderr().flush();
        } else if done == total {
            eprint!("plumb: {done}/{total} tensors");
        }
    })
}

pub fn main(a: Args) -> Result<()> {
    let src = crate::common::model_path(a.model.as_deref())?;
    let ck = Checkpoint::open(&src).with_context(|| format!("opening {}", src.display()))?;
    let t0 = std::time::Instant::now();
    if let Some(q) = &a.quant {
        let recipe = Recipe::parse(q)?;
        eprintln!(
            "plumb: {} -> {} ({})",
            src.display(),
            a.output.display(),
            recipe.name()
        );
        let plan = match &ck {
            Checkpoint::Gguf(f) => quantize_gguf(f, recipe, &a.output, progress_bar())?,
            Checkpoint::Dir(d) => {
                let vocab = GgufVocab::from_model_dir(&d.dir, Some(d.config.vocab_size))
                    .context("converting the directory's tokenizer to GGUF metadata")?;
                eprintln!(
                    "plumb: tokenizer: {} tokens, {} merges, pre-tokenizer {}",
                    vocab.tokens.len(),
                    vocab.merges.len(),
                    vocab.pre
                );
                quantize_dir(d, recipe, vocab.to_metadata(), &a.output, progress_bar())?
            }
        };
        let counts: Vec<String> = plan
            .counts()
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        eprintln!("\nplumb: tensors: {}", counts.join(", "));
    } else {
        let format = match (&a.mlx, &a.hf) {
            (Some(m), _) => {
                let recipe = match MlxRecipe::mixed(m) {
                    Some(r) => r,
                    None => MlxRecipe::Uniform {
                        bits: m
                            .parse()
                            .map_err(|_| anyhow!("--mlx {m:?}: bits or a recipe"))?,
                        group: a.group,
                    },
                };
                DirFormat::Mlx {
                    recipe,
                    dtype: float(&a.dtype)?,
                }
            }
            (None, Some(h)) => DirFormat::Hf(float(h)?),
            (None, None) => bail!("say what to write: --quant, --mlx or --hf"),
        };
        eprintln!(
            "plumb: {} -> {} ({format:?})",
            src.display(),
            a.output.display()
        );
        let n = write_dir(&ck, format, &a.output, progress_bar())?;
        eprintln!("\nplumb: wrote {n} tensors");
        if let Checkpoint::Gguf(f) = &ck {
            match GgufVocab::from_gguf_metadata(|k| f.get(k)) {
                Ok(vocab) => {
                    vocab
                        .write_model_dir(&a.output)
                        .context("writing the converted tokenizer")?;
                    eprintln!(
                        "plumb: tokenizer.json, tokenizer_config.json and \
                         generation_config.json written from the GGUF's vocabulary"
                    );
                }
                Err(e) => eprintln!(
                    "plumb: the directory has weights and config.json only ({e}); copy the \
                     model's tokenizer.json and tokenizer_config.json into it to run it"
                ),
            }
        }
    }
    eprintln!("plumb: done in {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(file) = &a.ppl_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let before = score(&ck, &src, &text, a.ctx)?;
        let after = score(&ck, &a.output, &text, a.ctx)?;
        println!(
            "perplexity (ctx {}): source {before:.4}, quantized {after:.4} ({:+.2}%)",
            a.ctx,
            (after / before - 1.0) * 100.0
        );
    }
    Ok(())
}

/// Perplexity of `text` with the model at `path` on the CPU backend, tokenized by the
/// source checkpoint `ck` (a directory written from a SentencePiece GGUF has no tokenizer of
/// its own).
fn score(ck: &Checkpoint, path: &Path, text: &str, ctx: usize) -> Result<f64> {
    let (tok, tmpl) = text_side(ck)?;
    let model = Model::load_checkpoint(&Checkpoint::open(path)?, plumb_ops::CpuBackend::new())?;
    let mut s = Session::from_parts(model, tok, tmpl, ctx)?;
    let ids = s.tokenizer.encode(text, false, false)?;
    let r = perplexity(&mut s, &ids, ctx, &mut |_, _, _| {})?;
    Ok(r.ppl)
}
