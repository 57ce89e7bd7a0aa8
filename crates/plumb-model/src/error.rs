use plumb_gguf::GgufError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Op(#[from] plumb_ops::OpError),
    #[error(transparent)]
    Core(#[from] plumb_core::CoreError),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("bad model configuration: {0}")]
    Config(String),
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("tensor {name}: {msg}")]
    Tensor { name: String, msg: String },
    #[error("context full: {needed} positions needed, the KV cache holds {capacity} (raise --ctx or shorten the prompt)")]
    ContextFull { needed: usize, capacity: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
