//! `GET /metrics` (Prometheus / OpenMetrics text) and `GET /readyz`.
//!
//! The registry is built at scrape time: outcome counters come from
//! [`crate::stats::Counters`] (their one source of truth), histograms are the live ones of the
//! server and the writer, gauges are read now (queue, quota use, database and disk size, the
//! process's own `process_*` figures).

use super::State;
use crate::auth::keys::sha256;
use crate::clock::now_ms;
use crate::http::Reply;
use crate::stats::Counted;
use bytes::Bytes;
use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use subtle::ConstantTimeEq;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppSource {
    app: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rejected {
    app: String,
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

/// The whole exposition, as text.
pub fn render(state: &State) -> String {
    let mut reg = Registry::default();

    let accepted = Family::<AppSource, Counter>::default();
    let duplicate = Family::<AppSource, Counter>::default();
    let rejected = Family::<Rejected, Counter>::default();
    for row in state.counters.snapshot() {
        let (app, source) = (row.app, row.source.to_owned());
        match row.outcome {
            Counted::Accepted => accepted.get_or_create(&AppSource { app, source }),
            Counted::Duplicate => duplicate.get_or_create(&AppSource { app, source }),
            Counted::Rejected(reason) => rejected.get_or_create(&Rejected {
                app,
                source,
                reason: reason.tag().into_owned(),
            }),
        }
        .inc_by(row.count);
    }
    reg.register(
        "inlet_events_accepted",
        "Events stored, by app and source (this process)",
        accepted,
    );
    reg.register(
        "inlet_events_duplicate",
        "Events not stored because their event id was stored before",
        duplicate,
    );
    reg.register(
        "inlet_events_rejected",
        "Events or requests refused, by reason (app \"-\" when no key named one)",
        rejected,
    );
    reg.register(
        "inlet_request_duration_seconds",
        "Time from request headers to response, by status class",
        state.counters.requests.seconds.clone(),
    );
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    // A counter kept by the process as an atomic, read at scrape time.
    let count = |v: &AtomicU64| {
        let c = Counter::<u64>::default();
        c.inc_by(v.load(Ordering::Relaxed));
        c
    };
    if let Some(c) = &state.ctx.cluster {
        reg.register(
            "inlet_cluster_owned_partitions",
            "Partitions this node owns and serves",
            gauge(c.owned().len() as u64),
        );
        reg.register(
            "inlet_cluster_failovers",
            "Partitions this node took over (at start, after an owner was lost, on rebalancing)",
            count(&c.takeovers),
        );
        reg.register(
            "inlet_cluster_follow_lag",
            "Messages of the event stream this node has not applied or passed yet (it applies \
             every partition it does not own)",
            gauge(c.follow_lag.load(Ordering::Relaxed)),
        );
        reg.register(
            "inlet_cluster_admin_lag",
            "Admin records (tenants, apps, keys, settings) in the engine not yet applied here",
            gauge(c.admin.lag()),
        );
        reg.register(
            "inlet_cluster_append_duration_seconds",
            "Time from a batch's appends to the engine to their acks",
            c.append_seconds.clone(),
        );
    }
    let w = state.writer.stats();
    reg.register(
        "inlet_commit_duration_seconds",
        "Duration of one group commit, fsync included",
        w.metrics.commit_seconds.clone(),
    );
    reg.register(
        "inlet_commit_batch_events",
        "Events per group commit",
        w.metrics.batch_events.clone(),
    );
    if let Some(geo) = state.config.enrich.as_ref().and_then(|e| e.geo()) {
        reg.register(
            "inlet_enrich_geo_reloads",
            "Geo database files read again after a change or SIGHUP",
            count(&geo.reloads),
        );
        reg.register(
            "inlet_enrich_geo_reload_failures",
            "Geo database reloads that failed (the file read before stays in use)",
            count(&geo.reload_failures),
        );
    }
    if let Some(dict) = &state.ctx.enrichments {
        reg.register(
            "inlet_enrich_dictionary_entries",
            "Distinct enrichment answers stored once (store::enrichments)",
            gauge(dict.len() as u64),
        );
        reg.register(
            "inlet_enrich_dictionary_full",
            "Enrichment answers stored in their event: the dictionary was full",
            count(&dict.full),
        );
    }
    reg.register(
        "inlet_queue_requests",
        "Requests waiting for the writer",
        gauge(w.queued_requests.load(Ordering::Relaxed) as u64),
    );
    reg.register(
        "inlet_queue_bytes",
        "Request body bytes waiting for the writer",
        gauge(state.writer.queued_bytes()),
    );
    reg.register(
        "inlet_queue_capacity_bytes",
        "Queue budget; requests beyond it get 503 overloaded",
        gauge(state.config.queue_bytes as u64),
    );
    reg.register(
        "inlet_body_budget_bytes",
        "Request body bytes held in memory now, over all requests",
        gauge(state.bodies.in_use() as u64),
    );
    reg.register(
        "inlet_body_budget_capacity_bytes",
        "Body budget; a request that finds no room within a few seconds gets 503 overloaded",
        gauge(state.bodies.total() as u64),
    );
    reg.register(
        "inlet_connections_refused",
        "Connections closed at accept because their peer held max_connections_per_peer",
        state.counters.connections_refused.clone(),
    );
    reg.register(
        "inlet_connections_write_stalled",
        "Connections closed because the client did not read a response for write_timeout",
        state.counters.connections_write_stalled.clone(),
    );
    crate::quarantine::register_metrics(&state.store, &state.quarantine, &mut reg);
    reg.register(
        "inlet_dedupe_prechecked_duplicates",
        "Duplicates of stored events found by the request threads, before the writer (docs/design/dedupe.md)",
        count(&w.prechecked_duplicates),
    );
    reg.register(
        "inlet_dedupe_prechecked_ids",
        "Event ids the request threads checked against the dedupe filters",
        count(&w.prechecked_ids),
    );
    reg.register(
        "inlet_dedupe_precheck_reads",
        "Of the ids checked, those the filter of everything did not rule out, looked up in the runs by the request threads (its false positives, and the duplicates)",
        count(&w.prechecked_reads),
    );
    reg.register(
        "inlet_receipt_notes_dropped",
        "Rejections and duplicates left out of the receipts because the writer was busy (their events were answered all the same)",
        count(&w.dropped_notes),
    );
    if let Some(indexer) = state.indexer.as_ref() {
        reg.register(
            "inlet_identity_lag_events",
            "Events stored but not yet in the identity graph's index (profiles read them from the log meanwhile)",
            gauge(indexer.lag()),
        );
        let paced = Counter::<f64, AtomicU64>::default();
        paced.inc_by(indexer.paced().as_secs_f64());
        reg.register(
            "inlet_identity_paced_seconds",
            format!(
                "Time the writer held ingest for the identity indexer (it lets at most {} stored events wait for the index)",
                crate::identity::indexer::MAX_LAG
            ),
            paced,
        );
    }
    reg.register(
        "inlet_writer_up",
        "1 while the writer thread runs and its last commit succeeded",
        gauge(u64::from(writer_ok(state))),
    );
    let used = Family::<TenantLabel, Gauge>::default();
    let quota = Family::<TenantLabel, Gauge>::default();
    match state.store.tenants(now_ms()) {
        Ok(rows) => {
            for t in rows {
                let l = TenantLabel { tenant: t.name };
                used.get_or_create(&l)
                    .set(i64::try_from(t.used_this_month).unwrap_or(i64::MAX));
                quota
                    .get_or_create(&l)
                    .set(i64::try_from(t.monthly_quota).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: reading tenants failed"),
    }
    reg.register(
        "inlet_tenant_events_this_month",
        "Events accepted this calendar month (UTC), the quota counter",
        used,
    );
    reg.register(
        "inlet_tenant_monthly_quota",
        "Monthly quota of the tenant; 0 = unlimited",
        quota,
    );
    let db_bytes = std::fs::metadata(state.store.path()).map_or(0, |m| m.len());
    reg.register(
        "inlet_database_bytes",
        "Size of the database file",
        gauge(db_bytes),
    );
    if let Ok(free) = crate::metrics::free_disk_bytes(&state.config.data_dir) {
        reg.register(
            "inlet_disk_free_bytes",
            "Free space on the data dir's file system",
            gauge(free),
        );
    }
    let build = Family::<Build, Gauge>::default();
    build
        .get_or_create(&Build {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
    reg.register("inlet_build_info", "The running build; always 1", build);
    register_dropped(&mut reg, state);
    register_process(&mut reg, state);
    crate::watch::register_metrics(&mut reg, &state.watch, now_ms());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg)
        .expect("writing to a String cannot fail");
    text
}

/// The `process_*` metrics of Prometheus' client libraries, from `/proc/self`.
fn register_process(reg: &mut Registry, state: &State) {
    let Some(p) = crate::metrics::ProcessStats::read() else {
        return;
    };
    let float = |v: f64| {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(v);
        g
    };
    let whole = |v: u64| float(v as f64);
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(p.cpu_seconds);
    reg.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    reg.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        whole(p.resident_bytes),
    );
    reg.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        whole(p.virtual_bytes),
    );
    reg.register(
        "process_open_fds",
        "Number of open file descriptors",
        whole(p.open_fds),
    );
    if let Some(max) = p.max_fds {
        reg.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            whole(max),
        );
    }
    // Where /proc/stat is hidden (the unit's ProcSubset=pid), the time the server started.
    let start = p
        .start_time_seconds
        .unwrap_or(state.admin.started_ms as f64 / 1000.0);
    reg.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        float(start),
    );
}

/// `GET /metrics` (and `HEAD`, whose body hyper leaves out): with `metrics_token` set, to
/// whoever presents it; without, to loopback peers only unless `metrics_public` is set (the
/// exposition names every tenant and app).
pub fn metrics(
    state: &State,
    auth: Option<&hyper::header::HeaderValue>,
    peer: std::net::IpAddr,
) -> Reply {
    match &state.config.metrics_token {
        Some(token) => {
            let presented = auth
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Digests compared, so the time does not tell the token's length either.
            let (sent, want) = (
                sha256(presented.trim().as_bytes()),
                sha256(token.as_bytes()),
            );
            if !bool::from(sent.ct_eq(&want)) {
                return Reply::text(
                    StatusCode::UNAUTHORIZED,
                    "metrics need the configured bearer token\n",
                );
            }
        }
        None if !state.config.metrics_public && !is_loopback(peer) => {
            return Reply::text(
                StatusCode::FORBIDDEN,
                "metrics are served to loopback peers only; set metrics_token (or metrics_public = true)\n",
            );
        }
        None => {}
    }
    Reply {
        status: StatusCode::OK,
        content_type: CONTENT_TYPE,
        body: Bytes::from(render(state)),
        retry_after: None,
        headers: Vec::new(),
    }
}

/// The addresses a scraper on this machine connects from by default: 127.0.0.1 and ::1
/// (the rest of 127.0.0.0/8 is not trusted: other local services may be reached through it).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(v6) if v6.is_loopback() => return true,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    v4 == std::net::Ipv4Addr::LOCALHOST
}

fn writer_ok(state: &State) -> bool {
    let s = state.writer.stats();
    s.running.load(Ordering::SeqCst) && s.healthy.load(Ordering::SeqCst)
}

/// `GET /readyz`: the database answers a read, the writer runs and its last commit worked,
/// and the data dir's file system has at least `min_free_disk_mb` free.
pub fn readyz(state: &State) -> Reply {
    let mut problems = Vec::new();
    if !writer_ok(state) {
        problems.push("writer unavailable".to_owned());
    }
    if let Err(e) = state.store.db.begin_read() {
        problems.push(format!("database unreadable: {e}"));
    }
    match crate::metrics::free_disk_bytes(&state.config.data_dir) {
        Ok(free) if free < state.config.min_free_disk_bytes => problems.push(format!(
            "disk space low: {} MiB free, {} MiB required",
            free >> 20,
            state.config.min_free_disk_bytes >> 20
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("disk space unknown: {e}")),
    }
    let (status, text) = if problems.is_empty() {
        let cluster = match &state.ctx.cluster {
            // Any node takes writes (forwarding those of partitions it does not own).
            Some(c) => format!(
                "node {}: owns partitions {:?} of {}\n",
                c.settings.node,
                c.owned(),
                c.partitions
            ),
            None => String::new(),
        };
        (StatusCode::OK, format!("ready\n{cluster}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    };
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from(text),
        retry_after: None,
        headers: Vec::new(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropRuleLabel {
    app: String,
    rule: String,
}

/// `inlet_dropped_total{app,rule}`: events each drop rule dropped (`crate::rules`).
fn register_dropped(reg: &mut Registry, state: &State) {
    let counts = state.rules.counts();
    if counts.is_empty() {
        return;
    }
    let names: std::collections::HashMap<u32, String> = match state.store.apps() {
        Ok(apps) => apps.into_iter().map(|a| (a.id, a.name)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: reading apps failed");
            return;
        }
    };
    let dropped = Family::<DropRuleLabel, Counter>::default();
    for (app, rule, n) in counts {
        let app = names.get(&app).cloned().unwrap_or_else(|| app.to_string());
        dropped
            .get_or_create(&DropRuleLabel {
                app,
                rule: rule.to_string(),
            })
            .inc_by(n);
    }
    reg.register(
        "inlet_dropped",
        "Events answered dropped by an app's drop rule, by rule id (this process)",
        dropped,
    );
}
