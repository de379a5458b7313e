//! Watching ingest as it happens: the live tail ([`tail`]), health per app and key
//! ([`health`]) and the alert rules on them ([`alerts`]).
//!
//! Ingest reports each request once, where its per-event outcomes are known
//! ([`Watch::single`], [`Watch::batch`]); dry runs are not reported (nothing of them is
//! stored or counted, and the tail shows what inlet kept). Everything here is in memory.

pub mod alerts;
pub mod health;
pub mod tail;
pub mod webhook;

use crate::event::Reason;
use crate::store::codec::decode_event;
use crate::store::pending::Pending;
use crate::store::writer::Outcome;
use health::{Health, Tally};
use tail::{Record, Tail};

/// Most live tails open at once, unless configured.
pub const DEFAULT_MAX_TAILS: usize = 8;

/// The shared watch state (in `Context`).
pub struct Watch {
    pub tail: Tail,
    pub health: Health,
    pub alerts: alerts::State,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new(DEFAULT_MAX_TAILS)
    }
}

/// What a request of one event told on its way (filled by ingest as it goes).
#[derive(Debug, Default)]
pub struct Seen {
    pub key: Option<u32>,
    pub event_id: Option<String>,
    pub event: Option<String>,
    pub install_uuid: Option<String>,
    pub user_id: Option<String>,
    /// Set once the writer decided a single event (a batch reports itself).
    pub outcome: Option<Outcome>,
}

impl Seen {
    /// Notes the event's id and name, when someone watches the tail.
    pub fn event(&mut self, watch: &Watch, pending: &Pending) {
        if watch.tail.watched() {
            let n = named(pending);
            self.event_id = Some(n.event_id);
            self.event = n.event;
            self.install_uuid = n.install_uuid;
            self.user_id = n.user_id;
        }
    }
}

/// What the tail shows of an event besides its outcome.
#[derive(Debug, Default)]
pub struct Named {
    event_id: String,
    event: Option<String>,
    install_uuid: Option<String>,
    user_id: Option<String>,
}

fn named(p: &Pending) -> Named {
    let r = decode_event(p.record()).ok();
    let (event, install_uuid, user_id) = match r {
        Some(r) => (Some(r.event_name), r.install_uuid, r.user_id),
        None => (None, None, None),
    };
    Named {
        event_id: p.event_id().to_owned(),
        event,
        install_uuid,
        user_id,
    }
}

/// What the tail shows of a batch's events (in submission order), when someone watches
/// it; `None` costs nothing.
pub fn names(watch: &Watch, events: &[Pending]) -> Option<Vec<Named>> {
    watch
        .tail
        .watched()
        .then(|| events.iter().map(named).collect())
}

impl Watch {
    pub fn new(max_tails: usize) -> Watch {
        Watch {
            tail: Tail::new(max_tails),
            health: Health::default(),
            alerts: alerts::State::default(),
        }
    }

    /// A request of one event (or a batch request refused as a whole, `refused`): `app`
    /// once a credential named one.
    pub fn single(
        &self,
        app: Option<&str>,
        source: &'static str,
        at_ms: u64,
        seen: Seen,
        refused: Option<Reason>,
    ) {
        let mut tally = Tally::default();
        let outcome = match (refused, seen.outcome) {
            (Some(reason), _) => {
                tally.reject(reason);
                ("rejected", Some(reason), None)
            }
            (None, Some(Outcome::Accepted { seq })) => {
                tally.accepted = 1;
                ("accepted", None, Some(seq))
            }
            (None, Some(Outcome::Duplicate { .. })) => {
                tally.duplicate = 1;
                ("duplicate", None, None)
            }
            // A batch (reported by `batch`), or an outcome ingest turned into a refusal.
            (None, _) => return,
        };
        if let Some(app) = app {
            self.health.record(app, seen.key, at_ms, &tally);
        }
        if self.tail.watched() {
            self.tail.publish(vec![Record {
                at_ms,
                app: app.unwrap_or("-").to_owned(),
                key: seen.key,
                source,
                event: seen.event,
                event_id: seen.event_id,
                seq: outcome.2,
                install_uuid: seen.install_uuid,
                user_id: seen.user_id,
                outcome: outcome.0,
                reason: outcome.1.map(|r| r.tag().into_owned()),
            }]);
        }
    }

    /// A batch once the writer decided: `outcomes` of the submitted events (their ids and
    /// names in `named` when the tail is watched), `rejected` every event refused (before
    /// the writer or by it), with its id when it had one.
    #[allow(clippy::too_many_arguments)]
    pub fn batch(
        &self,
        app: &str,
        key: u32,
        source: &'static str,
        at_ms: u64,
        outcomes: &[Outcome],
        named: Option<Vec<Named>>,
        rejected: Vec<(Option<String>, Reason)>,
    ) {
        let mut tally = Tally::default();
        for o in outcomes {
            match o {
                Outcome::Accepted { .. } => tally.accepted += 1,
                Outcome::Duplicate { .. } => tally.duplicate += 1,
                _ => {}
            }
        }
        for (_, r) in &rejected {
            tally.reject(*r);
        }
        self.health.record(app, Some(key), at_ms, &tally);
        if !self.tail.watched() {
            return;
        }
        let record = |n: Named, seq, outcome, reason: Option<Reason>| Record {
            at_ms,
            app: app.to_owned(),
            key: Some(key),
            source,
            event: n.event,
            event_id: (!n.event_id.is_empty()).then_some(n.event_id),
            seq,
            install_uuid: n.install_uuid,
            user_id: n.user_id,
            outcome,
            reason: reason.map(|r| r.tag().into_owned()),
        };
        let mut records = Vec::with_capacity(outcomes.len() + rejected.len());
        let mut named = named.map(Vec::into_iter);
        for o in outcomes {
            let n = named.as_mut().and_then(Iterator::next).unwrap_or_default();
            match o {
                Outcome::Accepted { seq } => records.push(record(n, Some(*seq), "accepted", None)),
                Outcome::Duplicate { .. } => records.push(record(n, None, "duplicate", None)),
                _ => {} // in `rejected`
            }
        }
        for (id, reason) in rejected {
            let n = Named {
                event_id: id.unwrap_or_default(),
                ..Named::default()
            };
            records.push(record(n, None, "rejected", Some(reason)));
        }
        self.tail.publish(records);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct KeyLabel {
    /// The key's id, never its secret.
    key: String,
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct KeyOutcomeLabel {
    key: String,
    app: String,
    /// `accepted`, `duplicate`, or `rejected`.
    outcome: String,
    /// The rejection's reason tag; empty for the other outcomes.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The watch's series in a `/metrics` scrape: tail subscribers, each app's and key's last
/// event and events in the last hour, open incidents, webhook deliveries.
pub fn register_metrics(
    reg: &mut prometheus_client::registry::Registry,
    watch: &Watch,
    now_ms: u64,
) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    reg.register(
        "inlet_tail_subscribers",
        "Live tails open now (admin panel Events page, /admin/api/tail)",
        gauge(watch.tail.subscribers() as u64),
    );
    let app_last = Family::<AppLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let app_hour = Family::<AppLabel, Gauge>::default();
    let app_minute = Family::<AppLabel, Gauge>::default();
    for v in watch.health.apps(now_ms) {
        let l = AppLabel { app: v.name };
        if let Some(ms) = v.last_event_ms {
            app_last.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        app_hour
            .get_or_create(&l)
            .set(i64::try_from(v.events_last_hour).unwrap_or(i64::MAX));
        app_minute
            .get_or_create(&l)
            .set(i64::try_from(v.events_last_minute).unwrap_or(i64::MAX));
    }
    reg.register(
        "inlet_app_last_event_timestamp_seconds",
        "Time of the app's last event (any outcome) since this process started",
        app_last,
    );
    reg.register(
        "inlet_app_events_last_hour",
        "Events of the app (any outcome) in the last 60 minutes",
        app_hour,
    );
    reg.register(
        "inlet_app_events_this_minute",
        "Events of the app (any outcome) in the current minute",
        app_minute,
    );
    let key_last = Family::<KeyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let key_hour = Family::<KeyLabel, Gauge>::default();
    let key_minute = Family::<KeyLabel, Gauge>::default();
    let key_outcomes = Family::<KeyOutcomeLabel, Counter>::default();
    for (app, v) in watch.health.keys(now_ms) {
        let l = KeyLabel {
            key: v.name.clone(),
            app: app.clone(),
        };
        if let Some(ms) = v.last_event_ms {
            key_last.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        key_hour
            .get_or_create(&l)
            .set(i64::try_from(v.events_last_hour).unwrap_or(i64::MAX));
        key_minute
            .get_or_create(&l)
            .set(i64::try_from(v.events_last_minute).unwrap_or(i64::MAX));
        let outcome = |outcome: &str, reason: &str| KeyOutcomeLabel {
            key: v.name.clone(),
            app: app.clone(),
            outcome: outcome.into(),
            reason: reason.into(),
        };
        key_outcomes
            .get_or_create(&outcome("accepted", ""))
            .inc_by(v.accepted);
        key_outcomes
            .get_or_create(&outcome("duplicate", ""))
            .inc_by(v.duplicate);
        for (reason, n) in &v.rejected {
            key_outcomes
                .get_or_create(&outcome("rejected", reason))
                .inc_by(n.as_u64().unwrap_or(0));
        }
    }
    reg.register(
        "inlet_key_last_event_timestamp_seconds",
        "Time of the key's last event (any outcome) since this process started; key = its id",
        key_last,
    );
    reg.register(
        "inlet_key_events_last_hour",
        "Events of the key (any outcome) in the last 60 minutes; key = its id",
        key_hour,
    );
    reg.register(
        "inlet_key_events_this_minute",
        "Events of the key (any outcome) in the current minute; key = its id",
        key_minute,
    );
    reg.register(
        "inlet_key_events",
        "Events of the key by outcome (and rejection reason) since this process started; key = its id",
        key_outcomes,
    );
    reg.register(
        "inlet_alerts_firing",
        "Alert rules with an open incident",
        gauge(watch.alerts.incidents().len() as u64),
    );
    let (ok, failed) = watch.alerts.delivery_counts();
    let deliveries = Family::<ResultLabel, Counter>::default();
    deliveries
        .get_or_create(&ResultLabel {
            result: "delivered".into(),
        })
        .inc_by(ok);
    deliveries
        .get_or_create(&ResultLabel {
            result: "failed_attempt".into(),
        })
        .inc_by(failed);
    reg.register(
        "inlet_alert_webhook_deliveries",
        "Alert webhook deliveries that succeeded, and attempts that failed",
        deliveries,
    );
}
