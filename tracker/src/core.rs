//! Pure state machines of the tracker: no I/O, no clocks, no global RNG.
//!
//! Architecture invariant: nothing in `core` knows about actix, tokio,
//! sockets, SQLite or Prometheus; callers pass `now` and an RNG.

pub mod graph;
pub mod health;
pub mod keycache;
pub mod planner;
pub mod ratelimit;
pub mod replay;
pub mod session;
pub mod sources;
pub mod swarms;
