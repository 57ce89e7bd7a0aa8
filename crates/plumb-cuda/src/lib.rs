//! plumb-cuda: the CUDA backend.
//!
//! - [`CudaBackend::new`] opens a GPU (clear errors without a driver, a GPU or NVRTC).
//! - Kernels are `.cu` files under `kernels/`, one per op family, embedded in the binary and
//!   compiled by NVRTC at first use for the device's `sm_XY`; the cubins are cached on disk
//!   (see [`compile`]). [`compile_all`] compiles every file for an architecture without a GPU.
//! - `impl plumb_ops::Backend for CudaBackend`: every op is checked against the reference by
//!   `plumb_ops::check::run` (`plumb check --backend cuda`, or `examples/cuda_check.rs`).
//! - Ops with several kernels have named variants ([`variants`], [`CudaBackend::set_variant`]).
//!
//! Built everywhere: cudarc loads libcuda, libnvrtc and libcublas at run time, so no CUDA
//! toolkit is needed to build, only a driver (and NVRTC) to run.

mod attention;
mod backend;
pub mod compile;
mod device;
pub mod error;
mod matmul;
mod ops;
mod weight;

pub use compile::{compile_all, KernelReport};
pub use device::{variants, CudaBackend, DeviceInfo, VARIANTS};
pub use error::{CudaError, Result};
pub use matmul::MATVEC_MAX_N;
pub use weight::CudaWeight;
