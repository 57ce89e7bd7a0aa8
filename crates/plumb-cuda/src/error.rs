//! Errors of the CUDA backend. Each says what is missing or wrong and what to do about it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda.so): plumb was built with CUDA support but this machine has no NVIDIA driver")]
    NoDriver,
    #[error("the NVIDIA driver is installed but reports no GPU ({0})")]
    NoDevice(String),
    #[error("there is no GPU {ordinal}: this machine has {count} (use 0..{count})")]
    BadOrdinal { ordinal: usize, count: usize },
    #[error("NVRTC (libnvrtc.so.13) could not be loaded: install the CUDA toolkit's NVRTC, or `pip install nvidia-cuda-nvrtc` and put its lib directory (site-packages/nvidia/cu13/lib) on LD_LIBRARY_PATH")]
    NoNvrtc,
    #[error("cuBLAS (libcublas.so) could not be loaded; select the `tiled` prefill variant or put cuBLAS on LD_LIBRARY_PATH")]
    NoCublas,
    #[error("'{arch}' is not a GPU architecture NVRTC understands (expected sm_XY, sm_XYa or compute_XY)")]
    BadArch { arch: String },
    #[error("NVRTC failed to compile {file} for {arch}: {log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    #[error("CUDA driver call failed while {what}: {source}")]
    Driver {
        what: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    #[error("cuBLAS call failed while {what}: {source}")]
    Cublas {
        what: String,
        #[source]
        source: cudarc::cublas::result::CublasError,
    },
    #[error("unknown variant '{name}' of {op}; known: {known}")]
    UnknownVariant {
        op: String,
        name: String,
        known: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// Adds "while {what}" context to a driver error.
pub(crate) trait DriverContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| CudaError::Driver {
            what: what(),
            source,
        })
    }
}

impl From<CudaError> for plumb_ops::OpError {
    fn from(e: CudaError) -> Self {
        plumb_ops::OpError::Device(e.to_string())
    }
}
