//! One file per op: its spec (in the doc comment) and its reference implementation.
//!
//! References are naive and frozen: scalar loops, f64 accumulation where a sum is long, no
//! SIMD, no unsafe. They are the plumb line every fast variant is checked against.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod layer_norm;
pub mod matmul;
pub mod paged_attention;
pub mod rms_norm;
pub mod rope;
pub mod sample;
