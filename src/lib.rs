//! inlet: a self-hosted, single-binary server-to-server event ingestion appliance.
//!
//! # Layout
//!
//! Data flows one way: socket → body → dialect decode → auth → validate → quota →
//! group-commit writer → redb → response.
//!
//! - [`cli`]: clap definitions; `main.rs` dispatches (`serve` is [`server::start`]).
//! - [`cluster`]: cluster mode on a NATS JetStream engine (its settings and engine checks).
//! - [`config`]: configuration layers (file, environment, flags) → the checked `Config`.
//! - [`server`]: accept loop, router, and the [`server::State`] the listeners serve from.
//! - [`http`]: the HTTP toolkit below every surface: `Reply`, the Reason → status mapping
//!   ([`http::reply`]), response bodies, request bodies read under a budget and limits.
//! - [`context`]: the shared state of the request handlers, built at the top, passed down.
//! - [`ingest`]: the pipeline, one function per endpoint showing the whole order.
//! - [`enrich`]: geo (IP) and device (user agent) added to events before the IP policy.
//! - [`dialect`]: wire formats → canonical [`event::Draft`]s; pure (no I/O, no clock).
//! - [`event`]: the canonical event, its validation and the stable rejection reasons.
//! - [`auth`]: server keys (mint, hash, constant-time compare), the admin password hash,
//!   HMAC signing secrets (mint, seal at rest, verify request signatures).
//! - [`admin`]: the embedded admin panel and its JSON API, admin sessions, the panel's read
//!   models (tallies kept by a writer listener, listings).
//! - [`store`]: tables, versioned record codec, the writer thread (which reopens the database
//!   after a failed commit and publishes each batch to its listeners), admin writes, reads,
//!   signing secrets. It imports nothing above it.
//! - [`identity`]: the identity graph derived from the log, in its own file, kept by an
//!   indexer thread that listens to the writer; profiles.
//! - [`ops`]: admin commands, run in-process or through a running server's control socket
//!   (`server::control`); backup/restore, retention and the whole-database consistency check.
//! - [`privacy`]: erasure of a linked profile in every store (ledger of salted digests first,
//!   the log's file rewritten), its resumption, suppression (a writer gate), subject export,
//!   storing less of clients (IP, user agent, per-field retention).
//! - [`quarantine`]: events refused for a fixable reason, kept per app (`ingest::quarantine`
//!   keeps them, `store::quarantine` holds them): listing, replay through the pipeline, discard.
//! - [`stats`]: outcome counters (accepted / duplicate / rejected by reason) of this process.
//! - [`clock`]: time and UTC calendar helpers.
//! - [`rules`]: each app's drop rules, compiled per configuration generation, and their counts.
//! - [`ratelimit`]: per-key requests-per-minute windows (GameRebellion's `X-RateLimit-*`).
//! - [`skan`]: SKAdNetwork conversion value rules and values for Adjust's iOS 14+ answers.
//! - [`metrics`]: latency and commit histograms, free disk space; rendered by `server::metrics`.
//! - [`logs`]: rate limits for log lines that clients can cause over and over.
//! - [`notify`]: systemd readiness notification (`sd_notify` protocol).
//! - [`tls`]: the TLS certificate and key, read at start and again on SIGHUP.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod dialect;
pub mod enrich;
pub mod event;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod privacy;
pub mod quarantine;
pub mod ratelimit;
pub mod rules;
pub mod server;
pub mod skan;
pub mod stats;
pub mod store;
pub mod tls;
pub mod watch;
