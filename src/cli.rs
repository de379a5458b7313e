//! Command-line definitions (clap).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
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
    /// The admin panel.
    #[command(subcommand)]
    Admin(AdminCmd),
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Set the admin panel password, read from stdin (first line). Ends every admin session.
    SetPassword,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "INLET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest body of a single-event request, in bytes.
    #[arg(long, env = "INLET_MAX_BODY_SINGLE", default_value_t = 64 << 10)]
    pub max_body_single: usize,
    /// Largest body of a bulk request, in bytes.
    #[arg(long, env = "INLET_MAX_BODY_BULK", default_value_t = 5 << 20)]
    pub max_body_bulk: usize,
    /// Requests per minute of a key minted without `--rate-limit` (GameRebellion dialect).
    #[arg(long, env = "INLET_DEFAULT_RATE_LIMIT", default_value_t = crate::config::DEFAULT_RATE_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub default_rate_limit: u32,
    /// Serve the admin panel on this address only (e.g. 127.0.0.1:8081), not on --listen.
    #[arg(long, env = "INLET_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Mark the admin session cookie Secure (when users reach inlet over HTTPS).
    #[arg(long, env = "INLET_ADMIN_SECURE_COOKIE")]
    pub admin_secure_cookie: bool,
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
}

#[derive(Debug, Subcommand)]
pub enum AppsCmd {
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
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the raw request body stored under an audit key.
    Get { audit_key: String },
}
