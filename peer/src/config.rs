//! Peer configuration: defaults, a TOML file (`--config`) that can set every
//! field, and command-line flags that override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anomos_common::Pin;
use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;

/// Every setting of a peer. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// Base URL of the tracker (`https://host:port`).
    pub tracker: String,
    /// SHA-256 SPKI pin of the tracker certificate (64 hex digits). Without
    /// it the tracker is checked against the system CAs and its host name.
    #[serde(deserialize_with = "de_pin")]
    pub tracker_pin: Option<Pin>,
    /// Where identities live (one subdirectory per tracker).
    pub data_dir: PathBuf,
    /// Link listener; port 0 picks a free port, which is then announced.
    pub listen: SocketAddr,
    /// Plain-HTTP operator listener (`/metrics`, `/healthz`); none if unset.
    pub metrics: Option<SocketAddr>,
    /// Keep the identity in memory only (a fresh peer id every run).
    pub ephemeral: bool,
    /// Shortest gap between two announces (early re-announces included).
    pub min_announce_gap_ms: u64,
    /// First retry delay when the tracker is unreachable.
    pub tracker_retry_ms: u64,
    /// Longest retry delay when the tracker is unreachable.
    pub tracker_retry_max_ms: u64,
    /// First delay before asking again for circuits an announce did not
    /// grant; doubles while answers grant nothing, up to the announce
    /// interval (`core::reask`).
    pub circuit_reask_ms: u64,
    /// First re-dial delay of a neighbour link.
    pub dial_retry_ms: u64,
    /// Longest re-dial delay of a neighbour link.
    pub dial_retry_max_ms: u64,
    /// Consecutive dial failures after which the NID is reported as failed.
    pub dial_failures_reported: u32,
    /// Timeout of TCP connect + TLS handshake + hello, each way.
    pub handshake_timeout_ms: u64,
    /// How long an incoming link with an unknown NID waits for the next
    /// announce to tell us about it.
    pub unknown_nid_wait_ms: u64,
    /// Timeout of one HTTP exchange with the tracker.
    pub tracker_timeout_ms: u64,
    /// A link silent this long (not even keep-alive PADDING) is closed:
    /// how long a neighbour that is cut off (not closed) goes unnoticed.
    /// Keep-alive PADDING goes out after a third of it (at most 20 s), so
    /// neighbours should agree on it.
    pub link_idle_timeout_ms: u64,
    /// CREATE → open end-to-end channel must finish within this, at the
    /// originator and at every hop; a circuit stuck behind a relay that
    /// never forwards costs its download this long. 10 s: set-up takes
    /// milliseconds on an idle network and stayed under 5 s (p99) even in
    /// a 200-peer process on 0.7 of a core (BENCHMARKS.md).
    pub circuit_setup_timeout_ms: u64,
    /// TEST ONLY (`CoreConfig::swallow_creates`): not read from files; the
    /// `anomos relay` command sets it from `ANOMOS_TEST_SWALLOW_CREATES=1`.
    #[serde(skip)]
    pub test_swallow_creates: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            tracker: String::new(),
            tracker_pin: None,
            data_dir: PathBuf::from("anomos-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            metrics: None,
            ephemeral: false,
            min_announce_gap_ms: 1000,
            tracker_retry_ms: 1000,
            tracker_retry_max_ms: 60_000,
            circuit_reask_ms: 1000,
            dial_retry_ms: 250,
            dial_retry_max_ms: 30_000,
            dial_failures_reported: 3,
            handshake_timeout_ms: 10_000,
            unknown_nid_wait_ms: 5_000,
            tracker_timeout_ms: 20_000,
            link_idle_timeout_ms: 60_000,
            circuit_setup_timeout_ms: 10_000,
            test_swallow_creates: false,
        }
    }
}

fn de_pin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pin>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_pin(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Parse a pin given as 64 hex digits.
pub fn parse_pin(s: &str) -> Result<Pin, String> {
    Pin::from_hex(s).ok_or_else(|| "a pin is 64 hex digits".to_owned())
}

/// Values given on the command line; `None`/`false` leave the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--tracker`.
    pub tracker: Option<String>,
    /// `--tracker-pin`.
    pub tracker_pin: Option<Pin>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--ephemeral`.
    pub ephemeral: bool,
}

impl PeerConfig {
    /// Defaults, then the TOML file if given, then the flags.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => toml::from_str(&std::fs::read_to_string(p)?)?,
            None => PeerConfig::default(),
        };
        cfg.tracker = over.tracker.unwrap_or(cfg.tracker);
        cfg.tracker_pin = over.tracker_pin.or(cfg.tracker_pin);
        cfg.data_dir = over.data_dir.unwrap_or(cfg.data_dir);
        cfg.listen = over.listen.unwrap_or(cfg.listen);
        cfg.metrics = over.metrics.or(cfg.metrics);
        cfg.ephemeral |= over.ephemeral;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject inconsistent settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.tracker.is_empty() {
            return bad("a tracker URL is required (--tracker or `tracker` in the config file)");
        }
        if let Err(e) = crate::net::tracker_client::TrackerUrl::parse(&self.tracker) {
            return Err(ConfigError::Invalid(e.to_string()));
        }
        if self.tracker_retry_ms == 0 || self.tracker_retry_max_ms < self.tracker_retry_ms {
            return bad("need 0 < tracker_retry_ms <= tracker_retry_max_ms");
        }
        if self.dial_retry_ms == 0 || self.dial_retry_max_ms < self.dial_retry_ms {
            return bad("need 0 < dial_retry_ms <= dial_retry_max_ms");
        }
        if self.handshake_timeout_ms == 0
            || self.tracker_timeout_ms == 0
            || self.link_idle_timeout_ms == 0
            || self.circuit_setup_timeout_ms == 0
            || self.circuit_reask_ms == 0
        {
            return bad("timeouts must be positive");
        }
        Ok(())
    }

    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "b18f90a280058180147e2ca638d5a38b157a34c16e7ffdf55ed64f3e50349676";

    #[test]
    fn file_sets_every_option_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            format!(
                "tracker = \"https://t.example:8443\"\ntracker_pin = \"{PIN}\"\n\
                 data_dir = \"/var/lib/x\"\nlisten = \"127.0.0.1:7000\"\n\
                 metrics = \"127.0.0.1:9000\"\nephemeral = false\nmin_announce_gap_ms = 5\n"
            ),
        )
        .unwrap();
        let c = PeerConfig::load(Some(&f), Overrides::default()).unwrap();
        assert_eq!(c.tracker, "https://t.example:8443");
        assert_eq!(c.tracker_pin, Some(parse_pin(PIN).unwrap()));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.metrics, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.min_announce_gap_ms, 5);
        let over = Overrides {
            tracker: Some("https://other:1".into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ephemeral: true,
            ..Default::default()
        };
        let c = PeerConfig::load(Some(&f), over).unwrap();
        assert_eq!(c.tracker, "https://other:1");
        assert_eq!(c.listen.port(), 0);
        assert!(c.ephemeral);
        assert_eq!(c.metrics.unwrap().port(), 9000, "file value kept");
    }

    #[test]
    fn bad_files_and_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "tracker = \"https://t\"\nno_such_key = 1\n").unwrap();
        let e = PeerConfig::load(Some(&f), Overrides::default()).unwrap_err();
        assert_eq!(e.kind(), "parse");
        std::fs::write(&f, "tracker = \"https://t\"\ntracker_pin = \"abc\"\n").unwrap();
        assert_eq!(
            PeerConfig::load(Some(&f), Overrides::default())
                .unwrap_err()
                .kind(),
            "parse"
        );
        let e = PeerConfig::load(None, Overrides::default()).unwrap_err();
        assert_eq!(e.kind(), "invalid");
        let over = Overrides {
            tracker: Some("ftp://t".into()),
            ..Default::default()
        };
        assert_eq!(PeerConfig::load(None, over).unwrap_err().kind(), "invalid");
        let missing = dir.path().join("missing.toml");
        assert_eq!(
            PeerConfig::load(Some(&missing), Overrides::default())
                .unwrap_err()
                .kind(),
            "io"
        );
    }
}
