use super::*;
use crate::core::graph::GraphConfig;
use proptest::prelude::{proptest, ProptestConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::core::graph::tests::{staged_network, Staged};

fn pid(i: u32) -> PeerId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    PeerId(b)
}

/// A graph of `n` reachable peers with distinct IPs (unless `ip_mod` folds them).
fn graph(n: u32, ip_mod: u32, rng: &mut StdRng) -> NeighbourGraph {
    let mut g = NeighbourGraph::new(GraphConfig::default());
    for i in 0..n {
        let ipn = i % ip_mod;
        let a = SocketAddr::from(([10, (ipn >> 8) as u8, ipn as u8, 1], 2000));
        g.upsert(pid(i), a);
        g.set_reachable(pid(i), a, true);
        g.refill(pid(i), rng);
    }
    g
}

fn assert_valid(g: &NeighbourGraph, p: &PlannedPath, cfg: &PlanConfig) {
    assert!(p.relays() >= cfg.min_relays && p.relays() <= cfg.max_relays);
    assert!(p.hops.len() <= MAX_PATH_HOPS);
    assert_eq!(p.nids.len() + 1, p.hops.len());
    let set: HashSet<PeerId> = p.hops.iter().copied().collect();
    assert_eq!(set.len(), p.hops.len(), "repeated vertex");
    for (w, nid) in p.hops.windows(2).zip(&p.nids) {
        assert_eq!(g.nid_between(w[0], w[1]), Some(*nid), "not an edge");
    }
    let ips: HashSet<_> = p
        .hops
        .iter()
        .map(|h| g.vertex(*h).unwrap().addr.ip())
        .collect();
    assert_eq!(ips.len(), p.hops.len(), "two hops share an IP");
    for r in &p.hops[1..p.hops.len() - 1] {
        assert!(g.vertex(*r).unwrap().usable());
    }
}

#[test]
fn thousand_plans_are_valid_varied_and_spread() {
    let mut rng = StdRng::seed_from_u64(11);
    let g = graph(300, 300, &mut rng);
    let cfg = PlanConfig::default();
    let seeders: Vec<PeerId> = (0..300).step_by(3).map(pid).collect();
    let mut hits: HashMap<PeerId, usize> = HashMap::new();
    let mut lengths: BTreeMap<usize, usize> = BTreeMap::new();
    let mut planned = 0;
    for _ in 0..1000 {
        let origin = pid(rng.random_range(0..300));
        for p in plan(&g, &mut rng, &cfg, origin, &seeders, 1) {
            assert_valid(&g, &p, &cfg);
            assert_eq!(p.hops[0], origin);
            *hits.entry(*p.hops.last().unwrap()).or_default() += 1;
            *lengths.entry(p.relays()).or_default() += 1;
            planned += 1;
        }
    }
    assert!(planned >= 990, "only {planned} of 1000 plans succeeded");
    assert!(hits.len() >= 90, "only {} of 100 seeders used", hits.len());
    assert_eq!(
        lengths.keys().copied().collect::<Vec<_>>(),
        vec![2, 3, 4],
        "{lengths:?}"
    );
    for (k, n) in &lengths {
        assert!(*n > 280, "relay count {k} drawn only {n} times");
    }
}

#[test]
fn several_circuits_go_to_distinct_destinations() {
    let mut rng = StdRng::seed_from_u64(12);
    let g = graph(60, 60, &mut rng);
    let servers: Vec<PeerId> = (1..60).map(pid).collect();
    let ps = plan(&g, &mut rng, &PlanConfig::default(), pid(0), &servers, 5);
    assert_eq!(ps.len(), 5);
    let d: HashSet<PeerId> = ps.iter().map(|p| *p.hops.last().unwrap()).collect();
    assert_eq!(d.len(), 5);
}

/// A relay or source a neighbour reported dead carries no new circuit
/// until it announces again.
#[test]
fn suspect_peers_carry_no_circuits() {
    let mut rng = StdRng::seed_from_u64(15);
    let mut g = graph(30, 30, &mut rng);
    let cfg = PlanConfig::default();
    let dead = pid(7);
    for n in g.neighbours(dead) {
        g.fail_links(n.peer, &[n.nid]);
        g.refill(n.peer, &mut rng);
    }
    let servers: Vec<PeerId> = (1..30).map(pid).collect();
    for _ in 0..200 {
        for p in plan(&g, &mut rng, &cfg, pid(0), &servers, 3) {
            assert_valid(&g, &p, &cfg);
            assert!(!p.hops.contains(&dead), "path through a suspect");
        }
    }
    let a = g.vertex(dead).unwrap().addr;
    g.upsert(dead, a);
    g.refill(dead, &mut rng);
    let to_it = (0..200).any(|_| plan(&g, &mut rng, &cfg, pid(0), &[dead], 1).len() == 1);
    assert!(to_it, "no circuit to the peer once it announced");
}

#[test]
fn no_path_fails_gracefully() {
    let mut rng = StdRng::seed_from_u64(13);
    let g = graph(3, 3, &mut rng); // a triangle: no room for 2 relays
    let ps = plan(
        &g,
        &mut rng,
        &PlanConfig::default(),
        pid(0),
        &[pid(1), pid(2)],
        2,
    );
    assert!(ps.is_empty());
    assert!(plan(&g, &mut rng, &PlanConfig::default(), pid(0), &[pid(0)], 1).is_empty());
}

#[test]
fn heavy_load_steers_traffic_away() {
    let mut rng = StdRng::seed_from_u64(14);
    let mut g = graph(40, 40, &mut rng);
    let hot = g.adjacent(pid(0))[0].0;
    for _ in 0..50 {
        g.account_path(&[hot], true);
    }
    let cfg = PlanConfig {
        min_relays: 2,
        max_relays: 2,
        ..Default::default()
    };
    let servers: Vec<PeerId> = (1..40).map(pid).filter(|p| *p != hot).collect();
    let mut through_hot = 0;
    for _ in 0..300 {
        for p in plan(&g, &mut rng, &cfg, pid(0), &servers, 1) {
            through_hot += usize::from(p.hops[1] == hot);
        }
    }
    let share = 300 / g.adjacent(pid(0)).len();
    assert!(
        through_hot * 4 < share,
        "hot neighbour used {through_hot} times"
    );
}

#[test]
fn ratio_policy_caps_low_ratio_peers_after_grace() {
    let p = RatioPolicy {
        grace_bytes: 1000,
        ..Default::default()
    };
    assert_eq!(p.allowance(20, 0, 0, 0), 8);
    assert_eq!(p.allowance(3, 0, 999, 0), 3);
    assert_eq!(p.allowance(5, 0, 5000, 0), 2);
    assert_eq!(p.allowance(5, 1000, 5000, 2000), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any plan in any graph (shared IPs included) respects every path rule.
    #[test]
    fn plans_always_valid(seed: u64, n in 5u32..80, ip_mod in 3u32..80, min in 0usize..4, extra in 0usize..3) {
        let mut rng = StdRng::seed_from_u64(seed);
        let g = graph(n, ip_mod, &mut rng);
        let cfg = PlanConfig { min_relays: min, max_relays: min + extra, ..Default::default() };
        let servers: Vec<PeerId> = (0..n).map(pid).collect();
        for o in 0..n.min(10) {
            for p in plan(&g, &mut rng, &cfg, pid(o), &servers, 3) {
                assert_valid(&g, &p, &cfg);
            }
        }
    }
}

#[test]
fn credit_tiers_count_relaying_and_uploads_against_downloads() {
    let p = RatioPolicy::default();
    assert_eq!(p.tier(0, 0, 0), 0, "nothing on record");
    assert_eq!(p.tier(0, 1000, 0), 1);
    assert_eq!(p.tier(100, 1000, 300), 1, "0.4 < threshold 0.5");
    assert_eq!(p.tier(200, 1000, 300), 2, "0.5");
    assert_eq!(p.tier(0, 1000, 999), 2);
    assert_eq!(p.tier(0, 1000, 1000), 3, "relaying alone reaches the top");
    assert_eq!(p.tier(0, 0, 5), 3, "a pure relay");
    assert_eq!(p.tier(u64::MAX, 1, u64::MAX), 3);
}

/// Share of relay positions taken by each role when every newcomer of a
/// [`staged_network`] plans `circuits` circuits to `dests(newcomer)`, with
/// load accounted as the Graph actor does.
fn relay_shares(
    seed: u64,
    circuits: usize,
    dests: impl Fn(&Staged, PeerId) -> Vec<PeerId>,
) -> (f64, f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = NeighbourGraph::new(GraphConfig::default());
    let s = staged_network(&mut g, &mut rng, 150, 10, 40);
    let cfg = PlanConfig::default();
    let relays: HashSet<PeerId> = s.relays.iter().copied().collect();
    let seeders: HashSet<PeerId> = s.seeders.iter().copied().collect();
    let (mut on_relays, mut on_seeders, mut on_newcomers) = (0usize, 0usize, 0usize);
    for n in &s.newcomers {
        for p in plan(&g, &mut rng, &cfg, *n, &dests(&s, *n), circuits) {
            assert_valid(&g, &p, &cfg);
            g.account_path(&p.hops, true);
            for r in &p.hops[1..p.hops.len() - 1] {
                if relays.contains(r) {
                    on_relays += 1;
                } else if seeders.contains(r) {
                    on_seeders += 1;
                } else {
                    on_newcomers += 1;
                }
            }
        }
    }
    let all = (on_relays + on_seeders + on_newcomers).max(1) as f64;
    (
        on_relays as f64 / all,
        on_seeders as f64 / all,
        on_newcomers as f64 / all,
    )
}

/// Issue 7: with 150 relay-only peers, 10 seeders and 40 late downloaders,
/// relay positions must fall on the relay-only peers at least in
/// proportion to their number (150 of the 199 possible relays, 0.76) and on
/// the downloaders at most in proportion (39 of 199, 0.2), both towards the
/// seeders and between two downloaders. The first version gave relay-only
/// peers 0.002 and 0.0 of the positions, downloaders 0.74 and 0.98.
#[test]
fn late_downloaders_relay_through_relay_only_peers() {
    let to_seeders = |s: &Staged, _: PeerId| s.seeders.clone();
    let (relay, seeder, newcomer) = relay_shares(31, 10, to_seeders);
    assert!(
        relay > 0.76 && newcomer < 0.2,
        "to seeders: relays {relay:.2}, seeders {seeder:.2}, downloaders {newcomer:.2}"
    );
    let to_peers =
        |s: &Staged, me: PeerId| s.newcomers.iter().copied().filter(|p| *p != me).collect();
    let (relay, seeder, newcomer) = relay_shares(32, 10, to_peers);
    assert!(
        relay > 0.76 && newcomer < 0.2,
        "between downloaders: relays {relay:.2}, seeders {seeder:.2}, downloaders {newcomer:.2}"
    );
}
