//! The [`Tokenizer`] type: encoding, decoding and vocabulary queries, whatever the back end.

use std::collections::HashMap;
use std::fmt;

use crate::bpe::PreTokenizerInfo;
use crate::chat::ChatTemplate;
use crate::error::{Result, TokenizerError};
use crate::spm::Spm;
use crate::vocab::{token_pieces, Fragment, PieceStyle, SpecialMatcher, TokenKind};

/// Which kind of tokenizer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModel {
    /// GGUF `gpt2`: byte-level BPE.
    Gpt2Bpe,
    /// GGUF `llama`: SentencePiece-style BPE with scores and byte fallback.
    SentencePiece,
    /// A Hugging Face `tokenizer.json`.
    TokenizerJson,
}

pub(crate) enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<Spm>),
}

/// Special-token text that ends a turn in common chat formats; each is a stop token when the
/// vocabulary has it as a control or user-defined token.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

/// Everything a back end supplies to build a [`Tokenizer`].
pub(crate) struct Parts {
    pub model: TokenizerModel,
    pub backend: Backend,
    pub style: PieceStyle,
    pub tokens: Vec<String>,
    pub kinds: Vec<TokenKind>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub pad: Option<u32>,
    pub extra_stops: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub strip_leading_space: bool,
    pub chat_template: Option<String>,
    pub pre: Option<PreTokenizerInfo>,
}

/// A tokenizer built from GGUF metadata ([`Tokenizer::from_gguf_metadata`]) or from a
/// `tokenizer.json` ([`Tokenizer::from_tokenizer_json`]). `Send + Sync`; encoding is `&self`.
pub struct Tokenizer {
    model: TokenizerModel,
    pub(crate) backend: Backend,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    pieces: Vec<Vec<u8>>,
    specials: SpecialMatcher,
    to_id: HashMap<String, u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    pad: Option<u32>,
    stop: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    strip_leading_space: bool,
    chat_template: Option<String>,
    pre: Option<PreTokenizerInfo>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("stop", &self.stop)
            .field("add_bos", &self.add_bos)
            .field("pre", &self.pre.as_ref().map(|p| p.used))
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    pub(crate) fn assemble(p: Parts) -> Result<Self> {
        let n = p.tokens.len();
        if p.kinds.len() != n {
            return Err(TokenizerError::InvalidVocab(format!(
                "{} tokens but {} token types",
                n,
                p.kinds.len()
            )));
        }
        for (what, id) in [
            ("BOS", p.bos),
            ("EOS", p.eos),
            ("EOT", p.eot),
            ("PAD", p.pad),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::InvalidVocab(format!(
                    "{what} token id {id} is out of range (vocabulary has {n} tokens)"
                )));
            }
        }
        let mut to_id = HashMap::with_capacity(n);
        for (id, t) in p.tokens.iter().enumerate() {
            to_id.entry(t.clone()).or_insert(id as u32);
        }
        let mut stop: Vec<u32> = Vec::new();
        let named = END_OF_TURN_TEXTS.iter().filter_map(|t| {
            let id = *to_id.get(*t)?;
            matches!(
                p.kinds[id as usize],
                TokenKind::Control | TokenKind::UserDefined
            )
            .then_some(id)
        });
        let candidates = [p.eos, p.eot].into_iter().flatten();
        for id in candidates.chain(p.extra_stops).chain(named) {
            if (id as usize) < n && !stop.contains(&id) {
                stop.push(id);
            }
        }
        Ok(Tokenizer {
            model: p.model,
            backend: p.backend,
            pieces: token_pieces(&p.tokens, &p.kinds, p.style),
            specials: SpecialMatcher::new(&p.tokens, &p.kinds),
            tokens: p.tokens,
            kinds: p.kinds,
            to_id,
            bos: p.bos,
            eos: p.eos,
            eot: p.eot,
            pad: p.pad,
            stop,
            add_bos: p.add_bos,
            add_eos: p.add_eos,
            add_space_prefix: p.add_space_prefix,
            strip_leading_space: p.strip_leading_space,
            chat_template: p.chat_template,
            pre: p.pre,
        })
    }

    /// Encodes `text`.
    ///
    /// * `add_bos`: prepend BOS — but only when the model asks for it
    ///   ([`add_bos_default`](Self::add_bos_default)) and has a BOS token. Pass `true` for a
    ///   fresh prompt and `false` for text that continues one. EOS is never appended.
    /// * `parse_special`: recognize control tokens written in the text (`<|im_start|>`) as
    ///   single tokens; when false they are tokenized as plain text. User-defined tokens are
    ///   always recognized (as llama.cpp does).
    ///
    /// For SentencePiece models a leading space (`▁`) is added at the start of the text and
    /// after every special token, as llama.cpp does.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        for frag in self.specials.split(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_plain(t, prev_special, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    fn encode_plain(&self, text: &str, prev_special: bool, out: &mut Vec<u32>) -> Result<()> {
        match &self.backend {
            Backend::Hf(hf) => {
                let enc = hf
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Backend(e.to_string()))?;
                out.extend_from_slice(enc.get_ids());
                Ok(())
            }
            Backend::Spm(spm) => {
                let prefix = if self.add_space_prefix && prev_special {
                    "\u{2581}"
                } else {
                    ""
                };
                let escaped = format!("{prefix}{}", text.replace(' ', "\u{2581}"));
                spm.encode(&escaped, out)
            }
        }
    }

    /// Decodes ids to text, special tokens rendered as their text (`<|im_end|>`).
    /// Ids out of range decode to U+FFFD; invalid UTF-8 becomes U+FFFD.
    /// For SentencePiece models the leading space of the first piece is dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false)
    }

    /// [`decode`](Self::decode), optionally leaving out control tokens (`skip_special`).
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        let mut strip = self.strip_leading_space;
        for &id in ids {
            self.append_piece(id, skip_special, &mut strip, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub(crate) fn append_piece(
        &self,
        id: u32,
        skip_special: bool,
        strip: &mut bool,
        out: &mut Vec<u8>,
    ) {
        let Some(piece) = self.pieces.get(id as usize) else {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            *strip = false;
            return;
        };
        if skip_special && self.is_special(id) {
            return;
        }
        let piece = match piece.split_first() {
            Some((b' ', rest)) if *strip => rest,
            _ => piece,
        };
        *strip = false;
        out.extend_from_slice(piece);
    }

    pub(crate) fn strips_leading_space(&self) -> bool {
        self.strip_leading_space
    }

    /// The raw bytes token `id` stands for (possibly part of a UTF-8 character); special
    /// tokens give their text; an id out of range gives the bytes of U+FFFD.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self.pieces.get(id as usize) {
            Some(p) => p.clone(),
            None => "\u{FFFD}".as_bytes().to_vec(),
        }
    }

    /// The vocabulary entry for `id` as stored (byte-level or `▁` form), None if out of range.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the vocabulary entry whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.to_id.get(text).copied()
    }

    /// The kind of token `id`, None if out of range.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<s>`; HF "special" added tokens).
    pub fn is_special(&self, id: u32) -> bool {
        self.token_kind(id) == Some(TokenKind::Control)
    }

    /// Number of vocabulary entries (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn model(&self) -> TokenizerModel {
        self.model
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (`tokenizer.ggml.eot_token_id`), if the model declares one.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Tokens that end generation: EOS, EOT, ids from generation_config.json, and the
    /// control tokens `<|im_end|>`, `<|eot_id|>`, `<|eom_id|>`, `<|end|>`, `<end_of_turn>`,
    /// `<|endoftext|>`, `<|end_of_text|>` when present. No duplicates.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// Whether the model wants BOS at the start of a prompt (`tokenizer.ggml.add_bos_token`;
    /// default true for SentencePiece and false for byte-level BPE).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// `tokenizer.ggml.add_eos_token` (informational: [`encode`](Self::encode) never adds EOS).
    pub fn add_eos_default(&self) -> bool {
        self.add_eos
    }

    /// The pre-tokenizer used (byte-level BPE from GGUF only).
    pub fn pre_tokenizer(&self) -> Option<&PreTokenizerInfo> {
        self.pre.as_ref()
    }

    /// The model's own chat template source, if it has one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The model's chat template (or [`ChatTemplate::default_source`] when it has none), with
    /// the model's BOS/EOS text.
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let text = |id: Option<u32>| id.and_then(|i| self.token_str(i)).unwrap_or("");
        let source = match self.chat_template.as_deref() {
            Some(s) => s,
            None => ChatTemplate::default_source(self.tokens.iter().map(String::as_str)),
        };
        ChatTemplate::new(source, text(self.bos), text(self.eos))
    }
}
