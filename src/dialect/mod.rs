//! Wire formats. One module per vendor dialect turns request bytes into canonical
//! [`Draft`](crate::event::Draft)s. Dialects are pure: no I/O, no clock, no store.
//!
//! `props` keep the sender's order (serde_json's `preserve_order` is on). A dialect takes
//! fields out of a parsed object with `Map::shift_remove`, never `Map::remove`, which is
//! `swap_remove` under that feature and would move the last field into the hole (clippy's
//! `disallowed-methods` in `clippy.toml` holds that).

pub mod adjust;
pub mod appsflyer;
pub mod canon;
pub mod datafly;
pub mod form;
pub mod gamerebellion;
pub mod json;
pub mod reflect;

use crate::event::{Draft, Field, Reason};
use crate::http::Reply;
use crate::http::reply::status_of;
use hyper::StatusCode;
use serde_json::{Map, Value};

pub use adjust::Adjust;
pub use appsflyer::AppsFlyer;
pub use datafly::Datafly;
pub use gamerebellion::GameRebellion;
pub use reflect::Native;

/// How a vendor answers: the seam between the one ingest pipeline and a vendor's wire
/// format. Each vendor implements it in its own file, next to its decoder. A refusal's
/// status is the default [`status_of`] unless the vendor's table says otherwise
/// ([`Dialect::status`]); its body is the vendor's ([`Dialect::error`]). `Retry-After` and
/// the counting are the pipeline's (`ingest::refusal`), the same for every vendor.
pub trait Dialect {
    /// The `source` its events are stored and counted under.
    const SOURCE: &'static str;

    /// The HTTP status of a refusal for `reason`.
    fn status(reason: Reason) -> StatusCode {
        status_of(reason)
    }

    /// The vendor's refusal body for `reason`, answered with `status`.
    fn error(reason: Reason, status: StatusCode) -> Reply;
}

/// One event of a batch request: its `event_id` when it had a string one (so that a
/// rejection can name it) and its decoding.
#[derive(Debug, PartialEq)]
pub struct BatchItem {
    pub event_id: Option<String>,
    pub draft: Result<Draft, Reason>,
}

/// Decodes a `{"events": [...]}` batch body. The request fails as a whole only when it is not
/// a JSON object with a non-empty `events` array of at most `max`; each event then gets its
/// own result, decoded by `decode` (an event that is not an object is `bad_json`).
pub fn decode_events(
    body: &[u8],
    max: usize,
    decode: impl Fn(Map<String, Value>) -> Result<Draft, Reason>,
) -> Result<Vec<BatchItem>, Reason> {
    let mut object = json::parse_object(body).ok_or(Reason::BadJson)?;
    let events = match object.shift_remove("events") {
        None | Some(Value::Null) => return Err(Reason::Required(Field::Events)),
        Some(Value::Array(events)) => events,
        Some(_) => return Err(Reason::Invalid(Field::Events)),
    };
    if events.is_empty() {
        return Err(Reason::Required(Field::Events));
    }
    if events.len() > max {
        return Err(Reason::TooManyEvents);
    }
    Ok(events
        .into_iter()
        .map(|event| match event {
            Value::Object(map) => BatchItem {
                event_id: map
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                draft: decode(map),
            },
            _ => BatchItem {
                event_id: None,
                draft: Err(Reason::BadJson),
            },
        })
        .collect())
}
