//! The panel's HTML, CSS and JS, embedded in the binary (`assets/`, via rust-embed with
//! `debug-embed`, so debug builds embed them too), served with their content type and an ETag.

use super::Error;
use crate::http::reply::Reply;
use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// `GET /admin`, `/admin/` (the page) and `/admin/<file>`.
pub fn serve<B>(req: &Request<B>, path: &str) -> Result<Reply, Error> {
    let name = match path {
        "/admin" | "/admin/" => "index.html",
        p => p.strip_prefix("/admin/").ok_or(Error::NotFound)?,
    };
    let file = Assets::get(name).ok_or(Error::NotFound)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Error::MethodNotAllowed);
    }
    let etag = format!(
        "\"{}\"",
        crate::event::hex(&file.metadata.sha256_hash()[..16])
    );
    let matches = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut reply = Reply {
        status: if matches {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        },
        content_type: content_type(name),
        body: if matches {
            Bytes::new()
        } else {
            Bytes::from(file.data.into_owned())
        },
        retry_after: None,
        headers: Vec::new(),
    };
    reply.headers.push(("etag", etag));
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_a_known_type() {
        let names: Vec<_> = Assets::iter().collect();
        assert!(names.iter().any(|n| n == "index.html"), "{names:?}");
        for n in names {
            assert_ne!(content_type(&n), "application/octet-stream", "{n}");
        }
    }

    #[test]
    fn etags_answer_304() {
        let req = Request::get("/admin/").body(()).unwrap();
        let first = serve(&req, "/admin/").unwrap();
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.content_type, "text/html; charset=utf-8");
        let etag = first.headers[0].1.clone();
        let again = Request::get("/admin/")
            .header("if-none-match", &etag)
            .body(())
            .unwrap();
        let second = serve(&again, "/admin/").unwrap();
        assert_eq!(second.status, StatusCode::NOT_MODIFIED);
        assert!(second.body.is_empty());
        assert!(matches!(
            serve(&req, "/admin/nope.js"),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            serve(&req, "/admin/../Cargo.toml"),
            Err(Error::NotFound)
        ));
    }
}
