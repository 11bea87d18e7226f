//! Typed errors of the tracker, each with a coarse `kind()` for logs and
//! retry decisions. `anyhow` is used only in `main.rs` and tests.

use thiserror::Error;

/// The ratio ledger failed.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// SQLite reported an error.
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Starting the writer thread failed.
    #[error("ledger writer thread: {0}")]
    Io(#[from] std::io::Error),
    /// A batch could not be committed.
    #[error("ledger write: {0}")]
    Write(String),
    /// The ledger was closed.
    #[error("ledger closed")]
    Closed,
}

impl LedgerError {
    /// Coarse kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerError::Db(_) | LedgerError::Write(_) => "db",
            LedgerError::Io(_) => "io",
            LedgerError::Closed => "closed",
        }
    }
}

/// The configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file: {0}")]
    Read(#[from] std::io::Error),
    /// The config file is not valid TOML for this tracker.
    #[error("parsing config file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

impl ConfigError {
    /// Coarse kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read(_) => "io",
            ConfigError::Parse(_) => "parse",
            ConfigError::Invalid(_) => "invalid",
        }
    }
}

/// Starting or running the tracker failed.
#[derive(Debug, Error)]
pub enum TrackerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// TLS setup (certificate, key, context) failed.
    #[error("tls: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    /// A file or socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The identity in the data dir is unusable.
    #[error("identity: {0}")]
    Identity(String),
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl TrackerError {
    /// Coarse kind.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerError::Config(e) => e.kind(),
            TrackerError::Ledger(e) => e.kind(),
            TrackerError::Tls(_) => "tls",
            TrackerError::Io(_) => "io",
            TrackerError::Identity(_) => "identity",
            TrackerError::Metrics(_) => "metrics",
        }
    }
}
