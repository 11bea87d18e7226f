//! Listeners and outbound dials: the HTTPS API, the operator endpoints,
//! TLS setup and reachability checks.

pub mod api;
pub mod operator;
pub mod reachability;
pub mod tls;
