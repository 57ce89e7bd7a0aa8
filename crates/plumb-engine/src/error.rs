use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] plumb_model::store::StoreError),
    #[error(transparent)]
    Model(#[from] plumb_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] plumb_tokenizer::TokenizerError),
    #[error(
        "the prompt has {tokens} tokens but the context holds {ctx}; shorten it or raise --ctx"
    )]
    PromptTooLong { tokens: usize, ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Constraint(#[from] crate::constrain::ConstraintError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<plumb_ops::OpError> for EngineError {
    fn from(e: plumb_ops::OpError) -> Self {
        EngineError::Model(e.into())
    }
}

impl From<plumb_gguf::GgufError> for EngineError {
    fn from(e: plumb_gguf::GgufError) -> Self {
        EngineError::Model(e.into())
    }
}
