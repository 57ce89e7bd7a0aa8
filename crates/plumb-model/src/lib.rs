//! plumb-model: model configuration and the transformer forward over GGUF files (read by
//! `plumb_gguf`) and Hugging Face or MLX model directories.
//!
//! - [`config::ModelConfig`]: hyperparameters of llama, qwen2 and qwen3 models.
//! - [`formats`]: [`Checkpoint`] (a GGUF file or a model directory: `config.json`,
//!   memory-mapped safetensors, MLX's affine quantization).
//! - [`weights::Weights`]: tensors mapped by name from a [`weights::TensorSource`],
//!   shape-checked, uploaded to a backend.
//! - [`forward::Model`]: the forward pass, written once against `plumb_ops::Backend`.
//! - [`kv_cache::KvCache`]: the contiguous KV cache.
//! - [`paged::PagedKv`]: the paged KV cache shared by many sequences, with prefix caching,
//!   and [`Model::forward_paged`] / [`Model::forward_paged_launch`] over it.
//! - [`store`]: the model cache directory and the fetch of the models known by name.
//! - [`encoder`]: BERT-family sentence encoders from Hugging Face directories.

pub mod config;
pub mod encoder;
pub mod error;
pub mod formats;
pub mod forward;
pub mod kv_cache;
pub mod paged;
pub mod quantize;
mod route;
pub mod store;
pub mod synth;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use formats::Checkpoint;
pub use forward::{Logits, Model};
pub use kv_cache::KvCache;
pub use paged::{BlockTable, PagedError, PagedItem, PagedKv, PagedLogits};
pub use weights::Weights;

use plumb_ops::Backend;

impl<B: Backend> Model<B> {
    /// Reads the config and every weight of a GGUF `file` onto `backend`.
    pub fn load(file: &plumb_gguf::GgufFile, backend: B) -> Result<Model<B>> {
        let config = formats::gguf_config(file)?;
        let weights = Weights::load(file, &config, &backend)?;
        Ok(Model::new(config, backend, weights))
    }

    /// Reads the config and every weight of a checkpoint of any format onto `backend`.
    pub fn load_checkpoint(ck: &Checkpoint, backend: B) -> Result<Model<B>> {
        let config = ck.config()?;
        let weights = Weights::load(ck.tensors(), &config, &backend)?;
        Ok(Model::new(config, backend, weights))
    }
}
