//! anomos-loadtest: drives Anomos components hard and reports their figures.
//!
//! Each mode is one module (`tracker_only`: the tracker's HTTPS announce
//! service alone, with simulated peers; `circuit`: the peer network layer
//! between two endpoints; `network`: a whole network with real downloads,
//! in one process, in processes or in network namespaces). The pieces modes share live beside
//! them: the keep-alive HTTPS client ([`client`]), the latency histogram
//! ([`histogram`]), `/proc` readings ([`procstat`]), simulated peers
//! ([`sim`]), a child tracker ([`spawn`]) and JSON reports ([`report`]).
//! `main.rs` only parses the command line.
//!
//! Everything a run starts stops by itself: phases end at their deadline,
//! a spawned tracker is stopped (or killed when the run fails).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod circuit;
pub mod client;
pub mod histogram;
pub mod network;
pub mod procstat;
pub mod report;
pub mod sim;
pub mod spawn;
pub mod tracker_only;

/// The wall clock as Unix seconds (what announce timestamps carry).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
