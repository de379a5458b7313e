//! Credentials out of a submission before the writer stores it (`crate::auth::redact` says
//! what is recognized and the marker that replaces it): the raw audit body, every string of
//! each canonical event, and each event's per-dialect state (session ids, ordering keys).
//!
//! The common case finds nothing and copies nothing: one scan of the body and of each encoded
//! event; an event is decoded and encoded again only when it holds a credential.

use crate::auth::redact::{self, Kind};
use crate::server::State;
use crate::store::codec::{EventRecord, decode_event, encode_event};
use crate::store::writer::{Guard, Pending, Submission};
use std::borrow::Cow;

/// How a submission's raw body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    /// A JSON document (every dialect but Adjust).
    Json,
    /// A query string and/or form body (Adjust).
    Form,
}

/// Replaces every credential in what `sub` will store by its marker.
pub fn submission(state: &State, sub: &mut Submission, format: AuditFormat) {
    // The same credential is usually found in the body and in its event: looked up once.
    let mut seen: Vec<(String, Option<u32>)> = Vec::new();
    let mut namer = |kind: Kind, credential: &str| {
        if let Some((_, id)) = seen.iter().find(|(c, _)| c == credential) {
            return *id;
        }
        let id = match kind {
            Kind::Key => state.store.key_id_of(credential),
            Kind::Secret => state.store.secret_id_of(credential),
        }
        .unwrap_or_else(|e| {
            // Still redacted, only not named.
            tracing::error!(error = %e, "credential lookup failed");
            None
        });
        seen.push((credential.to_owned(), id));
        id
    };
    if let Some((audit_key, body)) = &mut sub.audit {
        let clean = match format {
            AuditFormat::Json => redact::json(body, &mut namer),
            AuditFormat::Form => redact::form(body, &mut namer),
        };
        if let Cow::Owned(clean) = clean {
            *body = clean.into();
        }
        if let Some(clean) = redact::string(audit_key, &mut namer) {
            *audit_key = clean;
        }
    }
    for p in &mut sub.events {
        event(p, &mut namer);
    }
}

fn event(p: &mut Pending, namer: &mut impl redact::Namer) {
    if let Some(clean) = redact::string(&p.event_id, namer) {
        p.event_id = clean;
    }
    if let Some(
        Guard::NotBefore { key, .. } | Guard::SessionStart { key, .. } | Guard::SessionEnd { key },
    ) = &mut p.guard
        && let Cow::Owned(clean) = redact::text(key, namer)
    {
        *key = clean;
    }
    // Escapes can hide one only in JSON text (`props`, `context`).
    if !redact::contains(&p.record) && !redact::may_hide_escaped(&p.record) {
        return;
    }
    let Ok(mut r) = decode_event(&p.record) else {
        return; // encoded by this process a moment ago: cannot happen
    };
    // Every field named, so that a new one cannot be left out unnoticed.
    let EventRecord {
        received_at_ms: _,
        tenant,
        app,
        key_id: _,
        source,
        event_id,
        event_name,
        event_ts_ms: _,
        install_uuid,
        user_id,
        anonymous_id,
        ids,
        revenue: _,
        currency,
        transaction_id,
        product_id,
        props,
        context,
        audit_key,
    } = &mut r;
    let mut changed = false;
    let mut one = |s: &mut String| {
        if let Some(clean) = redact::string(s, namer) {
            *s = clean;
            changed = true;
        }
    };
    for s in [tenant, app, source, event_id, event_name, audit_key] {
        one(s);
    }
    for s in [
        install_uuid,
        user_id,
        anonymous_id,
        currency,
        transaction_id,
        product_id,
    ]
    .into_iter()
    .flatten()
    {
        one(s);
    }
    for (k, v) in ids {
        one(k);
        one(v);
    }
    for s in [props, context] {
        if let Cow::Owned(clean) = redact::json(s.as_bytes(), namer) {
            *s = String::from_utf8_lossy(&clean).into_owned();
            changed = true;
        }
    }
    if changed {
        p.record = encode_event(&r);
    }
}
