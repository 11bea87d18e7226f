//! Sans-IO state machines of the peer.
//!
//! Nothing in here touches a socket, a timer or a task: each machine takes
//! typed inputs and an injected `now` and returns typed outputs, so it can be
//! driven by the tokio data path (`crate::datapath`) in production and by a
//! deterministic simulation in tests. Each machine has a `STATE.md` next to
//! it that lists its states, legal messages, transitions and invariants.

pub mod backoff;
pub mod copy;
pub mod link;
pub mod reask;
pub mod relay;
pub mod swarm;
