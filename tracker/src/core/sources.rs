//! Sources an originator caught breaking the piece protocol, per
//! originator (one of these lives in each peer's session).
//!
//! Sources are anonymous: a downloader that gets a bad piece can close
//! that circuit, but it cannot tell whether the next circuit the tracker
//! plans leads to the same liar. The tracker planned the path, so the
//! downloader names the grant (`AnnounceRequest::bad_sources`) and the
//! tracker stops planning circuits from that downloader to that source for
//! `AVOID_SECS`. Nobody learns anything new: the downloader never sees who
//! the source is, and the tracker already knew the path.
//!
//! Only the reporter's own plans change, so a lying reporter can steer
//! nothing but its own downloads. Memory is bounded per session: the
//! latest `MAX_GRANTS` grants are remembered (a bad piece shows within
//! seconds of a circuit opening), and at most `MAX_AVOIDED` sources are
//! avoided at once (the one whose avoidance ends first makes room).

use std::collections::VecDeque;

use anomos_common::PeerId;

/// Grants remembered per originator (oldest forgotten first).
pub const MAX_GRANTS: usize = 256;
/// Sources avoided at once per originator.
pub const MAX_AVOIDED: usize = 64;
/// Seconds a reported source gets no circuits from its reporter.
pub const AVOID_SECS: u64 = 3600;

/// One originator's grants and the sources it avoids (see module docs).
#[derive(Debug, Default)]
pub struct BadSources {
    /// (grant id, its source), most recent last.
    grants: VecDeque<(u64, PeerId)>,
    /// Avoided sources and when their avoidance ends.
    avoided: Vec<(PeerId, u64)>,
}

impl BadSources {
    /// Grant `id` leads to `source`.
    pub fn granted(&mut self, id: u64, source: PeerId) {
        if self.grants.len() == MAX_GRANTS {
            self.grants.pop_front();
        }
        self.grants.push_back((id, source));
    }

    /// The originator reports grants `ids`: avoid their sources from
    /// `now`. Returns how many reports named a remembered grant; each grant
    /// counts once.
    pub fn report(&mut self, now: u64, ids: &[u64]) -> usize {
        let until = now.saturating_add(AVOID_SECS);
        let mut counted = 0;
        for id in ids {
            let Some(i) = self.grants.iter().position(|(g, _)| g == id) else {
                continue;
            };
            let Some((_, source)) = self.grants.remove(i) else {
                continue;
            };
            counted += 1;
            match self.avoided.iter_mut().find(|(s, _)| *s == source) {
                Some(entry) => entry.1 = until,
                None => {
                    if self.avoided.len() == MAX_AVOIDED {
                        let first = (0..self.avoided.len()).min_by_key(|&i| self.avoided[i].1);
                        if let Some(i) = first {
                            self.avoided.swap_remove(i);
                        }
                    }
                    self.avoided.push((source, until));
                }
            }
        }
        counted
    }

    /// The sources to leave out of this originator's plans at `now`.
    pub fn avoided(&mut self, now: u64) -> Vec<PeerId> {
        self.avoided.retain(|(_, until)| *until > now);
        self.avoided.iter().map(|(s, _)| *s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(b: u8) -> PeerId {
        PeerId([b; 32])
    }

    fn nth(i: u64) -> PeerId {
        let mut p = [0xa0; 32];
        p[..8].copy_from_slice(&i.to_le_bytes());
        PeerId(p)
    }

    #[test]
    fn a_reported_grant_avoids_its_source_until_the_time_runs_out() {
        let mut s = BadSources::default();
        s.granted(1, peer(1));
        s.granted(2, peer(2));
        s.granted(3, peer(1));
        assert!(s.avoided(100).is_empty());
        assert_eq!(s.report(100, &[3]), 1);
        assert_eq!(s.avoided(100), vec![peer(1)]);
        assert_eq!(s.avoided(100 + AVOID_SECS - 1), vec![peer(1)]);
        assert!(s.avoided(100 + AVOID_SECS).is_empty());
    }

    #[test]
    fn unknown_repeated_and_forgotten_ids_count_for_nothing() {
        let mut s = BadSources::default();
        s.granted(7, peer(7));
        assert_eq!(s.report(0, &[8, 9]), 0);
        assert!(s.avoided(0).is_empty());
        assert_eq!(s.report(0, &[7, 7]), 1, "a grant counts once");
        assert_eq!(s.report(0, &[7]), 0);
        for id in 100..100 + MAX_GRANTS as u64 {
            s.granted(id, peer(3));
        }
        s.granted(1, peer(4));
        assert_eq!(s.report(0, &[100]), 0, "the oldest grant was forgotten");
        assert_eq!(s.report(0, &[101, 1]), 2);
        let mut avoided = s.avoided(0);
        avoided.sort();
        assert_eq!(avoided, vec![peer(3), peer(4), peer(7)]);
    }

    #[test]
    fn a_second_report_extends_and_the_list_stays_bounded() {
        let mut s = BadSources::default();
        s.granted(1, peer(1));
        s.granted(2, peer(1));
        s.report(0, &[1]);
        s.report(1000, &[2]);
        assert_eq!(s.avoided(AVOID_SECS + 1), vec![peer(1)], "extended");
        for i in 0..(MAX_AVOIDED as u64 + 10) {
            s.granted(10 + i, nth(i));
            s.report(2000 + i, &[10 + i]);
        }
        let now = 2000 + MAX_AVOIDED as u64 + 10;
        let avoided = s.avoided(now);
        assert_eq!(avoided.len(), MAX_AVOIDED);
        assert!(!avoided.contains(&peer(1)), "ending first, dropped first");
        assert!(avoided.contains(&nth(MAX_AVOIDED as u64 + 9)));
    }
}
