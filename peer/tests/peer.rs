//! Loopback end-to-end tests of the peer: an in-process tracker
//! (`tracker::run`), real `anomos relay` processes and in-process endpoints
//! (`run_peer`). Every test is bounded in time and stops what it started.

#![allow(clippy::unwrap_used)]

#[path = "peer/util.rs"]
mod util;

#[path = "peer/network.rs"]
mod network;

#[path = "peer/lab.rs"]
mod lab;

#[path = "peer/download.rs"]
mod download;

#[path = "peer/faults.rs"]
mod faults;

#[path = "peer/reask.rs"]
mod reask;
