//! `plumb chat`: an interactive conversation using the model's chat template.

use std::io::{BufRead, Write};

use anyhow::Result;
use plumb_engine::GenerateParams;
use plumb_tokenizer::ChatMessage;

use crate::common::{with_session, ModelArgs, SamplingArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Context size in tokens (0 = the model's trained context, at most 4096).
    #[arg(long, default_value_t = 0, value_name = "N")]
    ctx: usize,
    /// A system message that starts the conversation.
    #[arg(long, short = 's')]
    system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn main(a: Args) -> Result<()> {
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling: a.sampling.params()?,
        ..Default::default()
    };
    let start: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    with_session!(a.model, a.ctx, |s| {
        eprintln!(
            "plumb: chat ready ({} tokens of context). /reset clears the history, /exit quits.",
            s.context_size()
        );
        let mut history = start.clone();
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            eprint!("> ");
            let _ = std::io::stderr().flush();
            let Some(line) = lines.next() else { break };
            let line = line?;
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    history = start.clone();
                    s.reset();
                    eprintln!("plumb: history cleared");
                    continue;
                }
                _ => {}
            }
            history.push(ChatMessage {
                role: "user".into(),
                content: line,
            });
            let ids = s.encode_chat(&history)?;
            if ids.len() + 16 > s.context_size() {
                eprintln!(
                    "plumb: the conversation no longer fits the context; /reset to start over"
                );
                history.pop();
                continue;
            }
            let mut out = std::io::stdout();
            let g = s.generate(&ids, &params, &mut |t| {
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
                true
            });
            let g = match g {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("\nplumb: {e}");
                    history.pop();
                    continue;
                }
            };
            println!();
            let n = g.token_ids.len();
            eprintln!(
                "plumb: {n} tokens at {:.1} t/s ({} prompt tokens reused)",
                n.saturating_sub(1) as f64 / g.decode_time.as_secs_f64().max(1e-9),
                g.cached_tokens
            );
            history.push(ChatMessage {
                role: "assistant".into(),
                content: g.text.trim().to_string(),
            });
        }
        Ok(())
    })
}
