//! Attribution of set-up failures: the bad relay goes, honest co-hops
//! stay, a network-wide problem excludes nobody, exclusions end.

use super::*;

fn p(n: u8) -> PeerId {
    PeerId([n; 32])
}

const O: u8 = 100;

/// Plan `n` circuits from origin `O` through `relays`; their ids.
fn plan(h: &mut SetupHealth, now: u64, next: &mut u64, relays: &[u8], n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            *next += 1;
            h.planned(now, *next, p(O), relays.iter().map(|r| p(*r)).collect());
            *next
        })
        .collect()
}

#[test]
fn a_relay_failing_every_setup_is_excluded_and_its_co_hops_are_not() {
    let mut h = SetupHealth::new(HealthConfig::default());
    let mut id = 0;
    // Relay 1 swallows everything; 2 and 3 are honest. Paths of two
    // relays: every path through 1 fails, whoever else is on it.
    let mut failed = Vec::new();
    for _ in 0..4 {
        failed.extend(plan(&mut h, 10, &mut id, &[1, 2], 1));
        failed.extend(plan(&mut h, 10, &mut id, &[3, 1], 1));
        plan(&mut h, 10, &mut id, &[2, 3], 2);
    }
    // Two reports are not enough yet.
    assert_eq!(h.failed(20, p(O), &failed[..2]), Changes::default());
    let c = h.failed(21, p(O), &failed[2..]);
    assert_eq!(c.excluded, vec![p(1)]);
    assert!(h.is_excluded(&p(1)) && !h.is_excluded(&p(2)) && !h.is_excluded(&p(3)));
    assert_eq!((h.excluded(), h.accepted()), (1, 8));
    // Late reports of paths through the excluded relay blame nobody else.
    let late = plan(&mut h, 22, &mut id, &[1, 2], 3);
    assert_eq!(h.failed(23, p(O), &late), Changes::default());
    assert!(!h.is_excluded(&p(2)));
}

/// A co-hop that so far only ever shared paths with the bad relay has the
/// same failure rate (all failed), but fewer failures: the bad relay goes
/// first and explains the co-hop's failures away.
#[test]
fn a_co_hop_seen_only_on_failed_paths_is_not_excluded() {
    let mut h = SetupHealth::new(HealthConfig::default());
    let mut id = 0;
    let mut failed = plan(&mut h, 1, &mut id, &[1, 2], 3);
    failed.extend(plan(&mut h, 1, &mut id, &[3, 1], 3));
    plan(&mut h, 1, &mut id, &[4, 5], 6);
    let c = h.failed(2, p(O), &failed);
    assert_eq!(c.excluded, vec![p(1)]);
    assert_eq!(h.excluded(), 1);
}

#[test]
fn failures_everywhere_exclude_nobody() {
    let mut h = SetupHealth::new(HealthConfig::default());
    let mut id = 0;
    let mut failed = Vec::new();
    for r in 1..=4u8 {
        failed.extend(plan(&mut h, 5, &mut id, &[r], 6));
    }
    // The originator's own trouble: every circuit fails.
    let c = h.failed(6, p(O), &failed);
    assert_eq!(c, Changes::default());
    assert_eq!(h.excluded(), 0);
}

#[test]
fn only_the_origin_of_a_path_can_report_it_and_only_once() {
    let mut h = SetupHealth::new(HealthConfig::default());
    let mut id = 0;
    let ids = plan(&mut h, 1, &mut id, &[7], 5);
    plan(&mut h, 1, &mut id, &[8], 5);
    assert_eq!(h.failed(2, p(9), &ids), Changes::default());
    assert_eq!(h.accepted(), 0, "another peer's report counted");
    h.failed(2, p(O), &[ids[0], ids[0], 999]);
    assert_eq!(h.accepted(), 1);
    let c = h.failed(2, p(O), &ids[1..]);
    assert_eq!(c.excluded, vec![p(7)]);
}

#[test]
fn exclusions_end_and_counts_start_again() {
    let cfg = HealthConfig::default();
    let (window, exclude) = (cfg.window_secs, cfg.exclude_secs);
    let mut h = SetupHealth::new(cfg);
    let mut id = 0;
    let bad = plan(&mut h, 0, &mut id, &[1], 3);
    plan(&mut h, 0, &mut id, &[2], 3);
    assert_eq!(h.failed(1, p(O), &bad).excluded, vec![p(1)]);
    assert_eq!(h.tick(exclude).restored, Vec::<PeerId>::new());
    assert_eq!(h.tick(1 + exclude).restored, vec![p(1)]);
    assert!(!h.is_excluded(&p(1)));
    // Back with a clean slate: one new failure is not enough.
    let one = plan(&mut h, 2 + exclude, &mut id, &[1], 1);
    plan(&mut h, 2 + exclude, &mut id, &[2], 1);
    assert_eq!(h.failed(3 + exclude, p(O), &one), Changes::default());
    // Failures leave the window.
    let old = plan(&mut h, 10_000, &mut id, &[5], 2);
    plan(&mut h, 10_000, &mut id, &[6], 4);
    h.failed(10_000, p(O), &old);
    let new = plan(&mut h, 10_001 + window, &mut id, &[5], 1);
    assert_eq!(h.failed(10_001 + window, p(O), &new), Changes::default());
}

#[test]
fn memory_is_bounded() {
    let cfg = HealthConfig {
        max_paths: 100,
        max_failures: 10,
        ..HealthConfig::default()
    };
    let mut h = SetupHealth::new(cfg);
    let mut id = 0;
    let ids = plan(&mut h, 0, &mut id, &[1, 2], 1000);
    assert!(h.paths.len() <= 100);
    h.failed(0, p(O), &ids[900..]);
    assert!(h.failures.len() <= 10);
    // Paths expire with their codes.
    h.tick(1000);
    assert!(h.paths.is_empty());
}
