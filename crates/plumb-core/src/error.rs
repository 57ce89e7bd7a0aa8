use thiserror::Error;

/// Errors raised by plumb-core. Each names what was wrong so that a user can act on it.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("unknown tensor type id {0} (this build knows F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q8_K)")]
    UnknownType(u32),
    #[error("{ty}: a row of {n} elements is not a whole number of {block}-element blocks")]
    NotBlockAligned {
        ty: &'static str,
        n: usize,
        block: usize,
    },
    #[error("{ty}: expected {expected} bytes for {n} elements, got {got}")]
    ByteLength {
        ty: &'static str,
        n: usize,
        expected: usize,
        got: usize,
    },
    #[error("quantization to {0} is not implemented")]
    QuantizeUnsupported(&'static str),
    #[error("shape error: {0}")]
    Shape(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
