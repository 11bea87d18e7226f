//! Sockets and TLS: neighbour links (dial/accept + hello), the tracker
//! client, and the operator listener.

pub mod dial;
pub mod http;
pub mod listen;
pub mod tls;
pub mod tracker_client;

use std::collections::BTreeMap;
use std::sync::Arc;

use anomos_common::api::Neighbour;
use anomos_common::Nid;

/// The neighbour set from the latest announce response, by NID. Published
/// through a `tokio::sync::watch` so the listener can wait for an unknown NID
/// to appear after an early re-announce.
pub type NeighbourTable = Arc<BTreeMap<Nid, Neighbour>>;
