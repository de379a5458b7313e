//! The HTTP toolkit every surface (ingest, admin, operations) answers with: [`Reply`] and
//! the default [`Reason`](crate::event::Reason) → status mapping ([`reply`]), the response
//! [`Body`], and request bodies read under a budget, a size limit and a timeout ([`body`]).
//! It imports nothing above it; the accept loop and the router live in `server`.

pub mod body;
pub mod reply;

pub use reply::Reply;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;

/// A response body: a whole buffer, or a stream (the admin API's export).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A buffered response as a [`Body`] response.
pub fn boxed(resp: Response<Full<Bytes>>) -> Response<Body> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}
