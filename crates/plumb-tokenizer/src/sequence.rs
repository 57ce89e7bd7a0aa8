//! Whole sequences for an encoder: a text, or ids already tokenized, with the special tokens
//! the tokenizer's template puts around one sequence (`[CLS] … [SEP]` for BERT), truncated
//! to the encoder's length.

use tokenizers::{Encoding, Token, TruncationDirection};

use crate::error::{Result, TokenizerError};
use crate::tokenizer::{Backend, Tokenizer};

impl Tokenizer {
    /// `text` as one encoder input: its tokens (special tokens in it are plain text), cut to
    /// leave room for the template's, then the template (a tokenizer.json's post-processor;
    /// for GGUF tokenizers BOS when the model wants it). At most `max_len` ids.
    pub fn encode_sequence(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Hf(hf) => {
                let enc = hf
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Backend(e.to_string()))?;
                self.template(enc, max_len)
            }
            Backend::Spm(_) => {
                let mut ids = self.encode(text, true, false)?;
                ids.truncate(max_len);
                Ok(ids)
            }
        }
    }

    /// Ids of one sequence's text (as [`Tokenizer::encode`] gives them, no special tokens)
    /// made into an encoder input as [`Tokenizer::encode_sequence`] makes a text's.
    pub fn wrap_sequence(&self, ids: &[u32], max_len: usize) -> Result<Vec<u32>> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(TokenizerError::Backend(format!(
                "token id {id} is outside the vocabulary of {}",
                self.vocab_size()
            )));
        }
        match &self.backend {
            Backend::Hf(_) => {
                let tokens = ids.iter().map(|&id| Token::new(id, String::new(), (0, 0)));
                self.template(Encoding::from_tokens(tokens.collect(), 0), max_len)
            }
            Backend::Spm(_) => {
                let bos = self.bos().filter(|_| self.add_bos_default());
                let mut out: Vec<u32> = bos.into_iter().chain(ids.iter().copied()).collect();
                out.truncate(max_len);
                Ok(out)
            }
        }
    }

    /// Truncates `enc` so that it fits `max_len` with the template's tokens, then applies the
    /// template.
    fn template(&self, mut enc: Encoding, max_len: usize) -> Result<Vec<u32>> {
        let Backend::Hf(hf) = &self.backend else {
            return Ok(enc.get_ids().to_vec());
        };
        let added = hf
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        enc.truncate(max_len.saturating_sub(added), 0, TruncationDirection::Right);
        let out = hf
            .post_process(enc, None, true)
            .map_err(|e| TokenizerError::Backend(e.to_string()))?;
        Ok(out.get_ids().to_vec())
    }
}
