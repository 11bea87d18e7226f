//! Typed errors of the peer, each with a coarse `kind()` for metrics labels
//! and retry decisions. Display texts never carry keys, addresses or ids.

use thiserror::Error;

/// Why a neighbour link could not be established.
#[derive(Debug, Error)]
pub enum LinkError {
    /// TCP connect, read or write failed.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (the other side closed, or the network).
    #[error("tls handshake failed")]
    Tls,
    /// What arrived is not a TLS handshake at all (garbage on the port).
    #[error("not a tls handshake")]
    BadTls,
    /// The other side took too long (connect, handshake or hello).
    #[error("link set-up timed out")]
    Timeout,
    /// The other side closed or stayed silent without sending a hello
    /// (the tracker's reachability probe does exactly that).
    #[error("no hello")]
    NoHello,
    /// The hello was malformed or named the wrong peer or NID.
    #[error("bad hello")]
    BadHello,
    /// The certificate shown is not the one the tracker pinned for the NID.
    #[error("certificate does not match the pin")]
    BadPin,
    /// The hello named a NID the tracker never gave us.
    #[error("unknown NID")]
    UnknownNid,
    /// Building the TLS context failed.
    #[error("tls setup: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
}

impl LinkError {
    /// Coarse kind, from a fixed set.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Io(_) => "io",
            LinkError::Tls => "tls",
            LinkError::BadTls => "bad_tls",
            LinkError::Timeout => "timeout",
            LinkError::NoHello => "no_hello",
            LinkError::BadHello => "bad_hello",
            LinkError::BadPin => "bad_pin",
            LinkError::UnknownNid => "unknown_nid",
            LinkError::Setup(_) => "setup",
        }
    }

    /// Whether the other side broke the protocol (counted in
    /// `anomos_protocol_violations_total{kind}`), as opposed to a network
    /// failure or a silent probe.
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            LinkError::BadTls | LinkError::BadHello | LinkError::BadPin | LinkError::UnknownNid
        )
    }
}

/// Why an announce failed.
#[derive(Debug, Error)]
pub enum TrackerError {
    /// The tracker could not be reached (connect, TLS, I/O, timeout).
    #[error("tracker unreachable: {0}")]
    Unreachable(String),
    /// The tracker's certificate does not match the configured pin.
    #[error("tracker certificate does not match the pin")]
    BadPin,
    /// The tracker's answer is not valid HTTP or not a valid body.
    #[error("malformed tracker response: {0}")]
    Malformed(&'static str),
    /// The tracker refused the announce.
    #[error("tracker refused the announce: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The tracker's message (never peer data).
        message: String,
    },
    /// The announce could not be built or signed.
    #[error("announce could not be built: {0}")]
    Api(#[from] anomos_common::api::ApiError),
}

impl TrackerError {
    /// Coarse kind: the `result` label of `anomos_announces_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerError::Unreachable(_) | TrackerError::BadPin => "unreachable",
            TrackerError::Malformed(_) | TrackerError::Refused { .. } | TrackerError::Api(_) => {
                "error"
            }
        }
    }
}

/// Why the identity store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file could not be read, written or renamed.
    #[error("identity file {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but does not hold a valid identity.
    #[error("identity files in {dir} are corrupt or inconsistent ({why}); move them away to create a new identity")]
    Corrupt {
        /// The identity directory.
        dir: String,
        /// Which check failed.
        why: String,
    },
    /// Generating a fresh identity failed.
    #[error("identity generation failed: {0}")]
    Generate(#[from] anomos_common::identity::IdentityError),
}

impl StoreError {
    /// Coarse kind.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Generate(_) => "generate",
        }
    }
}

/// Invalid configuration (file or flags).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file: {0}")]
    Io(#[from] std::io::Error),
    /// The config file is not valid TOML for this program.
    #[error("config file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or missing.
    #[error("config: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// Coarse kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Io(_) => "io",
            ConfigError::Parse(_) => "parse",
            ConfigError::Invalid(_) => "invalid",
        }
    }
}
