//! Admin API routes of a key beyond minting and revoking (`api` has those), for the
//! quarantine's "allow the event, then replay" ([docs/quarantine.md]):
//!
//! - `POST /admin/api/keys/{id}/allow {"events": [name, ...]}` → `{"id", "allowed_events"}`:
//!   replaces the event names the key may send (an empty list: every event), as `inlet keys
//!   allow`; from the next request on. Audited like every admin write.

use super::session::WriteSession;
use super::{Env, Error, write};
use crate::event::MAX_EVENT_NAME;
use crate::http::reply::Reply;
use crate::store::admin;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Most names one key's list may hold.
pub const MAX_ALLOWED_EVENTS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    events: Vec<String>,
}

/// The names of `events`, trimmed, each once, in the order given; a refusal for an invalid
/// one.
fn names(events: Vec<String>) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if e.chars().count() > MAX_EVENT_NAME {
            return Err(Error::BadRequest(format!(
                "allowed event {e:?} is longer than {MAX_EVENT_NAME} characters"
            )));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    if out.len() > MAX_ALLOWED_EVENTS {
        return Err(Error::BadRequest(format!(
            "at most {MAX_ALLOWED_EVENTS} allowed events"
        )));
    }
    Ok(out)
}

pub async fn allow(state: &Env<'_>, _w: &WriteSession, id: &str, b: Allow) -> Result<Reply, Error> {
    let id = id
        .parse::<u32>()
        .map_err(|_| Error::BadRequest(format!("no key {id:?}")))?;
    let events = names(b.events)?;
    let k = write(state, move |txn| admin::set_allowed_events(txn, id, events)).await?;
    tracing::info!(
        key_id = id,
        events = k.allowed_events.len(),
        "admin: key's allowed events set"
    );
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "id": id, "allowed_events": k.allowed_events }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_kept_once_and_checked() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(v(&[" purchase", "level_up ", "", "purchase"])).unwrap(),
            v(&["purchase", "level_up"])
        );
        assert!(names(v(&[])).unwrap().is_empty());
        let long = "x".repeat(MAX_EVENT_NAME + 1);
        assert!(matches!(names(vec![long]), Err(Error::BadRequest(_))));
    }
}
