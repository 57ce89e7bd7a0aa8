//! plumb-wgpu: the portable GPU backend. Every op of [`plumb_ops::Backend`] is a WGSL compute
//! shader (`shaders/`, one file per op family, launched from the `src/` file of the same
//! name) run through wgpu: Vulkan on Linux and Windows (Mesa's lavapipe in CI), Metal on
//! macOS, DX12 on Windows.
//!
//! Weights stay in their stored format on the device (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F32, F16,
//! BF16; the other formats are dequantized to F32 at upload). Decode matvecs meet quantized
//! weights with 8-bit activations and integer dot products; prefill batches go through a
//! tiled matmul that dequantizes weights into workgroup memory. Inside a step
//! (`begin_step`..`end_step`) every dispatch goes into one command encoder, submitted once.
//! Two variant families ([`variant`]) pick subgroup reductions and native integer dot
//! products where the adapter has them, with portable fallbacks.

#![warn(clippy::undocumented_unsafe_blocks)]

mod argmax;
mod attention;
mod backend;
mod buffer;
mod device;
mod elementwise;
mod embedding;
mod encoder;
mod kv;
mod matmul;
mod matvec;
mod norm;
mod pipeline;
mod quantize;
mod rope;
mod scratch;
pub mod shaders;
pub mod variant;
mod weight;

pub use buffer::{WgpuBuf, WgpuWeight};
pub use device::{adapters, Options, WgpuBackend};
pub use variant::{Dot, Reduce, Variants};
