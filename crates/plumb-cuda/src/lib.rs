//! plumb-cuda: the CUDA backend.
//!
//! - [`CudaBackend::new`] opens a GPU (clear errors without a driver, a GPU or NVRTC).
//! - Kernels are `.cu` files under `kernels/`, one per op family, embedded in the binary and
//!   compiled by NVRTC at first use for the device's `sm_XY`; the cubins are cached on disk
//!   (see [`compile`]). [`compile_all`] compiles every file for an architecture without a GPU.
//! - `impl plumb_ops::Backend for CudaBackend`: every op is checked against the reference by
//!   `plumb_ops::check::run` (`plumb check --device cuda`).
//! - Ops with several kernels have named variants, all listed in [`registry::FAMILIES`]
//!   ([`CudaBackend::set_variant`]); check, tune and the GPU tests iterate that one table.
//! - Forward steps: `begin_step` puts the step's ids and positions in a device buffer the ops
//!   read, and a decode step is recorded once as a CUDA graph and replayed (src/step.rs).
//! - Decode matvecs read q8_1 activations with dp4a dots from weights repacked at upload for
//!   16-byte loads (src/q8.rs, src/weight.rs, kernels/matvec_q8.cu).
//! - Inside a step, matvecs sharing an input, and a step's ropes and KV writes, are held back
//!   until the next call and launched merged (src/defer.rs). Performance notes: NOTES.md.
//!
//! Layout: kernels/X.cu is launched from src/X.rs (src/matmul.rs and src/attention.rs also
//! route their op to the other matmul and attention kernels). Below the launchers sit the
//! backend struct and its bring-up (src/device.rs), the state it holds (src/state.rs) and the
//! leaf every launcher shares (src/launch.rs: shape checks, grids, held-back items, size
//! limits); src/module_graph.rs checks that the modules never import each other in a circle.
//!
//! Built everywhere: cudarc loads libcuda, libnvrtc and libcublas at run time, so no CUDA
//! toolkit is needed to build, only a driver (and NVRTC) to run.

// Every unsafe block and impl states why it is sound; every unsafe fn, its `# Safety`.
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod argmax;
mod attention;
mod attn_decode;
mod attn_prefill;
mod backend;
pub mod checked;
pub mod compile;
mod defer;
mod device;
mod elementwise;
mod embedding;
pub mod error;
mod launch;
mod matmul;
mod matvec_h;
mod matvec_q;
mod matvec_q8;
mod mmq;
#[cfg(test)]
mod module_graph;
mod norm;
mod paged;
mod q8;
pub mod registry;
mod rope;
mod sample;
mod state;
mod step;
mod weight;

pub use checked::CheckedVariants;
pub use compile::{compile_all, KernelReport};
pub use device::{CudaBackend, DeviceInfo};
pub use error::{CudaError, Result};
pub use launch::MATVEC_MAX_N;
pub use registry::{variants, Family, Variant, FAMILIES};
pub use step::MAX_RECORDINGS;
pub use weight::CudaWeight;
