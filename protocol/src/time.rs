//! Virtual or wall time as the roles see it. A leaf: it imports nothing of the crate.

/// Milliseconds since the Unix epoch, as the node's clock (or the simulator's) reads it.
pub type Millis = u64;
