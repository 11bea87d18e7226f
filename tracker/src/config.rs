//! Tracker configuration: defaults, a TOML file (`--config`) that can set
//! every field, and command-line flags that override the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::graph::GraphConfig;
use crate::core::planner::{PlanConfig, RatioPolicy, MAX_PATH_HOPS};
use crate::core::ratelimit::RateConfig;
use crate::error::ConfigError;

/// Every setting of the tracker. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTPS API listener.
    pub listen: SocketAddr,
    /// Plain-HTTP operator listener (`/metrics`, `/healthz`, `/status`).
    pub metrics: SocketAddr,
    /// Certificate, admin token and ledger live here.
    pub data_dir: PathBuf,
    /// PEM certificate (chain) to serve instead of the self-signed one.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Let peers with the same IP be neighbours and share paths (labs, tests).
    pub allow_same_ip: bool,
    /// Bearer token for `/status`; else read or created in `DATA_DIR/admin-token`.
    pub admin_token: Option<String>,
    /// Proxies whose last `X-Forwarded-For` hop is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Dial the announced `listen_ip` instead of the client address (labs,
    /// peers behind a proxy). It is still reachability-checked.
    pub honor_listen_ip: bool,
    /// How long a planned circuit counts as load on its path.
    pub load_window_secs: u64,
    /// Interval peers are told to announce at.
    pub announce_interval_secs: u64,
    /// A peer silent this long is unregistered.
    pub session_ttl_secs: u64,
    /// Accepted clock skew of announce timestamps.
    pub max_skew_secs: u64,
    /// Largest announce body accepted (bigger → 413).
    pub max_body_bytes: usize,
    /// Time a client has to send an announce body once its head arrived
    /// (the head itself has actix's 5 s request timeout); a client that
    /// dribbles its body is answered 400 and cut off.
    pub body_timeout_ms: u64,
    /// Neighbours per peer, lower bound of refill.
    pub min_neighbours: usize,
    /// Neighbours per peer, hard upper bound.
    pub max_neighbours: usize,
    /// Fewest relays per path.
    pub min_relays: usize,
    /// Most relays per path (≤ 6: 8 hops with both endpoints).
    pub max_relays: usize,
    /// Tracking code lifetime.
    pub code_lifetime_secs: u64,
    /// Circuits per torrent per announce for peers in good standing.
    pub max_circuits: usize,
    /// Circuits per torrent per announce for low-ratio peers.
    pub low_ratio_circuits: usize,
    /// Ratio below which a peer is low-ratio.
    pub low_ratio_threshold: f64,
    /// Downloaded bytes before the ratio policy applies.
    pub ratio_grace_bytes: u64,
    /// Announces per second per client address.
    pub rate_per_ip: f64,
    /// Burst per client address.
    pub burst_per_ip: f64,
    /// Announces per second per identity.
    pub rate_per_peer: f64,
    /// Burst per identity.
    pub burst_per_peer: f64,
    /// Reachability dial timeout.
    pub reach_timeout_ms: u64,
    /// First retry delay after a failed reachability check (doubles each time).
    pub reach_retry_secs: u64,
    /// Longest retry delay.
    pub reach_retry_max_secs: u64,
    /// Threads of the circuit planner pool.
    pub planner_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("anomos-tracker-data"),
            tls_cert: None,
            tls_key: None,
            allow_same_ip: false,
            admin_token: None,
            trusted_proxies: Vec::new(),
            honor_listen_ip: false,
            load_window_secs: 600,
            announce_interval_secs: 60,
            session_ttl_secs: 180,
            max_skew_secs: 120,
            max_body_bytes: 64 * 1024,
            body_timeout_ms: 10_000,
            min_neighbours: 4,
            max_neighbours: 6,
            min_relays: 2,
            max_relays: 4,
            code_lifetime_secs: 300,
            max_circuits: 8,
            low_ratio_circuits: 2,
            low_ratio_threshold: 0.5,
            ratio_grace_bytes: 1 << 30,
            rate_per_ip: 50.0,
            burst_per_ip: 100.0,
            rate_per_peer: 2.0,
            burst_per_peer: 10.0,
            reach_timeout_ms: 3000,
            reach_retry_secs: 5,
            reach_retry_max_secs: 300,
            planner_threads: 2,
        }
    }
}

/// Values given on the command line; `None`/`false` leave the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--allow-same-ip`.
    pub allow_same_ip: bool,
}

impl Config {
    /// Defaults, then the TOML file if given, then the flags.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => toml::from_str(&std::fs::read_to_string(p)?)?,
            None => Config::default(),
        };
        cfg.listen = over.listen.unwrap_or(cfg.listen);
        cfg.metrics = over.metrics.unwrap_or(cfg.metrics);
        cfg.data_dir = over.data_dir.unwrap_or(cfg.data_dir);
        cfg.tls_cert = over.tls_cert.or(cfg.tls_cert);
        cfg.tls_key = over.tls_key.or(cfg.tls_key);
        cfg.allow_same_ip |= over.allow_same_ip;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject inconsistent settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m| Err(ConfigError::Invalid(m));
        if self.min_neighbours > self.max_neighbours || self.max_neighbours == 0 {
            return bad("need 0 <= min_neighbours <= max_neighbours, max_neighbours > 0");
        }
        if self.min_relays > self.max_relays || self.max_relays + 2 > MAX_PATH_HOPS {
            return bad("need min_relays <= max_relays <= 6");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        if self.planner_threads == 0 || self.max_body_bytes == 0 || self.body_timeout_ms == 0 {
            return bad("planner_threads, max_body_bytes and body_timeout_ms must be positive");
        }
        if !(self.rate_per_ip > 0.0 && self.rate_per_peer > 0.0) {
            return bad("rates must be positive");
        }
        if self.burst_per_ip < 1.0 || self.burst_per_peer < 1.0 {
            return bad("bursts must be at least 1");
        }
        if self.session_ttl_secs <= self.announce_interval_secs {
            return bad("session_ttl_secs must exceed announce_interval_secs");
        }
        Ok(())
    }

    /// Neighbour-assignment settings.
    pub fn graph(&self) -> GraphConfig {
        GraphConfig {
            min_degree: self.min_neighbours,
            max_degree: self.max_neighbours,
            allow_same_ip: self.allow_same_ip,
            claim_ttl_secs: self.session_ttl_secs,
        }
    }

    /// Path-selection settings.
    pub fn plan(&self) -> PlanConfig {
        PlanConfig {
            min_relays: self.min_relays,
            max_relays: self.max_relays,
            ..PlanConfig::default()
        }
    }

    /// Share-ratio policy.
    pub fn ratio_policy(&self) -> RatioPolicy {
        RatioPolicy {
            max_circuits: self.max_circuits,
            low_ratio_circuits: self.low_ratio_circuits,
            threshold: self.low_ratio_threshold,
            grace_bytes: self.ratio_grace_bytes,
        }
    }

    /// Per-address limiter.
    pub fn ip_rate(&self) -> RateConfig {
        RateConfig {
            per_sec: self.rate_per_ip,
            burst: self.burst_per_ip,
        }
    }

    /// Per-identity limiter.
    pub fn peer_rate(&self) -> RateConfig {
        RateConfig {
            per_sec: self.rate_per_peer,
            burst: self.burst_per_peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sets_values_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:1111\"\nmin_relays = 3\ntrusted_proxies = [\"10.0.0.1\"]\n",
        )
        .unwrap();
        let over = Overrides {
            listen: Some("127.0.0.1:2222".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(Some(&f), over).unwrap();
        assert_eq!(c.listen.port(), 2222);
        assert_eq!(c.min_relays, 3);
        assert_eq!(
            c.trusted_proxies,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        std::fs::write(&f, "no_such_key = 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&f), Overrides::default()),
            Err(ConfigError::Parse(_))
        ));
        std::fs::write(&f, "max_relays = 7\n").unwrap();
        assert!(matches!(
            Config::load(Some(&f), Overrides::default()),
            Err(ConfigError::Invalid(_))
        ));
    }
}
