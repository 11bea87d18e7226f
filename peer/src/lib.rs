//! The Anomos peer: relays for others, seeds and downloads through circuits.

pub mod core;
pub mod datapath;
pub mod link;
pub mod metrics;
