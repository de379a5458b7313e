//! Responses, and the one mapping from [`Reason`] to HTTP status.

use crate::event::Reason;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

/// A response before it goes on the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub retry_after: Option<u64>,
    pub headers: Vec<(&'static str, String)>,
}

/// The HTTP status of a rejection.
pub fn status_of(reason: Reason) -> StatusCode {
    match reason {
        Reason::BadJson
        | Reason::TooManyEvents
        | Reason::Required(_)
        | Reason::Invalid(_)
        | Reason::TooLong(_)
        | Reason::BodyUnreadable
        | Reason::EventTooOld
        | Reason::EventOutOfOrder
        | Reason::DuplicateParameter
        | Reason::VendorField(_) => StatusCode::BAD_REQUEST,
        Reason::MissingBearerToken
        | Reason::UnknownOrRevokedKey
        | Reason::MissingApiKey
        | Reason::UnknownApiKey
        | Reason::KeyNotForApp
        | Reason::SignatureRequired
        | Reason::SignatureInvalid
        | Reason::TimestampRequired => StatusCode::UNAUTHORIZED,
        Reason::EventNotAllowedByKey | Reason::RevokedApiKey | Reason::TimestampOutsideWindow => {
            StatusCode::FORBIDDEN
        }
        Reason::NotFound
        | Reason::UnknownAppToken
        | Reason::UnknownBundleId
        | Reason::NoOpenSession => StatusCode::NOT_FOUND,
        Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Reason::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Reason::UnsupportedEncoding | Reason::UnsupportedContentType => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Reason::CapExceeded | Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Reason::Overloaded | Reason::StorageUnavailable | Reason::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The wire format a response speaks. Statuses follow [`status_of`] except where a vendor's
/// table says otherwise; those exceptions live here too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Native,
    GameRebellion,
    Adjust,
}

/// The HTTP status of a rejection in `dialect`.
pub fn dialect_status(dialect: Dialect, reason: Reason) -> StatusCode {
    match (dialect, reason) {
        // Adjust's table: "404 Device not found" when no device is given.
        (Dialect::Adjust, Reason::Required(crate::event::Field::DeviceId)) => StatusCode::NOT_FOUND,
        _ => status_of(reason),
    }
}

/// Seconds a client should wait before retrying after a transient refusal.
pub const RETRY_SOON_SECS: u64 = 1;

impl Reply {
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(value).expect("a Value always serializes")),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn text(status: StatusCode, text: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(text.as_bytes()),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// The native error body `{"error": "<reason>"}` with the reason's status.
    pub fn error(reason: Reason) -> Reply {
        Reply::json(
            status_of(reason),
            &serde_json::json!({ "error": reason.tag() }),
        )
        .with_default_retry(reason)
    }

    /// GameRebellion's error body: `{"error": "<reason>"}` (its spec fixes only the statuses).
    pub fn gamerebellion_error(reason: Reason) -> Reply {
        Reply::json(
            dialect_status(Dialect::GameRebellion, reason),
            &serde_json::json!({ "error": reason.tag() }),
        )
        .with_default_retry(reason)
    }

    /// Adjust's success answer: `200 OK`.
    pub fn adjust_ok() -> Reply {
        Reply::text(StatusCode::OK, "OK")
    }

    /// Adjust's error body `{"error": "Event request failed (<message>)"}`, with the message
    /// of [`crate::dialect::adjust::message`].
    pub fn adjust_error(reason: Reason) -> Reply {
        let message = crate::dialect::adjust::message(reason);
        Reply::json(
            dialect_status(Dialect::Adjust, reason),
            &serde_json::json!({ "error": format!("Event request failed ({message})") }),
        )
        .with_default_retry(reason)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// Adds `Retry-After` to transient refusals (queue full, storage down, shutting down).
    pub fn with_default_retry(mut self, reason: Reason) -> Reply {
        let status = status_of(reason);
        if status == StatusCode::SERVICE_UNAVAILABLE && self.retry_after.is_none() {
            self.retry_after = Some(RETRY_SOON_SECS);
        }
        if status.is_server_error() || reason == Reason::CapExceeded {
            let tag = reason.tag();
            crate::warn_throttled!(format!("refused {tag}"), reason = %tag, status = self.status.as_u16(), "refused");
        }
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Reply {
        self.retry_after = Some(secs);
        self
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

/// Vendor-shaped bodies of the compatibility dialects. The status of a rejection still comes
/// from [`status_of`]; only the body differs. Callers add `Retry-After` (see
/// `ingest::with_quota_retry`).
impl Reply {
    fn plain(status: StatusCode, text: String) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// AppsFlyer Web-S2S success: `200 OK` with the body `OK`.
    pub fn appsflyer_ok() -> Reply {
        Reply::plain(StatusCode::OK, "OK".to_owned())
    }

    /// AppsFlyer Web-S2S error: the vendor's message for the status ("Bad request",
    /// "Not found", ...) followed by the stable reason tag naming the problem, e.g.
    /// `Bad request: eventName_required`.
    pub fn appsflyer_error(reason: Reason) -> Reply {
        let status = status_of(reason);
        let message = match status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::INTERNAL_SERVER_ERROR => "Internal server error",
            _ => "Service unavailable",
        };
        Reply::plain(status, format!("{message}: {}", reason.tag()))
    }

    /// Datafly success: `200 {"success": true}`.
    pub fn datafly_ok() -> Reply {
        Reply::json(StatusCode::OK, &serde_json::json!({ "success": true }))
    }

    /// Datafly error: `{"success": false, "error": "<reason>"}`.
    pub fn datafly_error(reason: Reason) -> Reply {
        Reply::json(
            status_of(reason),
            &serde_json::json!({ "success": false, "error": reason.tag() }),
        )
    }
}
