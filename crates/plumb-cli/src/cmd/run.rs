//! `plumb run`: raw completion of a prompt, streamed.

use std::io::Write;

use anyhow::{Context, Result};
use plumb_engine::GenerateParams;

use crate::common::{with_session, ModelArgs, SamplingArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Context size in tokens (0 = the model's trained context, at most 4096).
    #[arg(long, default_value_t = 0, value_name = "N")]
    ctx: usize,
    /// The text to complete (special tokens such as <|im_start|> written in it are recognized).
    #[arg(long, short = 'p')]
    prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when the text contains this string (repeatable).
    #[arg(long, value_name = "TEXT")]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object (text, token_ids, prompt_tokens, finish_reason, timings) instead
    /// of streaming.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result<()> {
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling: a.sampling.params()?,
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
    };
    with_session!(a.model, a.ctx, |s| {
        let ids = s.encode(&a.prompt)?;
        let stdout = std::io::stdout();
        let json = a.json;
        let g = s.generate(&ids, &params, &mut |text| {
            if !json {
                let mut out = stdout.lock();
                // A closed pipe (e.g. `| head`) ends generation quietly.
                return out
                    .write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_ok();
            }
            true
        })?;
        let pre = g.prefill_time.as_secs_f64();
        let dec = g.decode_time.as_secs_f64();
        let n = g.token_ids.len();
        let pp = (g.prompt_tokens - g.cached_tokens) as f64 / pre.max(1e-9);
        let tg = if n > 1 {
            (n - 1) as f64 / dec.max(1e-9)
        } else {
            0.0
        };
        if json {
            let v = serde_json::json!({
                "text": g.text,
                "token_ids": g.token_ids,
                "prompt_tokens": g.prompt_tokens,
                "completion_tokens": n,
                "finish_reason": g.finish_reason.as_str(),
                "timings": {
                    "prefill_ms": pre * 1e3,
                    "decode_ms": dec * 1e3,
                    "prompt_tokens_per_s": pp,
                    "generated_tokens_per_s": tg,
                },
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).context("encoding JSON")?
            );
        } else {
            println!();
        }
        eprintln!(
            "plumb: prompt {} tokens at {:.1} t/s, generated {} tokens at {:.1} t/s, finish: {}",
            g.prompt_tokens,
            pp,
            n,
            tg,
            g.finish_reason.as_str()
        );
        Ok(())
    })
}
