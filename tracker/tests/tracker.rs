//! End-to-end tests of the tracker over real TLS on 127.0.0.1: every test
//! starts its own tracker(s) in-process through `tracker::run` and stops
//! them; test peers run real TLS listeners so reachability checks pass.

#![allow(clippy::unwrap_used)]

#[path = "tracker/util.rs"]
mod util;

#[path = "tracker/api.rs"]
mod api;

#[path = "tracker/overlay.rs"]
mod overlay;

#[path = "tracker/restart.rs"]
mod restart;

#[path = "tracker/hostile.rs"]
mod hostile;
