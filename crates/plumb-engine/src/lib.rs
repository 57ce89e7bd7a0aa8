//! plumb-engine: everything between a loaded model and a user.
//!
//! - [`sampler`]: greedy, temperature, top-k/top-p/min-p, penalties, seeded draws.
//! - [`generate::Session`]: a model, its tokenizer, chat template and KV cache; streamed
//!   generation with stop strings and token budgets.
//! - [`constrain`]: structured output (JSON schemas, regexes, Lark grammars) through
//!   llguidance: per-token allow masks computed beside the step.
//! - [`embed::Embedder`]: a sentence encoder and its tokenizer: texts to vectors.

pub mod bench;
pub mod bench_ops;
pub mod check;
pub mod constrain;
pub mod embed;
pub mod error;
pub mod generate;
pub mod perplexity;
pub mod sampler;
pub mod serve;
pub(crate) mod text;

pub use embed::{EmbedInput, Embedder, Embeddings, TooLong};
pub use error::{EngineError, Result};
pub use generate::{text_side, FinishReason, GenerateParams, Generation, Session};
/// The model cache directory and the fetch of the default model (lives in plumb-model).
pub use plumb_model::store;
pub use sampler::{Sampler, SamplingParams};
