//! The gateway-facing internal API (docs/internal-api.md): the key table sync with its long
//! poll, and the gateways' usage reports. Routes are registered in `routes/internal.rs`, behind
//! the internal token.

pub mod keys;
pub mod usage;
pub mod wire;
