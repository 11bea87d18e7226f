//! Sans-IO state machines of the peer: no tokio, no actix, time and RNG injected.

pub mod backoff;
