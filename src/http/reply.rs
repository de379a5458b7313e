//! Responses, and the default mapping from [`Reason`] to HTTP status ([`status_of`]); a vendor's
//! exceptions and error bodies live in its `Dialect` impl (`crate::dialect`).

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
        Reason::EventNotAllowedByKey
        | Reason::RevokedApiKey
        | Reason::TimestampOutsideWindow
        | Reason::SubjectSuppressed => StatusCode::FORBIDDEN,
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

    /// A JSON reply whose body was written as text.
    pub fn json_text(status: StatusCode, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.into(),
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

impl Reply {
    /// A plain-text reply of an owned text.
    pub fn plain(status: StatusCode, text: String) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text),
            retry_after: None,
            headers: Vec::new(),
        }
    }
}
