//! The token trie of plumb's tokenizer, as llguidance sees it: every token's bytes, control
//! tokens marked with llguidance's special-token byte (so that `<|im_end|>` in a grammar names
//! the token and plain text never spells it), and the tokenizer's stop tokens as the ends of
//! sequence a grammar may allow once it is complete.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use plumb_tokenizer::{TokenKind, Tokenizer, TokenizerModel};

use super::ConstraintError;

/// plumb's tokenizer behind llguidance's tokenizer interface.
struct PlumbEnv {
    trie: TokTrie,
    tok: Arc<Tokenizer>,
    /// Whether `encode` gives the tokenization the model was trained on for any text
    /// (byte-level BPE does; SentencePiece adds a space in front of every text).
    canonical: bool,
}

impl TokenizerEnv for PlumbEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) if self.canonical => self
                .tok
                .encode(text, false, false)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            _ => self.trie.greedy_tokenize(s),
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

/// The bytes llguidance matches for each token: control tokens behind the marker byte 0xFF,
/// unknown and unused tokens empty (a grammar can never produce them).
pub(super) fn trie_words(tok: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tok.vocab_size() as u32)
        .map(|id| match tok.token_kind(id) {
            Some(TokenKind::Control) => {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(&tok.token_bytes(id));
                w
            }
            Some(TokenKind::Unknown | TokenKind::Unused) | None => Vec::new(),
            Some(_) => tok.token_bytes(id),
        })
        .collect()
}

/// The tokenizer environment of `tok`.
pub(super) fn token_env(tok: Arc<Tokenizer>) -> Result<TokEnv, ConstraintError> {
    let stops = tok.stop_tokens().to_vec();
    let Some(&first_stop) = stops.first() else {
        return Err(ConstraintError::Unavailable(
            "the tokenizer has no end-of-sequence token, so no grammar could end".into(),
        ));
    };
    let vocab = u32::try_from(tok.vocab_size())
        .map_err(|_| ConstraintError::Unavailable("the vocabulary is too large".into()))?;
    let info = TokRxInfo {
        vocab_size: vocab,
        tok_eos: first_stop,
        tok_bos: tok.bos(),
        tok_pad: tok.pad(),
        tok_unk: None,
        tok_end_of_turn: tok.eot(),
    };
    let words = trie_words(&tok);
    // The trie builder asserts on limits of its node encoding; a vocabulary past them is
    // reported as unusable rather than taking the process down.
    let trie = catch_unwind(AssertUnwindSafe(|| {
        TokTrie::from(&info, &words).with_eos_tokens(&stops)
    }))
    .map_err(|_| {
        ConstraintError::Unavailable("the vocabulary does not fit llguidance's token trie".into())
    })?;
    let canonical = tok.model() != TokenizerModel::SentencePiece;
    Ok(Arc::new(PlumbEnv {
        trie,
        tok,
        canonical,
    }))
}
