//! plumb-core: the vocabulary every other crate speaks.
//!
//! - [`dtype::GgmlType`]: the element and block formats a weight may be stored in.
//! - [`quant`]: reference dequantization (and quantization where it exists) for every format.
//! - [`tensor::HostWeight`]: a 2-D weight in its stored format, borrowed from a shared byte source.
//!
//! No I/O and no threads live here.

pub mod dtype;
pub mod error;
pub mod quant;
pub mod rng;
pub mod tensor;

pub use dtype::GgmlType;
pub use error::{CoreError, Result};
pub use tensor::{Bytes, HostWeight};
