//! plumb-model: model configuration and the transformer forward over GGUF files read by
//! `plumb_gguf`.
//!
//! - [`config::ModelConfig`]: hyperparameters of llama, qwen2 and qwen3 models.
//! - [`weights::Weights`]: tensors mapped by name, shape-checked, uploaded to a backend.
//! - [`forward::Model`]: the forward pass, written once against `plumb_ops::Backend`.
//! - [`kv_cache::KvCache`]: the contiguous KV cache.
//! - [`paged::PagedKv`]: the paged KV cache shared by many sequences, with prefix caching,
//!   and [`Model::forward_paged`] / [`Model::forward_paged_launch`] over it.
//! - [`store`]: the model cache directory and the fetch of the models known by name.
//! - [`encoder`]: BERT-family sentence encoders from Hugging Face directories.

pub mod config;
pub mod encoder;
pub mod error;
pub mod forward;
pub mod kv_cache;
pub mod paged;
mod route;
pub mod store;
pub mod synth;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use forward::{Logits, Model};
pub use kv_cache::KvCache;
pub use paged::{BlockTable, PagedError, PagedItem, PagedKv, PagedLogits};
pub use weights::Weights;

use plumb_ops::Backend;

impl<B: Backend> Model<B> {
    /// Reads the config and every weight of `file` onto `backend`.
    pub fn load(file: &plumb_gguf::GgufFile, backend: B) -> Result<Model<B>> {
        let mut config = ModelConfig::from_gguf(file)?;
        if config.vocab_size == 0 {
            let t = file
                .tensor("token_embd.weight")
                .ok_or_else(|| ModelError::Tensor {
                    name: "token_embd.weight".into(),
                    msg: "missing".into(),
                })?;
            config.vocab_size = t.dims.get(1).copied().unwrap_or(0) as usize;
        }
        let weights = Weights::load(file, &config, &backend)?;
        Ok(Model::new(config, backend, weights))
    }
}
