//! plumb's tokenizers and chat templates.
//!
//! * [`Tokenizer`] — from GGUF metadata ([`Tokenizer::from_gguf_metadata`],
//!   [`Tokenizer::from_gguf`]): byte-level BPE (`gpt2`, via the `tokenizers` crate with the
//!   pre-tokenizer regexes llama.cpp uses, see [`PreTokenizerInfo`]) or SentencePiece
//!   (`llama`, hand-written merge-by-score); or from a Hugging Face `tokenizer.json`
//!   ([`Tokenizer::from_tokenizer_json`]).
//! * [`Tokenizer::encode_sequence`] — one encoder input (`[CLS] … [SEP]`), truncated.
//! * [`StreamDecoder`] — incremental decoding of ids that only emits complete UTF-8, over
//!   [`Utf8Decoder`] (the same for raw bytes).
//! * [`GgufVocab`] — a byte-level BPE vocabulary converted between GGUF metadata and
//!   Hugging Face's `tokenizer.json` / `tokenizer_config.json`, both ways.
//! * [`ChatTemplate`] — Jinja chat templates rendered like Hugging Face does.

mod bpe;
pub mod chat;
mod convert;
mod error;
mod gguf;
mod hf;
mod sequence;
mod spm;
mod stream;
mod tokenizer;
mod vocab;

pub use bpe::{pre_name_for, PreTokenizerInfo, DIGIT_REGEX, GPT2_REGEX, LLAMA3_REGEX, QWEN2_REGEX};
pub use chat::{ChatMessage, ChatTemplate};
pub use convert::GgufVocab;
pub use error::{Result, TokenizerError};
pub use stream::{StreamDecoder, Utf8Decoder};
pub use tokenizer::{Tokenizer, TokenizerModel};
pub use vocab::TokenKind;
