//! Thin actors over the pure cores. One actor per file, its messages beside
//! it. Topology: per-peer Session actors send `PeerAnnounced`/`PeerRemoved`
//! to the one Graph actor and `PlanCircuits` to the Planner pool; the
//! planners read the topology and report `CircuitsPlanned` back to Graph.

pub mod graph;
pub mod planner;
pub mod session;
