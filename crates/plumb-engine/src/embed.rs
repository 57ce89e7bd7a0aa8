//! Embeddings: a sentence encoder ([`plumb_model::encoder::Encoder`]) with its tokenizer.
//! Texts (or ids already tokenized) become one vector each; inputs run in batches of at most
//! [`BATCH_TOKENS`] tokens.

use std::path::Path;

use plumb_model::encoder::Encoder;
use plumb_ops::Backend;
use plumb_tokenizer::Tokenizer;

use crate::error::{EngineError, Result};

/// Most tokens one encoder pass takes.
pub const BATCH_TOKENS: usize = 8192;

pub struct Embedder<B: Backend> {
    pub encoder: Encoder<B>,
    pub tokenizer: Tokenizer,
    /// The directory's name, which the server reports as the model.
    pub name: String,
}

/// An input of an embedding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// Ids of the text as the tokenizer gives them (no special tokens): the model's
    /// template (`[CLS] … [SEP]`) is added as for a text.
    Ids(Vec<u32>),
}

/// What to do with an input longer than the model's `max_seq_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLong {
    /// Keep its first tokens, as sentence-transformers does.
    Truncate,
    /// Refuse the request, naming the input (as OpenAI's API does).
    Refuse,
}

/// Vectors, one per input, and the tokens the model ran (special tokens included).
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
    /// The inputs that were cut to the model's length, by index.
    pub truncated: Vec<usize>,
}

impl<B: Backend> Embedder<B> {
    /// The encoder in `dir` (a Hugging Face directory with `tokenizer.json`) on `backend`.
    pub fn load(dir: &Path, backend: B) -> Result<Embedder<B>> {
        let encoder = Encoder::load(dir, backend)?;
        let tokenizer = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json"))?;
        let name = dir
            .file_name()
            .map_or("encoder".into(), |n| n.to_string_lossy().into_owned());
        Ok(Embedder {
            encoder,
            tokenizer,
            name,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }

    /// The most tokens an input may have, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.encoder.pooling.max_tokens
    }

    /// The model's input for `input`: tokenized, templated and cut to the model's length.
    pub fn tokens(&self, input: &EmbedInput) -> Result<Vec<u32>> {
        Ok(self.sequence(input, self.max_tokens())?)
    }

    fn sequence(&self, input: &EmbedInput, max: usize) -> plumb_tokenizer::Result<Vec<u32>> {
        match input {
            EmbedInput::Text(t) if self.encoder.pooling.lowercase => {
                self.tokenizer.encode_sequence(&t.to_lowercase(), max)
            }
            EmbedInput::Text(t) => self.tokenizer.encode_sequence(t, max),
            EmbedInput::Ids(ids) => self.tokenizer.wrap_sequence(ids, max),
        }
    }

    /// Input `i` checked and made a sequence; `Ok((ids, cut))`, `cut` when it was truncated.
    fn prepare(&self, i: usize, input: &EmbedInput, too_long: TooLong) -> Result<(Vec<u32>, bool)> {
        let bad = |m: String| EngineError::BadRequest(format!("input {i}: {m}"));
        match input {
            EmbedInput::Text(t) if t.is_empty() => return Err(bad("the text is empty".into())),
            EmbedInput::Ids(ids) if ids.is_empty() => {
                return Err(bad("the list of token ids is empty".into()))
            }
            EmbedInput::Ids(ids) => {
                let vocab = self.tokenizer.vocab_size();
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(bad(format!(
                        "token id {id} is outside the vocabulary of {vocab}"
                    )));
                }
            }
            EmbedInput::Text(_) => {}
        }
        let max = self.max_tokens();
        let whole = self.sequence(input, usize::MAX)?;
        if whole.len() <= max {
            return Ok((whole, false));
        }
        match too_long {
            TooLong::Truncate => Ok((self.sequence(input, max)?, true)),
            TooLong::Refuse => Err(bad(format!(
                "{} tokens with the special ones, longer than the {max} that {} takes",
                whole.len(),
                self.name
            ))),
        }
    }

    /// One vector per input, in order. Empty inputs, ids outside the vocabulary and (with
    /// [`TooLong::Refuse`]) inputs longer than the model's length are
    /// [`EngineError::BadRequest`]s naming the input.
    pub fn embed(&self, inputs: &[EmbedInput], too_long: TooLong) -> Result<Embeddings> {
        if inputs.is_empty() {
            return Err(EngineError::BadRequest("no input to embed".into()));
        }
        let mut seqs = Vec::with_capacity(inputs.len());
        let mut truncated = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let (ids, cut) = self.prepare(i, input, too_long)?;
            if cut {
                truncated.push(i);
            }
            seqs.push(ids);
        }
        let tokens = seqs.iter().map(Vec::len).sum();
        let mut vectors = Vec::with_capacity(seqs.len());
        let mut start = 0;
        while start < seqs.len() {
            let mut end = start + 1;
            let mut n = seqs[start].len();
            while end < seqs.len() && n + seqs[end].len() <= BATCH_TOKENS {
                n += seqs[end].len();
                end += 1;
            }
            vectors.extend(self.encoder.embed(&seqs[start..end])?);
            start = end;
        }
        Ok(Embeddings {
            vectors,
            tokens,
            truncated,
        })
    }
}
