//! GGUF v2/v3 reading and writing.

pub mod value;

pub use value::{Value, ValueType};
