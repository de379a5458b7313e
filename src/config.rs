//! Configuration of a serving process, in two phases: [`RawConfig`] layers (the TOML file,
//! then environment and flags, each optional and unknown keys refused) are merged and then
//! resolved and checked into a [`Config`], which is passed in explicitly (never a global).
//!
//! Precedence, highest first: command-line flag, `INLET_*` environment variable, the file
//! named by `--config` / `INLET_CONFIG` (else [`DEFAULT_CONFIG_FILE`] when it exists; every
//! command reads it, not only `serve`), the built-in default.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `tracing`'s key=value lines.
    #[default]
    Text,
    /// One JSON object per line (journald, Loki).
    Json,
}

/// TLS served directly by inlet (for studios without a reverse proxy); reloaded on SIGHUP.
pub use crate::tls::Tls;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Bytes of request bodies that may wait for the writer before new ones get 503.
    pub queue_bytes: usize,
    /// Open client connections at most; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Open connections of one peer address (one IPv6 /64) at most; further ones from it
    /// are closed at once, so that one client cannot take every slot.
    pub max_connections_per_peer: usize,
    /// Time a client has to send its request headers; on a kept-alive connection, also the
    /// time it may stay idle before its next request.
    pub header_timeout: Duration,
    /// Time a response may wait for a client that does not read it.
    pub write_timeout: Duration,
    /// Bytes of request bodies held in memory at once, over all requests; a request is
    /// admitted against it before its body is read.
    pub body_budget: usize,
    /// Time a client has to send its request body.
    pub body_timeout: Duration,
    /// Requests per minute of a key minted without `--rate-limit` (GameRebellion dialect).
    pub default_rate_limit: u32,
    pub log_format: LogFormat,
    /// `None`: plain HTTP.
    pub tls: Option<Tls>,
    /// `/readyz` answers 503 when the data dir's file system has less free space than this.
    pub min_free_disk_bytes: u64,
    /// Retention of tenants without their own setting, in days; 0 keeps events forever.
    pub retention_days: u32,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// When set, `/metrics` requires `Authorization: Bearer <token>` from any peer.
    pub metrics_token: Option<String>,
    /// Without a token, serve `/metrics` to any peer (default: loopback peers only).
    pub metrics_public: bool,
    pub admin: AdminConfig,
    /// Cluster mode on a NATS JetStream engine; `None`: the embedded store alone.
    pub cluster: Option<crate::cluster::Settings>,
    /// Scheduled backups (`[backup]`); `None`: only `inlet backup`.
    pub backup: Option<BackupSchedule>,
    /// `[enrich]`: geo and device added to events; `None`: events stored as sent.
    pub enrich: Option<crate::enrich::Enrich>,
    /// `[quarantine]`: how much of the refused-but-fixable events each app keeps.
    pub quarantine: crate::store::quarantine::Bounds,
    /// Live tails (`/admin/api/tail`) open at once at most.
    pub max_tails: usize,
    /// How often the alert rules are evaluated (and the first wait of a webhook retry).
    pub alert_interval: Duration,
    /// `[alerts] webhook_ca`: a PEM file of CA certificates trusted for `https://` alert
    /// webhooks besides the system's roots.
    pub webhook_ca: Option<PathBuf>,
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
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            body_budget: DEFAULT_BODY_BUDGET,
            body_timeout: Duration::from_secs(30),
            default_rate_limit: DEFAULT_RATE_LIMIT,
            admin: AdminConfig::default(),
            log_format: LogFormat::Text,
            tls: None,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_MB << 20,
            retention_days: 0,
            retention_interval: Duration::from_secs(DEFAULT_RETENTION_INTERVAL_SECS),
            metrics_token: None,
            metrics_public: false,
            cluster: None,
            backup: None,
            enrich: None,
            quarantine: DEFAULT_QUARANTINE,
            max_tails: crate::watch::DEFAULT_MAX_TAILS,
            alert_interval: Duration::from_millis(DEFAULT_ALERT_INTERVAL_MS),
            webhook_ca: None,
        }
    }

    /// The effective configuration as a complete TOML file, secrets redacted.
    pub fn to_toml(&self) -> String {
        let raw = RawConfig {
            data_dir: Some(self.data_dir.clone()),
            listen: Some(self.listen.to_string()),
            max_body_single: Some(self.limits.single_body),
            max_body_bulk: Some(self.limits.bulk_body),
            queue_bytes: Some(self.queue_bytes),
            max_connections: Some(self.max_connections),
            max_connections_per_peer: Some(self.max_connections_per_peer),
            header_timeout_secs: Some(self.header_timeout.as_secs()),
            write_timeout_secs: Some(self.write_timeout.as_secs()),
            body_budget_bytes: Some(self.body_budget),
            body_timeout_secs: Some(self.body_timeout.as_secs()),
            log_format: Some(self.log_format),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            min_free_disk_mb: Some(self.min_free_disk_bytes >> 20),
            retention_days: Some(self.retention_days),
            retention_interval_secs: Some(self.retention_interval.as_secs()),
            metrics_token: self.metrics_token.as_ref().map(|_| REDACTED.to_owned()),
            metrics_public: Some(self.metrics_public),
            default_rate_limit: Some(self.default_rate_limit),
            admin_listen: self.admin.listen.map(|a| a.to_string()),
            admin_secure_cookie: Some(self.admin.secure_cookie),
            cluster_engine: self.cluster.as_ref().map(|c| c.engine.join(",")),
            cluster_monitor: self.cluster.as_ref().map(|c| c.monitor.join(",")),
            cluster_node: self.cluster.as_ref().map(|c| c.node.clone()),
            cluster_partitions: self.cluster.as_ref().map(|c| c.partitions),
            cluster_single_engine_node: self.cluster.as_ref().map(|c| c.single_engine_node),
            backup: self.backup.as_ref().map(|b| b.raw()),
            enrich: self.enrich.as_ref().map(|e| e.raw()),
            quarantine: Some(RawQuarantine {
                max_events: Some(self.quarantine.max_events),
                max_bytes: Some(self.quarantine.max_bytes),
            }),
            max_tails: Some(self.max_tails),
            alert_interval_ms: Some(self.alert_interval.as_millis() as u64),
            alerts: self.webhook_ca.as_ref().map(|ca| RawAlerts {
                webhook_ca: Some(ca.clone()),
            }),
        };
        toml::to_string(&raw).expect("a config always serializes")
    }
}

/// `[backup]` of the configuration file: backups the server takes by itself.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// How often: `24h`, `6h`, `30m`, `2d`.
    pub every: Option<String>,
    /// Backups kept in `dir`; older ones are removed [default: 7].
    pub keep: Option<u32>,
    /// Where they go: an absolute path outside the data dir.
    pub dir: Option<PathBuf>,
}

/// Checked `[backup]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    pub every: Duration,
    pub keep: u32,
    pub dir: PathBuf,
}

impl RawBackup {
    fn resolve(self) -> Result<BackupSchedule, String> {
        let every = self.every.as_deref().ok_or("backup.every: must be set")?;
        let secs = every
            .strip_suffix(['s', 'm', 'h', 'd'])
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| match every.as_bytes()[every.len() - 1] {
                b's' => n,
                b'm' => n.saturating_mul(60),
                b'h' => n.saturating_mul(3600),
                _ => n.saturating_mul(86_400),
            })
            .filter(|s| (1..=366 * 86_400).contains(s))
            .ok_or_else(|| {
                format!("backup.every: {every:?} is not a duration like 24h, 30m or 2d")
            })?;
        let keep = self.keep.unwrap_or(7);
        if !(1..=1000).contains(&keep) {
            return Err(format!("backup.keep: {keep} is outside 1..=1000"));
        }
        let dir = self.dir.ok_or("backup.dir: must be set")?;
        if !dir.is_absolute() {
            return Err(format!(
                "backup.dir: {} must be an absolute path",
                dir.display()
            ));
        }
        Ok(BackupSchedule {
            every: Duration::from_secs(secs),
            keep,
            dir,
        })
    }
}

impl BackupSchedule {
    fn raw(&self) -> RawBackup {
        let s = self.every.as_secs();
        let every = match s {
            s if s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        RawBackup {
            every: Some(every),
            keep: Some(self.keep),
            dir: Some(self.dir.clone()),
        }
    }
}

/// `[quarantine]` of the configuration file: per app, at most this many refused events
/// kept for replay, and at most this many bytes of them ([docs/quarantine.md]).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuarantine {
    pub max_events: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// `[alerts]` of the configuration file (docs/alerts.md).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// PEM CA certificates trusted for `https://` webhooks, besides the system's roots.
    pub webhook_ca: Option<PathBuf>,
}

/// Per app: ten thousand events, 64 MiB.
pub const DEFAULT_QUARANTINE: crate::store::quarantine::Bounds = crate::store::quarantine::Bounds {
    max_events: 10_000,
    max_bytes: 64 << 20,
};

/// What `check-config` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";
pub const DEFAULT_DATA_DIR: &str = "./inlet-data";
/// The configuration file every command reads when none is named (the packaged one).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/inlet/inlet.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 256;
pub const DEFAULT_RETENTION_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_ALERT_INTERVAL_MS: u64 = 15_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 128;
/// Enough for a dozen full bulk bodies at once; with their decoded events it keeps a flood
/// of bulk requests within a few hundred MiB.
pub const DEFAULT_BODY_BUDGET: usize = 64 << 20;

/// One layer of configuration: every key optional. The TOML file uses exactly these names;
/// flags are the same names with dashes, environment variables `INLET_` + upper case.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub max_body_single: Option<usize>,
    pub max_body_bulk: Option<usize>,
    pub queue_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_peer: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    pub body_budget_bytes: Option<usize>,
    pub body_timeout_secs: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub min_free_disk_mb: Option<u64>,
    pub retention_days: Option<u32>,
    pub retention_interval_secs: Option<u64>,
    pub metrics_token: Option<String>,
    pub metrics_public: Option<bool>,
    pub default_rate_limit: Option<u32>,
    pub admin_listen: Option<String>,
    pub admin_secure_cookie: Option<bool>,
    /// The engine's client URLs, comma-separated (`nats://10.0.0.1:4222,...`): cluster mode.
    pub cluster_engine: Option<String>,
    /// The engine nodes' monitoring URLs, comma-separated (`http://10.0.0.1:8222,...`).
    pub cluster_monitor: Option<String>,
    /// This inlet node's name, unique in the cluster.
    pub cluster_node: Option<String>,
    /// Partitions of the event log, fixed when the cluster is first created.
    pub cluster_partitions: Option<u32>,
    /// Allow an engine of one node with unreplicated streams (tests only: not durable
    /// against the loss of a machine).
    pub cluster_single_engine_node: Option<bool>,
    /// `[backup]`: scheduled backups (file only).
    pub backup: Option<RawBackup>,
    /// `[enrich]`: geo and device enrichment.
    pub enrich: Option<crate::enrich::RawEnrich>,
    /// `[quarantine]`: bounds of the events kept for replay (file only).
    pub quarantine: Option<RawQuarantine>,
    /// Live tails open at once at most (0 turns the tail off).
    pub max_tails: Option<usize>,
    /// How often alert rules are evaluated, in milliseconds.
    pub alert_interval_ms: Option<u64>,
    /// `[alerts]`: webhook settings (file only).
    pub alerts: Option<RawAlerts>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl RawConfig {
    /// Reads a TOML file; unknown keys and wrong types are errors naming the key.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("reading config file {}: {e}", path.display())))?;
        RawConfig::from_toml(&text)
            .map_err(|e| bad(format!("config file {}: {}", path.display(), e.0)))
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_owned()))
    }

    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn under(self, over: RawConfig) -> RawConfig {
        RawConfig {
            data_dir: over.data_dir.or(self.data_dir),
            listen: over.listen.or(self.listen),
            max_body_single: over.max_body_single.or(self.max_body_single),
            max_body_bulk: over.max_body_bulk.or(self.max_body_bulk),
            queue_bytes: over.queue_bytes.or(self.queue_bytes),
            max_connections: over.max_connections.or(self.max_connections),
            max_connections_per_peer: over
                .max_connections_per_peer
                .or(self.max_connections_per_peer),
            header_timeout_secs: over.header_timeout_secs.or(self.header_timeout_secs),
            write_timeout_secs: over.write_timeout_secs.or(self.write_timeout_secs),
            body_budget_bytes: over.body_budget_bytes.or(self.body_budget_bytes),
            body_timeout_secs: over.body_timeout_secs.or(self.body_timeout_secs),
            log_format: over.log_format.or(self.log_format),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            min_free_disk_mb: over.min_free_disk_mb.or(self.min_free_disk_mb),
            retention_days: over.retention_days.or(self.retention_days),
            retention_interval_secs: over
                .retention_interval_secs
                .or(self.retention_interval_secs),
            metrics_token: over.metrics_token.or(self.metrics_token),
            metrics_public: over.metrics_public.or(self.metrics_public),
            default_rate_limit: over.default_rate_limit.or(self.default_rate_limit),
            admin_listen: over.admin_listen.or(self.admin_listen),
            admin_secure_cookie: over.admin_secure_cookie.or(self.admin_secure_cookie),
            cluster_engine: over.cluster_engine.or(self.cluster_engine),
            cluster_monitor: over.cluster_monitor.or(self.cluster_monitor),
            cluster_node: over.cluster_node.or(self.cluster_node),
            cluster_partitions: over.cluster_partitions.or(self.cluster_partitions),
            cluster_single_engine_node: over
                .cluster_single_engine_node
                .or(self.cluster_single_engine_node),
            backup: over.backup.or(self.backup),
            enrich: match (self.enrich, over.enrich) {
                (Some(a), Some(b)) => Some(a.under(b)),
                (a, b) => b.or(a),
            },
            quarantine: over.quarantine.or(self.quarantine),
            max_tails: over.max_tails.or(self.max_tails),
            alert_interval_ms: over.alert_interval_ms.or(self.alert_interval_ms),
            alerts: over.alerts.or(self.alerts),
        }
    }

    /// Applies defaults and checks every value; loads the TLS certificate and key.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(format!(
                "listen: {listen_text:?} is not an address like 127.0.0.1:8080"
            ))
        })?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir: must not be empty"));
        }
        let mut c = Config::new(data_dir, listen);
        let positive = |key: &str, v: Option<u64>, default: u64, max: u64| match v {
            None => Ok(default),
            Some(v) if (1..=max).contains(&v) => Ok(v),
            Some(v) => Err(bad(format!("{key}: {v} is outside 1..={max}"))),
        };
        const GIB: u64 = 1 << 30;
        c.limits.single_body = positive(
            "max_body_single",
            self.max_body_single.map(|v| v as u64),
            c.limits.single_body as u64,
            GIB,
        )? as usize;
        c.limits.bulk_body = positive(
            "max_body_bulk",
            self.max_body_bulk.map(|v| v as u64),
            c.limits.bulk_body as u64,
            GIB,
        )? as usize;
        c.queue_bytes = positive(
            "queue_bytes",
            self.queue_bytes.map(|v| v as u64),
            c.queue_bytes as u64,
            16 * GIB,
        )? as usize;
        if c.queue_bytes < 1 << 20 {
            return Err(bad(format!(
                "queue_bytes: {} is below the minimum of 1048576 (1 MiB)",
                c.queue_bytes
            )));
        }
        c.max_connections = positive(
            "max_connections",
            self.max_connections.map(|v| v as u64),
            c.max_connections as u64,
            1 << 20,
        )? as usize;
        c.max_connections_per_peer = positive(
            "max_connections_per_peer",
            self.max_connections_per_peer.map(|v| v as u64),
            c.max_connections_per_peer as u64,
            1 << 20,
        )? as usize;
        c.write_timeout = Duration::from_secs(positive(
            "write_timeout_secs",
            self.write_timeout_secs,
            c.write_timeout.as_secs(),
            3600,
        )?);
        c.body_budget = positive(
            "body_budget_bytes",
            self.body_budget_bytes.map(|v| v as u64),
            c.body_budget as u64,
            // A semaphore counts at most u32::MAX permits at a time.
            u64::from(u32::MAX),
        )? as usize;
        let largest_body = c.limits.single_body.max(c.limits.bulk_body);
        if c.body_budget < largest_body {
            return Err(bad(format!(
                "body_budget_bytes: {} is below the largest body limit ({largest_body}); no such request could be admitted",
                c.body_budget
            )));
        }
        c.header_timeout = Duration::from_secs(positive(
            "header_timeout_secs",
            self.header_timeout_secs,
            c.header_timeout.as_secs(),
            3600,
        )?);
        c.body_timeout = Duration::from_secs(positive(
            "body_timeout_secs",
            self.body_timeout_secs,
            c.body_timeout.as_secs(),
            3600,
        )?);
        c.log_format = self.log_format.unwrap_or_default();
        c.min_free_disk_bytes = self
            .min_free_disk_mb
            .unwrap_or(DEFAULT_MIN_FREE_DISK_MB)
            .saturating_mul(1 << 20);
        c.retention_days = self.retention_days.unwrap_or(0);
        if c.retention_days > crate::store::admin::MAX_RETENTION_DAYS {
            return Err(bad(format!(
                "retention_days: {} is more than {}",
                c.retention_days,
                crate::store::admin::MAX_RETENTION_DAYS
            )));
        }
        c.retention_interval = Duration::from_secs(positive(
            "retention_interval_secs",
            self.retention_interval_secs,
            DEFAULT_RETENTION_INTERVAL_SECS,
            7 * 86_400,
        )?);
        c.max_tails = self.max_tails.unwrap_or(crate::watch::DEFAULT_MAX_TAILS);
        if c.max_tails > 1000 {
            return Err(bad(format!(
                "max_tails: {} is outside 0..=1000",
                c.max_tails
            )));
        }
        c.alert_interval = Duration::from_millis(positive(
            "alert_interval_ms",
            self.alert_interval_ms,
            DEFAULT_ALERT_INTERVAL_MS,
            86_400_000,
        )?);
        c.webhook_ca = self.alerts.and_then(|a| a.webhook_ca);
        if let Some(ca) = &c.webhook_ca {
            crate::watch::webhook::read_ca(ca).map_err(bad)?;
        }
        c.metrics_token = match self.metrics_token {
            Some(t) if t.trim().is_empty() => {
                return Err(bad("metrics_token: must not be empty when set"));
            }
            t => t,
        };
        c.metrics_public = self.metrics_public.unwrap_or(false);
        c.default_rate_limit = positive(
            "default_rate_limit",
            self.default_rate_limit.map(u64::from),
            u64::from(DEFAULT_RATE_LIMIT),
            u64::from(u32::MAX),
        )? as u32;
        c.tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Tls::load(cert, key).map_err(bad)?),
            _ => return Err(bad("tls_cert and tls_key must be set together")),
        };
        c.admin.listen = match self.admin_listen.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                bad(format!(
                    "admin_listen: {a:?} is not an address like 127.0.0.1:8081"
                ))
            })?),
        };
        // Served over TLS by inlet itself, the cookie is Secure unless said otherwise.
        c.admin.secure_cookie = self.admin_secure_cookie.unwrap_or(c.tls.is_some());
        c.cluster = crate::cluster::Settings::resolve(
            self.cluster_engine.as_deref(),
            self.cluster_monitor.as_deref(),
            self.cluster_node.as_deref(),
            self.cluster_partitions,
            self.cluster_single_engine_node,
        )
        .map_err(bad)?;
        c.backup = self.backup.map(|b| b.resolve()).transpose().map_err(bad)?;
        c.enrich = match self.enrich {
            Some(e) => e.resolve().map_err(bad)?,
            None => None,
        };
        let q = self.quarantine.unwrap_or_default();
        c.quarantine = crate::store::quarantine::Bounds {
            max_events: positive(
                "quarantine.max_events",
                q.max_events,
                DEFAULT_QUARANTINE.max_events,
                10_000_000,
            )?,
            max_bytes: positive(
                "quarantine.max_bytes",
                q.max_bytes,
                DEFAULT_QUARANTINE.max_bytes,
                16 * GIB,
            )?,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let e = RawConfig::from_toml("listne = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.0.contains("listne"), "{e}");
        let e = RawConfig::from_toml("max_body_bulk = \"big\"\n").unwrap_err();
        assert!(e.0.contains("max_body_bulk"), "{e}");
    }

    #[test]
    fn layers_and_defaults() {
        let file = RawConfig::from_toml("listen = \"127.0.0.1:1\"\nretention_days = 30\n").unwrap();
        let flags = RawConfig {
            listen: Some("127.0.0.1:2".into()),
            ..RawConfig::default()
        };
        let c = file.under(flags).resolve().unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("listen = \"nowhere\"", "listen"),
            ("max_body_single = 0", "max_body_single"),
            ("queue_bytes = 10", "queue_bytes"),
            ("tls_cert = \"/x.pem\"", "tls_cert and tls_key"),
            ("metrics_token = \" \"", "metrics_token"),
            ("[backup]\nevery = \"1y\"\ndir = \"/b\"", "backup.every"),
            ("[backup]\nevery = \"1h\"\ndir = \"rel\"", "backup.dir"),
            (
                "[backup]\nevery = \"1h\"\ndir = \"/b\"\nkeep = 0",
                "backup.keep",
            ),
            (
                "[alerts]\nwebhook_ca = \"/nonexistent/ca.pem\"",
                "alerts.webhook_ca /nonexistent/ca.pem",
            ),
        ] {
            let e = RawConfig::from_toml(toml).unwrap().resolve().unwrap_err();
            assert!(e.0.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn printed_config_redacts_secrets_and_reads_back() {
        let raw = RawConfig {
            metrics_token: Some("s3cret-token".into()),
            ..RawConfig::default()
        };
        let text = raw.resolve().unwrap().to_toml();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(REDACTED));
        let back = RawConfig::from_toml(&text).unwrap();
        assert_eq!(back.listen.as_deref(), Some(DEFAULT_LISTEN));
        let with_backup =
            RawConfig::from_toml("[backup]\nevery = \"90m\"\ndir = \"/var/backups/inlet\"\n")
                .unwrap()
                .resolve()
                .unwrap();
        let b = with_backup.backup.clone().unwrap();
        assert_eq!((b.every.as_secs(), b.keep), (5400, 7));
        let again = RawConfig::from_toml(&with_backup.to_toml())
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(again.backup, Some(b));
    }
}
