//! Perplexity, computed the way llama.cpp's `perplexity` tool does so the figures compare:
//! split the tokens into consecutive chunks of `n_ctx` (dropping the remainder), evaluate each
//! from an empty cache, and score the second half of each chunk: the logits at positions
//! `n_ctx/2 .. n_ctx-2` predict tokens `n_ctx/2+1 .. n_ctx-1`. PPL = exp(mean NLL).
//! If the model wants BOS, the first token of each chunk is replaced by it.

use plumb_ops::Backend;

use crate::error::{EngineError, Result};
use crate::generate::Session;

#[derive(Debug, Clone, Copy)]
pub struct Perplexity {
    pub ppl: f64,
    pub chunks: usize,
    /// Tokens scored.
    pub scored: usize,
    /// Tokens in the input.
    pub tokens: usize,
}

/// `progress(done_chunks, total_chunks, ppl_so_far)` is called after each chunk.
pub fn perplexity<B: Backend>(
    session: &mut Session<B>,
    tokens: &[u32],
    n_ctx: usize,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    if n_ctx < 4 {
        return Err(EngineError::BadRequest(format!(
            "--ctx {n_ctx} is too small for perplexity (need ≥ 4)"
        )));
    }
    if n_ctx > session.context_size() {
        return Err(EngineError::PromptTooLong {
            tokens: n_ctx,
            ctx: session.context_size(),
        });
    }
    let chunks = tokens.len() / n_ctx;
    if chunks == 0 {
        return Err(EngineError::BadRequest(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let vocab = session.model.config.vocab_size;
    let bos = session
        .tokenizer
        .add_bos_default()
        .then(|| session.tokenizer.bos())
        .flatten();
    let first = n_ctx / 2;
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let logits = session.logits_all(&chunk)?;
        for pos in first..n_ctx - 1 {
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            nll -= log_softmax_at(row, chunk[pos + 1] as usize);
            count += 1;
        }
        progress(c + 1, chunks, (nll / count as f64).exp());
    }
    Ok(Perplexity {
        ppl: (nll / count as f64).exp(),
        chunks,
        scored: count,
        tokens: tokens.len(),
    })
}

/// `log softmax(row)[i]` in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_row() {
        let row = [0.5f32; 4];
        assert!((log_softmax_at(&row, 2) - (0.25f64).ln()).abs() < 1e-12);
    }
}
