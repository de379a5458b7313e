//! Command-line definitions (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "inlet",
    version,
    about = "Self-hosted server-to-server event ingestion"
)]
pub struct Cli {
    /// Data directory (database, control socket).
    #[arg(
        long,
        global = true,
        env = "INLET_DATA",
        default_value = "./inlet-data"
    )]
    pub data: PathBuf,
    /// Configuration file (TOML); flags and `INLET_*` variables override its keys. Every
    /// command reads it, as the service does [default: /etc/inlet/inlet.toml when present].
    #[arg(long, global = true, env = "INLET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the ingest API (the default command).
    Serve(ServeArgs),
    /// Tenants: the unit of quota.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Apps: every key and event belongs to one app of one tenant.
    #[command(subcommand)]
    Apps(AppsCmd),
    /// Server keys (`srv_...`).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Stored events as NDJSON on stdout, in log order.
    Export(ExportArgs),
    /// Raw request bodies kept for audit.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Retention of old events.
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Validate the effective configuration (file, environment, flags) and print it.
    CheckConfig(ServeArgs),
    /// Create the data dir (owner-only) and a new database with tenant and app `default`.
    /// Only this and `serve` create a database; every other command needs an existing one.
    Init,
    /// Write a consistent copy of the database to FILE (works while serving). FILE must be
    /// outside the data dir; an existing FILE is replaced only with --force.
    Backup {
        file: PathBuf,
        /// Replace FILE if it exists (never the live database or anything in the data dir).
        #[arg(long)]
        force: bool,
    },
    /// Replace the database with the backup in FILE, after checking it (server stopped).
    Restore { file: PathBuf },
    /// The admin panel.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// HMAC signing secrets (`sk_...`, Datafly dialect).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Every identifier linked to ID in an app, and the profile's latest events.
    Profile(ProfileArgs),
    /// What became of an event: accepted (when, seq, key, dialect), answered as a duplicate,
    /// rejected (why, how many times).
    Receipt {
        app: String,
        event_id: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Erase a person: every event of the profile linked to an identifier, everywhere in the
    /// data dir; prints the receipt (JSON).
    Erase(EraseArgs),
    /// The erasure ledger (salted digests only) and suppressions.
    #[command(subcommand)]
    Erasures(ErasuresCmd),
    /// Events refused for a reason inlet's side can fix, kept per app: list, replay (after
    /// the fix), drop (docs/quarantine.md).
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Alert rules: no events for a while, too many rejections, quota nearly used
    /// (docs/alerts.md).
    #[command(subcommand)]
    Alerts(AlertsCmd),
    /// Cluster mode on a NATS JetStream engine (the `cluster_*` settings).
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[arg(long)]
    pub app: String,
    /// The identifier, as KIND=VALUE (`user_id=42`, `install_uuid=...`, `idfa=...`).
    #[arg(long)]
    pub id: String,
    /// Also refuse later events that carry any of the erased identifiers.
    #[arg(long)]
    pub suppress: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCmd {
    /// The app's held events by reason, and those of --reason (or --id).
    List {
        #[command(flatten)]
        pick: QuarantinePick,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Replay the held events of --reason and/or --id through their dialect's pipeline
    /// (needs the running server).
    Replay {
        #[command(flatten)]
        pick: QuarantinePick,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Discard the held events of --reason and/or --id.
    Drop {
        #[command(flatten)]
        pick: QuarantinePick,
    },
}

/// Which held events of an app.
#[derive(Debug, Args)]
pub struct QuarantinePick {
    #[arg(long)]
    pub app: String,
    /// A reason tag (`event_not_allowed_by_key`, `cap_exceeded`, `event_token_invalid`).
    #[arg(long)]
    pub reason: Option<String>,
    /// An event id (repeat for more).
    #[arg(long = "id")]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ErasuresCmd {
    /// Every erasure: id, when, app, identifier kinds, events, digest.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift the suppression an erasure made: its subject's events are accepted again.
    Unsuppress { erasure_id: String },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Every rule: id, app, key, condition, webhook.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a rule; exactly one of --silent-for, --rejected-above, --quota-above.
    Add(AlertAddArgs),
    /// Remove a rule.
    Remove { id: u32 },
    /// Send one signed `alert.test` message to the rule's webhook and print the answer.
    Test { id: u32 },
}

#[derive(Debug, Args)]
pub struct AlertAddArgs {
    #[arg(long)]
    pub app: String,
    /// Watch this key (by id) of the app alone.
    #[arg(long)]
    pub key: Option<u32>,
    /// Fire when no event arrived for this long (`30m`, `2h`, `90s`).
    #[arg(long)]
    pub silent_for: Option<String>,
    /// Fire when rejected events are above this percentage of all events in the window.
    #[arg(long)]
    pub rejected_above: Option<u32>,
    /// The window of --rejected-above, in minutes (1..=60).
    #[arg(long, default_value_t = 5)]
    pub window_minutes: u64,
    /// Events the window must hold before --rejected-above is judged.
    #[arg(long, default_value_t = 1)]
    pub min_events: u64,
    /// Fire when the app's tenant used at least this percentage of its monthly quota.
    #[arg(long)]
    pub quota_above: Option<u32>,
    /// Where the messages go: http://host[:port]/path (signed JSON POSTs).
    #[arg(long)]
    pub webhook: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Check the engine can hold inlet's promise (version, fsync before ack, three nodes, a
    /// formed cluster), create inlet's stream and buckets if this is a new cluster, and say so.
    Check(ServeArgs),
    /// The engine's nodes, the event stream and each partition's owner.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Set an admin account's password, read from stdin (first line); creates the account
    /// when absent. Ends the account's sessions.
    SetPassword {
        /// The account [default: admin, the one the setup code creates].
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a one-time link (valid 7 days) that creates admin account NAME: whoever opens
    /// it chooses the password.
    Invite {
        name: String,
        /// The panel's origin as users reach it, e.g. https://inlet.example.com [default: from
        /// the configuration's admin_listen or listen].
        #[arg(long)]
        url: Option<String>,
    },
    /// Remove an admin account (never the last) and end its sessions.
    Remove { name: String },
    /// Turn an account's TOTP second factor off (a lost phone); it may enrol again.
    ResetTotp { name: String },
    /// List admin accounts.
    List,
    /// The audit log of admin actions, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "INLET_LISTEN")]
    pub listen: Option<String>,
    /// Largest body of a single-event request, in bytes [default: 65536].
    #[arg(long, env = "INLET_MAX_BODY_SINGLE")]
    pub max_body_single: Option<usize>,
    /// Largest body of a bulk request, in bytes [default: 5242880].
    #[arg(long, env = "INLET_MAX_BODY_BULK")]
    pub max_body_bulk: Option<usize>,
    /// Bytes of request bodies that may wait for the writer [default: 67108864].
    #[arg(long, env = "INLET_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// Open client connections at most [default: 1024].
    #[arg(long, env = "INLET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections of one peer address (IPv6: one /64) at most [default: 128].
    #[arg(long, env = "INLET_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<usize>,
    /// Seconds a client has to send its request headers, and that a kept-alive connection
    /// may stay idle [default: 10].
    #[arg(long, env = "INLET_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a response may wait for a client that does not read it [default: 30].
    #[arg(long, env = "INLET_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Bytes of request bodies held in memory at once, over all requests [default: 67108864].
    #[arg(long, env = "INLET_BODY_BUDGET_BYTES")]
    pub body_budget_bytes: Option<usize>,
    /// Seconds a client has to send its request body [default: 30].
    #[arg(long, env = "INLET_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Log line format on stderr [default: text].
    #[arg(long, env = "INLET_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, env = "INLET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "INLET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// /readyz fails below this much free disk space, in MiB [default: 256].
    #[arg(long, env = "INLET_MIN_FREE_DISK_MB")]
    pub min_free_disk_mb: Option<u64>,
    /// Days to keep events of tenants without their own retention; 0 = forever [default: 0].
    #[arg(long, env = "INLET_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Seconds between retention runs [default: 3600].
    #[arg(long, env = "INLET_RETENTION_INTERVAL_SECS")]
    pub retention_interval_secs: Option<u64>,
    /// Live tails of the admin panel open at once at most; 0 turns the tail off [default: 8].
    #[arg(long, env = "INLET_MAX_TAILS")]
    pub max_tails: Option<usize>,
    /// Milliseconds between evaluations of the alert rules [default: 15000].
    #[arg(long, env = "INLET_ALERT_INTERVAL_MS")]
    pub alert_interval_ms: Option<u64>,
    /// Requests per minute of a key minted without `--rate-limit` (GameRebellion dialect)
    /// [default: 1000].
    #[arg(long, env = "INLET_DEFAULT_RATE_LIMIT")]
    pub default_rate_limit: Option<u32>,
    /// Serve the admin panel on this address only (e.g. 127.0.0.1:8081), not on --listen.
    #[arg(long, env = "INLET_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Mark the admin session cookie Secure (users reach inlet over HTTPS); `--admin-secure-cookie`
    /// alone means true [default: true with tls_cert, else false].
    #[arg(long, env = "INLET_ADMIN_SECURE_COOKIE", num_args = 0..=1, default_missing_value = "true")]
    pub admin_secure_cookie: Option<bool>,
    /// Bearer token required by /metrics (default: none required).
    #[arg(long, env = "INLET_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Without --metrics-token, serve /metrics to every peer, not only loopback ones
    /// [default: false].
    #[arg(long, env = "INLET_METRICS_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_public: Option<bool>,
    /// Cluster mode: the NATS JetStream engine's client URLs, comma-separated.
    #[arg(long, env = "INLET_CLUSTER_ENGINE")]
    pub cluster_engine: Option<String>,
    /// The engine nodes' monitoring URLs (`http://HOST:8222`), comma-separated, one per node.
    #[arg(long, env = "INLET_CLUSTER_MONITOR")]
    pub cluster_monitor: Option<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, env = "INLET_CLUSTER_NODE")]
    pub cluster_node: Option<String>,
    /// Partitions of the event log, fixed when the cluster is first created [default: 16].
    #[arg(long, env = "INLET_CLUSTER_PARTITIONS")]
    pub cluster_partitions: Option<u32>,
    /// Allow a one-node engine with unreplicated streams (tests only).
    #[arg(long, env = "INLET_CLUSTER_SINGLE_ENGINE_NODE", num_args = 0..=1, default_missing_value = "true")]
    pub cluster_single_engine_node: Option<bool>,
    /// Enrichment: MaxMind-format database files (.mmdb), comma-separated ([enrich] geo_db).
    #[arg(long, env = "INLET_ENRICH_GEO_DB", value_delimiter = ',')]
    pub enrich_geo_db: Option<Vec<PathBuf>>,
    /// Enrichment: parse user agents into context.device ([enrich] user_agent).
    #[arg(long, env = "INLET_ENRICH_USER_AGENT", num_args = 0..=1, default_missing_value = "true")]
    pub enrich_user_agent: Option<bool>,
    /// Enrichment: apps (comma-separated; * = all) whose events take the request's address.
    #[arg(long, env = "INLET_ENRICH_PEER_IP", value_delimiter = ',')]
    pub enrich_peer_ip: Option<Vec<String>>,
    /// Enrichment: proxies (addresses or CIDR blocks, comma-separated) trusted for
    /// X-Forwarded-For.
    #[arg(long, env = "INLET_ENRICH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub enrich_trusted_proxies: Option<Vec<String>>,
}

impl ServeArgs {
    /// The flags and environment variables given, as a configuration layer.
    pub fn raw(&self) -> crate::config::RawConfig {
        crate::config::RawConfig {
            data_dir: None,
            listen: self.listen.clone(),
            max_body_single: self.max_body_single,
            max_body_bulk: self.max_body_bulk,
            queue_bytes: self.queue_bytes,
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            header_timeout_secs: self.header_timeout_secs,
            write_timeout_secs: self.write_timeout_secs,
            body_budget_bytes: self.body_budget_bytes,
            body_timeout_secs: self.body_timeout_secs,
            log_format: self.log_format,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            min_free_disk_mb: self.min_free_disk_mb,
            retention_days: self.retention_days,
            retention_interval_secs: self.retention_interval_secs,
            metrics_token: self.metrics_token.clone(),
            metrics_public: self.metrics_public,
            default_rate_limit: self.default_rate_limit,
            admin_listen: self.admin_listen.clone(),
            admin_secure_cookie: self.admin_secure_cookie,
            cluster_engine: self.cluster_engine.clone(),
            cluster_monitor: self.cluster_monitor.clone(),
            cluster_node: self.cluster_node.clone(),
            cluster_partitions: self.cluster_partitions,
            cluster_single_engine_node: self.cluster_single_engine_node,
            backup: None,
            enrich: self.enrich(),
            quarantine: None,
            alerts: None,
            max_tails: self.max_tails,
            alert_interval_ms: self.alert_interval_ms,
        }
    }

    /// The `--enrich-*` flags given, as an `[enrich]` layer.
    fn enrich(&self) -> Option<crate::enrich::RawEnrich> {
        let raw = crate::enrich::RawEnrich {
            geo_db: self.enrich_geo_db.clone(),
            user_agent: self.enrich_user_agent,
            peer_ip: self.enrich_peer_ip.clone(),
            trusted_proxies: self.enrich_trusted_proxies.clone(),
            reload_secs: None,
        };
        (raw != crate::enrich::RawEnrich::default()).then_some(raw)
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Add a tenant.
    Add {
        name: String,
        /// Events accepted per calendar month (UTC); 0 = unlimited.
        #[arg(long, default_value_t = 0)]
        monthly_quota: u64,
    },
    /// List tenants with this month's use.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Set a tenant's monthly quota (0 = unlimited).
    SetQuota { name: String, quota: u64 },
    /// Keep a tenant's events DAYS days (0 = forever; `default` = the server's retention_days).
    SetRetention { name: String, days: String },
}

#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Store less of an app's clients, from the next request on: the IP address
    /// (`context.ip`) kept, truncated (IPv4 /24, IPv6 /48) or dropped, the user agent kept or
    /// dropped, in events and raw bodies. Prints the policy.
    StoreLess {
        name: String,
        #[arg(long, value_parser = ["keep", "truncate", "drop"], default_value = "keep")]
        ip: String,
        #[arg(long, value_parser = ["keep", "drop"], default_value = "keep")]
        user_agent: String,
        /// Per-field retention: the retention pass removes the IP address, user agent, device
        /// ids and raw body of events older than this many days (the events stay).
        #[arg(long)]
        fields_days: Option<u32>,
    },
    /// Add an app to a tenant.
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// List apps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Dialect settings of an app (an empty value clears a setting).
    Configure {
        name: String,
        /// Adjust `app_token` that names this app.
        #[arg(long)]
        adjust_app_token: Option<String>,
        /// AppsFlyer Web-S2S bundle id (`/v1/{bundleId}/event`) that names this app.
        #[arg(long)]
        appsflyer_bundle_id: Option<String>,
        /// Whether Adjust requests must carry `Authorization: Bearer <key of this app>`
        /// (default true).
        #[arg(long, value_name = "true|false")]
        adjust_require_token: Option<bool>,
    },
    /// SKAdNetwork conversion value rules for Adjust iOS 14+ requests (those with
    /// `skadn_registered_at`): they are answered with the device's value. Replaces the app's
    /// rules; `--clear` removes them.
    AdjustSkan {
        #[arg(value_name = "APP")]
        name: String,
        /// An event (by its inlet event name) and the value it earns: NAME=FINE[/COARSE][/lock],
        /// FINE 0-63, COARSE low|medium|high (default: by FINE's third), `lock` ends the window.
        #[arg(long = "event", value_name = "NAME=FINE[/COARSE][/lock]")]
        events: Vec<String>,
        /// A revenue bucket: events with revenue >= MIN earn the value (the highest bucket
        /// reached counts).
        #[arg(long, value_name = "MIN=FINE[/COARSE][/lock]")]
        revenue: Vec<String>,
        /// Hours after `skadn_registered_at` in which events raise the value (default 24).
        #[arg(long, value_name = "HOURS")]
        window_hours: Option<u32>,
        /// Remove the app's rules: iOS 14+ requests are answered `OK` again.
        #[arg(long, conflicts_with_all = ["events", "revenue", "window_hours"])]
        clear: bool,
    },
    /// Business-key dedupe: with `on`, an event whose (event name, transaction id) the app
    /// stored before is answered as a duplicate, whatever its event id (docs/rules.md).
    BusinessKey {
        #[arg(value_name = "APP")]
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Drop rules: events matching one are answered `dropped`, not stored (docs/rules.md).
    #[command(subcommand)]
    DropRules(DropRulesCmd),
    /// Map an Adjust `event_token` to an event name for this app (an empty NAME removes it).
    AdjustEvent {
        #[arg(value_name = "APP")]
        name: String,
        #[arg(value_name = "TOKEN")]
        token: String,
        #[arg(value_name = "NAME")]
        event: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Mint a key: prints the key, and only the key, on stdout. It is shown once.
    Mint {
        #[arg(long)]
        app: String,
        #[arg(long)]
        label: String,
        /// Comma-separated event names this key may send (default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Requests per minute allowed for this key (GameRebellion dialect).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
    },
    /// List keys (never the key itself).
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; the next request with it gets 401.
    Revoke { id: u32 },
    /// Set the event names a key may send (replacing the list; none given: all).
    Allow {
        id: u32,
        /// Comma-separated event names.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only events with a larger sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only events received at or after this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events received before this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events of this source (`reflect`, `adjust`, ...).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events with this event name.
    #[arg(long)]
    pub event: Option<String>,
    /// Compress the output with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// Everything stored about one person instead (a subject access request), with --app:
    /// the linked profile of KIND=VALUE, its events and raw bodies, as NDJSON.
    #[arg(long, requires = "app", conflicts_with_all = ["after", "limit", "since", "until", "source", "event"])]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCmd {
    /// Remove now what retention removes (the server also runs this every
    /// retention_interval_secs).
    Run {
        /// Apply the cut as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the raw request body stored under an audit key.
    Get { audit_key: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Mint a signing secret: prints the secret, and only the secret. It is shown once.
    Mint {
        #[arg(long)]
        app: String,
        #[arg(long)]
        label: String,
    },
    /// List secrets (never the secret itself).
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a secret; the next request signed with it gets 401.
    Revoke { id: u32 },
    /// Replace a secret: prints the new one; the old one stays valid for the grace period.
    Rotate {
        id: u32,
        /// How long the old secret stays valid: `24h`, `30m`, `90s`, `2d`, `0s`.
        #[arg(long, default_value = "24h", value_parser = parse_grace)]
        grace: u64,
    },
}

fn parse_grace(text: &str) -> Result<u64, String> {
    crate::auth::secrets::parse_duration_ms(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 24h, 30m, 90s or 2d"))
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    pub app: String,
    /// An identifier value (user id, anonymous id, install uuid, af user id, ...).
    pub id: String,
    /// Only the identifier of this kind (`user_id`, `player_id`, ...), for a value known
    /// under several.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DropRulesCmd {
    /// The app's drop rules and its business-key setting.
    List {
        #[arg(value_name = "APP")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a rule matching every option given (at least one); prints its id.
    Add {
        #[arg(value_name = "APP")]
        name: String,
        /// The event name (after the dialect's mapping, e.g. Adjust's event token).
        #[arg(long)]
        event: Option<String>,
        /// The dialect: reflect, gamerebellion, adjust, appsflyer, datafly.
        #[arg(long)]
        source: Option<String>,
        /// The id of the key the event was sent with.
        #[arg(long = "key", value_name = "KEY_ID")]
        key_id: Option<u32>,
    },
    /// Remove rule ID.
    Remove {
        #[arg(value_name = "APP")]
        name: String,
        id: u32,
    },
}
