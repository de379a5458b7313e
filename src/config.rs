//! Configuration of a serving process, resolved from flags and environment by `cli` and
//! passed in explicitly (never a global).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Body size limits per endpoint kind, enforced while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body of a single-event request (default 64 KiB).
    pub single_body: usize,
    /// Largest body of a bulk request (default 5 MiB).
    pub bulk_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            single_body: 64 << 10,
            bulk_body: 5 << 20,
        }
    }
}

/// Default requests per minute per key (GameRebellion's "Pro" tier).
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Bytes of request bodies that may wait for the writer before new ones get 503.
    pub queue_bytes: usize,
    /// Open client connections at most; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Time a client has to send its request body.
    pub body_timeout: Duration,
    /// Requests per minute of a key minted without `--rate-limit` (GameRebellion dialect).
    pub default_rate_limit: u32,
    pub admin: AdminConfig,
}

/// The admin panel's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Serve the panel on this address only (and not on `listen`); `None` = on `listen`.
    pub listen: Option<SocketAddr>,
    /// Mark the session cookie `Secure` (served over TLS, directly or by a proxy in front).
    pub secure_cookie: bool,
    /// How long a login lasts.
    pub session_ttl: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            secure_cookie: false,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            limits: Limits::default(),
            queue_bytes: crate::store::writer::DEFAULT_QUEUE_BYTES,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            default_rate_limit: DEFAULT_RATE_LIMIT,
            admin: AdminConfig::default(),
        }
    }
}
