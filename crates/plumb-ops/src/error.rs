use thiserror::Error;

#[derive(Debug, Error)]
pub enum OpError {
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error(transparent)]
    Core(#[from] plumb_core::CoreError),
    #[error("{op} does not support {what}")]
    Unsupported { op: &'static str, what: String },
    #[error("device error: {0}")]
    Device(String),
}

pub type Result<T, E = OpError> = std::result::Result<T, E>;

/// Returns a shape error unless `cond` holds.
pub(crate) fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(OpError::Shape { op, msg: msg() })
    }
}
