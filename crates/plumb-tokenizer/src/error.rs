//! The tokenizer error type.

use std::path::PathBuf;

/// Everything that can go wrong building a tokenizer, encoding text or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A GGUF metadata key the tokenizer needs is absent.
    #[error(
        "GGUF metadata has no `{key}`, which the tokenizer needs \
         (the file may lack an embedded vocabulary; use a tokenizer.json instead)"
    )]
    MissingKey { key: String },

    /// A GGUF metadata key holds a value of the wrong type or shape.
    #[error("GGUF metadata key `{key}` is invalid: expected {expected}")]
    BadValue { key: String, expected: String },

    /// `tokenizer.ggml.model` names a tokenizer plumb does not implement.
    #[error(
        "unsupported tokenizer model `{0}` (tokenizer.ggml.model): plumb supports `gpt2` \
         (byte-level BPE) and `llama` (SentencePiece); a tokenizer.json can be used instead"
    )]
    UnsupportedModel(String),

    /// The vocabulary is inconsistent (lengths differ, a special token id is out of range, ...).
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),

    /// Text contains a byte the vocabulary cannot represent.
    #[error(
        "cannot encode byte 0x{0:02X}: the vocabulary has neither a byte token <0x{0:02X}> \
         nor an unknown token"
    )]
    UnencodableByte(u8),

    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A tokenizer.json (or its tokenizer_config.json) could not be understood.
    #[error("{path}: {msg}")]
    TokenizerJson { path: PathBuf, msg: String },

    /// The `tokenizers` library reported an error while encoding.
    #[error("tokenizer backend error: {0}")]
    Backend(String),

    /// A tokenizer cannot be converted between GGUF metadata and Hugging Face files.
    #[error("cannot convert the tokenizer: {0}")]
    Convert(String),

    /// A chat template failed to compile or to render.
    #[error("chat template error: {0}")]
    ChatTemplate(String),
}

/// `Result` with [`TokenizerError`].
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
