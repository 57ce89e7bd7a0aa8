//! plumb-model: file formats, model configuration and the transformer forward.

pub mod gguf;
