//! Which peers are in which torrent, and which of them can serve.
//!
//! The planner samples circuit destinations from here. A member "can serve"
//! when it is a seeder or a leecher that already has some data; leechers with
//! nothing yet are never picked as a source.

use std::collections::{BTreeMap, HashMap, HashSet};

use anomos_common::{InfoHash, PeerId};

/// Swarm membership index.
#[derive(Debug, Default)]
pub struct Swarms {
    by_hash: HashMap<InfoHash, BTreeMap<PeerId, bool>>,
    by_peer: HashMap<PeerId, HashSet<InfoHash>>,
}

impl Swarms {
    /// Record that `peer` is in `infohash` (and whether it can serve).
    pub fn join(&mut self, peer: PeerId, infohash: InfoHash, can_serve: bool) {
        self.by_hash
            .entry(infohash)
            .or_default()
            .insert(peer, can_serve);
        self.by_peer.entry(peer).or_default().insert(infohash);
    }

    /// `peer` left `infohash`.
    pub fn leave(&mut self, peer: PeerId, infohash: InfoHash) {
        if let Some(m) = self.by_hash.get_mut(&infohash) {
            m.remove(&peer);
            if m.is_empty() {
                self.by_hash.remove(&infohash);
            }
        }
        if let Some(s) = self.by_peer.get_mut(&peer) {
            s.remove(&infohash);
            if s.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }

    /// Torrents `peer` is in.
    pub fn torrents_of(&self, peer: PeerId) -> Vec<InfoHash> {
        self.by_peer
            .get(&peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Members of `infohash` that can serve, in id order.
    pub fn servers(&self, infohash: &InfoHash) -> Vec<PeerId> {
        self.by_hash
            .get(infohash)
            .map(|m| m.iter().filter(|(_, s)| **s).map(|(p, _)| *p).collect())
            .unwrap_or_default()
    }

    /// Number of torrents with at least one member.
    pub fn torrent_count(&self) -> usize {
        self.by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_servers_are_listed_and_leaving_cleans_up() {
        let mut s = Swarms::default();
        let h = InfoHash([1; 32]);
        s.join(PeerId([1; 32]), h, true);
        s.join(PeerId([2; 32]), h, false);
        assert_eq!(s.servers(&h), vec![PeerId([1; 32])]);
        s.join(PeerId([2; 32]), h, true);
        assert_eq!(s.servers(&h).len(), 2);
        assert_eq!(s.torrents_of(PeerId([1; 32])), vec![h]);
        s.leave(PeerId([1; 32]), h);
        assert!(s.torrents_of(PeerId([1; 32])).is_empty());
        s.leave(PeerId([2; 32]), h);
        assert_eq!(s.torrent_count(), 0);
    }
}
