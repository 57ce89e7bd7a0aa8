//! plumb-ops
