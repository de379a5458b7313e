//! Credentials out of a submission before the writer stores it (`crate::auth::redact` says
//! what is recognized and the marker that replaces it): the raw audit body, every string of
//! each canonical event, and each event's per-dialect state (session ids, ordering keys).
//!
//! The common case finds nothing and copies nothing: one scan of the body and of each encoded
//! event; an event is decoded and encoded again only when it holds a credential.

use crate::auth::redact::{self, Kind};
use crate::context::Context;
use crate::store::writer::Submission;
use std::borrow::Cow;

pub use crate::dialect::AuditFormat;

/// Replaces every credential in what `sub` will store by its marker.
pub fn submission(ctx: &Context, sub: &mut Submission, format: AuditFormat) {
    // The same credential is usually found in the body and in its event: looked up once.
    let mut seen: Vec<(String, Option<u32>)> = Vec::new();
    let mut namer = |kind: Kind, credential: &str| {
        if let Some((_, id)) = seen.iter().find(|(c, _)| c == credential) {
            return *id;
        }
        let id = match kind {
            Kind::Key => ctx.store.key_id_of(credential),
            Kind::Secret => ctx.store.secret_id_of(credential),
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
        p.redact(&mut namer);
    }
}
