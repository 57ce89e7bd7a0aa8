//! plumb-ops: the op library.
//!
//! Every op has a spec and a naive, frozen reference in [`ops`]; the [`Backend`] trait is the
//! seam the model forward is written against; [`ReferenceBackend`] runs a whole model on the
//! references alone (the model-level plumb line).

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod check;
pub mod cpu;
pub mod error;
pub mod ggml;
mod host;
pub mod ops;
pub mod reference;
pub mod shapes;

pub use backend::{
    window_start, AttnParams, Backend, FullAttnParams, PagedParams, PagedSeq, Precision,
    RopeParams, RopeStyle, SampleParams, SampleRow, Sampled, MAX_TOP_LOGPROBS,
};
pub use cpu::CpuBackend;
pub use error::{OpError, Result};
pub use ggml::GgmlBackend;
pub use reference::ReferenceBackend;
